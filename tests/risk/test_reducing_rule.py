"""The reducing-order rule (``RiskEngine._opening``, issue 15 finding 9): the order-size
limits count what an order could open; the part that closes the strategy's position is not
counted. tests/trading/test_reducing_orders.py shows it on real processes."""
from __future__ import annotations

import math

import pytest

from proto.schema import OrderIntent
from tests.risk.test_engine import _engine, _fill, _intent


@pytest.mark.parametrize("held,side,qty,approved", [
    (199, "SELL", 199, True),    # the close of the whole position
    (199, "SELL", 240, True),    # 41 beyond zero: within the limit
    (199, "SELL", 249, True),    # 50 beyond zero: the limit itself
    (199, "SELL", 250, False),   # 51 beyond zero
    (199, "SELL", 300, False),   # 101 beyond zero
    (199, "BUY", 60, False),     # adds: counted whole
    (-199, "BUY", 199, True),    # a short closed
    (-199, "BUY", 300, False),
    (0, "SELL", 60, False),      # nothing to close
])
def test_the_order_quantity_limit_counts_only_what_an_order_opens(held, side, qty, approved):
    engine, _ = _engine(max_order_quantity=50)
    if held:
        _fill(engine, abs(held), side="BUY" if held > 0 else "SELL")
    decision = engine.check(_intent(qty=qty, side=side, price=math.nan, order_type="MKT"))
    assert decision.approved is approved, decision
    if not approved:
        assert decision.reason == "max_order_quantity" and decision.text


def test_a_protective_stop_of_a_large_position_is_approved():
    engine, _ = _engine(max_order_quantity=50)
    _fill(engine, 199)
    stop = OrderIntent(strategy="s", client_order_id="stop-1", action="new", symbol="AAPL",
                       side="SELL", quantity=199, order_type="STP", stop_price=95.0)
    assert engine.check(stop).approved


def test_the_notional_limit_counts_only_what_an_order_opens_too():
    engine, _ = _engine(max_order_notional=5_000)  # 50 shares at 100
    _fill(engine, 199)
    assert engine.check(_intent(qty=199, side="SELL")).approved
    assert engine.check(_intent(qty=300, side="SELL", coid="s-2")).reason \
        == "max_order_notional"


def test_the_position_limit_still_holds_the_worst_case_of_working_closes():
    """Closes are checked against the position, not against working orders: what several
    working closes could do together is max_position's worst case."""
    engine, _ = _engine(max_order_quantity=50, max_position=250)
    _fill(engine, 199)
    for n in (1, 2):  # worst cases 0, then -199: within 250
        close = _intent(qty=199, side="SELL", coid=f"c-{n}")
        assert engine.check(close).approved
        engine.approved(close)
    third = engine.check(_intent(qty=199, side="SELL", coid="c-3"))  # -398
    assert (third.approved, third.reason) == (False, "max_position")
