from __future__ import annotations

import shutil

import pytest

from tests.support.bus import CREATED
from tests.support.fleet import Fleet
from tests.support.processes import ProcessGroup


def pytest_sessionfinish(session, exitstatus):
    for path in CREATED:  # the short ipc:// run directories the tests made
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs(tmp_path):
    """Real processes for one test, all stopped by process group at the end, pass or fail."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def fleet(procs, tmp_path):
    """A whole fleet on the simulator (tests/support/fleet.py), closed at the end; the
    gateway tests' conftest has its own, lighter one."""
    f = Fleet(procs, tmp_path)
    try:
        yield f
    finally:
        f.close()
