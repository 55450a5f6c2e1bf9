"""Order-book imbalance / microprice momentum on depth data.

When the depth-weighted imbalance over the top levels, smoothed by an EMA, leans strongly one
way and the microprice confirms it, send a limit order at the far touch (buy at the ask, sell
at the bid: it takes what is there and rests if the price moved away); exit a position the
same way when the lean reverses. With ``passive = true`` it joins the near touch instead. Working orders that the market has left behind (too old, or
more than ``max_distance_ticks`` from the touch) are cancelled.

params (``ImbalanceMomentum.Params``, decoded strictly from the TOML's ``[params]``):
levels (5), span (20), threshold (0.3), quantity (100), max_position (300),
stale_after_s (5), max_distance_ticks (3), cooldown_s (1), passive (false)
"""
from __future__ import annotations

import math

import msgspec

from core.book import OrderBook
from core.signals import EMA
from services.strategy.base import Strategy


class ImbalanceMomentum(Strategy):
    class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        levels: int = 5  # book levels the imbalance is taken over
        span: int = 20  # EMA span of the imbalance
        threshold: float = 0.3  # |smoothed imbalance| that makes a signal
        quantity: float = 100
        max_position: float = 300
        stale_after_s: float = 5  # a working order older than this is cancelled
        max_distance_ticks: int = 3  # ... or this far from the touch
        cooldown_s: float = 1  # between two actions on a symbol
        passive: bool = False  # join the near touch instead of taking the far one

    params: Params

    def on_start(self) -> None:
        p = self.params
        self.levels = p.levels
        self.threshold = p.threshold
        self.quantity = p.quantity
        self.max_position = p.max_position
        self.stale_after_ns = int(p.stale_after_s * 1e9)
        self.max_distance_ticks = p.max_distance_ticks
        self.cooldown_ns = int(p.cooldown_s * 1e9)
        self.passive = p.passive
        self.signal = {s: EMA(span=p.span) for s in self.symbols}
        self.placed_at: dict[str, int] = {}
        self.last_action: dict[str, int] = {}
        for symbol in self.symbols:
            self.subscribe(symbol, "depth")

    def on_depth(self, symbol: str, book: OrderBook) -> None:
        raw = book.imbalance(self.levels)
        if not math.isfinite(raw) or book.crossed:
            return
        lean = self.signal[symbol].update(raw)
        now = self.host.now_ns()
        if now - self.last_action.get(symbol, 0) < self.cooldown_ns:
            return
        if self.open_orders(symbol):
            return  # one working order at a time per symbol
        position = self.position(symbol)
        micro, mid = book.microprice(), book.mid()
        if lean > self.threshold and micro > mid and position + self.quantity <= self.max_position:
            self._join(symbol, "BUY", self._price(book, "BUY"), now)
        elif lean < -self.threshold and micro < mid \
                and position - self.quantity >= -self.max_position:
            self._join(symbol, "SELL", self._price(book, "SELL"), now)
        elif position and (lean * position) < 0:  # the lean turned against the position
            side = "SELL" if position > 0 else "BUY"
            self._join(symbol, side, self._price(book, side), now,
                       quantity=min(abs(position), self.quantity))

    def _price(self, book: OrderBook, side: str) -> float:
        near = book.best_bid_price() if side == "BUY" else book.best_ask_price()
        far = book.best_ask_price() if side == "BUY" else book.best_bid_price()
        return near if self.passive else far

    def _join(self, symbol: str, side: str, price: float, now: int,
              quantity: float | None = None) -> None:
        if not math.isfinite(price):
            return
        coid = self.submit(symbol, side, quantity or self.quantity, "LMT", price)
        if coid:
            self.placed_at[coid] = now
            self.last_action[symbol] = now

    def on_timer(self, now_ns: int) -> None:
        for order in self.open_orders():
            if order.state in ("new", "pending_cancel"):
                continue
            book = self.books[order.symbol]
            tick = self.instrument(order.symbol).min_tick
            touch = self._price(book, order.side)
            too_old = now_ns - self.placed_at.get(order.client_order_id, now_ns) \
                > self.stale_after_ns
            too_far = math.isfinite(touch) and abs(touch - order.limit_price) \
                > self.max_distance_ticks * tick
            if too_old or too_far:
                self.cancel(order.client_order_id)
