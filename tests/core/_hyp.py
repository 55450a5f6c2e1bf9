# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared hypothesis settings and strategies for the core tests.

Default runs are kept small so tests/core finishes in seconds on a loaded
2-core machine; the fuzz-marked tests use FUZZ (set CORE_FUZZ_EXAMPLES to go longer).
"""
from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

QUICK = settings(
    max_examples=int(os.environ.get("CORE_HYPOTHESIS_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(
    max_examples=int(os.environ.get("CORE_FUZZ_EXAMPLES", "3000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf])

# Prices on a small grid so levels collide and price-level updates hit existing rows;
# some on a 0.01 grid (not exact in binary) to exercise the tick tolerance.
prices = st.one_of(
    st.integers(-4, 40).map(lambda k: 100.0 + 0.25 * k),
    st.integers(9990, 10010).map(lambda k: k / 100),
    BAD_FLOATS,
)
good_prices = st.one_of(
    st.integers(-4, 40).map(lambda k: 100.0 + 0.25 * k),
    st.integers(9990, 10010).map(lambda k: k / 100),
)
sizes = st.one_of(
    st.integers(0, 500).map(float),
    st.sampled_from([0.5, 1e-3, 1e9]),
    st.sampled_from([-1.0, -0.0, math.nan, math.inf]),
)
good_sizes = st.one_of(st.integers(0, 500).map(float), st.sampled_from([0.5, 1e-3]))
sides = st.one_of(st.sampled_from([0, 1]), st.integers(-2, 3))
operations = st.one_of(st.sampled_from([0, 0, 1, 2]), st.integers(-3, 5))


def depth_records(depth: int):
    positions = st.one_of(st.integers(0, depth - 1), st.integers(-2, depth + 2))
    return st.tuples(positions, operations, sides, prices, sizes)


def book_steps(depth: int):
    """One step of a random session: every kind of update, valid and invalid."""
    rows = st.lists(st.tuples(good_prices, good_sizes), max_size=depth)
    bad_rows = st.lists(st.tuples(prices, sizes), max_size=depth + 2)
    return st.one_of(
        depth_records(depth).map(lambda r: ("depth", *r)),
        depth_records(depth).map(lambda r: ("depth", *r)),
        depth_records(depth).map(lambda r: ("depth", *r)),
        st.tuples(sides, prices, sizes).map(lambda r: ("level", *r)),
        st.tuples(sides, good_prices, good_sizes).map(lambda r: ("level", *r)),
        st.tuples(st.sampled_from([0, 1]), prices, sizes).map(lambda r: ("top_side", *r)),
        st.tuples(prices, sizes, prices, sizes).map(lambda r: ("top", *r)),
        st.tuples(rows, rows).map(lambda r: ("snapshot", *r)),
        st.tuples(bad_rows, bad_rows).map(lambda r: ("snapshot", *r)),
        st.lists(depth_records(depth), max_size=12).map(lambda r: ("batch", r)),
        st.just(("reset",)),
    )


def same_float(a: float, b: float) -> bool:
    """Exact equality that treats NaN as equal to NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))
