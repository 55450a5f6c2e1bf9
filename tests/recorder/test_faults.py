"""The recorder process under faults: kill -9 mid-stream, a full disk; and its CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import zmq

from proto.schema import Alert, Heartbeat
from services.bus.subscriber import Subscriber
from services.recorder.check import check_recording
from services.recorder.reader import Recording
from tests.recorder.helpers import loadgen, start_recorder, wait_recorded
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import REPO, wait_for


def _source_records(out: Path, source: str):
    return [r for r in Recording(out).records() if r.src == source]


def test_kill_9_mid_stream_reads_back_up_to_the_last_complete_record(procs, tmp_path):
    run_dir = short_run_dir()
    start_broker(procs, run_dir)
    out = tmp_path / "rec"
    recorder = start_recorder(procs, run_dir, out, "--flush-ms", "5")
    gen = procs.start("gen", [sys.executable, "-m", "services.bus.loadgen", "--run-dir",
                              str(run_dir), "--count", "3000000", "--batch", "100",
                              "--source", "gen.1"])
    wait_for(lambda: len(_source_records(out, "gen.1")) >= 300, deadline=90,
             what="a stream being recorded")
    procs.kill(recorder, signal.SIGKILL)
    recorder.wait(30)
    procs.kill(gen, signal.SIGKILL)
    result = check_recording(out, deep=True)
    assert result.report.corrupt_records == 0 and not result.report.bad_segments
    assert result.missing == 0 and result.out_of_order == 0 and result.complete
    got = result.sources["gen.1"]
    assert got.messages >= 300 * 100 - 100 and got.messages == got.last_seq - got.first_seq + 1


@pytest.fixture
def tiny_disk():
    """A real 3 MiB filesystem (tmpfs), so ENOSPC is the kernel's, not a mock's."""
    mount = Path(f"/tmp/ibf-full-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()} "
                    f"(the injected-error unit test covers the writer)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def _next_alert(sub: Subscriber, seen: list) -> list:
    got = sub.recv(100)
    if got:
        seen.extend(m for m in got[1] if isinstance(m, (Alert, Heartbeat)))
    return seen


def test_a_full_disk_alerts_keeps_running_keeps_what_it_had_and_recovers(procs, tiny_disk):
    run_dir = short_run_dir()
    _, cfg = start_broker(procs, run_dir)
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024))
    out = tiny_disk / "rec"
    ctx = zmq.Context.instance()
    watch = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["alert", "hb.recorder"])
    seen: list = []
    try:
        recorder = start_recorder(procs, run_dir, out, "--retry-seconds", "0.3")
        # ~1.5 MB of ticks into the ~1 MB left: the disk fills part way through
        loadgen(procs, run_dir, "gen.1", "tick", 25_000)
        wait_for(lambda: any(isinstance(m, Alert) and m.code == "recorder.write_failed"
                             for m in _next_alert(watch, seen)), deadline=90,
                 what="the disk-full alert")
        alert = next(m for m in seen if isinstance(m, Alert))
        assert alert.severity == "critical" and "ENOSPC" in alert.text
        assert '"recording stopped: write failed"' in procs.log("recorder")
        wait_for(lambda: any(isinstance(m, Heartbeat) and m.state == "not_recording"
                             and m.counters["write_errors"] >= 1
                             and m.counters["dropped_messages"] > 0
                             for m in _next_alert(watch, seen)), deadline=30,
                 what="a heartbeat saying the recorder is not recording")
        assert recorder.poll() is None  # alive
        # everything written before the disk filled reads back intact and in sequence
        before = check_recording(out)
        assert before.report.corrupt_records == 0 and not before.report.bad_segments
        got = before.sources["gen.1"]
        assert 0 < got.messages < 25_000 and got.out_of_order == 0

        filler.unlink()  # space again: the recorder resumes in a new segment
        wait_for(lambda: any(isinstance(m, Alert) and m.code == "recorder.resumed"
                             for m in _next_alert(watch, seen)), deadline=60,
                 what="the recorder to resume")
        sent = loadgen(procs, run_dir, "gen.2", "tick", 2_000)["sent"]
        result = wait_recorded(out, {"gen.2": sent})
        assert result.sources["gen.2"].missing == 0
        assert recorder.poll() is None
    finally:
        watch.close()
        for proc in list(procs.procs):  # free the mount before it is unmounted
            if proc.poll() is None:
                procs.terminate(proc)


@pytest.mark.parametrize("command", ["record", "replay"])
def test_help(command):
    done = subprocess.run([sys.executable, "-m", "services.cli", command, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"usage: ibfleet {command}" in done.stdout
    assert ("--out" if command == "record" else "--wait-subscribers") in done.stdout


def test_check_cli_reports_a_recording(tmp_path):
    from tests.recorder.test_damage import _frames, _write
    _write(tmp_path, _frames(5))
    done = subprocess.run([sys.executable, "-m", "services.cli", "record", "--check",
                           str(tmp_path), "--deep"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"complete": true' in done.stdout and '"messages": 100' in done.stdout
    os.truncate(sorted(tmp_path.glob("*.ibrec"))[0], 200)
    done = subprocess.run([sys.executable, "-m", "services.cli", "record", "--check",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["torn_bytes"] > 0
