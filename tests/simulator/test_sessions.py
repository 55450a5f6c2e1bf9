"""Trading sessions (issue 13 build item 2): historical bars on the exchange calendar (useRTH,
weekends, holidays, the exchange's zone), whatToShow values, whatToShow=SCHEDULE; an ibapi
client against a real simulator process, plus unit checks of the calendar itself."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from services.simulator import config, sessions
from services.simulator.contracts import Instrument
from services.simulator.market import Market
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, future, stock

start_sim = start_sim_at_versions()

TRANSCRIPTS = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "tws" / "transcripts"
THURSDAY = int(datetime(2026, 4, 2, 23, 0, tzinfo=timezone.utc).timestamp())   # after the close
SUNDAY = int(datetime(2026, 4, 5, 12, 0, tzinfo=timezone.utc).timestamp())
SATURDAY_END = "20260404 23:59:59 US/Eastern"
NO_PACING = "hist_burst_count = 100\n"
UNIVERSE = [Instrument(s, i) for i, s in enumerate(config.DEFAULT_UNIVERSE)]
AAPL = UNIVERSE[0]
ES = next(i for i in UNIVERSE if i.spec.sec_type == "FUT")


class Client(IbapiClient):
    """IbapiClient that records historicalSchedule too."""

    def __init__(self, port: int, client_id: int) -> None:
        super().__init__(port, client_id)
        rec = self.rec
        rec.historicalSchedule = lambda req_id, start, end, zone, items: rec._add(
            "historicalSchedule", req_id, start, end, zone,
            [(s.startDateTime, s.endDateTime, s.refDate) for s in items])


def _bars(c: Client, req_id: int, *args) -> list:
    c.client.reqHistoricalData(req_id, *args, False, [])
    c.wait("historicalDataEnd", lambda e: e[0] == req_id)
    return [e[1] for e in c.rec.get("historicalData", lambda e: e[0] == req_id)]


# ---------------------------------------------------------------- the calendar (no process)
def test_calendar_sessions_rth_and_extended_hours():
    cal = sessions.calendar_for(AAPL)
    ny = "America/New_York"
    # Good Friday 2026-04-03 and the weekend have no session
    days = [s.day for s in cal.before(datetime(2026, 4, 6, 16, tzinfo=timezone.utc).timestamp(), True)[-3:]]
    assert days == [date(2026, 4, 1), date(2026, 4, 2), date(2026, 4, 6)]
    s = cal.session_of(THURSDAY - 86400)
    local = [datetime.fromtimestamp(t, sessions.zone_info(ny)).strftime("%H:%M")
             for t in (s.open, s.close, s.ext_open, s.ext_close)]
    assert local == ["09:30", "16:00", "04:00", "20:00"]
    # an early close (the day after Thanksgiving): 13:00, after hours to 17:00
    s = cal.session_of(datetime(2026, 11, 27, 12, tzinfo=timezone.utc).timestamp())
    assert [datetime.fromtimestamp(t, sessions.zone_info(ny)).strftime("%H:%M")
            for t in (s.close, s.ext_close)] == ["13:00", "17:00"]
    assert not cal.is_open(datetime(2026, 4, 4, 15, tzinfo=timezone.utc).timestamp(), False)
    assert cal.is_open(datetime(2026, 4, 2, 12, tzinfo=timezone.utc).timestamp(), False)
    assert not cal.is_open(datetime(2026, 4, 2, 12, tzinfo=timezone.utc).timestamp(), True)
    # CME Globex: 17:00 (the day before) to 16:00 Chicago, RTH (liquid hours) 08:30-15:00
    es = sessions.calendar_for(ES).session_of(THURSDAY - 86400)
    assert [datetime.fromtimestamp(t, sessions.zone_info("America/Chicago")).strftime("%d %H:%M")
            for t in (es.ext_open, es.open, es.close, es.ext_close)] == ["01 17:00", "02 08:30", "02 15:00", "02 16:00"]


def test_what_to_show_values_are_consistent():
    market = Market(UNIVERSE, 1, 10, 100.0, THURSDAY)
    got = {}
    for what in ("TRADES", "BID", "ASK", "MIDPOINT", "BID_ASK"):
        rows, _ = sessions.history_rows(market, AAPL, THURSDAY, 1, "D", 3600, True, what, 1)
        got[what] = [tuple(float(x) for x in r[1:5]) + tuple(r[5:]) for r in rows]
    assert len({len(v) for v in got.values()}) == 1
    for t, b, a, m, ba in zip(*(got[w] for w in ("TRADES", "BID", "ASK", "MIDPOINT", "BID_ASK"))):
        for k in range(4):
            assert b[k] <= m[k] <= a[k] and b[k] < a[k]
        assert ba[2] == b[2] and ba[1] == a[1]            # low = lowest bid, high = highest ask
        assert ba[2] <= ba[0] < ba[3] <= ba[1]           # open = average bid, close = average ask
        assert t[4] != "-1" and b[4:] == ("-1", "-1", -1)  # volume, WAP, count only on TRADES


def test_schedule_matches_the_capture():
    path = TRANSCRIPTS / "historical_schedule_aapl.txt"
    if not path.exists():
        pytest.skip(f"no transcript {path}")
    line = next(x for x in path.read_text().splitlines() if x.startswith("server historical_schedule"))
    want = json.loads(line.split(" ", 2)[2])
    cal = sessions.calendar_for(AAPL)
    zone = sessions.zone_info("US/Eastern")
    got = [(sessions._sched_time(s.open, zone), sessions._sched_time(s.close, zone), s.day.strftime("%Y%m%d"))
           for s in sessions._schedule_windows(cal, 1775929932, 1, "M", True, zone)]
    assert got == [(s["start_date_time"], s["end_date_time"], s["ref_date"]) for s in want["sessions"]]


# ---------------------------------------------------------------- a simulator process
def test_history_honours_use_rth_and_the_calendar(start_sim):
    sim = start_sim("--sessions", "on", "--start-time", str(SUNDAY), toml=NO_PACING)
    c = Client(sim.port, 31).connect()
    try:
        # "1 D" on a Sunday: the last session, Thursday's (Good Friday is an exchange holiday)
        rth = _bars(c, 1, stock("AAPL"), "", "1 D", "1 hour", "TRADES", 1, 1)
        assert [b.date for b in rth] == [f"20260402 {h}:{m}:00 US/Eastern" for h, m in
                                         [("09", "30")] + [(f"{h:02d}", "00") for h in range(10, 16)]]
        assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in rth)
        every = _bars(c, 2, stock("AAPL"), "", "1 D", "1 hour", "TRADES", 0, 1)
        assert len(every) == 16 and every[0].date == "20260402 04:00:00 US/Eastern"
        assert every[-1].date == "20260402 19:00:00 US/Eastern"
        daily = _bars(c, 3, stock("AAPL"), "", "2 W", "1 day", "TRADES", 1, 1)
        assert [b.date for b in daily][-3:] == ["20260331", "20260401", "20260402"]
        assert len(daily) == 9                        # from 03-22: 10 weekdays, Good Friday left out
        # a Saturday: no bars, RTH or not (IB: 162 "HMDS query returned no data")
        for req_id, use_rth in ((4, 1), (5, 0)):
            c.client.reqHistoricalData(req_id, stock("AAPL"), SATURDAY_END, "86400 S", "1 hour",
                                       "TRADES", use_rth, 1, False, [])
            err = c.wait_error(162, req_id)
            assert "HMDS query returned no data" in err[2]
            assert not c.rec.get("historicalData", lambda e: e[0] == req_id)
        # CME futures: the Globex session in Chicago time
        es = _bars(c, 6, future("202612"), "20260402 16:00:00 US/Central", "1 D", "1 hour", "TRADES", 0, 1)
        assert len(es) == 23 and es[0].date == "20260401 17:00:00 US/Central"
        bid_ask = _bars(c, 7, stock("AAPL"), "", "1 D", "1 hour", "BID_ASK", 1, 1)
        assert len(bid_ask) == 7
        assert all(b.low <= b.open <= b.close <= b.high for b in bid_ask)
    finally:
        c.disconnect()


def test_history_schedule(start_sim):
    sim = start_sim("--start-time", "1775929932")
    c = Client(sim.port, 32).connect()
    try:
        c.client.reqHistoricalData(1, stock("AAPL"), "", "1 M", "1 day", "SCHEDULE", 1, 1, False, [])
        (_, start, end, zone, items), = c.wait("historicalSchedule", lambda e: e[0] == 1)
        assert (start, end, zone) == ("20260312-09:30:00", "20260410-16:00:00", "US/Eastern")
        assert len(items) == 21 and items[15] == ("20260402-09:30:00", "20260402-16:00:00", "20260402")
        c.client.reqHistoricalData(2, stock("AAPL"), "", "1 W", "1 day", "SCHEDULE", 0, 1, False, [])
        (_, _, _, _, items), = c.wait("historicalSchedule", lambda e: e[0] == 2)
        assert items[-1] == ("20260410-04:00:00", "20260410-20:00:00", "20260410")
        assert not c.rec.get("historicalData")
    finally:
        c.disconnect()


def test_sessions_off_keeps_every_hour(start_sim):
    """The default (sessions off): the market trades around the clock, bars cover every hour."""
    sim = start_sim("--start-time", str(THURSDAY + 2 * 86400))
    c = Client(sim.port, 33).connect()
    try:
        assert len(_bars(c, 1, stock("AAPL"), "", "1 D", "1 hour", "TRADES", 1, 1)) == 24
    finally:
        c.disconnect()
