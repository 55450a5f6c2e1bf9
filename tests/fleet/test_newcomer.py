"""A newcomer's walkthrough (issue 15, "what it must show"): clone the repository, type the
README's command, `make run`, in a terminal (a pseudo-terminal, through pexpect), see the live
status show fills within a minute of the fleet being up, press Ctrl-C, and find no process of
the fleet left.

What is not a newcomer's: the shortcut that keeps this test within minutes. A fresh clone's
`make run` would build the virtual environment and the Cython core from scratch (minutes on 2
cores, and a download); here the clone's `.venv` is a symlink to the environment running this
test and the built core (core/*.c, core/*.so) is copied in, with the clone's files dated
before that environment's `.installed` marker and the copied build after its sources, so
`make run`'s own targets (setup, build, run) all run and find nothing to redo. `PYTHONPATH`
puts the clone's code first (the environment's editable install points at this checkout),
and supervisord runs every program from the clone's directory. The fleet is isolated as
every fleet test is: its own config (`make run ARGS="--config FILE"`: the run directory, a
state directory under the test's tmp, the simulator's port from the OS).

The clone is of the repository's committed HEAD (`git clone --no-hardlinks`). While working
on uncommitted changes, IBFLEET_NEWCOMER_WORKTREE=1 copies the working tree instead."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import tomli_w

from tests.support.bus import short_run_dir
from tests.support.fleet_scan import describe, fleet_processes, kill_fleet
from tests.support.processes import REPO, free_port

pexpect = pytest.importorskip("pexpect")

VENV = Path(sys.prefix)
MARKER = VENV / ".installed"  # what the Makefile's setup writes last (a complete environment)
UP_DEADLINE_S = 240.0  # `make run` to "fleet up": a loaded 2-core machine, generously
FILL_DEADLINE_S = 60.0  # the "within a minute", from the fleet being up
STOP_DEADLINE_S = 180.0
# a strategy's line of the live status with a position: a fill happened (a fresh paper
# account starts flat; a position closed again shows as "SYMBOL 0")
POSITION = re.compile(rb"realized +-?[\d.]+ unrealized +-?[\d.]+ +[A-Z][A-Z0-9.]* -?\d")


def _checkout(dest: Path) -> None:
    if os.environ.get("IBFLEET_NEWCOMER_WORKTREE") == "1":
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=REPO, capture_output=True,
                               check=True).stdout.decode().split("\0")
        for name in filter(None, files):
            if (REPO / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dest / name)
        return
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)],
                   check=True, capture_output=True, timeout=300)


def _reuse_this_environment(clone: Path) -> None:
    """The shortcut (see the module's docstring): `make run`'s targets find nothing to do."""
    built = sorted(REPO.glob("core/*.so")) + sorted(REPO.glob("core/*.c"))
    if not MARKER.exists() or not any(p.suffix == ".so" for p in built):
        pytest.skip(f"needs a complete environment ({MARKER}) and the built core in {REPO}")
    before = MARKER.stat().st_mtime - 3600  # every file of the clone predates the marker
    for root, dirs, files in os.walk(clone):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            os.utime(os.path.join(root, name), (before, before))
    (clone / ".venv").symlink_to(VENV, target_is_directory=True)
    for source in built:  # after their sources: nothing to cythonize or compile
        shutil.copy(source, clone / "core" / source.name)


def _clone_processes(clone: Path) -> list[psutil.Process]:
    """Processes running from the clone (their working directory in it)."""
    out = []
    for proc in psutil.process_iter(["cwd", "status"]):
        cwd = proc.info["cwd"] or ""
        if proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE \
                and (cwd == str(clone) or cwd.startswith(f"{clone}/")):
            out.append(proc)
    return out


@pytest.mark.timeout(UP_DEADLINE_S + FILL_DEADLINE_S + STOP_DEADLINE_S + 120)
def test_clone_make_run_see_fills_ctrl_c_leaves_nothing(tmp_path):
    clone = tmp_path / "ibfleet"
    _checkout(clone)
    if "$(ARGS)" not in (clone / "Makefile").read_text():  # it could not take our config
        pytest.fail("the clone's `make run` takes no ARGS (an older commit?); with uncommitted "
                    "changes, run with IBFLEET_NEWCOMER_WORKTREE=1")
    _reuse_this_environment(clone)
    run_dir = short_run_dir()
    config = tmp_path / "fleet.toml"
    config.write_text(tomli_w.dumps({"bus": {"run_dir": str(run_dir)},
                                     "simulator": {"port": free_port()},
                                     "fleet": {"state_dir": str(tmp_path / "state")}}))
    # the XDG directories too: nothing of this fleet goes to a default place
    env = dict(os.environ, PYTHONPATH=str(clone), TERM="xterm",
               XDG_STATE_HOME=str(tmp_path / "xdg-state"), XDG_RUNTIME_DIR=str(short_run_dir()))
    transcript = open(tmp_path / "terminal.log", "wb")
    # the README's command, typed in the clone
    child = pexpect.spawn("make", ["run", f"ARGS=--config {config}"], cwd=str(clone), env=env,
                          dimensions=(60, 200), logfile=transcript, timeout=UP_DEADLINE_S)
    try:
        child.expect(rb"fleet up in ", timeout=UP_DEADLINE_S)
        assert not child.before.count(b"Traceback"), child.before.decode(errors="replace")
        up_at = time.monotonic()
        child.expect(rb"Ctrl-C stops the fleet\.", timeout=FILL_DEADLINE_S)
        left = FILL_DEADLINE_S - (time.monotonic() - up_at)
        child.expect(POSITION, timeout=max(left, 1.0))  # fills, in the live status
        # the fleet that trades is the clone's: supervisord runs it from there
        running = fleet_processes(run_dir)
        assert running and {p.pid for p in running} <= {p.pid for p in _clone_processes(clone)}
        child.sendintr()  # Ctrl-C, through the terminal: SIGINT to its foreground group
        child.expect(pexpect.EOF, timeout=STOP_DEADLINE_S)
        child.close()
        screen = (tmp_path / "terminal.log").read_bytes().decode(errors="replace")
        assert "fleet stopped." in screen, screen[-3000:]
        assert "Traceback" not in screen, screen[-3000:]
        left = fleet_processes(run_dir) + _clone_processes(clone)
        assert not left, "left after Ctrl-C:\n" + "\n".join(describe(left))
    finally:
        if child.isalive():
            try:
                os.killpg(os.getpgid(child.pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        kill_fleet(run_dir)
        for proc in _clone_processes(clone):
            try:
                proc.kill()
            except psutil.Error:
                pass
        transcript.close()
