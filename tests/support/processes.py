"""Real processes for integration tests: free ports, own process groups, waits on conditions.

Every process started here runs in its own session (process group) and is killed by group when
the test ends, pass or fail. Waits poll a condition against a generous deadline: CI is a loaded
2-core machine, so nothing here sleeps a fixed time and hopes.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEADLINE = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1: all held open until all are chosen, so
    the OS cannot hand the same one out twice (``free_port(), free_port()`` can)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(condition: Callable[[], object], deadline: float = DEFAULT_DEADLINE,
             interval: float = 0.02, what: str = "condition") -> object:
    """Poll `condition` until it returns a truthy value; raise TimeoutError naming `what`."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ProcessGroup:
    """Starts processes in their own sessions and stops them all, by process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: Sequence[str], env: dict | None = None) -> subprocess.Popen:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        if env:
            full_env.update(env)
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=full_env, start_new_session=True)
        log.close()
        proc.name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start_python(self, name: str, module: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", module, *args], env=env)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self, proc: subprocess.Popen, timeout: float = 20.0) -> int | None:
        """SIGTERM the group, then SIGKILL it if it has not gone within `timeout`."""
        self.kill(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc, signal.SIGKILL)
            return proc.wait(timeout)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                self.terminate(proc, timeout=10.0)
            else:  # the leader is gone; make sure no child outlived it
                self.kill(proc, signal.SIGKILL)
        self.procs.clear()
