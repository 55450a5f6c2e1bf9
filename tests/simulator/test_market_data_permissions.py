"""An account's market-data permission (``--market-data`` / ``[account] market_data``), seen
through IB's official ibapi client: the codes a paper account without live API data gets, and
the delayed tick types after ``reqMarketDataType(3)``. Sources of each code: docs/simulator.md,
"Market data permissions"."""
from __future__ import annotations

from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, stock
from tests.support.processes import wait_for

start_sim = start_sim_at_versions()   # each test at v200 (text) and at the protobuf maximum

DELAYED_TYPES = {66, 67, 68, 69, 70, 71, 72, 73, 74, 75}


def _quiet_after(c: IbapiClient, req_id: int) -> None:
    """A round trip after a request: whatever it was going to send has been sent."""
    before = len(c.rec.get("currentTime"))
    c.client.reqCurrentTime()
    c.wait("currentTime", count=before + 1)


def test_delayed_account_live_request_gets_10089_and_stays_silent(start_sim):
    sim = start_sim("--market-data", "delayed")
    c = IbapiClient(sim.port, 21).connect()
    try:
        c.client.reqMktData(1, stock("SPY"), "", False, False, [])
        _, code, text = c.wait_error(10089, 1)
        assert text.startswith("Requested market data requires additional subscription for API.")
        assert text.endswith("Delayed market data is available.SPY ARCA/TOP/ALL")
        # the request stays open at IB: no data, but a second request under its id is a duplicate
        c.client.reqMktData(1, stock("SPY"), "", False, False, [])
        c.wait_error(322, 1)
        assert sim.control.status()["mkt_silent"] == 1
        _quiet_after(c, 1)
        assert not c.rec.get("tickPrice", lambda e: e[0] == 1)
        assert not c.rec.get("tickSize", lambda e: e[0] == 1)
        # a cancel closes it without complaint (no 300)
        c.client.cancelMktData(1)
        _quiet_after(c, 1)
        assert not c.errors(300, 1)
        assert sim.control.status()["mkt_silent"] == 0
        assert sim.control.status()["account"]["market_data"] == "delayed"
    finally:
        c.disconnect()


def test_delayed_account_after_req_market_data_type_3_sends_delayed_ticks(start_sim):
    sim = start_sim("--market-data", "delayed")
    c = IbapiClient(sim.port, 22).connect()
    try:
        c.client.reqMarketDataType(3)
        c.client.reqMktData(2, stock("AAPL"), "", False, False, [])
        c.wait("marketDataType", lambda e: e == (2, 3))
        _, _, text = c.wait_error(10167, 2)
        assert text == "Requested market data is not subscribed. Displaying delayed market data."
        for tick_type in (66, 67, 68):
            c.wait("tickPrice", lambda e, t=tick_type: e[0] == 2 and e[1] == t)
        c.wait("tickSize", lambda e: e[0] == 2 and e[1] == 74)
        c.wait("tickPrice", lambda e: e[0] == 2 and e[1] in (72, 73, 75))
        prices = {e[1] for e in c.rec.get("tickPrice", lambda e: e[0] == 2)}
        sizes = {e[1] for e in c.rec.get("tickSize", lambda e: e[0] == 2)}
        assert prices | sizes <= DELAYED_TYPES, prices | sizes   # never a live tick type
        # IB's order: tickReqParams, marketDataType, the 10167 advisory, then the ticks
        order = [name for name, e in c.rec.timeline
                 if e and e[0] == 2 and name in ("tickReqParams", "marketDataType", "error",
                                                 "tickPrice")]
        assert order[:4] == ["tickReqParams", "marketDataType", "error", "tickPrice"], order
        # delayed-frozen (4) while the market is open: delayed data, type 3
        c.client.reqMarketDataType(4)
        c.client.reqMktData(3, stock("MSFT"), "", False, False, [])
        c.wait("marketDataType", lambda e: e == (3, 3))
        c.wait("tickPrice", lambda e: e[0] == 3 and e[1] == 66)
        # back to live: the running delayed request is untouched, a new one gets 10089
        c.client.reqMarketDataType(1)
        c.client.reqMktData(4, stock("IBM"), "", False, False, [])
        c.wait_error(10089, 4)
        n = len(c.rec.get("tickPrice", lambda e: e[0] == 2))
        c.wait("tickPrice", lambda e: e[0] == 2, count=n + 3)
        # a delayed snapshot: delayed types, then tickSnapshotEnd
        c.client.reqMarketDataType(3)
        c.client.reqMktData(5, stock("SPY"), "", True, False, [])
        c.wait("tickSnapshotEnd", lambda e: e[0] == 5)
        assert {e[1] for e in c.rec.get("tickPrice", lambda e: e[0] == 5)} <= DELAYED_TYPES
    finally:
        c.disconnect()


def test_delayed_account_refuses_live_only_streams(start_sim):
    sim = start_sim("--market-data", "delayed")
    c = IbapiClient(sim.port, 23).connect()
    try:
        c.client.reqMarketDataType(3)
        c.client.reqTickByTickData(1, stock("AAPL"), "BidAsk", 0, False)
        c.client.reqMktDepth(2, stock("AAPL"), 5, False, [])
        c.client.reqRealTimeBars(3, stock("AAPL"), 5, "TRADES", False, [])
        for req_id in (1, 2, 3):
            _, _, text = c.wait_error(10089, req_id)
            assert text == ("Requested market data requires additional subscription for API. "
                            "See link in 'Market Data Connections' dialog for more details.")
        _quiet_after(c, 3)
        assert not c.rec.get("tbtBidAsk") and not c.rec.get("depth")
        assert sim.control.status()["subscriptions"] == {"mkt": 0, "tbt": 0, "depth": 0, "rtb": 0}
    finally:
        c.disconnect()


def test_account_without_market_data_gets_354_and_10168(start_sim):
    sim = start_sim(toml='[account]\nmarket_data = "none"\n')
    c = IbapiClient(sim.port, 24).connect()
    try:
        c.client.reqMktData(1, stock("AAPL"), "", False, False, [])
        _, _, text = c.wait_error(354, 1)
        assert text == "Requested market data is not subscribed."
        c.client.reqMarketDataType(3)
        c.client.reqMktData(2, stock("AAPL"), "", False, False, [])
        _, _, text = c.wait_error(10168, 2)
        assert text == "Requested market data is not subscribed. Delayed market data is not enabled."
        _quiet_after(c, 2)
        assert not c.rec.get("tickPrice") and not c.rec.get("marketDataType")
        # both requests are over at IB: their ids can be used again, a cancel finds nothing
        c.client.cancelMktData(1)
        c.wait_error(300, 1)
        assert sim.control.status()["subscriptions"]["mkt"] == 0
        assert c.connected()
    finally:
        c.disconnect()


def test_live_account_gets_live_data_whatever_type_is_asked(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 25).connect()
    try:
        for req_id, data_type in ((1, 1), (2, 2), (3, 3), (4, 4)):
            c.client.reqMarketDataType(data_type)
            c.client.reqMktData(req_id, stock("AAPL"), "", False, False, [])
            c.wait("marketDataType", lambda e, r=req_id: e == (r, 1))
            c.wait("tickPrice", lambda e, r=req_id: e[0] == r and e[1] == 1)
        assert not c.rec.get("tickPrice", lambda e: e[1] >= 66)
        assert not c.errors(10167) and not c.errors(10089)
    finally:
        c.disconnect()


def test_market_data_option_is_validated(start_sim, procs, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[account]\nmarket_data = "sometimes"\n')
    proc = procs.start_python("badsim", "services.simulator", "--port", "1", "--config", str(path))
    wait_for(lambda: proc.poll() is not None, 60, what="the simulator to refuse the config")
    assert proc.returncode == 2
    assert "market_data must be one of live, delayed, none" in procs.log("badsim")
