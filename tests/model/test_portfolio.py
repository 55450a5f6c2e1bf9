"""The one definition of fills -> positions -> PnL: execId dedupe, corrections, commissions,
trading days."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from services.model.orders import InvalidOrder, OrderSide, OrderType, TimeInForce
from services.model.portfolio import Booked, Fill, Portfolio
from services.model.trading_day import TradingDay
from services.runtime.config import ConfigError

T0 = int(dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.timezone.utc).timestamp() * 1e9)


def _fill(exec_id, qty, price, side="BUY", t=T0, owner="s", symbol="AAPL"):
    return Fill(exec_id, owner, symbol, OrderSide.parse(side), qty, price, t)


def test_the_same_exec_id_is_booked_once():
    p = Portfolio()
    assert p.book_fill(_fill("a.01", 100, 10.0)) is Booked.NEW
    assert p.book_fill(_fill("a.01", 100, 10.0)) is Booked.DUPLICATE
    assert p.quantity("s", "AAPL") == 100


def test_a_correction_replaces_and_an_older_version_is_ignored():
    p = Portfolio()
    p.book_fill(_fill("x.y.01.01", 100, 10.0))
    p.book_fill(_fill("z.01", 50, 11.0, side="SELL"))
    assert p.book_fill(_fill("x.y.01.02", 80, 10.0)) is Booked.CORRECTED
    assert p.quantity("s", "AAPL") == 30
    assert p.view("s", "AAPL", T0).realized == pytest.approx(50.0)
    assert p.book_fill(_fill("x.y.01.01", 100, 10.0)) is Booked.STALE
    assert p.quantity("s", "AAPL") == 30


def test_commissions_before_or_after_their_fill_are_netted_once():
    p = Portfolio()
    assert p.book_commission("b.01", 1.25)  # before its fill
    p.book_fill(_fill("a.01", 100, 10.0))
    p.book_fill(_fill("b.01", 100, 10.5, side="SELL"))
    assert p.book_commission("a.01", 1.0)
    assert not p.book_commission("a.01", 1.0)
    v = p.view("s", "AAPL", T0)
    assert v.commissions == pytest.approx(2.25)
    assert v.realized == pytest.approx(50.0 - 2.25) == v.realized_day


def test_daily_figures_belong_to_the_fills_trading_day():
    day = TradingDay.from_config({"trading": {"day_roll": "17:00", "zone": "America/New_York"}})
    p = Portfolio(trading_day=day)
    before_roll = int(dt.datetime(2026, 11, 30, 21, 59, tzinfo=dt.timezone.utc).timestamp() * 1e9)
    after_roll = before_roll + 120 * 10**9  # 17:01 in New York: the next trading day
    p.book_fill(_fill("a.01", 100, 10.0, t=before_roll))
    p.book_fill(_fill("b.01", 50, 9.0, side="SELL", t=before_roll))  # -50 on Nov 30
    p.book_fill(_fill("c.01", 50, 12.0, side="SELL", t=after_roll))  # +100 on Dec 1
    assert day.of(before_roll) == dt.date(2026, 11, 30)
    assert day.of(after_roll) == dt.date(2026, 12, 1)
    assert p.view("s", "AAPL", before_roll).realized_day == pytest.approx(-50.0)
    assert p.view("s", "AAPL", after_roll).realized_day == pytest.approx(100.0)
    assert p.view("s", "AAPL", after_roll).realized == pytest.approx(50.0)


def test_a_bad_trading_day_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="zone"):
        TradingDay.from_config({"trading": {"zone": "Mars/Olympus"}})
    with pytest.raises(ConfigError, match="day_roll"):
        TradingDay.from_config({"trading": {"day_roll": "5pm"}})
    with pytest.raises(ConfigError, match="unknown"):
        TradingDay.from_config({"trading": {"roll": "17:00"}})


def test_the_enums_parse_any_case_and_name_the_field_when_they_refuse():
    assert OrderSide.parse(" buy ") is OrderSide.BUY
    assert OrderType.parse("stp  lmt") is OrderType.STOP_LIMIT
    assert TimeInForce.parse("gtc") is TimeInForce.GTC
    with pytest.raises(InvalidOrder, match="side 'long' is not one of: BUY, SELL"):
        OrderSide.parse("long", "side")


@given(st.lists(st.tuples(st.integers(1, 300), st.integers(9000, 11000),
                          st.booleans()), min_size=1, max_size=30),
       st.integers(0, 29))
def test_a_correction_gives_what_booking_the_corrected_fill_alone_gives(fills, which):
    """Correcting fill ``which`` equals having booked the corrected version from the start."""
    which %= len(fills)
    corrected = (fills[which][0] + 7, fills[which][1] + 3, fills[which][2])
    direct, replaced = Portfolio(), Portfolio()
    for i, (qty, price, buy) in enumerate(fills):
        q, px, b = corrected if i == which else (qty, price, buy)
        direct.book_fill(_fill(f"e{i}.01", q, px / 100, "BUY" if b else "SELL"))
        replaced.book_fill(_fill(f"e{i}.01", qty, price / 100, "BUY" if buy else "SELL"))
    q, px, b = corrected
    replaced.book_fill(_fill(f"e{which}.02", q, px / 100, "BUY" if b else "SELL"))
    a, b_ = direct.view("s", "AAPL", T0), replaced.view("s", "AAPL", T0)
    assert a.quantity == pytest.approx(b_.quantity)
    assert a.realized == pytest.approx(b_.realized)
    assert a.avg_cost == pytest.approx(b_.avg_cost)
