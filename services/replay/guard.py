"""A replay never mixes into a live bus: it claims a run directory of its own.

The claim is an exclusive ``flock`` on ``RUN_DIR/replay.lock`` (held for the life of the
process, released by the kernel even after kill -9) plus a check that no bus socket in the
directory accepts connections. A socket file nobody listens on is a leftover of a dead process
and is removed; one that accepts connections means a live broker (or replay) owns the directory.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from services.runtime.config import ensure_private_dir

BUS_SOCKETS = ("bus-in", "bus-out", "bus-snap")
LOCK_NAME = "replay.lock"


class RunDirBusy(RuntimeError):
    """The run directory belongs to a live bus or another replay."""


def accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


class RunDirClaim:
    """Holds the lock until ``release()`` (or process exit)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = ensure_private_dir(Path(run_dir))
        self._fd: int | None = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise RunDirBusy(f"another replay is running in {self.run_dir}") from None
        try:
            self._check_sockets()
        except RunDirBusy:
            self.release()
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _check_sockets(self) -> None:
        for name in BUS_SOCKETS:
            path = self.run_dir / name
            if not path.exists():
                continue
            if accepts_connections(path):
                raise RunDirBusy(f"{path} accepts connections: a live bus runs in {self.run_dir}; "
                                 f"replay needs a run directory of its own (--run-dir)")
            path.unlink()  # a dead process's leftover

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
