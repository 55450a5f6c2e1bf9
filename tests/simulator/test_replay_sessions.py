"""Trading sessions during market replay (``--sessions on`` with ``--market``): the hours follow
the replayed data's clock, not the wall clock, as a paper IB Gateway would have on that day.

* The AMZN executions of 2012-06-21 (09:30:00.017 to 15:59:59.546 New York, data/sample),
  replayed fast: a DAY limit order placed during the replay is cancelled by the system at the
  regular close, 16:00:00 New York of 2012-06-21 in the data's clock (orderStatus Cancelled,
  error 202); a GTC order stays. The data ends before 16:00: the clock runs on after the last
  event at --speed, so the close comes. Sessions off: the clock stands at the last event and the
  DAY order stays working.
* The US stock datasets start after 09:30 (LOBSTER AAPL 09:30:00.004, AMZN 09:30:00.017): no
  pre-open. The EUR/USD quotes of ../shared/data/real start at 2020-01-01 17:00:00.065 New York,
  before IDEALPRO's session opens at 17:15 (sessions.py: 17:15-17:00 New York): an order placed
  then is held (PreSubmitted, warning 399 naming 17:15) and works at 17:15:00 of the data's
  clock, against the book of the last quote before it.

docs/simulator.md, market replay and "Trading sessions"."""
from __future__ import annotations

import csv
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract

from services.data.catalog import Catalog
from services.data.importers import Options, read
from services.data.sample import import_sample
from services.simulator.config import SimConfig
from services.simulator.replay import prepare
from tests.backtest.test_catalog_backtest import shared_file
from tests.simulator.ibapi_client import stock, order
from tests.simulator.test_session_orders import (BY_SYSTEM, _client, _orders, _place,
                                                 _round_trip, _statuses, _wait_status)
from tests.support.processes import wait_for

NY = ZoneInfo("America/New_York")
EURUSD = "ticks/EURUSD_2020-01_quotes_histdata.csv"


def ny(*args: int) -> float:
    return datetime(*args, tzinfo=NY).timestamp()


CLOSE = ny(2012, 6, 21, 16, 0)             # the regular close of the data's day
AMZN_FIRST = ny(2012, 6, 21, 9, 30) + 0.017
AMZN_LAST = ny(2012, 6, 21, 15, 59, 59) + 0.545828   # 15:59:59.545828
FX_OPEN = ny(2020, 1, 1, 17, 15)           # IDEALPRO's session of 2020-01-02 opens


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("replay_sessions") / "catalog")
    import_sample(cat)
    try:
        path = shared_file(EURUSD)
    except pytest.skip.Exception:
        return cat
    # imported as a user would, no tick given: HistData's prices have five decimals, and the
    # replay takes its tick from them (not a stock's 0.01, which rounded 1.12134 to 1.12)
    cat.add(read("histdata", [str(path)], Options()))
    return cat


def _sim_time(sim) -> float:
    return sim.control.status()["sim_time"]


def _day_and_gtc(sim, client_id: int):
    """Connect, start the replay (it waits for a market-data subscription), wait until its
    clock is inside the day, place a DAY and a GTC buy limit far below AMZN (about $220 that
    day); both Submitted."""
    c = _client(sim.port, client_id)
    assert _sim_time(sim) == pytest.approx(AMZN_FIRST, abs=1e-3)   # held at the first event
    c.client.reqMktData(1, stock("AMZN"), "", False, False, [])
    wait_for(lambda: _sim_time(sim) > AMZN_FIRST + 60, 60, what="the replay to run")
    day = _place(c, stock("AMZN"), order("BUY", 10, "LMT", lmt=100.00, ref="day"))
    gtc = _place(c, stock("AMZN"), order("BUY", 10, "LMT", lmt=100.00, tif="GTC", ref="gtc"))
    for oid in (day, gtc):
        _wait_status(c, oid, "Submitted", deadline=60)
    placed_at = _sim_time(sim)
    assert AMZN_FIRST < placed_at < CLOSE, placed_at       # placed during the replayed day
    assert c.errors(399) == [] and c.errors(202) == []
    return c, day, gtc


def test_day_order_cancelled_at_the_data_days_close_gtc_kept(start_sim, catalog):
    # 6.5 h of data at x2000: about 12 s
    sim = start_sim("--market", "trades/AMZN", "--catalog", str(catalog.root), "--sessions",
                    "on", "--speed", "2000")
    c, day, gtc = _day_and_gtc(sim, 61)
    try:
        _wait_status(c, day, "Cancelled", deadline=120)
        assert c.wait_error(202, day)[2] == "Order Canceled - reason:"
        # at the close of 2012-06-21 in the data's clock, not at any wall-clock time
        done = {o["order_id"]: o for o in sim.control.completed_orders()}
        assert done[day]["completed_time"] == CLOSE
        assert done[day]["status"] == "Cancelled"
        assert done[day]["completed_status"] == BY_SYSTEM
        assert _sim_time(sim) >= CLOSE
        assert '"replay_done"' in sim.log()    # the data ended (15:59:59.546) before the close
        _round_trip(c)
        assert _orders(sim)[gtc]["status"] == "Submitted"
        assert "Cancelled" not in _statuses(c, gtc) and c.errors(202, gtc) == []
        completed = c.completed_orders()
        assert (completed["day"][2].status, completed["day"][2].completedStatus) == \
            ("Cancelled", BY_SYSTEM)
        assert "gtc" not in completed
        # the trading hours are the data's day's: after the regular close, before 20:00
        hours = sim.control.clock()["hours"]
        amzn = next(o["con_id"] for o in sim.control.orders() if o["order_id"] == gtc)
        if _sim_time(sim) < ny(2012, 6, 21, 20, 0):
            assert hours[str(amzn)] == {"rth": False, "ext": True}
    finally:
        c.disconnect()


def test_sessions_off_the_day_order_stays_working(start_sim, catalog):
    sim = start_sim("--market", "trades/AMZN", "--catalog", str(catalog.root), "--sessions",
                    "off", "--speed", "2000")
    c, day, gtc = _day_and_gtc(sim, 62)
    try:
        wait_for(lambda: '"replay_done"' in sim.log(), 120, what="the replay to end")
        # without sessions the clock stands at the data's last event: no close comes
        assert _sim_time(sim) == pytest.approx(AMZN_LAST, abs=1e-6), _sim_time(sim)
        _round_trip(c)
        status = {oid: o["status"] for oid, o in _orders(sim).items()}
        assert status == {day: "Submitted", gtc: "Submitted"}
        assert c.errors(202) == [] and sim.control.completed_orders() == []
    finally:
        c.disconnect()


def _fx_quotes() -> list[tuple[float, float, float]]:
    """(time, bid, ask) of the EUR/USD file; its times are EST (UTC-5, no DST: January)."""
    rows = []
    with open(shared_file(EURUSD), newline="") as handle:
        for stamp, bid, ask, _ in csv.reader(handle):
            t = datetime.strptime(stamp, "%Y%m%d %H%M%S%f").replace(tzinfo=NY).timestamp()
            rows.append((t, float(bid), float(ask)))
    return rows


def test_order_placed_before_the_open_is_held_and_works_at_the_open(start_sim, catalog):
    shared_file(EURUSD)                                  # skips without ../shared/data/real
    quotes = _fx_quotes()
    assert quotes[0][0] < FX_OPEN < quotes[-1][0]        # the data has a pre-open part
    cfg, _ = prepare(SimConfig(market=("quotes/EUR.USD",), catalog=str(catalog.root)))
    # the universe's EUR CASH (local symbol EUR.USD) is the replayed one, at the data's tick
    spec = next(s for s in cfg.instruments if s.local_symbol == "EUR.USD")
    assert (spec.symbol, spec.sec_type, spec.con_id, spec.min_tick) == \
        ("EUR", "CASH", 12087792, 0.00001)
    con_id = spec.con_id
    # the replay starts at the first market-data subscription: until then the clock stands
    # at the data's first quote, 17:00:00.065, a quarter of an hour before the open
    sim = start_sim("--market", "quotes/EUR.USD", "--catalog", str(catalog.root), "--sessions",
                    "on", "--speed", "100")
    eur = Contract()
    eur.conId, eur.symbol, eur.secType, eur.exchange, eur.currency = \
        con_id, "EUR", "CASH", "IDEALPRO", "USD"
    c = _client(sim.port, 63)
    try:
        assert _sim_time(sim) == pytest.approx(quotes[0][0], abs=1e-6)
        # marketable (the ask is about 1.1217) and far below: both held until 17:15
        buy = _place(c, eur, order("BUY", 1, "LMT", lmt=1.13, ref="buy"))
        far = _place(c, eur, order("BUY", 1, "LMT", lmt=1.0, tif="GTC", ref="far"))
        held = ("Order Message:\nBUY 1 EUR.USD IDEALPRO\nWarning: Your order will not be placed "
                "at the exchange until 2020-01-01 17:15:00 US/Eastern.")
        for oid in (buy, far):
            _wait_status(c, oid, "PreSubmitted")
            assert c.wait_error(399, oid)[2] == held
        _round_trip(c)
        assert {o["status"] for o in _orders(sim).values()} == {"PreSubmitted"}
        assert sim.control.fills() == []
        # start the replay: 15 minutes of data to the open at x100, about 9 s
        c.client.reqMktData(1, eur, "", False, False, [])
        _wait_status(c, buy, "Filled", deadline=120)
        _wait_status(c, far, "Submitted", deadline=60)
        fills = [f for f in sim.control.fills() if f["order_id"] == buy]
        assert len(fills) == 1
        # at 17:15:00 of the data's clock, at the ask of the last quote before it
        before = [q for q in quotes if q[0] <= FX_OPEN][-1]
        assert fills[0]["time"] == FX_OPEN
        assert fills[0]["price"] == pytest.approx(before[2], abs=1e-9)
        assert "Submitted" not in _statuses(c, buy)      # held, then its fill
        assert _orders(sim)[far]["status"] == "Submitted"
        # the clock control stays refused: the clock is the data's
        with pytest.raises(Exception, match="replayed data"):
            sim.control.clock(at=FX_OPEN + 3600)
    finally:
        c.disconnect()
