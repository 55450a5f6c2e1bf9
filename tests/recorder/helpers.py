"""Shared steps of the recorder tests: start a recorder, wait for what it wrote."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from services.recorder.check import check_recording
from services.recorder.reader import Recording
from tests.support.bus import json_lines
from tests.support.processes import ProcessGroup, wait_for


def start_recorder(procs: ProcessGroup, run_dir: Path, out: Path, *extra: str, name="recorder"):
    proc = procs.start(name, [sys.executable, "-m", "services.recorder", "--run-dir",
                              str(run_dir), "--out", str(out), "--flush-ms", "20", *extra])
    # subscribed and writing: the broker's (or its own) heartbeat is in the recording
    wait_for(lambda: out.exists() and _has_record(out), deadline=90,
             what="the recorder's first record")
    return proc


def _has_record(out: Path) -> bool:
    for _ in Recording(out).records():
        return True
    return False


def run_publisher(procs: ProcessGroup, name: str, argv: list[str]) -> dict:
    proc = procs.start(name, [sys.executable, *argv])
    assert proc.wait(180) == 0, procs.log(name)
    lines = [ln for ln in json_lines(procs.log(name)) if "sent" in ln]
    assert lines, procs.log(name)
    return lines[-1]


def loadgen(procs: ProcessGroup, run_dir: Path, source: str, kind: str, count: int,
            batch: int = 100, symbol: str = "AAPL") -> dict:
    return run_publisher(procs, source, [
        "-m", "services.bus.loadgen", "--run-dir", str(run_dir), "--count", str(count),
        "--batch", str(batch), "--kind", kind, "--source", source, "--symbol", symbol])


def wait_recorded(out: Path, sent: dict[str, int], deadline: float = 90):
    """Until every source's last seq (its ``sent``) is in the recording."""
    def done():
        result = check_recording(out)
        return all(src in result.sources and result.sources[src].last_seq >= n
                   for src, n in sent.items()) and result
    return wait_for(done, deadline=deadline, interval=0.1, what=f"the recording of {sent}")


def tap_counts(procs: ProcessGroup, name: str) -> dict | None:
    lines = [ln for ln in json_lines(procs.log(name)) if "received" in ln]
    return lines[-1] if lines else None


def summary_line(procs: ProcessGroup, name: str) -> dict:
    lines = [json.loads(ln) for ln in procs.log(name).splitlines()
             if ln.startswith('{"summary"')]
    assert lines, procs.log(name)
    return lines[-1]
