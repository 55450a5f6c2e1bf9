"""The Makefile's virtual environment is built atomically (issue 15, item 7 and finding 9):
``.venv/.installed`` is written last and removed before any change, so a setup cut short
(Ctrl-C, a failed download) leaves a ``.venv`` without it: half built. The next ``make
setup`` removes such a ``.venv`` and builds afresh, ``make clean`` removes it, a complete
one is kept by ``clean`` and removed by ``distclean``.

The real Makefile runs in a copy of its directory with ``PYTHON`` pointed at a stand-in
interpreter whose ``-m venv`` makes a venv with a stand-in ``pip`` (it logs its arguments,
and can fail, or block until interrupted): the Makefile's own recipes run, nothing is
downloaded."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.processes import REPO, wait_for

STUB_PYTHON = """#!/bin/sh
# a stand-in interpreter: `-c CHECK` passes; `-m venv DIR` makes DIR/bin/pip, the stand-in pip
case "$1" in
  -c) exit 0 ;;
  -m) [ "$2" = venv ] || exit 2
      mkdir -p "$3/bin"
      cp "$STUB_DIR/pip" "$3/bin/pip"
      cp "$STUB_DIR/pip" "$3/bin/python"
      echo made >> "$3/venv.log"
      exit 0 ;;
esac
exit 2
"""

STUB_PIP = """#!/bin/sh
# the stand-in pip: logs its call; fails, or blocks until killed, as the test says
echo "$*" >> "$(dirname "$0")/../pip.log"
[ -e "$STUB_DIR/fail" ] && exit 1
if [ -e "$STUB_DIR/block" ]; then
  touch "$STUB_DIR/blocked"
  while :; do sleep 0.05; done
fi
exit 0
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tree(tmp_path):
    """A copy of the Makefile with the files its setup depends on, and the stand-ins."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    for name in ("requirements.txt", "constraints.txt", "setup.py", "pyproject.toml"):
        (work / name).write_text("")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _executable(stubs / "python", STUB_PYTHON)
    _executable(stubs / "pip", STUB_PIP)
    return work, stubs


def _make(tree, *targets: str, **kw) -> subprocess.CompletedProcess:
    work, stubs = tree
    return subprocess.run(["make", "--no-print-directory", *targets,
                           f"PYTHON={stubs / 'python'}"], cwd=work, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, STUB_DIR=str(stubs)),
                          **kw)


def test_setup_builds_the_venv_and_marks_it_complete_last(tree):
    work, _ = tree
    result = _make(tree, "setup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / ".venv/.installed").exists()
    assert len((work / ".venv/pip.log").read_text().splitlines()) == 3
    assert _make(tree, "setup").returncode == 0
    assert len((work / ".venv/pip.log").read_text().splitlines()) == 3, "built twice"


def test_a_failed_setup_leaves_no_marker_and_the_next_one_starts_afresh(tree):
    work, stubs = tree
    (stubs / "fail").touch()
    assert _make(tree, "setup").returncode != 0
    assert (work / ".venv").is_dir() and not (work / ".venv/.installed").exists()
    (work / ".venv/leftover").write_text("from the failed setup")
    (stubs / "fail").unlink()
    result = _make(tree, "setup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removing a half-built .venv" in result.stdout
    assert not (work / ".venv/leftover").exists() and (work / ".venv/.installed").exists()


def test_ctrl_c_during_the_first_setup_leaves_a_half_built_venv_make_clean_removes(tree):
    work, stubs = tree
    (stubs / "block").touch()
    proc = subprocess.Popen(["make", "setup", f"PYTHON={stubs / 'python'}"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, STUB_DIR=str(stubs)), start_new_session=True)
    try:
        wait_for(lambda: (stubs / "blocked").exists() or proc.poll() is not None,
                 what="pip installing")
        assert proc.poll() is None, proc.communicate()[0]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal's foreground group
        proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode != 0
    assert (work / ".venv").is_dir() and not (work / ".venv/.installed").exists()
    result = _make(tree, "clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (work / ".venv").exists(), "make clean kept a half-built .venv"


def test_clean_keeps_a_complete_venv_and_distclean_removes_it(tree):
    work, _ = tree
    assert _make(tree, "setup").returncode == 0
    assert _make(tree, "clean").returncode == 0
    assert (work / ".venv/.installed").exists()
    assert _make(tree, "distclean").returncode == 0
    assert not (work / ".venv").exists()


def test_changed_requirements_update_the_venv_in_place_and_unmark_it_meanwhile(tree):
    work, stubs = tree
    assert _make(tree, "setup").returncode == 0
    (work / ".venv/kept").write_text("a complete venv is updated, not rebuilt")
    later = time.time() + 5  # requirements newer than the marker
    os.utime(work / "requirements.txt", (later, later))
    (stubs / "fail").touch()  # the update fails half way: the venv is no longer complete
    assert _make(tree, "setup").returncode != 0
    assert (work / ".venv/kept").exists() and not (work / ".venv/.installed").exists()
    (stubs / "fail").unlink()
    assert _make(tree, "setup").returncode == 0  # so it is built afresh
    assert not (work / ".venv/kept").exists() and (work / ".venv/.installed").exists()
