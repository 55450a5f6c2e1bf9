# SPDX-License-Identifier: GPL-3.0-or-later
"""core.signals: named scenarios, and property tests against the plain-Python reference.

Tolerances (stated in core/signals.pyx): EMA, imbalance and microprice use the same
arithmetic as the reference and must match to 1e-12 relative (imbalance/microprice
exactly); with M = max|x| over the last 2 * window inputs, rolling mean within
1e-12 * window * M and rolling variance within 1e-12 * M**2; z-score compared where
the window is well conditioned (variance > 1e-6 * M**2); VWAP and realized volatility within 1e-9 relative.
"""
from __future__ import annotations

import math
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.book import OrderBook
from core.signals import EMA, VWAP, Imbalance, Microprice, RealizedVolatility, RollingMean, RollingStd, ZScore
from tests.core import reference as ref
from tests.core._hyp import FUZZ, QUICK, same_float

NAN = math.nan

values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(-100_000, 100_000).map(lambda k: 100.0 + k / 100),
    st.sampled_from([NAN, math.inf, -math.inf]),
)
positive_prices = st.one_of(
    st.floats(1e-3, 1e6),
    st.integers(9_000, 11_000).map(lambda k: k / 100),
    st.sampled_from([NAN, math.inf, 0.0, -1.0]),
)
volumes = st.one_of(st.integers(0, 10_000).map(float), st.floats(0, 1e6), st.sampled_from([-1.0, NAN, math.inf]))
sizes = st.one_of(st.integers(0, 1000).map(float), st.sampled_from([-1.0, NAN, math.inf]))


def close(a, b, rel=1e-12, abs_=0.0):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def window_scale(xs, window):
    # The sliding state was last recomputed exactly at most `window` slides ago, so
    # rounding error scales with the largest input of the last 2 * window.
    finite = [abs(x) for x in xs if math.isfinite(x)][-2 * window:]
    return max(finite, default=0.0) + 1e-300


def check_rolling(xs, window, ddof):
    mean, std, z = RollingMean(window), RollingStd(window, ddof), ZScore(window, ddof)
    rmean, rstd, rz = ref.RefRollingMean(window), ref.RefRollingStd(window, ddof), ref.RefZScore(window, ddof)
    for i, x in enumerate(xs):
        s = window_scale(xs[: i + 1], window)
        m, rm = mean.update(x), rmean.update(x)
        assert close(m, rm, abs_=1e-12 * window * s), (i, m, rm)
        v, rv = std.update(x), rstd.update(x)
        assert math.isnan(v) == math.isnan(rv)
        if not math.isnan(v):
            assert abs(v * v - rv * rv) <= 1e-12 * s * s, (i, v, rv)
        zz, rzz = z.update(x), rz.update(x)
        if not math.isnan(rv) and rv * rv > 1e-6 * s * s:
            assert close(zz, rzz, rel=1e-5, abs_=1e-5), (i, zz, rzz)
        elif math.isnan(rv):
            assert math.isnan(zz)


def check_batch_equals_scalar(make, *columns):
    n = len(columns[0])
    out = array("d", [0.0] * n)
    assert make().update_batch(*[array("d", c) for c in columns], out) == n
    one = make()
    for i in range(n):
        assert same_float(out[i], one.update(*[c[i] for c in columns])), i


# -- property tests against the reference ----------------------------------------------

@QUICK
@given(st.lists(values, max_size=300), st.integers(2, 40), st.integers(0, 1))
def test_rolling_mean_std_zscore_match_two_pass_reference(xs, window, ddof):
    check_rolling(xs, window, ddof)


@QUICK
@given(st.lists(values, max_size=200), st.one_of(st.floats(0.001, 1.0), st.none()), st.integers(1, 50),
       st.integers(1, 5))
def test_ema_matches_reference(xs, alpha, span, min_periods):
    kw = {"alpha": alpha} if alpha is not None else {"span": span}
    e, r = EMA(min_periods=min_periods, **kw), ref.RefEMA(min_periods=min_periods, **kw)
    for x in xs:
        assert close(e.update(x), r.update(x))


@QUICK
@given(st.lists(st.tuples(values, volumes), max_size=200), st.integers(0, 30))
def test_vwap_matches_reference(trades, window):
    v, r = VWAP(window), ref.RefVWAP(window)
    for p, q in trades:
        assert close(v.update(p, q), r.update(p, q), rel=1e-9, abs_=1e-9 * max(1.0, abs(p) if math.isfinite(p) else 1))


@QUICK
@given(st.lists(positive_prices, max_size=300), st.integers(1, 40), st.sampled_from([1.0, 252.0, 98280.0]))
def test_realized_volatility_matches_reference(prices, window, ppy):
    v, r = RealizedVolatility(window, ppy), ref.RefRealizedVolatility(window, ppy)
    for p in prices:
        assert close(v.update(p), r.update(p), rel=1e-9, abs_=1e-12)


@QUICK
@given(st.lists(st.tuples(values, sizes, values, sizes), max_size=100))
def test_imbalance_and_microprice_match_reference_exactly(quotes):
    im, rim, mp, rmp = Imbalance(), ref.RefImbalance(), Microprice(), ref.RefMicroprice()
    for bp, bs, ap, a_s in quotes:
        assert same_float(im.update(bs, a_s), rim.update(bs, a_s))
        assert same_float(mp.update(bp, bs, ap, a_s), rmp.update(bp, bs, ap, a_s))


@QUICK
@given(st.lists(values, max_size=120), st.lists(volumes, max_size=120), st.integers(2, 20))
def test_batch_path_equals_scalar_path_exactly(xs, qs, window):
    n = min(len(xs), len(qs))
    xs, qs = xs[:n], qs[:n]
    check_batch_equals_scalar(lambda: EMA(span=window), xs)
    check_batch_equals_scalar(lambda: RollingMean(window), xs)
    check_batch_equals_scalar(lambda: RollingStd(window), xs)
    check_batch_equals_scalar(lambda: ZScore(window), xs)
    check_batch_equals_scalar(lambda: RealizedVolatility(window), [abs(x) for x in xs])
    check_batch_equals_scalar(lambda: VWAP(window), xs, qs)
    check_batch_equals_scalar(lambda: VWAP(0), xs, qs)
    check_batch_equals_scalar(Imbalance, qs, xs)
    check_batch_equals_scalar(Microprice, xs, qs, xs, qs)


@pytest.mark.fuzz
@FUZZ
@given(st.lists(values, max_size=3000), st.integers(2, 200), st.integers(0, 1))
def test_fuzz_long_rolling_streams_match_reference(xs, window, ddof):
    check_rolling(xs, window, ddof)


# -- named scenarios -----------------------------------------------------------------

def test_rolling_indicators_are_nan_until_window_is_full():
    for ind in (RollingMean(3), RollingStd(3), ZScore(3)):
        outs = [ind.update(x) for x in (1.0, 2.0, 4.0)]
        assert math.isnan(outs[0]) and math.isnan(outs[1]) and not math.isnan(outs[2])
    v = VWAP(3)
    assert math.isnan(v.update(10, 1)) and math.isnan(v.update(11, 1)) and v.update(12, 2) == 11.25


def test_ema_is_seeded_with_first_input_and_honours_min_periods():
    e = EMA(alpha=0.5)
    assert [e.update(x) for x in (10.0, 20.0, 20.0)] == [10.0, 15.0, 17.5]
    e = EMA(span=3, min_periods=2)
    assert math.isnan(e.update(10.0)) and e.update(20.0) == 15.0


def test_non_finite_inputs_are_skipped_and_counted():
    m = RollingMean(2)
    m.update(1.0)
    m.update(3.0)
    assert m.update(NAN) == 2.0 and m.update(math.inf) == 2.0 and m.skipped == 2
    assert m.update(5.0) == 4.0  # the NaN never entered the window
    rv = RealizedVolatility(1)
    rv.update(100.0)
    assert math.isnan(rv.update(-5.0)) and rv.skipped == 1


def test_zscore_is_nan_for_a_constant_window():
    z = ZScore(4)
    assert all(math.isnan(z.update(7.0)) for _ in range(10))
    assert z.update(9.0) == pytest.approx((9 - 7.5) / math.sqrt(((3 * 0.25) + 2.25) / 3))


def test_session_vwap_accumulates_until_reset_starts_a_new_session():
    v = VWAP()
    assert math.isnan(v.update(10.0, 0.0))  # no volume yet
    v.update(10.0, 1.0)
    assert v.update(13.0, 2.0) == 12.0
    v.reset()
    assert math.isnan(v.value) and v.update(20.0, 5.0) == 20.0


def test_realized_volatility_needs_window_plus_one_prices():
    rv = RealizedVolatility(2, periods_per_year=4.0)
    assert math.isnan(rv.update(100.0)) and math.isnan(rv.update(101.0))
    r1, r2 = math.log(101 / 100), math.log(99 / 101)
    assert rv.update(99.0) == pytest.approx(math.sqrt(4.0 * (r1 * r1 + r2 * r2) / 2))


def test_imbalance_and_microprice_from_a_book_match_its_queries():
    book = OrderBook(5)
    book.apply_snapshot(bids=[(100, 10), (99, 30)], asks=[(101, 30), (102, 5)])
    assert Imbalance().update_book(book, 2) == book.imbalance(2)
    assert Microprice().update_book(book) == book.microprice() == (100 * 30 + 101 * 10) / 40
    assert Imbalance().update(10, 30) == book.imbalance(1) == -0.5


def test_long_stream_with_large_offset_does_not_drift():
    # 200k updates around 1e6 with tiny variance: the periodic exact recompute keeps the error bounded.
    std, rstd = RollingStd(50), ref.RefRollingStd(50)
    xs = [1e6 + ((i * 7919) % 101) / 100 for i in range(200_000)]
    out = array("d", [0.0] * len(xs))
    std.update_batch(array("d", xs), out)
    for x in xs[-50:]:
        rstd.update(x)
    assert abs(out[-1] ** 2 - rstd.value ** 2) <= 1e-12 * (1e6 ** 2)
    assert out[-1] == pytest.approx(rstd.value, rel=1e-6)


def test_batch_rejects_short_output_and_mismatched_inputs():
    with pytest.raises(ValueError, match="slots"):
        EMA(span=3).update_batch(array("d", [1.0, 2.0]), array("d", [0.0]))
    with pytest.raises(ValueError, match="lengths differ"):
        VWAP().update_batch(array("d", [1.0]), array("d", [1.0, 2.0]), array("d", [0.0, 0.0]))


def test_batch_accepts_read_only_input_buffers():
    raw = bytes(array("d", [1.0, 2.0, 3.0]))
    out = array("d", [0.0] * 3)
    RollingMean(2).update_batch(memoryview(raw).cast("d"), out)
    assert list(out)[1:] == [1.5, 2.5]


def test_constructors_reject_bad_parameters():
    for bad in (lambda: EMA(), lambda: EMA(alpha=0.5, span=3), lambda: EMA(alpha=1.5), lambda: RollingMean(0),
                lambda: RollingStd(1, ddof=1), lambda: VWAP(-1), lambda: RealizedVolatility(5, 0.0)):
        with pytest.raises(ValueError):
            bad()
