"""ib_async (server version 178) against the simulator, unchanged."""
from __future__ import annotations

from ib_async import IB, Forex, Future, LimitOrder, MarketOrder, Stock, StopOrder

from tests.simulator.conftest import start_sim_at_versions
from tests.support.processes import wait_for

# a simulator serving up to v200 and one serving up to the protobuf maximum: ib_async gets its
# own version (178, text) from both
start_sim = start_sim_at_versions()


def connect(port: int, client_id: int) -> IB:
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=client_id, timeout=30)
    return ib


def wait(ib: IB, cond, what: str, deadline: float = 30.0):
    def poll():
        ib.sleep(0.02)
        return cond()
    return wait_for(poll, deadline, what=what)


def test_ib_async_end_to_end(start_sim):
    sim = start_sim()
    ib = connect(sim.port, 31)
    try:
        assert ib.client.serverVersion() == 178
        assert ib.managedAccounts() == ["DU1234567"]
        aapl, eur, es = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"), Forex("EURUSD"),
                                            Future("ES", "202612", "CME"))
        assert (aapl.conId, eur.conId, es.conId) == (265598, 12087792, 495512563)
        ticker = ib.reqMktData(aapl)
        wait(ib, lambda: ticker.bid > 0 and ticker.ask > ticker.bid and ticker.last > 0, "quote")
        tbt = ib.reqTickByTickData(aapl, "BidAsk")
        # ib_async empties ticker.tickByTicks at every update cycle: count them as they come
        seen_tbt: list = []
        tbt.updateEvent += lambda t: seen_tbt.extend(t.tickByTicks)
        wait(ib, lambda: len(seen_tbt) >= 3, "tick-by-tick")
        depth = ib.reqMktDepth(eur, 5)
        wait(ib, lambda: len(depth.domBids) >= 5 and len(depth.domAsks) >= 5, "depth")
        bars = ib.reqHistoricalData(es, "", "1 D", "1 hour", "TRADES", True)
        assert len(bars) == 24 and all(b.high >= b.low for b in bars)
        mkt = ib.placeOrder(aapl, MarketOrder("BUY", 100, orderRef="ia-mkt"))
        wait(ib, lambda: mkt.orderStatus.status == "Filled" and mkt.fills
             and mkt.fills[-1].commissionReport.commission > 0, "market fill")
        assert mkt.fills[0].execution.orderRef == "ia-mkt"
        lmt = ib.placeOrder(aapl, LimitOrder("BUY", 10, 100.00, tif="GTC"))
        wait(ib, lambda: lmt.orderStatus.status == "Submitted", "limit working")
        lmt.order.lmtPrice = 101.00
        ib.placeOrder(aapl, lmt.order)
        wait(ib, lambda: any(e.message == "Modified" for e in lmt.log), "modify acknowledged")
        ib.cancelOrder(lmt.order)
        wait(ib, lambda: lmt.orderStatus.status == "Cancelled", "cancel")
        q = ticker.ask
        bracket = ib.bracketOrder("BUY", 50, round(q + 1, 2), round(q + 40, 2), round(q - 40, 2))
        trades = [ib.placeOrder(aapl, o) for o in bracket]
        wait(ib, lambda: trades[0].orderStatus.status == "Filled", "bracket parent fill")
        wait(ib, lambda: trades[1].orderStatus.status == "Submitted"
             and trades[2].orderStatus.status == "PreSubmitted", "bracket children working")
        wait(ib, lambda: any(p.contract.conId == 265598 and p.position == 150 for p in ib.positions()), "position")
        fills = ib.reqExecutions()
        assert len({f.execution.execId for f in fills}) == len(fills) >= 2
        truth = sim.control.fills()
        assert sorted(f["exec_id"] for f in truth) == sorted(f.execution.execId for f in fills)
        assert abs(sum(f.commissionReport.commission for f in ib.fills()) -
                   sim.control.ledger()["commissions"]) < 1e-6
        ib.reqGlobalCancel()
        wait(ib, lambda: trades[1].orderStatus.status == "Cancelled" and trades[2].orderStatus.status == "Cancelled",
             "global cancel")
        ib.cancelMktData(aapl)
        ib.cancelTickByTickData(aapl, "BidAsk")
        ib.cancelMktDepth(eur)
        wait(ib, lambda: sim.control.status()["subscriptions"] == {"mkt": 0, "tbt": 0, "depth": 0, "rtb": 0},
             "subscriptions gone")
        stop = ib.placeOrder(es, StopOrder("SELL", 1, 10000.0))   # sell stop above market: triggers
        wait(ib, lambda: stop.orderStatus.status == "Filled", "stop triggered")
        # completed orders at v178, by ib_async's own decoder
        done = {t.order.permId: t for t in ib.reqCompletedOrders(False)}
        truth = {o["perm_id"]: o for o in sim.control.completed_orders()}
        assert set(done) == set(truth) and len(done) >= 5
        for perm, t in done.items():
            assert t.orderStatus.status == truth[perm]["status"]
            assert float(t.order.filledQuantity) == truth[perm]["filled"]
        assert done[mkt.order.permId].order.orderRef == "ia-mkt"
        assert done[lmt.order.permId].orderStatus.status == "Cancelled"
    finally:
        ib.disconnect()
