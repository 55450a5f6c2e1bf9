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

from .encoders import ib_time, parse_filter_time, qty, zone_info
from .wire import encode

if TYPE_CHECKING:
    from .broker import Broker
    from .contracts import Instrument
    from .market import Market
    from .orders import OrderRequest, SimOrder

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


# ====================================================================== orders and market data
#: IB's "Order Message" warning for an order accepted outside its trading hours: it stays
#: PreSubmitted (whyHeld empty) until they start. Captured at server version 225 (ibkr-go's
#: transcript api_conditions_matrix_aapl, 2026-08-24 16:45 US/Eastern, a DAY LMT without
#: outsideRth placed after the close): openOrder + orderStatus PreSubmitted, then error 399
#: "Order Message:\nBUY 1 AAPL NASDAQ.NMS\nWarning: Your order will not be placed at the
#: exchange until 2026-08-25 09:30:00 US/Eastern." (same shape for SPY: "BUY 65 SPY ARCA").
ORDER_MESSAGE = 399
#: outsideRth on an order type that cannot use it (US stocks: MKT, and stops, which IB triggers in
#: RTH only): IB warns 2109, drops the flag and holds the order to the regular session (one
#: user's paper account: a MKT sent at 04:18 ET waited until 09:30; a bracket's stop leg at
#: 08:43 ET the same). Text as IB's gateway logs it (QuantConnect's IB brokerage log).
OUTSIDE_RTH_IGNORED = (2109, "Order Event Warning:Attribute 'Outside Regular Trading Hours' is "
                             "ignored based on the order type and destination. PlaceOrder is now "
                             "being processed.")
RTH_ONLY_TYPES = frozenset({"MKT", "STP"})
#: the order of boundaries at one instant: a session ends before the next one starts
_RANK = {"close": 0, "ext_close": 1, "ext_open": 2, "open": 3, "gtd": 4}


def order_message(order: "SimOrder", until: float) -> tuple[int, str]:
    """Warning 399 for an order held until `until`, in the exchange's zone as IB writes it."""
    inst = order.inst
    spec = inst.spec
    if spec.sec_type == "STK":
        where = spec.primary_exchange or spec.exchange      # NASDAQ.NMS, ARCA (captures above)
        if spec.trading_class and spec.trading_class != spec.symbol:
            where += "." + spec.trading_class
        what = f"{inst.symbol} {where}"
    else:                                                 # not captured: the local symbol
        what = f"{spec.local_symbol or inst.symbol} {spec.exchange}"
    local = datetime.fromtimestamp(until, zone_info(spec.time_zone)).strftime("%Y-%m-%d %H:%M:%S")
    return (ORDER_MESSAGE, f"Order Message:\n{order.req.action} {qty(order.req.total_qty)} {what}\n"
                           f"Warning: Your order will not be placed at the exchange until {local} "
                           f"{spec.time_zone}.")


def good_till(text: str, inst: "Instrument", local_zone: str) -> float | None:
    """A GTD order's goodTillDate as an instant: "yyyymmdd hh:mm:ss ZONE", "yyyymmdd hh:mm:ss"
    (the gateway host's zone), "yyyymmdd-hh:mm:ss" (UTC), or "yyyymmdd" (that day's close, as
    the TWS order ticket has it: "continues to work until close of market on that day"). None:
    unreadable."""
    text = (text or "").strip()
    if len(text) == 8 and text.isdigit():
        try:
            day = datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            return None
        cal = calendar_for(inst)
        i = cal.since_day(day)
        if i < len(cal.sessions) and cal.sessions[i].day == day:
            s = cal.sessions[i]
            return s.close if cal.name == "XNYS" else s.ext_close
        return datetime.combine(day + timedelta(days=1), dtime(0), zone_info(inst.spec.time_zone)).timestamp()
    return parse_filter_time(text, local_zone)


def _awaits_trigger(o: "SimOrder") -> bool:
    flag = getattr(o, "awaits_trigger", None)
    return flag if flag is not None else (o.req.order_type.startswith("STP") and not o.triggered)


class TradingHours:
    """--sessions on: orders and market data follow each instrument's calendar, as at IB.

    * US stocks (XNYS) have IB's regular-hours rule: an order works in the regular session
      (09:30-16:00), one with outsideRth also in the extended hours (04:00-20:00) unless its type
      cannot use it (MKT, STP: warning 2109). Other calendars (CME Globex, IDEALPRO, NONE) have no
      such rule: an order works whenever the instrument trades.
    * Placed outside its hours an order is accepted, PreSubmitted, with warning 399 naming when
      it will work; at that time it works (Submitted, or its fills): `hold`, `_release`.
    * DAY orders are cancelled by the system when their day ends: the regular close, or for an
      outsideRth one the end of the extended session; on the other calendars the end of the
      session. GTC orders stay. GTD orders are cancelled at their goodTillDate. OPG orders are
      worked in the opening auction at the regular open (OrderEngine.open_auction). IOC/FOK are
      worked once when they may work.
    * Outside an instrument's trading hours its price process stands still (Market.closed): no
      trade, no quote or depth change, no real-time bar; a snapshot shows the last values.

    `advance(now)` runs after every market step and after a clock jump: every boundary crossed
    since the last call is handled in time order, with the simulated clock pinned to it.
    """

    tifs = frozenset({"GTD"})   # accepted with sessions on, on top of OrderEngine's

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.market = broker.market
        self.engine = broker.engine
        self.closed = self.market.closed
        self.cal: dict[int, Calendar] = {}
        self.rth_only: dict[int, bool] = {}
        groups: dict[int, tuple[Calendar, list[int]]] = {}
        for inst in broker.universe.instruments:
            cal = calendar_for(inst)
            self.cal[inst.con_id] = cal
            self.rth_only[inst.con_id] = cal.name == "XNYS"
            groups.setdefault(id(cal), (cal, []))[1].append(inst.con_id)
        self.groups = list(groups.values())
        self.rth: dict[int, bool] = {}       # orders without outsideRth may work
        self.ext: dict[int, bool] = {}       # the instrument trades (all hours)
        self.expiry: dict[tuple[int, int], float] = {}   # GTD orders' goodTillDate
        now = self.market.now()
        self.last = now
        self._due = math.inf
        self._refresh(now)
        # a restored account (--state-dir): its GTD orders' expiries
        for o in self.engine.open_orders():
            if o.req.tif == "GTD":
                t = good_till(o.req.good_till_date, o.inst, broker.host_zone)
                if t is not None:
                    self.expiry[o.key] = t
        self._due = self._next_due(now)

    # ---- what the order engine asks
    def validate(self, req: "OrderRequest", inst: "Instrument") -> tuple[tuple[int, str], str] | None:
        if req.tif == "GTD" and good_till(req.good_till_date, inst, self.broker.host_zone) is None:
            from .protocol import Code
            return Code.ORDER_REJECTED, (f"Invalid goodTillDate {req.good_till_date!r}: "
                                         "yyyymmdd hh:mm:ss [zone] or yyyymmdd-hh:mm:ss (UTC)")
        return None

    def _outside_rth(self, order: "SimOrder") -> bool:
        """Does the order work in the extended hours of an instrument with a regular session?"""
        req = order.req
        return req.outside_rth and req.order_type not in RTH_ONLY_TYPES

    def working(self, order: "SimOrder") -> bool:
        """May the order work now (be matched, trigger)?"""
        cid = order.inst.con_id
        if cid not in self.ext:
            return True
        if self.rth_only[cid] and self._outside_rth(order):
            return self.ext[cid]
        return self.rth[cid]

    def hold(self, order: "SimOrder") -> tuple[int, str] | None:
        """An order being transmitted: None if it may work now, else the 399 warning to send
        after its PreSubmitted pair (it is then held until its hours start)."""
        inst = order.inst
        cid = inst.con_id
        req = order.req
        if req.tif == "GTD":
            t = good_till(req.good_till_date, inst, self.broker.host_zone)
            if t is not None:
                self.expiry[order.key] = t
                self._due = min(self._due, t)
        if req.outside_rth and self.rth_only.get(cid) and req.order_type in RTH_ONLY_TYPES:
            self.broker.order_error(order.client_id, order.order_id, OUTSIDE_RTH_IGNORED)
        if cid not in self.ext:
            return None
        now = self.market.now()
        cal = self.cal[cid]
        if req.tif == "OPG":
            # rests until the opening auction; outside the regular session IB says so (399)
            if self.rth[cid]:
                return None
            until = cal.next_open(now, True)
            return order_message(order, until) if until is not None else None
        if self.working(order):
            return None
        rth = not (self.rth_only[cid] and self._outside_rth(order)) and self.rth_only[cid]
        until = cal.next_open(now, rth)
        return order_message(order, until) if until is not None else None

    # ---- the clock
    def reset(self, now: float) -> None:
        """Take the hours as they are at `now`, crossing no boundary: the clock was set back, or
        put on another one (the market replay's: its data's day, not the wall clock's)."""
        self.last = now
        self._refresh(now)
        for cal, cids in self.groups:
            for cid in cids:
                self._release(cid)
        self._due = self._next_due(now)

    def advance(self, now: float) -> list[tuple[float, str, object]]:
        """Handle every boundary (and GTD expiry) in (last, now], in time order. Returns them."""
        if now < self.last:                       # the clock was set back: take the hours as they are
            self.reset(now)
            return []
        if now < self._due:
            self.last = now
            return []
        events: list[tuple[float, int, str, object]] = []
        last = self.last
        for cal, cids in self.groups:
            i = bisect.bisect_right(cal._ext_closes, last)
            while i < len(cal.sessions) and cal.sessions[i].ext_open <= now:
                s = cal.sessions[i]
                for kind, w in (("ext_open", s.ext_open), ("open", s.open), ("close", s.close),
                                ("ext_close", s.ext_close)):
                    if last < w <= now:
                        events.append((w, _RANK[kind], kind, cids))
                i += 1
        for key, t in self.expiry.items():
            if t <= now:
                events.append((t, _RANK["gtd"], "gtd", key))
        events.sort(key=lambda e: (e[0], e[1]))
        market = self.market
        saved = market.clock
        try:
            for w, _, kind, arg in events:
                market.clock = lambda w=w: w      # what happens at a boundary happens at its time
                self._fire(kind, arg, w)
        finally:
            market.clock = saved
        self.last = now
        self._due = self._next_due(now)
        return [(w, kind, arg) for w, _, kind, arg in events]

    def _fire(self, kind: str, arg, at: float) -> None:
        if kind == "gtd":
            order = self.engine.orders.get(arg)
            self.expiry.pop(arg, None)
            if order is None or not order.live or order.req.tif != "GTD":
                return
            t = good_till(order.req.good_till_date, order.inst, self.broker.host_zone)
            if t is not None and t > at:          # modified to a later date since
                self.expiry[arg] = t
                return
            self.broker.expire_day_orders(which=lambda o: o is order, by="gtd")
            return
        cids = set(arg)
        for cid in arg:
            only_rth = self.rth_only[cid]
            if kind == "ext_open":
                self.ext[cid] = True
                self.closed.discard(cid)
                if not only_rth:
                    self.rth[cid] = True
                self._release(cid)
            elif kind == "open":
                if only_rth:
                    self.rth[cid] = True
                self._release(cid)
            elif kind == "close":
                if only_rth:
                    self.rth[cid] = False
            elif kind == "ext_close":
                self.ext[cid] = False
                self.closed.add(cid)
                if not only_rth:
                    self.rth[cid] = False
        if kind == "open":
            self.engine.open_auction(which=lambda o: o.inst.con_id in cids)
        elif kind in ("close", "ext_close"):
            # the day of a DAY order ends: at the regular close, or for one that works outside
            # RTH (US stocks) at the end of the extended hours; on calendars without a regular
            # session rule at the end of the session
            def ends(o: "SimOrder") -> bool:
                cid = o.inst.con_id
                if cid not in cids or o.req.tif != "DAY":
                    return False
                late = self.rth_only[cid] and self._outside_rth(o)
                if kind == "close":
                    return self.rth_only[cid] and not late
                return late or not self.rth_only[cid]
            if any(ends(o) for o in self.engine.orders.values() if o.live):
                self.broker.expire_day_orders(which=ends, by=kind)

    def _release(self, cid: int) -> None:
        """The held orders of one instrument that may work now go to work: Submitted (or their
        fills), as an order that works at once does (OrderEngine._transmit). Held: transmitted,
        PreSubmitted for no other reason (no whyHeld, not an OPG order, no trigger to wait for).
        A held stop needs no release: it stays PreSubmitted until its trigger fires, which the
        hours allow from now on."""
        for o in list(self.engine.orders.values()):
            if o.inst.con_id == cid and o.live and o.transmitted and o.status == "PreSubmitted" \
                    and not o.why_held and o.req.tif != "OPG" and not _awaits_trigger(o) \
                    and self.working(o):
                self.engine._activate(o, send_open=False)
                self.engine._work_and_confirm(o)

    def _refresh(self, now: float) -> None:
        for cal, cids in self.groups:
            s = cal.around(now)
            ext = s is not None
            rth = s is not None and s.open <= now < s.close
            for cid in cids:
                self.ext[cid] = ext
                self.rth[cid] = rth if self.rth_only[cid] else ext
                if ext:
                    self.closed.discard(cid)
                else:
                    self.closed.add(cid)

    def _next_due(self, now: float) -> float:
        due = math.inf
        for cal, _ in self.groups:
            i = bisect.bisect_right(cal._ext_closes, now)
            if i < len(cal.sessions):
                s = cal.sessions[i]
                due = min(due, next(w for w in (s.ext_open, s.open, s.close, s.ext_close) if w > now))
        if self.expiry:
            due = min(due, min(self.expiry.values()))
        return due

    def view(self) -> dict[str, dict[str, bool]]:
        """{conId: {"rth": .., "ext": ..}}: the hours each instrument is in now (control)."""
        return {str(cid): {"rth": self.rth[cid], "ext": self.ext[cid]} for cid in self.ext}
