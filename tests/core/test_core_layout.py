# SPDX-License-Identifier: GPL-3.0-or-later
"""The .pxd files are the table of contents: the .pyx keeps their banners, in order."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
BANNER = re.compile(r"^\s*# -- ([A-Z][A-Z ]+?)\b.*--", re.M)


@pytest.mark.parametrize("stem", ["book", "signals"])
def test_pyx_keeps_the_pxd_banners_in_the_same_order(stem):
    pxd = BANNER.findall((CORE / f"{stem}.pxd").read_text())
    pyx = BANNER.findall((CORE / f"{stem}.pyx").read_text())
    assert pxd, "no banners found"
    assert pyx == pxd
