"""Market-data subscriptions and what each one sends when the market steps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .contracts import Instrument
from .encoders import qty
from .market import Level, PriceProcess, depth_ops
from .protocol import DELAYED_TICK, Tick

if TYPE_CHECKING:
    from .session import Session


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
        # a replayed book (replay.py) can have an empty side: its price is then the last, size 0
        bid, bid_size = proc.book.bids[0] if proc.book.bids else (proc.bid, 0.0)
        ask, ask_size = proc.book.asks[0] if proc.book.asks else (proc.ask, 0.0)
        for price_type, size_type, ticks, size in ((Tick.BID, Tick.BID_SIZE, bid, bid_size),
                                                   (Tick.ASK, Tick.ASK_SIZE, ask, ask_size)):
            if force or sent.get(price_type) != ticks:
                out(enc.tick_price(self.req_id, self.tick_type(price_type), inst.fmt(ticks), qty(size), 0))
                sent[price_type] = ticks
                sent[size_type] = size
            elif sent.get(size_type) != size:
                out(enc.tick_size(self.req_id, self.tick_type(size_type), qty(size)))
                sent[size_type] = size
        if inst.sec_type != "CASH":
            if force or sent.get(Tick.VOLUME) != proc.volume:
                if force or sent.get(Tick.LAST) != proc.last_ticks or sent.get(Tick.VOLUME) != proc.volume:
                    out(enc.tick_price(self.req_id, self.tick_type(Tick.LAST), inst.fmt(proc.last_ticks),
                                       qty(proc.last_size), 0))
                    sent[Tick.LAST] = proc.last_ticks
                out(enc.tick_size(self.req_id, self.tick_type(Tick.VOLUME), qty(proc.volume)))
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
