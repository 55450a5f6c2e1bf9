from __future__ import annotations

import pytest

from tests.support.fleet import Fleet


@pytest.fixture
def fleet(procs, tmp_path):
    f = Fleet(procs, tmp_path)
    try:
        yield f
    finally:
        f.close()
