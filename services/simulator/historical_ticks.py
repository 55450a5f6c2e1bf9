"""reqHistoricalTicks: IB's Historical Time & Sales, from the simulator's market history.

IB's rules (https://interactivebrokers.github.io/tws-api/historical_time_and_sales.html, and
ibapi's EClient.reqHistoricalTicks / decoder.processHistoricalTicks*):

- exactly one of startDateTime / endDateTime is given, the other empty: from a start IB
  returns the first ``numberOfTicks`` ticks at or after it, to an end the last ones at or
  before it; at most 1000 per request, and more than asked "to complete a full second";
- one trading session per request ("Data will not be returned from multiple trading sessions
  in a single request"): with ``--sessions on`` the session of the anchor on the instrument's
  calendar, its regular hours with useRth=1; with sessions off the market never closes;
- whatToShow TRADES -> historicalTicksLast (98: time, attribute mask pastLimit=1 /
  unreported=2, price, size, exchange, special conditions); BID_ASK -> historicalTicksBidAsk
  (97: time, mask askPastHigh=1 / bidPastLow=2, bid, ask, bid size, ask size; with ignoreSize
  a tick only when a price changes, else also when a size does); MIDPOINT -> historicalTicks
  (96: time, an unused 0, price, size 0). Each answer is one message with ``done`` set.
  Times are epoch seconds (IB's ticks carry no finer time).
- paced with the historical data rules (session.hist_pacing, as reqHistoricalData).

Where the ticks come from: in market replay (replay.py) the replayed datasets' own rows up to
the data's clock: their executions for TRADES, their top of book (lobster, quotes; every event
that changes it) for BID_ASK and MIDPOINT; a dataset of prints alone has no quotes to serve.
Otherwise the per-second print history the simulator's walk has made (``Market.history``):
one print per second that traded (its last price, the second's volume), the book around it as
``sessions.priced`` quotes it (bid ``spread // 2`` ticks below, ask ``spread`` above the bid).
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

from . import pbwire
from .encoders import qty
from .logs import log
from .protocol import Code, Out
from .wire import Fields, encode

if TYPE_CHECKING:
    from .contracts import Instrument
    from .session import Session

HISTORICAL_TICKS, HISTORICAL_TICKS_BID_ASK, HISTORICAL_TICKS_LAST = (
    Out.HISTORICAL_TICKS, Out.HISTORICAL_TICKS_BID_ASK, Out.HISTORICAL_TICKS_LAST)
MAX_TICKS = 1000
WHAT = ("TRADES", "BID_ASK", "MIDPOINT")


# ------------------------------------------------------------------------------ the request
def serve(session: "Session", f: Fields) -> None:
    """Read a reqHistoricalTicks (ibapi's field order) and answer it, after the configured
    history delay like historical bars; refusals are errors under the request's id."""
    req_id = f.int()
    q = session.read_contract(f)
    f.bool()                          # includeExpired
    start_text, end_text = f.str().strip(), f.str().strip()
    count = f.int(0)
    what = f.str().strip().upper()
    use_rth = f.bool()
    ignore_size = f.bool()
    f.opt_str()                       # miscOptions
    inst = session.resolve(req_id, q)
    if inst is None:
        return
    if what not in WHAT:
        session.error(req_id, Code.VALIDATE_ERROR, what=what, cause="Invalid what to show")
        return
    if bool(start_text) == bool(end_text):
        session.error(req_id, Code.VALIDATE_ERROR, what=start_text or end_text,
                      cause="Exactly one of start or end date/time must be given")
        return
    anchor = session._parse_end(start_text or end_text)  # reqHistoricalData's time forms
    if anchor is None:
        session.error(req_id, Code.VALIDATE_ERROR, what=start_text or end_text,
                      cause="Invalid date/time")
        return
    count = min(max(count, 1), MAX_TICKS)
    violation = session.hist_pacing.check(
        time.monotonic(), (inst.con_id, what),
        (inst.con_id, "ticks", start_text, end_text, count, what, use_rth, ignore_size))
    if violation:
        log("hist_pacing", client_id=session.client_id, req_id=req_id, reason=violation)
        session.error(req_id, Code.HMDS_ERROR, text="Historical data request pacing violation")
        return

    def answer() -> None:
        if session.closed:
            return
        session.send(frame(session, req_id, what, ticks(
            session, inst, what, anchor, bool(start_text), count, use_rth, ignore_size)))

    delay = session.broker.cfg.history_delay_ms / 1000.0
    if delay <= 0:
        answer()
    else:
        asyncio.get_running_loop().call_later(delay, answer)


# -------------------------------------------------------------------------------- the ticks
def ticks(session: "Session", inst: "Instrument", what: str, anchor: float, from_start: bool,
          count: int, use_rth: bool, ignore_size: bool) -> list[tuple]:
    """The answer's ticks, oldest first (shapes: pbwire's historical ticks section)."""
    lo, hi = window(session, inst, anchor, from_start, use_rth)
    if hi < lo:
        return []
    times, rows = _source(session, inst, what, lo, hi, ignore_size)
    n = len(times)
    if n == 0:
        return []
    if from_start:
        stop = min(count, n)
        while stop < n and times[stop] == times[stop - 1]:  # complete the last second
            stop += 1
        return rows[:stop]
    first = max(0, n - count)
    while first > 0 and times[first - 1] == times[first]:    # complete the first second
        first -= 1
    return rows[first:]


def window(session: "Session", inst: "Instrument", anchor: float, from_start: bool,
           use_rth: bool) -> tuple[int, int]:
    """[lo, hi] in whole epoch seconds: one session around the anchor, never after now."""
    now = int(session.now())
    lo, hi = (int(anchor), now) if from_start else (0, int(anchor))
    if session.broker.cfg.sessions == "on":
        from .sessions import calendar_for
        cal = calendar_for(inst)
        if from_start:
            s = cal.session_of(anchor)
            if s is None:
                return 1, 0
            a, b = s.bounds(use_rth)
            lo, hi = max(lo, int(a)), min(hi, int(b) - 1)  # the session's close is not in it
        else:
            before = cal.before(anchor + 1, use_rth)
            if not before:
                return 1, 0
            a, b = before[-1].bounds(use_rth)
            lo, hi = int(a), min(hi, int(b) - 1)
    return lo, hi


def _replay_of(session: "Session"):
    """The market replay driving the market, if any (replay.py puts its clock there)."""
    from .replay import Replay
    owner = getattr(session.broker.market.clock, "__self__", None)
    return owner if isinstance(owner, Replay) else None


def _source(session: "Session", inst: "Instrument", what: str, lo: int, hi: int,
            ignore_size: bool) -> tuple[list[int], list[tuple]]:
    replay = _replay_of(session)
    if replay is not None and replay.replayed(inst.con_id):
        return _replayed(replay, inst, replay.replayed(inst.con_id), what, lo, hi, ignore_size)
    return _walked(session, inst, what, lo, hi, ignore_size)


def _px(inst: "Instrument", ticks: float) -> float:
    """A price in ticks as the decimal IB quotes (no binary noise: 22034 -> 220.34)."""
    if abs(ticks - round(ticks)) < 1e-9:
        return float(inst.fmt(int(round(ticks))))
    return round(ticks * inst.min_tick, inst.decimals + 2)


def _exchange(inst: "Instrument") -> str:
    return inst.spec.primary_exchange or inst.spec.exchange


def _replayed(replay, inst: "Instrument", sources, what: str, lo: int, hi: int,
              ignore_size: bool) -> tuple[list[int], list[tuple]]:
    lo_ns, hi_ns = lo * 1_000_000_000, (hi + 1) * 1_000_000_000
    times: list[int] = []
    rows: list[tuple] = []
    for src, reached in sources:
        a = int(np.searchsorted(src.ts[:reached], lo_ns, side="left"))
        b = int(np.searchsorted(src.ts[:reached], hi_ns, side="left"))
        if what == "TRADES":
            if src.trade_px is None:
                continue
            px, sz = src.trade_px[a:b], src.trade_sz[a:b]
            keep = np.nonzero((px >= 0) & (sz > 0))[0]
            exact = replay.print_prices(src)  # the print as stored, not rounded to a tick
            exch = _exchange(inst)
            for k in keep:
                t = int(src.ts[a + k] // 1_000_000_000)
                price = float(exact[a + k]) if exact is not None else _px(inst, int(px[k]))
                times.append(t)
                rows.append((t, False, False, price, qty(float(sz[k])), exch, ""))
            continue
        if src.bid_px is None:
            continue  # prints only: no real quotes to serve
        # the top of book before the window too, so the first row counts only if it changed
        first = max(a - 1, 0)
        bid, ask = src.bid_px[first:b, 0], src.ask_px[first:b, 0]
        bsz, asz = src.bid_sz[first:b, 0], src.ask_sz[first:b, 0]
        if what == "MIDPOINT":
            keys = [(bid + ask).astype(np.float64)]
        elif ignore_size:
            keys = [bid, ask]
        else:
            keys = [bid, ask, bsz, asz]
        changed = np.ones(len(bid), dtype=bool)
        if len(bid) > 1:
            changed[1:] = np.any([k[1:] != k[:-1] for k in keys], axis=0)
        if a > 0:
            changed[0] = False  # the row before the window: the comparison base only
        valid = (bid >= 0) & (ask >= 0)
        for k in np.nonzero(changed & valid)[0]:
            t = int(src.ts[first + k] // 1_000_000_000)
            times.append(t)
            if what == "MIDPOINT":
                rows.append((t, _px(inst, (int(bid[k]) + int(ask[k])) / 2), "0"))
            else:
                rows.append((t, False, False, _px(inst, int(bid[k])), _px(inst, int(ask[k])),
                             qty(float(bsz[k])), qty(float(asz[k]))))
    if len(sources) > 1:  # several datasets of one instrument: in time order (stable)
        order = sorted(range(len(times)), key=times.__getitem__)
        times, rows = [times[i] for i in order], [rows[i] for i in order]
    return times, rows


def _walked(session: "Session", inst: "Instrument", what: str, lo: int, hi: int,
            ignore_size: bool) -> tuple[list[int], list[tuple]]:
    hist = session.broker.market.history.get(inst.con_id, {})
    proc = session.broker.market.processes.get(inst.con_id)
    size = float(proc.level_size) if proc is not None else 1.0
    spread = max(1, inst.spec.spread_ticks)
    down, up = spread // 2, spread - spread // 2
    times: list[int] = []
    rows: list[tuple] = []
    last = None
    for t in sorted(s for s in hist if lo <= s <= hi):
        b = hist[t]
        if what == "TRADES":
            rows.append((t, False, False, _px(inst, b.close), qty(b.volume), _exchange(inst), ""))
        elif what == "MIDPOINT":
            mid = b.close + (up - down) / 2
            if mid == last:
                continue
            last = mid
            rows.append((t, _px(inst, mid), "0"))
        else:
            quote = (b.close - down, b.close + up)
            if quote == last:  # the sizes are constant here: ignoreSize changes nothing
                continue
            last = quote
            rows.append((t, False, False, _px(inst, quote[0]), _px(inst, quote[1]), qty(size),
                         qty(size)))
        times.append(t)
    return times, rows


# ------------------------------------------------------------------------------- the frames
def frame(session: "Session", req_id: int, what: str, rows: list[tuple]) -> bytes:
    """The one answer message, ``done`` set: protobuf from the historical family's server
    version (pbwire.RESPONSE_GATES), else IB's text fields (ibapi decoder's order)."""
    msg_id = {"TRADES": HISTORICAL_TICKS_LAST, "BID_ASK": HISTORICAL_TICKS_BID_ASK,
              "MIDPOINT": HISTORICAL_TICKS}[what]
    if getattr(session.enc, "pb", {}).get(msg_id):
        build = {HISTORICAL_TICKS: pbwire.historical_ticks_frame,
                 HISTORICAL_TICKS_BID_ASK: pbwire.historical_ticks_bid_ask_frame,
                 HISTORICAL_TICKS_LAST: pbwire.historical_ticks_last_frame}[msg_id]
        return build(req_id, rows, True)
    fields: list[object] = [msg_id, req_id, len(rows)]
    for row in rows:
        if msg_id == HISTORICAL_TICKS:
            t, price, size = row
            fields += [t, 0, price, size]
        elif msg_id == HISTORICAL_TICKS_BID_ASK:
            t, past_low, past_high, bid, ask, bid_size, ask_size = row
            fields += [t, int(past_high) | int(past_low) << 1, bid, ask, bid_size, ask_size]
        else:
            t, past_limit, unreported, price, size, exchange, conditions = row
            fields += [t, int(past_limit) | int(unreported) << 1, price, size, exchange,
                       conditions]
    fields.append(True)
    return encode(fields)
