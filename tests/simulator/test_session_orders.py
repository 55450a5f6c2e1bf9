"""Trading sessions on the order side and in market data (fidelity row F22), with the clock
control: `--sessions on` holds orders outside their hours (PreSubmitted, warning 399), cancels
DAY orders at the close and GTD orders at their time, keeps GTC orders, fills OPG orders at the
open and keeps the market quiet out of hours. Every test jumps the simulated clock across an
open or a close ({"cmd": "clock", "at": ..., "speed": ...}), so each takes seconds.
docs/simulator.md, "Trading sessions" and row F22."""
from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.simulator.broker import Broker
from services.simulator.config import SimConfig
from services.simulator.contracts import ContractQuery
from services.simulator.orders import OrderRequest
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, Recorder, future, order, stock
from tests.support.processes import wait_for

AAPL, ES_Z6 = 265598, 495512563
NY = ZoneInfo("America/New_York")
BY_SYSTEM = "Cancelled by System:\n"
OUTSIDE_RTH_IGNORED = ("Order Event Warning:Attribute 'Outside Regular Trading Hours' is ignored "
                       "based on the order type and destination. PlaceOrder is now being processed.")

start_sim_v = start_sim_at_versions()     # v200 (text) and v226 (protobuf) simulators


def ny(*args: int) -> float:
    return datetime(*args, tzinfo=NY).timestamp()


# a plain week: Saturday 2026-04-11, Monday 2026-04-13 and Tuesday 2026-04-14 are no holidays
SATURDAY = ny(2026, 4, 11, 12, 0)
MONDAY = (2026, 4, 13)
TUESDAY = (2026, 4, 14)


def held_until(action: str, qty: int, when: str) -> str:
    """IB's warning 399 for an AAPL order held until `when` (capture at v225, sessions.py)."""
    return (f"Order Message:\n{action} {qty} AAPL NASDAQ.NMS\n"
            f"Warning: Your order will not be placed at the exchange until {when} US/Eastern.")


class StatusRecorder(Recorder):
    """Also keeps orderStatus's whyHeld and every openOrder's OrderState."""

    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId, parentId,  # noqa: N802
                    lastFillPrice, clientId, whyHeld, mktCapPrice):
        super().orderStatus(orderId, status, filled, remaining, avgFillPrice, permId, parentId,
                            lastFillPrice, clientId, whyHeld, mktCapPrice)
        self._add("status", orderId, status, whyHeld)


def _client(port: int, client_id: int) -> IbapiClient:
    c = IbapiClient(port, client_id)
    c.rec = StatusRecorder()
    from ibapi.client import EClient
    c.client = EClient(c.rec)
    return c.connect()


def _place(c: IbapiClient, contract, o) -> int:
    oid = c.next_order_id()
    c.client.placeOrder(oid, contract, o)
    return oid


def _outside(o, on: bool = True):
    o.outsideRth = on
    return o


def _round_trip(c: IbapiClient) -> None:
    """reqAllOpenOrders answered: everything the simulator sent before it has arrived."""
    c.rec.clear("openOrderEnd")
    c.client.reqAllOpenOrders()
    c.wait("openOrderEnd", deadline=60)


def _statuses(c: IbapiClient, oid: int) -> list[str]:
    return [e[1] for e in c.rec.get("status", lambda e: e[0] == oid)]


def _wait_status(c: IbapiClient, oid: int, status: str, deadline: float = 30.0) -> None:
    c.wait("status", lambda e: e[0] == oid and e[1] == status, deadline=deadline)


def _orders(sim) -> dict[int, dict]:
    return {o["order_id"]: o for o in sim.control.orders()}


def _fill_times(sim, oid: int) -> list[float]:
    return [f["time"] for f in sim.control.fills() if f["order_id"] == oid]


def _held(c: IbapiClient, oid: int, text: str) -> None:
    """PreSubmitted with an empty whyHeld, then warning 399 under the order's id."""
    _wait_status(c, oid, "PreSubmitted")
    assert c.wait_error(399, oid)[2] == text
    assert all(e[2] == "" for e in c.rec.get("status", lambda e: e[0] == oid))


# ---------------------------------------------------------------------------- held on a Saturday
def test_order_placed_on_saturday_is_held_then_works_at_monday_open(start_sim_v):
    sim = start_sim_v("--sessions", "on", "--start-time", str(SATURDAY))
    c = _client(sim.port, 51)
    try:
        mkt = _place(c, stock("AAPL"), order("BUY", 10, "MKT"))
        rest = _place(c, stock("AAPL"), order("BUY", 10, "LMT", lmt=100.00))
        ext = _place(c, stock("AAPL"), _outside(order("BUY", 10, "LMT", lmt=250.00)))
        mkt_ext = _place(c, stock("AAPL"), _outside(order("BUY", 10, "MKT")))
        _held(c, mkt, held_until("BUY", 10, "2026-04-13 09:30:00"))
        _held(c, rest, held_until("BUY", 10, "2026-04-13 09:30:00"))
        # outsideRth: a limit order works from the pre-market (04:00)
        _held(c, ext, held_until("BUY", 10, "2026-04-13 04:00:00"))
        # a market order cannot use outsideRth: IB says so (2109) and holds it to 09:30
        assert c.wait_error(2109, mkt_ext)[2] == OUTSIDE_RTH_IGNORED
        _held(c, mkt_ext, held_until("BUY", 10, "2026-04-13 09:30:00"))
        time.sleep(0.5)
        _round_trip(c)
        for oid in (mkt, rest, ext, mkt_ext):
            assert set(_statuses(c, oid)) == {"PreSubmitted"}
        assert {o["status"] for o in _orders(sim).values()} == {"PreSubmitted"}
        assert sim.control.fills() == []

        # Monday 03:59:59 -> the pre-market opens a second later: only the outsideRth limit works
        sim.control.clock(at=ny(*MONDAY, 3, 59, 59))
        _wait_status(c, ext, "Filled")
        assert min(_fill_times(sim, ext)) >= ny(*MONDAY, 4, 0)
        time.sleep(0.3)
        _round_trip(c)
        for oid in (mkt, rest, mkt_ext):
            assert set(_statuses(c, oid)) == {"PreSubmitted"}

        # 09:29:59 -> the regular open: the market orders fill, the resting limit is Submitted
        sim.control.clock(at=ny(*MONDAY, 9, 29, 59))
        _wait_status(c, mkt, "Filled")
        _wait_status(c, mkt_ext, "Filled")
        _wait_status(c, rest, "Submitted")
        for oid in (mkt, mkt_ext):
            assert min(_fill_times(sim, oid)) >= ny(*MONDAY, 9, 30)
            assert "Submitted" not in _statuses(c, oid)      # held, then its fill
        assert _orders(sim)[rest]["status"] == "Submitted"
    finally:
        c.disconnect()


# ---------------------------------------------------------------------------- the close
def test_day_order_cancelled_at_the_close_gtc_kept(start_sim):
    sim = start_sim("--sessions", "on", "--start-time", str(ny(*MONDAY, 10, 0)))
    c = _client(sim.port, 52)
    try:
        day = _place(c, stock("AAPL"), order("BUY", 10, "LMT", lmt=100.00, ref="day"))
        gtc = _place(c, stock("AAPL"), order("BUY", 10, "LMT", lmt=100.00, tif="GTC", ref="gtc"))
        late = _place(c, stock("AAPL"), _outside(order("SELL", 10, "LMT", lmt=300.00, ref="late")))
        for oid in (day, gtc, late):
            _wait_status(c, oid, "Submitted")
        assert c.errors(399) == []

        # the regular close: the DAY order is cancelled by the system (Cancelled, then 202)
        got = sim.control.clock(at=ny(*MONDAY, 15, 59, 59))
        assert got["hours"][str(AAPL)] == {"rth": True, "ext": True}
        _wait_status(c, day, "Cancelled")
        assert c.wait_error(202, day)[2] == "Order Canceled - reason:"
        _round_trip(c)
        status = {oid: o["status"] for oid, o in _orders(sim).items()}
        assert status == {day: "Cancelled", gtc: "Submitted", late: "Submitted"}
        completed = c.completed_orders()
        assert (completed["day"][2].status, completed["day"][2].completedStatus) == ("Cancelled", BY_SYSTEM)
        assert "gtc" not in completed and "late" not in completed

        # after hours a GTC order without outsideRth does not work, even when crossed
        sim.control.clock(at=ny(*MONDAY, 16, 30))
        sim.control.shift_price(AAPL, -12_000)                 # $120 down: far through 100.00
        time.sleep(1.0)
        _round_trip(c)
        assert _orders(sim)[gtc]["filled"] == 0 and "Filled" not in _statuses(c, gtc)

        # the end of the extended hours: the outsideRth DAY order goes too; GTC stays
        sim.control.clock(at=ny(*MONDAY, 19, 59, 59))
        _wait_status(c, late, "Cancelled")
        c.wait_error(202, late)
        assert c.completed_orders()["late"][2].completedStatus == BY_SYSTEM
        assert _orders(sim)[gtc]["status"] == "Submitted"

        # Tuesday's open: the GTC order works again and fills
        sim.control.clock(at=ny(*TUESDAY, 9, 29, 59))
        _wait_status(c, gtc, "Filled")
        assert min(_fill_times(sim, gtc)) >= ny(*TUESDAY, 9, 30)
    finally:
        c.disconnect()


# ---------------------------------------------------------------------------- GTD
def test_gtd_order_expires_at_its_time(start_sim):
    sim = start_sim("--sessions", "on", "--start-time", str(ny(*MONDAY, 10, 0)))
    c = _client(sim.port, 53)
    try:
        soon = order("BUY", 10, "LMT", lmt=100.00, tif="GTD", ref="soon")
        soon.goodTillDate = "20260413 10:00:30 US/Eastern"
        later = order("BUY", 10, "LMT", lmt=100.00, tif="GTD", ref="later")
        later.goodTillDate = "20260413-14:01:30"                 # UTC: 10:01:30 US/Eastern
        bad = order("BUY", 10, "LMT", lmt=100.00, tif="GTD")
        bad.goodTillDate = "next week"
        a = _place(c, stock("AAPL"), soon)
        b = _place(c, stock("AAPL"), later)
        _wait_status(c, a, "Submitted")
        _wait_status(c, b, "Submitted")
        x = _place(c, stock("AAPL"), bad)
        assert "Invalid goodTillDate" in c.wait_error(201, x)[2]

        sim.control.clock(speed=30)                            # 30 simulated seconds a second
        _wait_status(c, a, "Cancelled")
        assert c.wait_error(202, a)[2] == "Order Canceled - reason:"
        now = sim.control.clock()["sim_time"]
        assert ny(*MONDAY, 10, 0, 30) <= now < ny(*MONDAY, 10, 1, 30)
        assert _orders(sim)[b]["status"] == "Submitted"
        _wait_status(c, b, "Cancelled")
        assert sim.control.clock()["sim_time"] >= ny(*MONDAY, 10, 1, 30)
        completed = c.completed_orders()
        assert completed["soon"][2].completedStatus == BY_SYSTEM
        assert completed["later"][2].completedStatus == BY_SYSTEM
    finally:
        c.disconnect()


# ---------------------------------------------------------------------------- OPG
def test_opg_order_filled_at_the_open(start_sim):
    sim = start_sim("--sessions", "on", "--start-time", str(SATURDAY))
    c = _client(sim.port, 54)
    try:
        moo = _place(c, stock("AAPL"), order("BUY", 10, "MKT", tif="OPG"))
        loo = _place(c, stock("AAPL"), order("BUY", 10, "LMT", lmt=1.00, tif="OPG"))
        _held(c, moo, held_until("BUY", 10, "2026-04-13 09:30:00"))
        _held(c, loo, held_until("BUY", 10, "2026-04-13 09:30:00"))
        # the pre-market does not work them
        sim.control.clock(at=ny(*MONDAY, 9, 0))
        time.sleep(0.3)
        _round_trip(c)
        assert {o["status"] for o in _orders(sim).values()} == {"PreSubmitted"}
        sim.control.clock(at=ny(*MONDAY, 9, 29, 59))
        _wait_status(c, moo, "Filled")
        assert _fill_times(sim, moo) == [ny(*MONDAY, 9, 30)]      # in the opening auction
        # a limit the auction does not reach is cancelled by the system
        _wait_status(c, loo, "Cancelled")
        c.wait_error(202, loo)
        assert _orders(sim)[loo]["filled"] == 0
    finally:
        c.disconnect()


# ---------------------------------------------------------------------------- market data
def _count(c: IbapiClient, req_ids: set[int]) -> int:
    n = 0
    for name in ("tickPrice", "tickSize", "tbtLast", "tbtBidAsk", "depth", "realtimeBar"):
        n += len(c.rec.get(name, lambda e: e[0] in req_ids))
    return n


def test_no_market_data_outside_trading_hours(start_sim):
    sim = start_sim("--sessions", "on", "--start-time", str(SATURDAY))
    c = _client(sim.port, 55)
    try:
        c.client.reqMktData(1, stock("AAPL"), "", False, False, [])
        c.client.reqTickByTickData(2, stock("AAPL"), "AllLast", 0, False)
        c.client.reqTickByTickData(3, stock("AAPL"), "BidAsk", 0, False)
        c.client.reqMktDepth(4, stock("AAPL"), 5, False, [])
        c.client.reqRealTimeBars(5, stock("AAPL"), 5, "TRADES", False, [])
        c.client.reqMktData(6, future("202612"), "", False, False, [])
        # the first answers: the book's last values (bid, ask, last, depth rows)
        c.wait("tickPrice", lambda e: e[0] == 1 and e[1] == 1)
        c.wait("tickPrice", lambda e: e[0] == 6 and e[1] == 1)
        c.wait("depth", lambda e: e[0] == 4)
        time.sleep(0.5)
        quiet = {1, 2, 3, 4, 5, 6}
        before = _count(c, quiet)
        sim.control.clock(speed=10)                           # 15 simulated seconds: 3 bars if open
        time.sleep(1.5)
        _round_trip(c)
        assert _count(c, quiet) == before
        # a snapshot still answers, with the last values
        c.client.reqMktData(7, stock("AAPL"), "", True, False, [])
        c.wait("tickSnapshotEnd", lambda e: e[0] == 7)
        assert {e[1] for e in c.rec.get("tickPrice", lambda e: e[0] == 7)} >= {1, 2}
        bid = [e[2] for e in c.rec.get("tickPrice", lambda e: e[0] == 1 and e[1] == 1)][-1]
        assert [e[2] for e in c.rec.get("tickPrice", lambda e: e[0] == 7 and e[1] == 1)] == [bid]

        # Monday 10:00: the market moves again
        sim.control.clock(at=ny(*MONDAY, 10, 0))
        for name, req_id in (("tbtLast", 2), ("tbtBidAsk", 3), ("realtimeBar", 5)):
            c.wait(name, lambda e, r=req_id: e[0] == r, deadline=30)
        n = len(c.rec.get("tickPrice", lambda e: e[0] == 1))
        wait_for(lambda: len(c.rec.get("tickPrice", lambda e: e[0] == 1)) > n, 30, what="AAPL ticks")
        n = len(c.rec.get("depth", lambda e: e[0] == 4))
        wait_for(lambda: len(c.rec.get("depth", lambda e: e[0] == 4)) > n, 30, what="AAPL depth")
    finally:
        c.disconnect()


# ---------------------------------------------------------------------------- in process
def _req(oid: int, contract: ContractQuery, order_type: str = "LMT", lmt: float | None = 100.0,
         tif: str = "DAY", gtd: str = "") -> OrderRequest:
    r = OrderRequest(order_id=oid, contract=contract, action="BUY", total_qty=1, order_type=order_type,
                     lmt_price=lmt, aux_price=None, tif=tif)
    r.good_till_date = gtd
    return r


def test_futures_trade_the_globex_session_and_hold_through_its_halt():
    """CME futures have no regular-hours rule: an order works whenever Globex trades, is held
    through the daily 16:00-17:00 Chicago halt, and a DAY order ends with the session."""
    halt = datetime(2026, 4, 13, 16, 30, tzinfo=ZoneInfo("America/Chicago")).timestamp()
    b = Broker(SimConfig(sessions="on", start_time=halt))
    sent: list[tuple] = []
    b.order_error = lambda client_id, order_id, code, **fmt: sent.append((order_id, code))
    es = b.universe.by_con_id[ES_Z6]
    q = ContractQuery(symbol="ES", sec_type="FUT", exchange="CME", currency="USD")
    assert ES_Z6 in b.market.closed
    b.engine.place(7, _req(1, q, lmt=5000.0), es)
    assert sent == [(1, (399, "Order Message:\nBUY 1 ESZ6 CME\nWarning: Your order will not be "
                             "placed at the exchange until 2026-04-13 17:00:00 US/Central."))]
    assert b.engine.orders[(7, 1)].status == "PreSubmitted"
    b.set_clock(at=halt + 3600)                                # 17:30: Globex trades again
    assert ES_Z6 not in b.market.closed
    assert b.engine.orders[(7, 1)].status == "Submitted"
    b.set_clock(at=halt + 86400)                               # Tuesday 16:30: the session ended
    order = b.engine.orders[(7, 1)]
    assert (order.status, order.completed_status) == ("Cancelled", BY_SYSTEM)
    assert order.completed_time == halt + 86400 - 1800          # at 16:00, its own time


def test_gtd_is_refused_with_sessions_off_as_before():
    b = Broker(SimConfig(start_time=SATURDAY))
    sent: list[tuple] = []
    b.order_error = lambda client_id, order_id, code, **fmt: sent.append((order_id, code[0], fmt))
    q = ContractQuery(symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD")
    b.engine.place(7, _req(1, q, tif="GTD", gtd="20260413 10:00:00 US/Eastern"), b.universe.by_con_id[AAPL])
    assert sent == [(1, 201, {"reason": "Time in force 'GTD' is not supported"})]
    assert b.hours is None and b.engine.hours is None


@pytest.mark.parametrize("text,want", [
    ("20260413 10:00:30 US/Eastern", ny(*MONDAY, 10, 0, 30)),
    ("20260413-14:00:30", ny(*MONDAY, 10, 0, 30)),
    ("20260413", ny(*MONDAY, 16, 0)),                         # that day's close
])
def test_good_till_date_forms(text, want):
    from services.simulator import sessions
    from services.simulator.contracts import Instrument
    from services.simulator.config import DEFAULT_UNIVERSE
    assert sessions.good_till(text, Instrument(DEFAULT_UNIVERSE[0], 0), "America/New_York") == want
