"""reqHistoricalTicks (IB's Historical Time & Sales) with IB's own ibapi client, at server
version 200 (text) and at the protobuf maximum: in market replay of the real LOBSTER sample
the ticks are the file's own executions and top-of-book changes (services/simulator/
historical_ticks.py); 1000 at most, completed to the full second, from a start or to an end;
exactly one of the two; TRADES / BID_ASK / MIDPOINT with their attributes and ``done``."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.data.catalog import Catalog
from services.data.importers import read
from services.data.sample import SAMPLE, SAMPLE_DIR
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, Recorder, stock
from tests.support.processes import wait_for

NS = 1_000_000_000
start_sim_v = start_sim_at_versions()


class Ticks(Recorder):
    def historicalTicks(self, reqId, ticks, done):  # noqa: N802
        self._add("ticks", reqId, [(t.time, t.price, float(t.size)) for t in ticks], done)

    def historicalTicksBidAsk(self, reqId, ticks, done):  # noqa: N802
        self._add("ticks", reqId, [(t.time, t.priceBid, t.priceAsk, float(t.sizeBid),
                                    float(t.sizeAsk), t.tickAttribBidAsk.bidPastLow,
                                    t.tickAttribBidAsk.askPastHigh) for t in ticks], done)

    def historicalTicksLast(self, reqId, ticks, done):  # noqa: N802
        self._add("ticks", reqId, [(t.time, t.price, float(t.size), t.exchange,
                                    t.specialConditions, t.tickAttribLast.pastLimit,
                                    t.tickAttribLast.unreported) for t in ticks], done)


def _file(tmp_path):
    """The LOBSTER sample in a catalog, and its rows (ts, event, price, size, top of book)."""
    catalog = Catalog(tmp_path / "catalog")
    kind, files, options = SAMPLE[0]
    catalog.add(read(kind, [str(SAMPLE_DIR / f) for f in files], options))
    rows = catalog.read("lobster/AAPL").to_pylist()
    return catalog, rows


def _expected(rows):
    """What IB's three answers hold for the whole file, straight from its rows."""
    trades = [(r["ts"] // NS, r["price"], float(r["size"]), "", "", False, False)
              for r in rows if r["event"] in (4, 5, 6) and r["size"] > 0]
    quotes, mids, prices = [], [], []
    last = last_mid = last_px = None
    for r in rows:
        top = (r["bid_price_1"], r["ask_price_1"], float(r["bid_size_1"]), float(r["ask_size_1"]))
        if top != last:
            quotes.append((r["ts"] // NS, *top, False, False))
        if top[:2] != last_px:
            prices.append((r["ts"] // NS, *top, False, False))
        mid = round((top[0] + top[1]) / 2, 4)
        if mid != last_mid:
            mids.append((r["ts"] // NS, mid, 0.0))
        last, last_mid, last_px = top, mid, top[:2]
    return trades, quotes, mids, prices


def _ask(c, req_id, start, end, count, what, ignore_size=False):
    c.client.reqHistoricalTicks(req_id, stock("AAPL"), start, end, count, what, 1, ignore_size,
                                [])
    (_, ticks, done), = c.wait("ticks", lambda e: e[0] == req_id, deadline=60)
    assert done is True
    return ticks


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y%m%d-%H:%M:%S")


def test_replayed_ticks_are_the_files_trades_and_quotes(start_sim_v, tmp_path):
    catalog, rows = _file(tmp_path)
    sim = start_sim_v("--market", "lobster/AAPL", "--catalog", str(tmp_path / "catalog"),
                      "--speed", "0", "--market-wait", "now")
    wait_for(lambda: '"replay_done"' in sim.log(), 120, what="the replay to finish")
    trades, quotes, mids, prices = _expected(rows)
    exchange = catalog.meta("lobster/AAPL").instrument.exchange
    trades = [t[:3] + (exchange,) + t[4:] for t in trades]
    assert 100 < len(trades) < 1000 and len(quotes) > 100  # the file: 159 executions
    first, last = rows[0]["ts"] // NS, rows[-1]["ts"] // NS

    c = IbapiClient(sim.port, 61)
    c.rec = Ticks()
    from ibapi.client import EClient
    c.client = EClient(c.rec)
    c.connect()
    try:
        assert c.client.serverVersion() == sim.version
        # every execution, from the file's first second (historicalTicksLast)
        assert _ask(c, 1, _utc(first), "", 1000, "TRADES") == trades
        # 10 asked: the first 10 and the rest of the 10th's second (IB completes the second)
        ten = _ask(c, 2, _utc(first), "", 10, "TRADES")
        cut = trades[9][0]
        assert ten == [t for t in trades if t[0] <= cut] and len(ten) >= 10
        # to an end: the last ones at or before it, the earliest second completed
        tail = _ask(c, 3, "", _utc(last), 10, "TRADES")
        edge = trades[-10][0]
        assert tail == [t for t in trades if t[0] >= edge]
        # a start after the data's last second: nothing, still done
        assert _ask(c, 4, _utc(last + 1), "", 100, "TRADES") == []
        # top of book: every change (historicalTicksBidAsk), the first 1000 completed
        bid_ask = _ask(c, 5, _utc(first), "", 1000, "BID_ASK")
        cut = quotes[min(999, len(quotes) - 1)][0]
        assert bid_ask == [q for q in quotes if q[0] <= cut]
        # ignoreSize: a tick only when a price changes
        assert _ask(c, 6, _utc(first), "", 1000, "BID_ASK", ignore_size=True) == \
            [p for p in prices if p[0] <= prices[min(999, len(prices) - 1)][0]]
        # the midpoint's changes (historicalTicks)
        mid = _ask(c, 7, _utc(first), "", 1000, "MIDPOINT")
        cut = mids[min(999, len(mids) - 1)][0]
        assert mid == [m for m in mids if m[0] <= cut]
        # exactly one of start and end: IB's 321 under the request's id, nothing else
        c.client.reqHistoricalTicks(8, stock("AAPL"), _utc(first), _utc(last), 10, "TRADES", 1,
                                    False, [])
        c.client.reqHistoricalTicks(9, stock("AAPL"), "", "", 10, "TRADES", 1, False, [])
        c.client.reqHistoricalTicks(10, stock("AAPL"), _utc(first), "", 10, "BIDS", 1, False,
                                    [])
        for req_id in (8, 9, 10):
            c.wait_error(321, req_id, deadline=60)
        assert not c.rec.get("ticks", lambda e: e[0] in (8, 9, 10))
    finally:
        c.disconnect()


@pytest.mark.parametrize("what", ["TRADES", "BID_ASK", "MIDPOINT"])
def test_walked_ticks_follow_the_simulators_own_prints(start_sim_v, what):
    """Without replay: the seconds the simulator's walk printed in, as its 1-second bars say
    (another request path over the same history)."""
    sim = start_sim_v()
    c = IbapiClient(sim.port, 62)
    c.rec = Ticks()
    from ibapi.client import EClient
    c.client = EClient(c.rec)
    c.connect()
    try:
        def now() -> int:
            c.rec.clear("currentTime")
            c.client.reqCurrentTime()
            (t,), = c.wait("currentTime", deadline=30)
            return int(t)
        started = now()
        # 5 s of the walk's own prints after the first (the bars before the simulator
        # started are synthetic, with no prints behind them)
        wait_for(lambda: now() >= started + 7, 60, what="7 s of simulated time")
        end_s = now() - 1
        end = _utc(end_s)
        c.client.reqHistoricalData(1, stock("AAPL"), end, "5 S", "1 secs", "TRADES", 0, 2,
                                   False, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 1, deadline=60)
        bars = [b for _, b in c.rec.get("historicalData") if float(b.volume) > 0]
        ticks = _ask(c, 2, "", end, 1000, what)
        assert bars, "the walk printed nothing in 5 s"
        ticks = [t for t in ticks if end_s - 5 <= t[0] < end_s]
        if what == "TRADES":
            assert [(t[0], t[1], t[2]) for t in ticks] == \
                [(int(b.date), float(b.close), float(b.volume)) for b in bars]
        else:
            assert ticks and {t[0] for t in ticks} <= {int(b.date) for b in bars}
    finally:
        c.disconnect()
