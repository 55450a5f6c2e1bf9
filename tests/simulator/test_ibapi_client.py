"""The official ibapi client against the simulator: session, contracts, data, orders, account."""
from __future__ import annotations

from decimal import Decimal

from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, forex, future, order, stock
from tests.support.processes import wait_for

start_sim = start_sim_at_versions()   # each test at v200 (text) and at the protobuf maximum


def test_handshake_contracts_and_errors(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 11).connect()
    try:
        assert c.rec.get("managedAccounts") == [("DU1234567",)]
        assert c.client.serverVersion() == sim.version
        for code in (2104, 2106, 2158):
            assert c.wait_error(code, -1)
        c.client.reqContractDetails(1, stock("AAPL"))
        c.wait("contractDetailsEnd", lambda e: e[0] == 1)
        (_, d), = c.rec.get("contractDetails", lambda e: e[0] == 1)
        assert (d.contract.conId, d.contract.primaryExchange, d.minTick) == (265598, "NASDAQ", 0.01)
        c.client.reqContractDetails(2, future(""))        # no month: both ES contracts
        c.wait("contractDetailsEnd", lambda e: e[0] == 2)
        es = c.rec.get("contractDetails", lambda e: e[0] == 2)
        assert sorted(e[1].contract.localSymbol for e in es) == ["ESH7", "ESZ6"]
        assert {e[1].contract.multiplier for e in es} == {"50"} and es[0][1].minTick == 0.25
        c.client.reqContractDetails(3, forex())
        c.wait("contractDetailsEnd", lambda e: e[0] == 3)
        (_, fx), = c.rec.get("contractDetails", lambda e: e[0] == 3)
        assert fx.contract.localSymbol == "EUR.USD" and fx.minTick == 0.00005
        c.client.reqContractDetails(4, stock("NOSUCH"))
        c.wait_error(200, 4)
        c.client.reqMktData(5, future(""), "", False, False, [])   # ambiguous for data
        c.wait_error(200, 5)
        c.client.reqCurrentTime()
        c.wait("currentTime")
        c.client.reqIds(1)
        c.wait("nextValidId", count=2)
    finally:
        c.disconnect()


def test_market_data_streams(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 12).connect()
    try:
        c.client.reqMktData(1, stock("AAPL"), "", False, False, [])
        c.wait("tickReqParams")
        c.wait("tickPrice", lambda e: e[1] == 1)
        c.wait("tickPrice", lambda e: e[1] == 2)
        c.wait("tickPrice", lambda e: e[1] == 4)
        c.wait("tickSize", lambda e: e[1] == 8)
        bids = [e[2] for e in c.rec.get("tickPrice", lambda e: e[1] == 1)]
        asks = [e[2] for e in c.rec.get("tickPrice", lambda e: e[1] == 2)]
        assert all(abs(p * 100 - round(p * 100)) < 1e-6 for p in bids + asks)
        assert bids[0] < asks[0]
        # snapshot ends with tickSnapshotEnd and creates no subscription
        c.client.reqMktData(2, stock("MSFT"), "", True, False, [])
        c.wait("tickSnapshotEnd", lambda e: e[0] == 2)
        # delayed asked on an account with live permission: live data (IB: "If live data is
        # available, it will always be returned instead of delayed data"); delayed tick types
        # on a delayed-only account: tests/simulator/test_market_data_permissions.py
        c.client.reqMarketDataType(3)
        c.client.reqMktData(3, stock("SPY"), "", False, False, [])
        c.wait("marketDataType", lambda e: e[0] == 3 and e[1] == 1)
        c.wait("tickPrice", lambda e: e[0] == 3 and e[1] == 1)
        assert not c.rec.get("tickPrice", lambda e: e[0] == 3 and e[1] >= 66)
        c.client.reqMarketDataType(1)
        # tick-by-tick
        c.client.reqTickByTickData(4, stock("AAPL"), "BidAsk", 0, False)
        c.client.reqTickByTickData(5, stock("AAPL"), "AllLast", 0, False)
        c.wait("tbtBidAsk", lambda e: e[0] == 4, count=5)
        c.wait("tbtLast", lambda e: e[0] == 5, count=3)
        for _, _, bid, ask, bs, as_ in (e[1:] and e for e in c.rec.get("tbtBidAsk")):
            pass
        assert all(e[2] < e[3] for e in c.rec.get("tbtBidAsk"))
        # cancel stops the stream
        c.client.cancelTickByTickData(4)
        c.client.cancelMktData(1)
        c.client.reqCurrentTime()
        c.wait("currentTime")
        n = len(c.rec.get("tbtBidAsk", lambda e: e[0] == 4))
        m = len(c.rec.get("tickPrice", lambda e: e[0] == 1))
        c.wait("tbtLast", lambda e: e[0] == 5, count=len(c.rec.get("tbtLast")) + 5)
        assert len(c.rec.get("tbtBidAsk", lambda e: e[0] == 4)) == n
        assert len(c.rec.get("tickPrice", lambda e: e[0] == 1)) == m
    finally:
        c.disconnect()


def apply_depth(events, book=None, max_rows=5):
    book = book if book is not None else {0: [], 1: []}
    for _, pos, op, side, price, size in events:
        rows = book[side]
        assert pos < max_rows, "a depth update beyond the rows requested"
        if op == 0:
            rows.insert(pos, (price, size))
            del rows[max_rows:]  # IB: on a full book the last row falls off
        elif op == 1:
            rows[pos] = (price, size)
        else:
            del rows[pos]
    return book


def test_depth_book_stays_consistent(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 13).connect()
    try:
        c.client.reqMktDepth(1, stock("AAPL"), 5, False, [])
        c.client.reqTickByTickData(2, stock("AAPL"), "BidAsk", 0, False)
        c.wait("depth", lambda e: e[0] == 1 and e[2] == 0 and e[1] == 0 and e[3] == 1, count=3)
        c.wait("depth", lambda e: e[2] == 2)                         # real deletes happen
        c.wait("depth", lambda e: e[2] == 0 and e[1] > 0, count=3)   # and mid-book inserts
        c.client.cancelMktDepth(1, False)
        c.client.cancelTickByTickData(2)
        c.client.reqCurrentTime()
        c.wait("currentTime")
        book = {0: [], 1: []}
        checked = 0
        timeline = list(c.rec.timeline)
        end = max(i for i, (name, e) in enumerate(timeline) if name == "depth" and e[0] == 1)
        for name, e in timeline[:end + 1]:   # after its cancel the depth view is stale by design
            if name == "depth" and e[0] == 1:
                book = apply_depth([e], book)
            elif name == "tbtBidAsk" and len(book[0]) == 5 and len(book[1]) == 5:
                # a step's depth operations precede its top-of-book tick: both views agree
                assert (e[2], e[3]) == (book[1][0][0], book[0][0][0])
                checked += 1
        assert checked >= 3
        bids, asks = [p for p, _ in book[1]], [p for p, _ in book[0]]
        assert len(bids) == 5 and len(asks) == 5
        assert bids == sorted(bids, reverse=True) and len(set(bids)) == 5
        assert asks == sorted(asks) and len(set(asks)) == 5
        assert bids[0] < asks[0]
        # smart depth goes through updateMktDepthL2
        c.client.reqMktDepth(3, stock("MSFT"), 3, True, [])
        c.wait("depth", lambda e: e[0] == 3, count=6)
    finally:
        c.disconnect()


def test_historical_and_realtime_bars(start_sim):
    sim = start_sim(toml="rtb_seconds = 1\n")
    c = IbapiClient(sim.port, 14).connect()
    try:
        c.client.reqHistoricalData(1, stock("AAPL"), "", "2 D", "1 hour", "TRADES", 1, 1, False, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 1)
        bars = [e[1] for e in c.rec.get("historicalData", lambda e: e[0] == 1)]
        assert len(bars) == 48
        for b in bars:
            assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
        # consistent with the live process: the last bar closes near the current quote
        q = sim.control.quote(265598)
        assert abs(bars[-1].close - q["last"]) < 5.0
        c.client.reqHistoricalData(2, stock("AAPL"), "", "1 D", "1 day", "TRADES", 1, 2, False, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 2)
        c.client.reqHistoricalData(3, stock("AAPL"), "", "1 D", "7 mins", "TRADES", 1, 1, False, [])
        c.wait_error(321, 3)
        c.client.reqRealTimeBars(4, stock("AAPL"), 5, "TRADES", True, [])
        c.wait("realtimeBar", lambda e: e[0] == 4, count=2)
        t = [e[1] for e in c.rec.get("realtimeBar")]
        assert t == sorted(t) and len(set(t)) == len(t)
    finally:
        c.disconnect()


def test_orders_market_limit_modify_cancel(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 15).connect()
    try:
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 100, ref="mkt-1"))
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Filled")
        (ex,) = [e[2] for e in c.wait("execDetails", lambda e: e[2].orderId == oid)]
        assert ex.orderRef == "mkt-1" and ex.side == "BOT" and ex.shares == Decimal(100)
        comm = c.wait("commission", lambda e: e[0].execId == ex.execId)[0][0]
        assert comm.commissionAndFees == 1.0
        assert c.wait("openOrder", lambda e: e[0] == oid)[0][2].orderRef == "mkt-1"
        # ledger agrees
        fills = sim.control.fills()
        assert [(f["exec_id"], f["qty"], f["price"]) for f in fills] == [(ex.execId, 100.0, ex.price)]
        # a resting limit far below the market, modified, then cancelled
        lid = c.next_order_id()
        c.client.placeOrder(lid, stock("AAPL"), order("BUY", 10, "LMT", lmt=100.00, tif="GTC", ref="lmt"))
        c.wait("orderStatus", lambda e: e[0] == lid and e[1] == "Submitted")
        c.client.placeOrder(lid, stock("AAPL"), order("BUY", 20, "LMT", lmt=101.00, tif="GTC", ref="lmt"))
        c.wait("openOrder", lambda e: e[0] == lid and e[2].lmtPrice == 101.0 and e[2].totalQuantity == 20)
        from ibapi.order_cancel import OrderCancel
        c.client.cancelOrder(lid, OrderCancel())
        c.wait("orderStatus", lambda e: e[0] == lid and e[1] == "Cancelled")
        c.wait_error(202, lid)
        # errors
        c.client.cancelOrder(lid, OrderCancel())
        c.wait_error(10148, lid)
        c.client.cancelOrder(9999, OrderCancel())
        c.wait_error(10147, 9999)
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 1))          # id of a filled order
        c.wait_error(103, oid)
        bad = c.next_order_id()
        c.client.placeOrder(bad, stock("AAPL"), order("BUY", 1, "LMT", lmt=100.003))
        c.wait_error(110, bad)
        rej = c.next_order_id()
        c.client.placeOrder(rej, stock("AAPL"), order("BUY", 1, "REL", aux=1.0))
        c.wait_error(201, rej)
        unknown = c.next_order_id()
        c.client.placeOrder(unknown, stock("NOSUCH"), order("BUY", 1))
        c.wait_error(200, unknown)
        assert not c.rec.get("orderStatus", lambda e: e[0] in (bad, rej, unknown))
    finally:
        c.disconnect()


def test_partial_fills_walk_the_book_and_ioc(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 16).connect()
    try:
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("SPY"), order("SELL", 20000))
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Filled", deadline=60)
        execs = [e[2] for e in c.rec.get("execDetails", lambda e: e[2].orderId == oid)]
        assert len(execs) > 1 and len({x.execId for x in execs}) == len(execs)
        assert sum(x.shares for x in execs) == 20000
        assert len({x.price for x in execs}) > 1             # walked several levels
        # IOC far away from the market: cancelled with nothing filled
        ioc = c.next_order_id()
        c.client.placeOrder(ioc, stock("SPY"), order("BUY", 100, "LMT", lmt=1.00, tif="IOC"))
        c.wait("orderStatus", lambda e: e[0] == ioc and e[1] == "Cancelled")
        pos = sim.control.positions()
        assert pos["756733"]["qty"] == -20000
    finally:
        c.disconnect()


def test_bracket_oca_and_stop(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 17).connect()
    try:
        q = sim.control.quote(265598)
        parent = c.next_order_id()
        tp, sl = parent + 1, parent + 2
        c.rec.next_id = parent + 3
        c.client.placeOrder(parent, stock("AAPL"), order("BUY", 100, "LMT", lmt=round(q["ask"] + 1, 2), transmit=False, ref="br"))
        c.client.placeOrder(tp, stock("AAPL"), order("SELL", 100, "LMT", lmt=round(q["ask"] + 50, 2), transmit=False, parent=parent))
        c.client.placeOrder(sl, stock("AAPL"), order("SELL", 100, "STP", aux=round(q["bid"] - 50, 2), transmit=True, parent=parent))
        c.wait("orderStatus", lambda e: e[0] == parent and e[1] == "Filled")
        c.wait("orderStatus", lambda e: e[0] == tp and e[1] == "Submitted")
        c.wait("orderStatus", lambda e: e[0] == sl and e[1] == "PreSubmitted")
        assert {e[5] for e in c.rec.get("orderStatus", lambda e: e[0] in (tp, sl))} == {parent}
        # cancelling the take-profit leaves the stop; cancelling the parent's children via global cancel
        c.client.reqAllOpenOrders()
        c.wait("openOrderEnd")
        from ibapi.order_cancel import OrderCancel
        c.client.reqGlobalCancel(OrderCancel())
        c.wait("orderStatus", lambda e: e[0] == tp and e[1] == "Cancelled")
        c.wait("orderStatus", lambda e: e[0] == sl and e[1] == "Cancelled")
        # OCA type 1: one fills, the other is cancelled
        b, a = c.next_order_id(), c.next_order_id()   # ids must rise in placement order
        o1 = order("BUY", 10, "MKT"); o1.ocaGroup, o1.ocaType = "G1", 1
        o2 = order("BUY", 10, "LMT", lmt=1.00); o2.ocaGroup, o2.ocaType = "G1", 1
        c.client.placeOrder(b, stock("MSFT"), o2)
        c.wait("orderStatus", lambda e: e[0] == b and e[1] == "Submitted")
        c.client.placeOrder(a, stock("MSFT"), o1)
        c.wait("orderStatus", lambda e: e[0] == a and e[1] == "Filled")
        c.wait("orderStatus", lambda e: e[0] == b and e[1] == "Cancelled")
        # a sell stop above the market triggers at once and fills
        s = c.next_order_id()
        q = sim.control.quote(272093)
        c.client.placeOrder(s, stock("MSFT"), order("SELL", 10, "STP", aux=round(q["ask"] + 20, 2)))
        c.wait("orderStatus", lambda e: e[0] == s and e[1] == "Filled")
        assert sim.control.positions()["272093"]["qty"] == 0
    finally:
        c.disconnect()


def test_session_queries(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 18).connect()
    try:
        oid = c.next_order_id()
        c.client.placeOrder(oid, future(), order("BUY", 2, ref="fut"))
        c.wait("commission")
        c.client.reqPositions()
        c.wait("positionEnd")
        (_, acct, con, qty, cost), = [(0,) + e for e in c.rec.get("position")]
        assert acct == "DU1234567" and con.conId == 495512563 and qty == 2 and cost > 50 * 4000
        c.client.reqAccountUpdates(True, "DU1234567")
        c.wait("accountDownloadEnd")
        keys = {e[0] for e in c.rec.get("accountValue")}
        assert {"NetLiquidation", "TotalCashValue", "BuyingPower"} <= keys
        assert c.rec.get("portfolio")[0][1] == 2
        c.client.reqAccountSummary(5, "All", "NetLiquidation,BuyingPower")
        c.wait("accountSummaryEnd", lambda e: e[0] == 5)
        assert {e[1] for e in c.rec.get("accountSummary")} == {"NetLiquidation", "BuyingPower"}
        c.client.reqPnL(6, "DU1234567", "")
        c.wait("pnl", lambda e: e[0] == 6, count=2)
        c.client.reqPnLSingle(7, "DU1234567", "", 495512563)
        c.wait("pnlSingle", lambda e: e[0] == 7 and e[1] == 2)
        from ibapi.execution import ExecutionFilter
        f = ExecutionFilter(); f.symbol = "ES"; f.side = "BUY"
        c.client.reqExecutions(8, f)
        c.wait("execDetailsEnd", lambda e: e[0] == 8)
        assert len(c.rec.get("execDetails", lambda e: e[0] == 8)) >= 1
        f2 = ExecutionFilter(); f2.side = "SELL"
        c.client.reqExecutions(9, f2)
        c.wait("execDetailsEnd", lambda e: e[0] == 9)
        assert not c.rec.get("execDetails", lambda e: e[0] == 9)
        f3 = ExecutionFilter(); f3.clientId = 99
        c.client.reqExecutions(10, f3)
        c.wait("execDetailsEnd", lambda e: e[0] == 10)
        assert not c.rec.get("execDetails", lambda e: e[0] == 10)
        c.client.reqOpenOrders()
        c.wait("openOrderEnd")
        c.client.reqCompletedOrders(False)
        c.wait("completedOrdersEnd")
        c.client.reqCurrentTimeInMillis()
        c.wait("currentTimeInMillis")
        c.client.reqAutoOpenOrders(True)
        c.wait_error(321)
    finally:
        c.disconnect()


def test_two_clients_and_client_id_in_use(start_sim):
    sim = start_sim()
    a = IbapiClient(sim.port, 21).connect()
    b = IbapiClient(sim.port, 22).connect()
    dup = IbapiClient(sim.port, 21)
    try:
        dup.connect(wait_ready=False)
        dup.wait_error(326, -1)
        wait_for(lambda: not dup.connected(), 30, what="duplicate client dropped")
        assert a.connected() and b.connected()
        ids = sorted(x["client_id"] for x in sim.control.clients())
        assert ids == [21, 22]
        # each client sees only its own order events
        oa = a.next_order_id()
        a.client.placeOrder(oa, stock("IBM"), order("BUY", 5, ref="a"))
        a.wait("execDetails")
        b.client.reqOpenOrders()
        b.wait("openOrderEnd")
        assert not b.rec.get("execDetails") and not b.rec.get("orderStatus")
    finally:
        dup.disconnect()
        a.disconnect()
        b.disconnect()
