"""Which processes belong to one fleet, found from outside: the tests of `ibfleet up` and of
`make run` use it to assert that nothing was left, and to stop whatever was, pass or fail.

A process is the fleet's when its command line names the fleet's run directory (every
program under supervisord reads RUN_DIR/fleet.toml) or its environment carries it as
IBFLEET_RUN_DIR (supervisord itself, whose command line names only supervisord.conf)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil


def fleet_processes(run_dir: str | Path) -> list[psutil.Process]:
    """The live (not zombie) processes of the fleet whose run directory is ``run_dir``."""
    run_dir = str(run_dir)
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if any(run_dir in part for part in proc.info["cmdline"] or ()) \
                    or proc.environ().get("IBFLEET_RUN_DIR") == run_dir:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            out.append(f"{proc.pid} (gone)")
    return out


def kill_fleet(run_dir: str | Path, *groups: int) -> None:
    """SIGKILL ``groups`` (process groups a test started) and, by process group, every
    process of the fleet still alive: the cleanup of a test, whatever it did."""
    own = os.getpgrp()
    for pgid in groups:
        try:
            if pgid and pgid != own:
                os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in fleet_processes(run_dir):
        try:
            pgid = os.getpgid(proc.pid)
            if pgid != own:
                os.killpg(pgid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
