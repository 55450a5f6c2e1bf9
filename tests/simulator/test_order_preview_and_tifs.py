"""Issue 13 (Why 5): whatIf orders are margin previews and never orders; FOK and OPG are accepted as
IB accepts them; an untransmitted order sent again stays untransmitted unless transmit is set.
docs/simulator.md, "whatIf, FOK/OPG, untransmitted orders" and fidelity rows F32, F33, F35."""
from __future__ import annotations

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Stock

from services.simulator.broker import MARGIN_RATES, Broker
from services.simulator.config import SimConfig
from services.simulator.contracts import ContractQuery
from services.simulator.orders import OrderRequest
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, Recorder, order, stock
from tests.support.processes import wait_for

AAPL = 265598
start_sim_v = start_sim_at_versions()     # v200 (text) and v226 (protobuf) simulators


class StateRecorder(Recorder):
    """Also keeps the Order and the whole OrderState of every openOrder."""

    def openOrder(self, orderId, contract, order, orderState):   # noqa: N802 (ibapi's name)
        super().openOrder(orderId, contract, order, orderState)
        self._add("openOrderFull", orderId, order, orderState)


def _client(port: int, client_id: int) -> IbapiClient:
    c = IbapiClient(port, client_id)
    c.rec = StateRecorder()
    from ibapi.client import EClient
    c.client = EClient(c.rec)
    return c.connect()


def _round_trip(c: IbapiClient) -> None:
    """reqAllOpenOrders answered: everything the simulator sent before it has arrived."""
    c.rec.clear("openOrderEnd")
    c.client.reqAllOpenOrders()
    c.wait("openOrderEnd", deadline=60)


def _money(text: str) -> float:
    return float(text)


# ------------------------------------------------------------------------------------ whatIf
def test_ib_async_what_if_order_returns_margins_and_places_nothing(start_sim_v):
    sim = start_sim_v()
    ib = IB()
    ib.RequestTimeout = 60            # a hang fails the test instead of blocking it
    ib.connect("127.0.0.1", sim.port, clientId=41, timeout=60)
    try:
        assert ib.client.serverVersion() == 178
        aapl, = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        positions_before = sim.control.positions()
        state = ib.whatIfOrder(aapl, MarketOrder("BUY", 100))
        assert state is not None and state.status == "PreSubmitted"
        change = float(state.initMarginChange)
        assert change > 0
        assert abs(float(state.initMarginAfter) - float(state.initMarginBefore) - change) < 0.02
        assert abs(float(state.maintMarginChange) - change * MARGIN_RATES["STK"][1] / MARGIN_RATES["STK"][0]) < 0.02
        assert float(state.equityWithLoanBefore) > 0
        assert state.commission == pytest.approx(1.0)          # 100 x 0.005, minimum 1.00 (ib_async's names)
        assert state.commissionCurrency == "USD"
        # nothing placed: no trade, no open order, no order at the broker, the position unmoved
        assert ib.trades() == []
        assert ib.reqAllOpenOrders() == []
        assert sim.control.orders() == []
        assert sim.control.positions() == positions_before
        assert not any(p.contract.conId == AAPL for p in ib.positions())
        # the order id was not used up: a real order may take it
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 1.00))
        wait_for(lambda: (ib.sleep(0.02), trade.orderStatus.status == "Submitted")[1], 60, what="real order")
    finally:
        ib.disconnect()


def test_ibapi_what_if_order_is_a_preview_at_text_and_protobuf_versions(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 42)
    try:
        assert c.client.serverVersion() == sim.version
        positions_before = sim.control.positions()
        oid = c.next_order_id()
        o = order("BUY", 200, "LMT", lmt=150.00)
        o.whatIf = True
        c.client.placeOrder(oid, stock("AAPL"), o)
        (_, got, state), = c.wait("openOrderFull", lambda e: e[0] == oid, deadline=60)
        assert got.whatIf is True
        assert state.status == "PreSubmitted"
        init_rate, maint_rate = MARGIN_RATES["STK"]
        # no AAPL position before: the change is the order's own margin at its limit price
        assert _money(state.initMarginChange) == pytest.approx(200 * 150.00 * init_rate, abs=0.01)
        assert _money(state.maintMarginChange) == pytest.approx(200 * 150.00 * maint_rate, abs=0.01)
        assert _money(state.initMarginAfter) == pytest.approx(
            _money(state.initMarginBefore) + _money(state.initMarginChange), abs=0.02)
        assert _money(state.equityWithLoanChange) == pytest.approx(-1.0, abs=0.001)
        assert state.commissionAndFees == pytest.approx(1.0)
        assert state.minCommissionAndFees == pytest.approx(1.0)
        assert state.maxCommissionAndFees == pytest.approx(1.0)
        assert state.commissionAndFeesCurrency == "USD"
        assert state.marginCurrency == "USD"
        assert float(state.initMarginAfterOutsideRTH) == pytest.approx(_money(state.initMarginAfter))
        _round_trip(c)
        # one openOrder, nothing else: no orderStatus, no execution, no open order, no position
        assert len(c.rec.get("openOrderFull", lambda e: e[0] == oid)) == 1
        assert c.rec.get("orderStatus", lambda e: e[0] == oid) == []
        assert c.rec.get("execDetails") == []
        assert sim.control.orders() == []
        assert sim.control.positions() == positions_before
        c.client.reqPositions()
        c.wait("positionEnd", deadline=60)
        assert not any(e[1].conId == AAPL and e[2] != 0 for e in c.rec.get("position"))
        # an invalid whatIf is refused as the order would be (bad tick: 110), still nothing placed
        bad = order("BUY", 1, "LMT", lmt=150.001)
        bad.whatIf = True
        oid2 = c.next_order_id()
        c.client.placeOrder(oid2, stock("AAPL"), bad)
        c.wait_error(110, oid2, deadline=60)
        assert sim.control.orders() == []
    finally:
        c.disconnect()


# ------------------------------------------------------------------------------------ FOK / OPG
def test_fok_fills_entirely_or_is_cancelled_and_opg_waits_for_the_open(start_sim):
    sim = start_sim()
    c = _client(sim.port, 43)
    try:
        # FOK, marketable and within the book: filled at once, entirely
        fok = c.next_order_id()
        c.client.placeOrder(fok, stock("AAPL"), order("BUY", 100, "MKT", tif="FOK"))
        c.wait("orderStatus", lambda e: e[0] == fok and e[1] == "Filled", deadline=60)
        # FOK larger than the whole book: cancelled, nothing filled (no partial fill)
        big = c.next_order_id()
        c.client.placeOrder(big, stock("AAPL"), order("BUY", 10_000_000, "MKT", tif="FOK"))
        c.wait("orderStatus", lambda e: e[0] == big and e[1] == "Cancelled", deadline=60)
        assert all(e[2] == 0 for e in c.rec.get("orderStatus", lambda e: e[0] == big))
        assert not any(e[2].orderId == big for e in c.rec.get("execDetails"))
        # FOK limit far from the market: cancelled, not left working
        far = c.next_order_id()
        c.client.placeOrder(far, stock("AAPL"), order("BUY", 10, "LMT", lmt=1.00, tif="FOK"))
        c.wait("orderStatus", lambda e: e[0] == far and e[1] == "Cancelled", deadline=60)
        assert c.errors(201) == []
        # OPG (market on open): accepted, rests PreSubmitted; a later market order fills past it
        opg = c.next_order_id()
        c.client.placeOrder(opg, stock("AAPL"), order("BUY", 10, "MKT", tif="OPG"))
        c.wait("orderStatus", lambda e: e[0] == opg and e[1] == "PreSubmitted", deadline=60)
        mkt = c.next_order_id()
        c.client.placeOrder(mkt, stock("AAPL"), order("BUY", 5, "MKT"))
        c.wait("orderStatus", lambda e: e[0] == mkt and e[1] == "Filled", deadline=60)
        _round_trip(c)
        mine = {o["order_id"]: o for o in sim.control.orders() if o["client_id"] == 43}
        assert mine[opg]["status"] == "PreSubmitted" and mine[opg]["filled"] == 0
        # OPG limit-on-open accepted too; an OPG stop is refused (MOO/LOO only)
        loo = c.next_order_id()
        c.client.placeOrder(loo, stock("AAPL"), order("BUY", 10, "LMT", lmt=1.00, tif="OPG"))
        c.wait("orderStatus", lambda e: e[0] == loo and e[1] == "PreSubmitted", deadline=60)
        stp = c.next_order_id()
        c.client.placeOrder(stp, stock("AAPL"), order("BUY", 10, "STP", aux=999.00, tif="OPG"))
        c.wait_error(201, stp, deadline=60)
        # the close cancels the on-open orders that never saw an open
        sim.control.expire_day_orders()
        c.wait("orderStatus", lambda e: e[0] == opg and e[1] == "Cancelled", deadline=60)
        c.wait("orderStatus", lambda e: e[0] == loo and e[1] == "Cancelled", deadline=60)
    finally:
        c.disconnect()


def test_open_auction_works_opg_orders_once():
    """In process: the opening-auction hook (OrderEngine.open_auction) fills a MOO and cancels a
    LOO its limit keeps out of the auction."""
    b = Broker(SimConfig())
    aapl = b.universe.by_con_id[AAPL]

    def req(oid, typ, lmt=None):
        return OrderRequest(order_id=oid, contract=ContractQuery(symbol="AAPL", sec_type="STK",
                                                                 exchange="SMART", currency="USD"),
                            action="BUY", total_qty=10, order_type=typ, lmt_price=lmt, aux_price=None,
                            tif="OPG")

    b.engine.place(5, req(1, "MKT"), aapl)
    b.engine.place(5, req(2, "LMT", 1.00), aapl)
    for _ in range(20):
        b.market.step()
        b.engine.on_step()
    moo, loo = b.engine.orders[(5, 1)], b.engine.orders[(5, 2)]
    assert (moo.status, loo.status) == ("PreSubmitted", "PreSubmitted") and moo.filled == 0
    worked = b.engine.open_auction()
    assert {o.order_id for o in worked} == {1, 2}
    assert moo.status == "Filled" and moo.filled == 10
    assert loo.status == "Cancelled" and loo.filled == 0


# ------------------------------------------------------------------------------------ transmit
def test_untransmitted_order_sent_again_stays_untransmitted_until_transmit(start_sim):
    sim = start_sim()
    c = _client(sim.port, 44)
    try:
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 10, "LMT", lmt=100.00, transmit=False))
        wait_for(lambda: any(o["order_id"] == oid for o in sim.control.orders()), 60, what="order held")
        # sent again, still transmit=False, with a new price: replaced, not transmitted
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 10, "LMT", lmt=101.00, transmit=False))
        wait_for(lambda: [o for o in sim.control.orders() if o["order_id"] == oid
                          and o["lmt_price"] == 101.00], 60, what="order replaced")
        _round_trip(c)
        held, = [o for o in sim.control.orders() if o["order_id"] == oid]
        assert held["transmitted"] is False and held["status"] == "PendingSubmit"
        assert c.rec.get("orderStatus", lambda e: e[0] == oid) == []
        assert not c.rec.get("openOrder", lambda e: e[0] == oid)
        # sent again with transmit=True: it goes out and works
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 10, "LMT", lmt=102.00, transmit=True))
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Submitted", deadline=60)
        sent, = [o for o in sim.control.orders() if o["order_id"] == oid]
        assert sent["transmitted"] is True and sent["lmt_price"] == 102.00
    finally:
        c.disconnect()
