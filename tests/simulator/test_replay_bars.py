"""Market replay serving catalog bar datasets as reqHistoricalData's bars, to a real ibapi
client over a socket: the bars are the dataset's rows (real data: the daily AAPL bars the
project ships, the CME 6E future's minute bars of January 2024), bar times in the exchange's
zone, useRTH on the exchange's calendar (CME: 08:30-15:00 Chicago; all hours 17:00-16:00),
larger bars aggregated from the rows on the exchange's grid."""
from __future__ import annotations

import csv
import gzip
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from services.data.catalog import Catalog
from services.data.importers import Options, read
from services.data.sample import import_sample
from tests.backtest.test_catalog_backtest import FUTURES, shared_file
from tests.simulator.ibapi_client import IbapiClient, stock
from ibapi.contract import Contract

CHICAGO = ZoneInfo("America/Chicago")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("bars") / "catalog")
    import_sample(cat)
    options = Options(symbol="6EH4", instrument={"sec_type": "FUT", "exchange": "CME",
                                                 "min_tick": 0.00005, "multiplier": 125000.0})
    cat.add(read("bars", [str(shared_file(FUTURES))], options))
    return cat


def _euro() -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "6EH4", "FUT", "CME", "USD"
    return c


def _minute_rows():
    """The CSV's rows: (start UTC, open, high, low, close, volume)."""
    with gzip.open(shared_file(FUTURES), "rt") as handle:
        return [(datetime.fromisoformat(r["timestamp_utc"]).replace(tzinfo=timezone.utc),
                 float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
                 float(r["volume"])) for r in csv.DictReader(handle)]


def _history(client, req_id, contract, duration, size, rth):
    client.client.reqHistoricalData(req_id, contract, "", duration, size, "TRADES", rth, 1,
                                    False, [])
    client.wait("historicalDataEnd", lambda e: e[0] == req_id, deadline=60)
    return [e[1] for e in client.rec.get("historicalData", lambda e: e[0] == req_id)]


def _shape(bars):
    return [(b.date, b.open, b.high, b.low, b.close, Decimal(b.volume)) for b in bars]


def _expected(rows, zone_name, zone):
    return [(t.astimezone(zone).strftime("%Y%m%d %H:%M:%S") + f" {zone_name}", o, h, l, c,
             Decimal(int(v))) for t, o, h, l, c, v in rows]


def test_minute_bars_are_the_datasets_rows_rth_and_all_hours(start_sim, catalog):
    sim = start_sim("--market", "bars-1min/6EH4", "--catalog", str(catalog.root),
                    "--sessions", "on")
    rows = _minute_rows()
    # the clock: the end of the last bar, 2024-02-01 00:00 UTC (18:00 Chicago, 01-31)
    c = IbapiClient(sim.port, 31).connect()
    try:
        # useRTH=1: the last regular session, 2024-01-31 08:30-15:00 Chicago
        rth_lo = datetime(2024, 1, 31, 8, 30, tzinfo=CHICAGO)
        rth_hi = datetime(2024, 1, 31, 15, 0, tzinfo=CHICAGO)
        want = [r for r in rows if rth_lo <= r[0] < rth_hi]
        assert len(want) == 390
        got = _shape(_history(c, 1, _euro(), "1 D", "1 min", 1))
        assert got == _expected(want, "US/Central", CHICAGO)
        assert got[0][0] == "20240131 08:30:00 US/Central"
        # useRTH=0, two sessions: 01-31 (17:00 the day before to 16:00) and the evening of
        # 01-31, the start of 02-01's session (17:00 Chicago to the clock)
        spans = [(datetime(2024, 1, 30, 17, tzinfo=CHICAGO), datetime(2024, 1, 31, 16,
                                                                        tzinfo=CHICAGO)),
                 (datetime(2024, 1, 31, 17, tzinfo=CHICAGO), datetime(2024, 2, 1, 0,
                                                                        tzinfo=timezone.utc))]
        want_all = [r for r in rows if any(a <= r[0] < b for a, b in spans)]
        got_all = _shape(_history(c, 2, _euro(), "2 D", "1 min", 0))
        assert got_all == _expected(want_all, "US/Central", CHICAGO)
        assert len(got_all) > len(got) + 1000
        # 5-minute bars: the rows aggregated on the grid from the open
        five = _shape(_history(c, 3, _euro(), "1 D", "5 mins", 1))
        groups: dict = {}
        for r in want:
            start = rth_lo + timedelta(minutes=(r[0] - rth_lo).total_seconds() // 300 * 5)
            groups.setdefault(start, []).append(r)
        agg = [(start, g[0][1], max(x[2] for x in g), min(x[3] for x in g), g[-1][4],
                sum(x[5] for x in g)) for start, g in groups.items()]
        assert five == _expected(agg, "US/Central", CHICAGO)
        assert len(five) == 78
    finally:
        c.disconnect()


def test_daily_bars_under_a_replayed_book(start_sim, catalog):
    """With the LOBSTER AAPL book driving the market (clock 2012-06-21 09:30 New York), the
    daily bars are the dataset's up to the day before: today's session has not closed."""
    sim = start_sim("--market", "lobster/AAPL,bars-1d/AAPL", "--catalog", str(catalog.root),
                    "--sessions", "on")
    table = catalog.read("bars-1d/AAPL")
    rows = [(datetime.fromtimestamp(t / 1e9, NEW_YORK).date(), o, h, l, cl, v)
            for t, o, h, l, cl, v in zip(*(table.column(n).to_pylist() for n in
                                           ("ts", "open", "high", "low", "close", "volume")))]
    want = [(d.strftime("%Y%m%d"), o, h, l, cl, Decimal(int(v))) for d, o, h, l, cl, v in rows
            if date(2012, 5, 22) <= d < date(2012, 6, 21)]
    assert len(want) == 21  # 2012-05-22 .. 06-20, Memorial Day (05-28) closed
    c = IbapiClient(sim.port, 32).connect()
    try:
        got = _shape(_history(c, 1, stock("AAPL"), "1 M", "1 day", 1))
        assert got == want
        # a series the dataset does not hold (MIDPOINT) is the simulator's own answer
        c.client.reqHistoricalData(2, stock("AAPL"), "", "1 D", "1 hour", "MIDPOINT", 1, 1,
                                   False, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 2, deadline=60)
    finally:
        c.disconnect()
