"""Issue 13 item 4, fidelity rows F19 and F20 (docs/simulator.md): order types beyond MKT/LMT/STP/
STP LMT as a paper IB Gateway works them (TRAIL, TRAIL LIMIT, MIT, LIT: PreSubmitted with whyHeld
"trigger" until their trigger fires, then working or filled; openOrder's auxPrice,
trailStopPrice, trailingPercent and lmtPriceOffset as IB fills them), and contract details
with IB's ISIN and full order-type list. Every test runs through ibapi's EClient against a
simulator on loopback, at server version 200 (text) and the newest (protobuf)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from ibapi.order_cancel import OrderCancel

from services.simulator.contracts import ORDER_TYPES
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, OrderRecorder, order, stock
from tests.support.processes import wait_for

AAPL, MSFT = 265598, 272093
TICK = 0.01
FRAMES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "tws" / "frames.jsonl"
start_sim_v = start_sim_at_versions()     # v200 (text) and v226 (protobuf) simulators


def _client(port: int, client_id: int) -> IbapiClient:
    return IbapiClient(port, client_id, OrderRecorder()).connect()


def _statuses(c: IbapiClient, oid: int) -> list[tuple[str, str]]:
    """(status, whyHeld) of an order as the client heard them, repeats collapsed."""
    out: list[tuple[str, str]] = []
    for e in c.rec.get("status", lambda e: e[0] == oid):
        if not out or out[-1] != (e[1], e[4]):
            out.append((e[1], e[4]))
    return out


def _open_order(c: IbapiClient, oid: int):
    """The order as reqOpenOrders shows it now (its current trailing stop among others)."""
    c.rec.clear("openOrderEnd")
    before = len(c.rec.get("order"))
    c.client.reqOpenOrders()
    c.wait("openOrderEnd", deadline=60)
    return [e for e in c.rec.get("order")[before:] if e[0] == oid][-1][1]


def _last(sim, con_id: int = AAPL) -> float:
    return sim.control.quote(con_id)["last"]


# ------------------------------------------------------------------------------------ TRAIL
def test_sell_trail_ratchets_up_with_the_market_never_back_then_triggers(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 61)
    try:
        oid = c.next_order_id()
        last = _last(sim)
        c.client.placeOrder(oid, stock("AAPL"), order("SELL", 10, "TRAIL", aux=5.00))
        c.wait("status", lambda e: e[0] == oid and e[1] == "PreSubmitted" and e[4] == "trigger", deadline=60)
        first = c.rec.get("order", lambda e: e[0] == oid)[0][1]
        assert first.orderType == "TRAIL" and first.auxPrice == pytest.approx(5.00)  # the amount
        assert first.lmtPrice == 0
        # no trailStopPrice given: IB starts the stop the trailing amount below the market
        assert abs(first.trailStopPrice - (last - 5.00)) < 0.5
        stop0 = _open_order(c, oid).trailStopPrice
        # the market rises $10: the stop follows it up
        sim.control.shift_price(AAPL, 1000)
        wait_for(lambda: _open_order(c, oid).trailStopPrice >= stop0 + 9, 60, what="the stop to rise")
        stop1 = _open_order(c, oid).trailStopPrice
        assert abs(stop1 - (_last(sim) - 5.00)) < 0.5
        # it falls $3 (still above the stop): the stop stays where it was, never back
        sim.control.shift_price(AAPL, -300)
        wait_for(lambda: _last(sim) < stop1 + 3.5, 60, what="the market to fall")
        stop2 = _open_order(c, oid).trailStopPrice
        assert stop1 <= stop2 < stop1 + 0.5
        assert _statuses(c, oid)[-1] == ("PreSubmitted", "trigger")
        # it falls through the stop: triggered (Submitted, no whyHeld), sold at the market
        sim.control.shift_price(AAPL, -1000)
        c.wait("status", lambda e: e[0] == oid and e[1] == "Filled", deadline=60)
        assert _statuses(c, oid) == [("PreSubmitted", "trigger"), ("Submitted", ""), ("Filled", "")]
        (_, _, ex), = c.rec.get("execDetails", lambda e: e[2].orderId == oid)
        assert ex.side == "SLD" and ex.shares == 10 and ex.price <= stop2
        # an openOrder came with the trigger (as IB's TRAIL capture shows), then the Filled one
        assert [e[2] for e in c.rec.get("order", lambda e: e[0] == oid)][-2:] == ["Submitted", "Filled"]
    finally:
        c.disconnect()


def test_trailing_percent_with_a_far_initial_stop_fills_at_once_as_in_ibs_capture(start_sim_v):
    """The capture api_tif_attribute_matrix_aapl: SELL TRAIL, trailingPercent 1.5, initial stop
    2000 (10 x the quote anchor): PreSubmitted (trigger), Submitted, filled."""
    sim = start_sim_v()
    c = _client(sim.port, 62)
    try:
        oid = c.next_order_id()
        o = order("SELL", 1, "TRAIL")
        o.trailingPercent, o.trailStopPrice = 1.5, 2000.0
        c.client.placeOrder(oid, stock("AAPL"), o)
        c.wait("status", lambda e: e[0] == oid and e[1] == "Filled", deadline=60)
        assert _statuses(c, oid) == [("PreSubmitted", "trigger"), ("Submitted", ""), ("Filled", "")]
        got = c.rec.get("order", lambda e: e[0] == oid)[0][1]
        assert got.trailingPercent == pytest.approx(1.5)
        assert got.trailStopPrice == pytest.approx(2000.0)
        assert got.auxPrice == 0 and got.lmtPrice == 0          # "0", as IB wrote them
        assert c.rec.get("commission")
    finally:
        c.disconnect()


def test_buy_trail_limit_trails_down_and_reports_its_stop_offset_and_limit(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 63)
    try:
        oid = c.next_order_id()
        o = order("BUY", 1, "TRAIL LIMIT", aux=1.00)
        o.trailStopPrice, o.lmtPriceOffset = 2000.0, 0.05     # the G200 TRAIL LIMIT frame's values
        c.client.placeOrder(oid, stock("AAPL"), o)
        c.wait("status", lambda e: e[0] == oid and e[1] == "PreSubmitted" and e[4] == "trigger", deadline=60)
        # a BUY trailing stop only moves down: from 2000 to the market plus the amount at once
        got = _open_order(c, oid)
        assert got.orderType == "TRAIL LIMIT" and got.auxPrice == pytest.approx(1.00)
        assert abs(got.trailStopPrice - (_last(sim) + 1.00)) < 0.5
        assert got.lmtPriceOffset == pytest.approx(0.05)
        assert got.lmtPrice == pytest.approx(got.trailStopPrice + 0.05)   # as IB: stop + offset
        c.client.cancelOrder(oid, OrderCancel())
        c.wait("status", lambda e: e[0] == oid and e[1] == "Cancelled", deadline=60)
        # completedOrder carries them too (the G200 frame: trailStopPrice, lmtPriceOffset)
        c.client.reqCompletedOrders(False)
        c.wait("completedOrdersEnd", deadline=60)
        done = [e[1] for e in c.rec.get("completedOrder") if e[1].orderType == "TRAIL LIMIT"]
        assert done, "no completed TRAIL LIMIT order"
        # the stop at the cancel: it may have trailed further down since, never up
        assert got.trailStopPrice - 0.5 < done[-1].trailStopPrice <= got.trailStopPrice + 1e-9
        assert done[-1].lmtPriceOffset == pytest.approx(0.05)
        assert done[-1].lmtPrice == pytest.approx(done[-1].trailStopPrice + 0.05)
        assert done[-1].auxPrice == pytest.approx(1.00)
    finally:
        c.disconnect()


def test_sell_trail_limit_triggers_into_a_limit_below_its_stop(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 64)
    try:
        oid = c.next_order_id()
        o = order("SELL", 5, "TRAIL LIMIT", aux=2.00)
        o.lmtPriceOffset = 0.50
        c.client.placeOrder(oid, stock("AAPL"), o)
        c.wait("status", lambda e: e[0] == oid and e[4] == "trigger", deadline=60)
        got = _open_order(c, oid)
        assert got.lmtPrice == pytest.approx(got.trailStopPrice - 0.50)
        sim.control.shift_price(AAPL, -1000)
        c.wait("status", lambda e: e[0] == oid and e[1] == "Submitted", deadline=60)
        # triggered into a SELL limit at stop - 0.50: the market fell far below it, so it rests
        after = _open_order(c, oid)
        assert after.lmtPrice == pytest.approx(got.lmtPrice, abs=0.5)
        assert not c.rec.get("execDetails", lambda e: e[2].orderId == oid)
        # the market comes back up through the limit: filled at the limit or better
        sim.control.shift_price(AAPL, 1000)
        c.wait("status", lambda e: e[0] == oid and e[1] == "Filled", deadline=60)
        assert all(e[2].price >= after.lmtPrice - 1e-9
                   for e in c.rec.get("execDetails", lambda e: e[2].orderId == oid))
    finally:
        c.disconnect()


# ------------------------------------------------------------------------------------ MIT / LIT
def test_touch_orders_wait_for_their_trigger(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 65)
    try:
        last = _last(sim, MSFT)
        mit = c.next_order_id()                       # SELL MIT above the market
        c.client.placeOrder(mit, stock("MSFT"), order("SELL", 10, "MIT", aux=round(last + 3, 2)))
        lit = c.next_order_id()                       # BUY LIT below the market
        c.client.placeOrder(lit, stock("MSFT"), order("BUY", 10, "LIT", aux=round(last - 3, 2),
                                                      lmt=round(last - 3, 2)))
        for oid in (mit, lit):
            c.wait("status", lambda e, oid=oid: e[0] == oid and e[1] == "PreSubmitted" and e[4] == "trigger",
                   deadline=60)
        got = c.rec.get("order", lambda e: e[0] == lit)[0][1]
        assert got.auxPrice == pytest.approx(round(last - 3, 2))
        assert got.lmtPrice == pytest.approx(round(last - 3, 2))
        assert not c.rec.get("execDetails")
        # touched from below: the SELL MIT becomes a market order and fills
        sim.control.shift_price(MSFT, 500)
        c.wait("status", lambda e: e[0] == mit and e[1] == "Filled", deadline=60)
        assert _statuses(c, mit) == [("PreSubmitted", "trigger"), ("Submitted", ""), ("Filled", "")]
        assert _statuses(c, lit)[-1] == ("PreSubmitted", "trigger")
        # touched from above: the BUY LIT becomes a limit order, filled at its limit or better
        sim.control.shift_price(MSFT, -1000)
        c.wait("status", lambda e: e[0] == lit and e[1] == "Filled", deadline=60)
        assert all(e[2].price <= round(last - 3, 2) + 1e-9
                   for e in c.rec.get("execDetails", lambda e: e[2].orderId == lit))
    finally:
        c.disconnect()


def test_invalid_and_unsimulated_order_types(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 66)
    try:
        no_amount = c.next_order_id()                 # TRAIL with neither amount nor percent
        c.client.placeOrder(no_amount, stock("AAPL"), order("SELL", 1, "TRAIL"))
        c.wait_error(201, no_amount, deadline=60)
        both = c.next_order_id()                      # amount and percent: mutually exclusive
        o = order("SELL", 1, "TRAIL", aux=1.0)
        o.trailingPercent = 1.0
        c.client.placeOrder(both, stock("AAPL"), o)
        c.wait_error(201, both, deadline=60)
        no_offset = c.next_order_id()                 # TRAIL LIMIT without its limit offset
        c.client.placeOrder(no_offset, stock("AAPL"), order("SELL", 1, "TRAIL LIMIT", aux=1.0))
        c.wait_error(201, no_offset, deadline=60)
        no_trigger = c.next_order_id()                # MIT without its trigger price
        c.client.placeOrder(no_trigger, stock("AAPL"), order("BUY", 1, "MIT"))
        c.wait_error(201, no_trigger, deadline=60)
        off_tick = c.next_order_id()
        c.client.placeOrder(off_tick, stock("AAPL"), order("SELL", 1, "TRAIL", aux=1.005))
        c.wait_error(110, off_tick, deadline=60)
        rel = c.next_order_id()                       # known to IB, not simulated: 201
        c.client.placeOrder(rel, stock("AAPL"), order("BUY", 1, "REL", aux=0.01))
        c.wait_error(201, rel, deadline=60)
        unknown = c.next_order_id()                   # unknown to IB: its 321 (F18)
        c.client.placeOrder(unknown, stock("AAPL"), order("BUY", 1, "NOSUCH"))
        c.wait_error(321, unknown, deadline=60)
        assert not c.rec.get("status", lambda e: e[0] in (no_amount, both, no_offset, no_trigger,
                                                          off_tick, rel, unknown))
    finally:
        c.disconnect()


# ------------------------------------------------------------------------------------ F20
def _captured_stock_details() -> list[str] | None:
    """The G200 contractDetails frame of AAPL, if the shared captures are here."""
    if not FRAMES.is_file():
        return None
    for line in FRAMES.read_text().splitlines():
        frame = json.loads(line)
        if frame["source"] == "G200" and frame["label"] == "contractDetails AAPL STK":
            return frame["fields"]
    return None


def test_contract_details_carry_the_isin_and_ibs_order_type_list(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 67)
    try:
        expected = {"AAPL": "US0378331005", "MSFT": "US5949181045"}
        for n, symbol in enumerate(expected, start=1):
            c.client.reqContractDetails(n, stock(symbol))
            c.wait("contractDetailsEnd", lambda e, n=n: e[0] == n, deadline=60)
            (_, cd), = c.rec.get("contractDetails", lambda e, n=n: e[0] == n)
            assert [(t.tag, t.value) for t in cd.secIdList] == [("ISIN", expected[symbol])]
            assert cd.orderTypes == ORDER_TYPES["STK"]
            for kind in ("TRAIL", "TRAILLMT", "MIT", "LIT", "STPLMT", "WHATIF"):
                assert kind in cd.orderTypes.split(",")
            # minSize, sizeIncrement, suggestedSizeIncrement: IB's fractional-share rules
            assert [str(cd.minSize), str(cd.sizeIncrement), str(cd.suggestedSizeIncrement)] \
                == ["0.0001", "0.0001", "100"]
        captured = _captured_stock_details()
        if captured is not None:                      # the string IB sent, field for field
            assert ORDER_TYPES["STK"] == captured[16]
            assert captured[31:34] == ["1", "ISIN", "US0378331005"]
            assert captured[-4:-1] == ["0.0001", "0.0001", "100"]
        # a future: IB's CME list, no ISIN (the P176 capture's secIdList is empty)
        fut = stock("ES")
        fut.secType, fut.exchange, fut.lastTradeDateOrContractMonth = "FUT", "CME", "202612"
        c.client.reqContractDetails(9, fut)
        c.wait("contractDetailsEnd", lambda e: e[0] == 9, deadline=60)
        (_, cd), = c.rec.get("contractDetails", lambda e: e[0] == 9)
        assert cd.orderTypes == ORDER_TYPES["FUT"] and not cd.secIdList
        assert [str(cd.minSize), str(cd.sizeIncrement), str(cd.suggestedSizeIncrement)] \
            == ["1", "1", "1"]                        # the P176 future's
    finally:
        c.disconnect()


def test_a_fraction_of_a_share_is_refused_through_the_api(start_sim_v):
    """Contract details say 0.0001 shares, but an API order for a fraction of a share gets 321
    "Order size does not conform to market rule." (vnpy/vnpy_ib issue 75) and is never an
    order; a whole number of shares works."""
    sim = start_sim_v()
    c = _client(sim.port, 68)
    try:
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 0.5, "LMT", 1.00))
        c.wait_error(321, oid, deadline=60)
        (err,) = [e for e in c.errors() if e[0] == oid]
        assert "Order size does not conform to market rule" in err[2], err
        whole = oid + 1
        c.client.placeOrder(whole, stock("AAPL"), order("BUY", 3, "LMT", 1.00))
        wait_for(lambda: ("Submitted", "") in _statuses(c, whole), deadline=60,
                 what="the whole-share order working")
        assert not _statuses(c, oid) and not c.rec.get("order", lambda e: e[0] == oid)
        c.client.cancelOrder(whole, OrderCancel())
    finally:
        c.disconnect()
