from __future__ import annotations

import pytest

from tests.support.processes import ProcessGroup


@pytest.fixture
def procs(tmp_path):
    """Real processes for one test, all stopped by process group at the end, pass or fail."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
