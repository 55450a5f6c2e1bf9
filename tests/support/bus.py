"""Bus fixtures: a real broker process on a private ipc:// run directory."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import zmq

from proto.schema import Heartbeat
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from tests.support.processes import ProcessGroup, wait_for


CREATED: list[Path] = []  # removed at the end of the test session (tests/conftest.py)


def short_run_dir() -> Path:
    """ipc:// paths are limited to ~100 bytes; pytest's tmp paths can be longer."""
    path = Path(tempfile.mkdtemp(prefix="ibf-"))
    CREATED.append(path)
    return path


def start_broker(procs: ProcessGroup, run_dir: Path):
    proc = procs.start("bus", [sys.executable, "-m", "services.bus.broker", "--run-dir",
                               str(run_dir)])
    cfg = fleet_config.load(run_dir=run_dir)
    ctx = zmq.Context.instance()
    probe = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["hb.bus"])
    try:
        wait_for(lambda: _got_heartbeat(probe), deadline=60, what="the bus broker's heartbeat")
    finally:
        probe.close()
    return proc, cfg


def _got_heartbeat(sub: Subscriber) -> bool:
    got = sub.recv(100)
    return bool(got and any(isinstance(m, Heartbeat) for m in got[1]))


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out
