"""Trading sessions from real exchange calendars, and the historical answers built on them.

The calendars come from `exchange_calendars` (XNYS for US stocks, CMES for CME futures) plus a
24x5 IDEALPRO week for forex. Each is read once into plain epoch-second tuples (`Calendar`):
the simulator's hot paths never touch pandas.

Per session (a trading day, its ``day`` the exchange's date):

* ``open``..``close``: IB's regular trading hours (useRTH=1): 09:30-16:00 America/New_York for
  US stocks (13:00 on early-close days), 08:30-15:00 America/Chicago (IB's liquid hours) for
  CME futures, the whole session for forex;
* ``ext_open``..``ext_close``: all the hours IB trades (useRTH=0): 04:00-20:00 for US stocks
  (the close + 4 h on early-close days), the Globex session 17:00 (the day before)-16:00 for
  CME futures, 17:15 (the day before)-17:00 America/New_York for forex.

Weekends and the exchange's holidays have no session. An instrument with no calendar (an
unknown exchange; ``calendar = "none"`` in its spec) trades around the clock: one 00:00-24:00
session a day, every day, in its zone.
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from .encoders import ib_time, qty, zone_info
from .wire import encode

if TYPE_CHECKING:
    from .contracts import Instrument
    from .market import Market

HISTORICAL_SCHEDULE = 106          # the server message (ibapi message.IN.HISTORICAL_SCHEDULE)
CALENDAR_START = "2000-01-03"
CALENDAR_END = "2036-12-31"
#: exchanges whose futures follow the CME Globex calendar
CME_EXCHANGES = {"CME", "GLOBEX", "CBOT", "ECBOT", "NYMEX", "COMEX"}
WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "SCHEDULE")


@dataclass(frozen=True)
class TradingSession:
    day: date
    open: float          # regular trading hours (useRTH=1), epoch seconds
    close: float
    ext_open: float      # all trading hours (useRTH=0)
    ext_close: float

    def bounds(self, rth: bool) -> tuple[float, float]:
        return (self.open, self.close) if rth else (self.ext_open, self.ext_close)


class Calendar:
    """The sessions of one calendar, sorted, with bisect lookups on their starts and ends."""

    def __init__(self, name: str, sessions: list[TradingSession]) -> None:
        self.name = name
        self.sessions = sessions
        self._ext_closes = [s.ext_close for s in sessions]
        self._days = [s.day for s in sessions]

    def around(self, t: float) -> TradingSession | None:
        """The session whose all-hours span holds `t`, else None (the market is closed)."""
        i = bisect.bisect_right(self._ext_closes, t)
        if i < len(self.sessions) and self.sessions[i].ext_open <= t:
            return self.sessions[i]
        return None

    def is_open(self, t: float, rth: bool) -> bool:
        s = self.around(t)
        if s is None:
            return False
        a, b = s.bounds(rth)
        return a <= t < b

    def next_open(self, t: float, rth: bool) -> float | None:
        """The first instant at or after `t` when the market is open (RTH or all hours)."""
        i = bisect.bisect_right(self._ext_closes, t)
        for s in self.sessions[i:i + 10]:
            a, b = s.bounds(rth)
            if t < b:
                return max(a, t)
        return None

    def session_of(self, t: float) -> TradingSession | None:
        """The session that `t` belongs to or, outside every session, the next one."""
        i = bisect.bisect_right(self._ext_closes, t)
        return self.sessions[i] if i < len(self.sessions) else None

    def before(self, end: float, rth: bool) -> list[TradingSession]:
        """Every session that has started (in its RTH or all-hours sense) before `end`."""
        i = bisect.bisect_right(self._ext_closes, end)
        out = self.sessions[:i]
        if i < len(self.sessions) and self.sessions[i].bounds(rth)[0] < end:
            out = self.sessions[:i + 1]
        return out

    def since_day(self, first: date) -> int:
        return bisect.bisect_left(self._days, first)


def _epoch(day: date, at: dtime, zone) -> float:
    return datetime.combine(day, at, zone).timestamp()


def _from_exchange_calendars(name: str) -> list[TradingSession]:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pandas deprecations inside exchange_calendars
        import exchange_calendars as xc   # imported on first use: pandas takes a second to load
        cal = xc.get_calendar(name, start=CALENDAR_START, end=CALENDAR_END)
        sched = cal.schedule
    opens = [t.timestamp() for t in sched["open"]]
    closes = [t.timestamp() for t in sched["close"]]
    days = [t.date() for t in sched.index]
    out = []
    if name == "XNYS":
        for d, o, c in zip(days, opens, closes):
            out.append(TradingSession(d, o, c, o - 5.5 * 3600, c + 4 * 3600))
    elif name == "CMES":
        chicago = zone_info("America/Chicago")
        for d, o, c in zip(days, opens, closes):
            rth_open = max(o, _epoch(d, dtime(8, 30), chicago))
            rth_close = min(c, _epoch(d, dtime(15, 0), chicago))
            # exchange_calendars runs CMES sessions to 17:00; Globex halts at 16:00 (IB's
            # trading hours for ES: 17:00-16:00 America/Chicago)
            ext_close = min(c, _epoch(d, dtime(16, 0), chicago))
            out.append(TradingSession(d, rth_open, max(rth_open, rth_close), o, ext_close))
    else:
        out = [TradingSession(d, o, c, o, c) for d, o, c in zip(days, opens, closes)]
    return out


def _forex() -> list[TradingSession]:
    ny = zone_info("America/New_York")
    out = []
    d = date.fromisoformat(CALENDAR_START)
    last = date.fromisoformat(CALENDAR_END)
    while d <= last:
        if d.weekday() < 5:
            o = _epoch(d - timedelta(days=1), dtime(17, 15), ny)
            c = _epoch(d, dtime(17, 0), ny)
            out.append(TradingSession(d, o, c, o, c))
        d += timedelta(days=1)
    return out


def _continuous(zone_name: str) -> list[TradingSession]:
    zone = zone_info(zone_name)
    out = []
    d = date.fromisoformat(CALENDAR_START)
    last = date.fromisoformat(CALENDAR_END)
    while d <= last:
        o = _epoch(d, dtime(0), zone)
        c = _epoch(d + timedelta(days=1), dtime(0), zone)
        out.append(TradingSession(d, o, c, o, c))
        d += timedelta(days=1)
    return out


_lock = threading.Lock()


@lru_cache(maxsize=16)
def get_calendar(name: str, zone_name: str = "UTC") -> Calendar:
    """A calendar by name (XNYS, CMES, FX, or NONE: around the clock in `zone_name`), loaded once."""
    with _lock:
        if name == "FX":
            sessions = _forex()
        elif name == "NONE":
            sessions = _continuous(zone_name)
        else:
            sessions = _from_exchange_calendars(name)
    return Calendar(name, sessions)


def calendar_name(inst: "Instrument") -> str:
    """The calendar an instrument trades on: its spec's ``calendar`` if set, else by market."""
    spec = inst.spec
    chosen = (getattr(spec, "calendar", "") or "").upper()
    if chosen:
        return chosen
    if spec.sec_type == "STK" and spec.currency == "USD":
        return "XNYS"
    if spec.sec_type in ("FUT", "FOP", "CONTFUT") and spec.exchange.upper() in CME_EXCHANGES:
        return "CMES"
    if spec.sec_type == "CASH":
        return "FX"
    return "NONE"


def calendar_for(inst: "Instrument") -> Calendar:
    return get_calendar(calendar_name(inst), inst.spec.time_zone)


# ====================================================================== historical answers
def windows(cal: Calendar, end: float, n: int, unit: str, rth: bool, zone) -> list[tuple[TradingSession, float, float]]:
    """The sessions a request of duration `n` `unit` ending at `end` covers, each with its span
    (RTH or all hours) clipped to the request: "N D" is the last N sessions (IB counts trading
    days: "1 D" on a Sunday is Friday's session, the Thursday before Good Friday in
    grounded_historical_bars), "N S" the seconds before `end`, W/M/Y calendar weeks (7 days),
    months (30) and years (365) back from the end's date."""
    started = cal.before(end, rth)
    start = -math.inf
    if unit == "D":
        chosen = started[-n:] if n > 0 else []
    elif unit == "S":
        start = end - n
        chosen = [s for s in started[-(n // 86400 + 3):] if s.bounds(rth)[1] > start]
    else:
        days = n * {"W": 7, "M": 30, "Y": 365}[unit]
        first = datetime.fromtimestamp(end, zone).date() - timedelta(days=days)
        chosen = started[cal.since_day(first):]
    out = []
    for s in chosen:
        a, b = s.bounds(rth)
        a, b = max(a, start), min(b, end)
        if b > a:
            out.append((s, a, b))
    return out


def _schedule_windows(cal: Calendar, end: float, n: int, unit: str, rth: bool, zone) -> list[TradingSession]:
    if unit == "S":
        return [s for s, _, _ in windows(cal, end, n, unit, rth, zone)]
    started = cal.before(end, rth)
    if unit == "D":
        return started[-n:] if n > 0 else []
    days = n * {"W": 7, "M": 30, "Y": 365}[unit]
    end_day = datetime.fromtimestamp(end, zone).date()
    return started[cal.since_day(end_day - timedelta(days=days)):]


def _sched_time(t: float, zone) -> str:
    return datetime.fromtimestamp(t, zone).strftime("%Y%m%d-%H:%M:%S")


def schedule_frames(session, req_id: int, inst: "Instrument", end: float, n: int, unit: str,
                    rth: bool) -> list[bytes]:
    """historicalSchedule (106): the sessions in the exchange's zone, as IB answers
    whatToShow=SCHEDULE (historical_schedule_aapl: "20260312-09:30:00", zone US/Eastern)."""
    cal = calendar_for(inst)
    zone_name = inst.spec.time_zone
    zone = zone_info(zone_name)
    chosen = _schedule_windows(cal, end, n, unit, rth, zone)
    rows = [(_sched_time(s.bounds(rth)[0], zone), _sched_time(s.bounds(rth)[1], zone), s.day.strftime("%Y%m%d"))
            for s in chosen]
    start_text = rows[0][0] if rows else _sched_time(end, zone)
    end_text = rows[-1][1] if rows else _sched_time(end, zone)
    enc = session.enc
    pb = getattr(enc, "pb", None)
    from .protocol import Out
    if pb is not None and pb.get(Out.HISTORICAL_DATA):
        from ibapi.protobuf import HistoricalSchedule_pb2, HistoricalSession_pb2
        from .pbwire import pb_frame
        m = HistoricalSchedule_pb2.HistoricalSchedule(reqId=req_id, startDateTime=start_text,
                                                      endDateTime=end_text, timeZone=zone_name)
        for a, b, ref in rows:
            m.historicalSessions.append(HistoricalSession_pb2.HistoricalSession(
                startDateTime=a, endDateTime=b, refDate=ref))
        return [pb_frame(HISTORICAL_SCHEDULE, m)]
    fields: list[object] = [HISTORICAL_SCHEDULE, req_id, start_text, end_text, zone_name, len(rows)]
    for row in rows:
        fields += list(row)
    return [encode(fields)]


Bar = tuple[float, float, float, float, float, float, int]   # start, o, h, l, c (ticks), volume, count


def _aggregate(base: list[tuple], spans: list[tuple[float, float]]) -> list[Bar]:
    """Bars over `spans` from finer `base` bars (start, o, h, l, c, v, n), all in ticks."""
    out: list[Bar] = []
    j = 0
    for a, b in spans:
        while j < len(base) and base[j][0] < a:
            j += 1
        o = h = l = c = None
        v, cnt = 0.0, 0
        while j < len(base) and base[j][0] < b:
            t0, bo, bh, bl, bc, bv, bn = base[j]
            if o is None:
                o, h, l = bo, bh, bl
            else:
                h, l = max(h, bh), min(l, bl)
            c = bc
            v += bv
            cnt += bn
            j += 1
        if o is not None:
            out.append((a, o, h, l, c, v, cnt))
    return out


def session_bars(market: "Market", inst: "Instrument", spans: list[tuple[TradingSession, float, float]],
                 bar_seconds: int, zone) -> list[tuple[TradingSession, Bar]]:
    """Bars of `bar_seconds` inside each session span, on the exchange's local grid (an hourly
    bar starts on the hour; the first one of a 09:30 open starts at 09:30, as IB's do), one per
    session for daily bars, one per week or month for longer ones."""
    daily = bar_seconds >= 86400
    base = 900 if daily else math.gcd(bar_seconds, 900)
    out: list[tuple[TradingSession, Bar]] = []
    if daily and bar_seconds > 86400:
        groups: dict[tuple, list] = {}
        for s, a, b in spans:
            key = s.day.isocalendar()[:2] if bar_seconds == 604800 else (s.day.year, s.day.month)
            groups.setdefault(key, []).append((s, a, b))
        merged = []
        for items in groups.values():
            merged.append((items[0][0], items[0][1], items[-1][2], items))
    else:
        merged = [(s, a, b, [(s, a, b)]) for s, a, b in spans]
    for s, a, b, items in merged:
        sub: list[tuple[float, float]] = []
        base_bars: list[tuple] = []
        for _, ia, ib in items:
            lo = math.floor(ia / base) * base
            hi = math.ceil(ib / base) * base
            count = int((hi - lo) // base)
            if count <= 0:
                continue
            base_bars += [bb for bb in market.bars(inst.con_id, hi, base, count) if ia <= bb[0] < ib]
            if daily:
                continue
            midnight = datetime.combine(datetime.fromtimestamp(ia, zone).date(), dtime(0), zone).timestamp()
            g = midnight + math.floor((ia - midnight) / bar_seconds) * bar_seconds
            while g < ib:
                sub.append((max(g, ia), min(g + bar_seconds, ib)))
                g += bar_seconds
        if daily:
            sub = [(a, b)]
        for bar in _aggregate(base_bars, sub):
            out.append((s, bar))
    return out


def priced(inst: "Instrument", what: str, bar: Bar) -> tuple[str, str, str, str, str, str, int]:
    """(open, high, low, close, volume, wap, count) as IB sends them for `what`: TRADES from the
    prints; BID/ASK/MIDPOINT the book's around them (a bid `spread // 2` ticks below the print,
    the ask `spread` ticks above the bid); BID_ASK IB's way: open = the average bid, high = the
    highest ask, low = the lowest bid, close = the average ask. Volume, WAP and count are -1
    for everything but TRADES, as at IB."""
    _, o, h, l, c, v, n = bar
    d = inst.decimals

    def px(ticks: float) -> str:
        if abs(ticks - round(ticks)) < 1e-9:
            return inst.fmt(int(round(ticks)))
        return f"{ticks * inst.min_tick:.{d + 2}f}"

    what = what.upper()
    if what in ("", "TRADES", "ADJUSTED_LAST", "HISTORICAL_VOLATILITY", "OPTION_IMPLIED_VOLATILITY"):
        wap = f"{(o + h + l + c) / 4 * inst.min_tick:.{d + 2}f}"
        return px(o), px(h), px(l), px(c), qty(v), wap, n
    spread = max(1, inst.spec.spread_ticks)
    down = spread // 2
    up = spread - down
    if what == "BID":
        vals = [x - down for x in (o, h, l, c)]
    elif what == "ASK":
        vals = [x + up for x in (o, h, l, c)]
    elif what == "MIDPOINT":
        vals = [x + (up - down) / 2 for x in (o, h, l, c)]
    else:  # BID_ASK
        avg = (o + h + l + c) / 4
        vals = [avg - down, h + up, l - down, avg + up]
    return px(vals[0]), px(vals[1]), px(vals[2]), px(vals[3]), "-1", "-1", -1


def history_rows(market: "Market", inst: "Instrument", end: float, n: int, unit: str,
                 bar_seconds: int, rth: bool, what: str, format_date: int) -> tuple[list[tuple], float | None]:
    """The rows of a historical answer on the instrument's calendar, and the first bar's start."""
    cal = calendar_for(inst)
    zone = zone_info(inst.spec.time_zone)
    spans = windows(cal, end, n, unit, rth, zone)
    rows = []
    first = None
    for s, bar in session_bars(market, inst, spans, bar_seconds, zone):
        t0 = bar[0]
        if first is None:
            first = t0
        if format_date == 2:
            date_text = str(int(t0))
        elif bar_seconds >= 86400:
            date_text = s.day.strftime("%Y%m%d")
        else:
            date_text = ib_time(t0, inst.spec.time_zone)
        rows.append((date_text, *priced(inst, what, bar)))
    return rows, first


def _legacy_rows(market: "Market", inst: "Instrument", end: float, bar_seconds: int, count: int,
                 what: str, format_date: int) -> tuple[list[tuple], float | None]:
    """Sessions off: `count` bars on the UTC grid before `end`, every hour of every day."""
    bars = market.bars(inst.con_id, end, bar_seconds, count)
    rows = []
    for bar in bars:
        t0 = bar[0]
        if format_date == 2:
            date_text = str(int(t0))
        elif bar_seconds >= 86400:
            date_text = datetime.fromtimestamp(t0, zone_info("UTC")).strftime("%Y%m%d")
        else:
            # intraday bar times as IB writes them with formatDate=1: in the exchange's zone,
            # named (transcript grounded_historical_bars.txt: "20260402 09:30:00 US/Eastern")
            date_text = ib_time(t0, inst.spec.time_zone)
        rows.append((date_text, *priced(inst, what, bar)))
    return rows, (bars[0][0] if bars else None)


def history_frames(session, req_id: int, inst: "Instrument", end: float, bar_seconds: int, count: int,
                   n: int, unit: str, rth: bool, what: str, format_date: int) -> list[bytes]:
    """The answer to reqHistoricalData: historicalSchedule for whatToShow=SCHEDULE, else bars
    (on the calendar with sessions on; 162 "HMDS query returned no data" when none fall in the
    request, as IB answers)."""
    from .protocol import Code
    if what.strip().upper() == "SCHEDULE":
        return schedule_frames(session, req_id, inst, end, n, unit, rth)
    market = session.broker.market
    if session.broker.cfg.sessions == "on":
        rows, first = history_rows(market, inst, end, n, unit, bar_seconds, rth, what, format_date)
        if not rows:
            exch = inst.spec.exchange
            session.error(req_id, Code.HMDS_ERROR,
                          text=f"HMDS query returned no data: {inst.spec.symbol}@{exch} {what.title()}")
            return []
    else:
        rows, first = _legacy_rows(market, inst, end, bar_seconds, count, what, format_date)
    zone = inst.spec.time_zone
    start_text = ib_time(first if first is not None else end, zone)
    return session.enc.historical_data(req_id, start_text, ib_time(end, zone), rows)
