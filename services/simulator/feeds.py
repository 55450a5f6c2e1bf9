"""Market-data subscriptions and what each one sends when the market steps."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .contracts import Instrument
from .encoders import ib_time, qty
from .market import Level, PriceProcess, depth_ops
from .protocol import DELAYED_TICK, Tick

if TYPE_CHECKING:
    from .session import Session


#: ibapi server_versions.MIN_SERVER_VER_MARKET_DATA_IN_SHARES: from it IB sends US stocks'
#: bid, ask and last sizes in shares, before it in round lots (TWS 985's "quotes in shares")
MARKET_DATA_IN_SHARES = 159
US_STOCK_LOT = 100


def us_stock(inst: Instrument) -> bool:
    return inst.sec_type == "STK" and inst.spec.currency == "USD"


def size_units(inst: Instrument, version: int) -> tuple[int, int]:
    """(shares per unit of a bid/ask/last size, shares per unit of the day's volume) in what
    IB sends a session of server ``version`` for reqMktData (docs/simulator.md F31): US stocks'
    volume in round lots of 100 at every version (captured: AAPL's day volume 312894 at v200),
    their sizes in lots below MARKET_DATA_IN_SHARES, shares from it; everything else in units."""
    if not us_stock(inst):
        return 1, 1
    return (1 if version >= MARKET_DATA_IN_SHARES else US_STOCK_LOT), US_STOCK_LOT


def in_units(shares: float, unit: int) -> str:
    """A size in IB's unit: whole lots (IB drops an odd lot's remainder) or as it is."""
    return qty(shares) if unit == 1 else str(int(shares // unit))


@dataclass(eq=False)
class MktSub:
    session: "Session"
    req_id: int
    inst: Instrument
    delayed: bool
    sent: dict[int, object] = field(default_factory=dict)   # tick type -> last value sent

    def tick_type(self, t: int) -> int:
        return DELAYED_TICK.get(t, t) if self.delayed else t

    def emit(self, proc: PriceProcess, force: bool = False) -> None:
        """Send what changed since the last sample (everything when `force`)."""
        inst = self.inst
        enc = self.session.enc
        out = self.session.send_md
        sent = self.sent
        size_unit, volume_unit = size_units(inst, enc.v)
        # a replayed book (replay.py) can have an empty side: its price is then the last, size 0
        bid, bid_size = proc.book.bids[0] if proc.book.bids else (proc.bid, 0.0)
        ask, ask_size = proc.book.asks[0] if proc.book.asks else (proc.ask, 0.0)
        for price_type, size_type, ticks, size in ((Tick.BID, Tick.BID_SIZE, bid, bid_size),
                                                   (Tick.ASK, Tick.ASK_SIZE, ask, ask_size)):
            if force or sent.get(price_type) != ticks:
                out(enc.tick_price(self.req_id, self.tick_type(price_type), inst.fmt(ticks),
                                   in_units(size, size_unit), 0))
                sent[price_type] = ticks
                sent[size_type] = size
            elif sent.get(size_type) != size:
                out(enc.tick_size(self.req_id, self.tick_type(size_type), in_units(size, size_unit)))
                sent[size_type] = size
        if inst.sec_type != "CASH":
            if force or sent.get(Tick.VOLUME) != proc.volume:
                if force or sent.get(Tick.LAST) != proc.last_ticks or sent.get(Tick.VOLUME) != proc.volume:
                    out(enc.tick_price(self.req_id, self.tick_type(Tick.LAST), inst.fmt(proc.last_ticks),
                                       in_units(proc.last_size, size_unit), 0))
                    sent[Tick.LAST] = proc.last_ticks
                out(enc.tick_size(self.req_id, self.tick_type(Tick.VOLUME),
                                  in_units(proc.volume, volume_unit)))
                sent[Tick.VOLUME] = proc.volume
        if force:
            out(enc.tick_price(self.req_id, self.tick_type(Tick.HIGH), inst.fmt(proc.high), "0", 0))
            out(enc.tick_price(self.req_id, self.tick_type(Tick.LOW), inst.fmt(proc.low), "0", 0))
            out(enc.tick_price(self.req_id, self.tick_type(Tick.CLOSE), inst.fmt(inst.to_ticks(inst.spec.price)), "0", 0))


@dataclass(eq=False)
class TbtSub:
    session: "Session"
    req_id: int
    inst: Instrument
    kind: str            # Last, AllLast, BidAsk, MidPoint
    last_top: tuple | None = None

    def emit(self, proc: PriceProcess, now: int) -> None:
        enc = self.session.enc
        inst = self.inst
        if self.kind in ("Last", "AllLast"):
            t = proc.trade
            if t is not None:
                exch = inst.spec.primary_exchange or inst.spec.exchange
                self.session.send_md(enc.tbt_last(self.req_id, 1 if self.kind == "Last" else 2, now,
                                                  inst.fmt(t.ticks), qty(t.size), exch))
        elif self.kind == "BidAsk":
            top = (proc.book.bids[0], proc.book.asks[0])
            if top != self.last_top:
                self.last_top = top
                (b, bs), (a, as_) = top
                self.session.send_md(enc.tbt_bid_ask(self.req_id, now, inst.fmt(b), inst.fmt(a), qty(bs), qty(as_)))
        else:
            top = (proc.bid, proc.ask)
            if top != self.last_top:
                self.last_top = top
                mid = (proc.bid + proc.ask) * inst.min_tick / 2
                self.session.send_md(enc.tbt_mid(self.req_id, now, f"{mid:.{inst.decimals + 1}f}"))


@dataclass(eq=False)
class DepthSub:
    session: "Session"
    req_id: int
    inst: Instrument
    rows: int
    smart: bool
    shown_bids: list[Level] = field(default_factory=list)
    shown_asks: list[Level] = field(default_factory=list)

    def emit(self, proc: PriceProcess) -> None:
        enc = self.session.enc
        inst = self.inst
        send = self.session.send_md
        maker = inst.spec.primary_exchange or inst.spec.exchange
        for side, shown, new, desc in ((1, self.shown_bids, proc.book.bids, True),
                                       (0, self.shown_asks, proc.book.asks, False)):
            for pos, op, (ticks, size) in depth_ops(shown, new, self.rows, desc):
                if self.smart:
                    send(enc.depth_l2(self.req_id, pos, maker, op, side, inst.fmt(ticks), qty(size), True))
                else:
                    send(enc.depth(self.req_id, pos, op, side, inst.fmt(ticks), qty(size)))
        self.shown_bids = proc.book.bids[:self.rows]
        self.shown_asks = proc.book.asks[:self.rows]


@dataclass(eq=False)
class RtbSub:
    session: "Session"
    req_id: int
    inst: Instrument
    what: str


#: how often IB sends a keepUpToDate request's bar in progress (the gateway refreshes the
#: series from 5-second bars; docs/simulator.md F30)
KEEP_UP_TO_DATE_SECONDS = 5.0


@dataclass(eq=False)
class HistLiveSub:
    """reqHistoricalData with keepUpToDate: after the bars and historicalDataEnd, the bar in
    progress (historicalDataUpdate) every ``KEEP_UP_TO_DATE_SECONDS`` until
    cancelHistoricalData or the connection ends; a bar that has ended is followed by the next
    one (same date: the bar updated; a later date: a new bar). Bars on the UTC grid of
    ``bar_seconds``, priced for ``what`` as the historical answer prices them.

    Kept in ``Session.hist_pending`` under its request id: ``cancel()`` stops it."""

    session: "Session"
    req_id: int
    inst: Instrument
    bar_seconds: int
    what: str
    format_date: int
    handle: asyncio.TimerHandle | None = None
    sent: int = 0

    def start(self) -> None:
        self.handle = asyncio.get_running_loop().call_later(KEEP_UP_TO_DATE_SECONDS, self._tick)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _tick(self) -> None:
        if self.handle is None or self.session.closed:
            return
        self.emit()
        self.start()

    def emit(self) -> None:
        from .sessions import priced
        s = self.session
        (bar,) = s.broker.market.bars(self.inst.con_id, s.now(), self.bar_seconds, 1)
        t0 = bar[0]
        if self.format_date == 2:
            date = str(int(t0))
        elif self.bar_seconds >= 86400:
            date = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y%m%d")
        else:
            date = ib_time(t0, self.inst.spec.time_zone)
        s.send_md(s.enc.historical_data_update(self.req_id, (date, *priced(self.inst, self.what, bar))))
        self.sent += 1
