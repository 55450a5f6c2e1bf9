"""The recorded market of one symbol as simulated execution sees it.

Depth updates drive a deep book when the recording has them; otherwise ticks and quotes set
its top. Trades (``TradeTick``, or a ``Tick`` whose cumulative volume grew) are returned as
prints so resting orders can be matched against them.
"""
from __future__ import annotations

import math

from core.book import BookError, OrderBook
from proto.schema import DepthUpdate, Message, QuoteTick, Tick, TradeTick

BOOK_ROWS = 64  # deeper than any IB depth subscription, so a recorded position always fits
ASK, BID = 0, 1  # IB's side numbers


class SymbolMarket:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.book = OrderBook(BOOK_ROWS)
        self.has_depth = False  # once depth is seen, ticks no longer overwrite the book
        self.last_volume = 0.0
        self.last_trade = math.nan
        self.book_errors = 0
        # what our own orders took from a displayed level: (side, price) -> (size shown then,
        # taken). The recorded book never shows our trades, so without this a level would be
        # taken again on the next update; a level whose recorded size changed is news and is
        # available again in full.
        self._taken: dict[tuple[int, float], tuple[float, float]] = {}

    def apply(self, msg: Message) -> list[tuple[float, float]]:
        """Update from one market data message; returns the trade prints (price, size) in it."""
        if isinstance(msg, DepthUpdate):
            self.has_depth = True
            try:
                self.book.update_depth(msg.position, msg.operation, msg.side, msg.price,
                                       msg.size)
            except BookError:
                self.book_errors += 1
                self.book.reset()  # as the live runner does: IB re-sends the book as inserts
            return []
        if isinstance(msg, Tick):
            if not self.has_depth:
                self._top(msg.bid, msg.bid_size, msg.ask, msg.ask_size)
            return self._tick_trade(msg)
        if isinstance(msg, QuoteTick):
            if not self.has_depth:
                self._top(msg.bid, msg.bid_size, msg.ask, msg.ask_size)
            return []
        if isinstance(msg, TradeTick):
            if math.isfinite(msg.price) and msg.size > 0:
                self.last_trade = msg.price
                return [(msg.price, msg.size)]
        return []

    def _top(self, bid: float, bid_size: float, ask: float, ask_size: float) -> None:
        book = self.book
        book.reset()
        if _usable(bid, bid_size):
            book.update_depth(0, 0, BID, bid, bid_size)
        if _usable(ask, ask_size):
            book.update_depth(0, 0, ASK, ask, ask_size)

    def _tick_trade(self, tick: Tick) -> list[tuple[float, float]]:
        """A Tick repeats the last trade; only a growth of the day's volume is a new print."""
        if not (math.isfinite(tick.last) and tick.last > 0):
            return []
        if tick.volume > self.last_volume:
            size = tick.volume - self.last_volume
            self.last_volume = tick.volume
            self.last_trade = tick.last
            return [(tick.last, size)]
        return []

    def available(self, side: int, position: int) -> tuple[float, float]:
        """(price, size still there for us) of a displayed level."""
        price = self.book.level_price(side, position)
        size = self.book.level_size(side, position)
        taken = self._taken.get((side, price))
        if taken is not None:
            if taken[0] == size:
                return price, max(0.0, size - taken[1])
            del self._taken[(side, price)]
        return price, size

    def take(self, side: int, price: float, quantity: float) -> None:
        shown = self.level_size_at(side, price) or 0.0
        before = self._taken.get((side, price))
        already = before[1] if before is not None and before[0] == shown else 0.0
        self._taken[(side, price)] = (shown, already + quantity)

    def mid(self) -> float:
        return self.book.mid()

    def level_size_at(self, side: int, price: float) -> float | None:
        """Displayed size at ``price`` on ``side``: 0 if the price is inside the visible range
        (or better than the best) with no level there, None if it is beyond what is visible."""
        book = self.book
        count = book.bid_count if side == BID else book.ask_count
        better = (lambda a, b: a > b + 1e-9) if side == BID else (lambda a, b: a < b - 1e-9)
        for i in range(count):
            level = book.level_price(side, i)
            if abs(level - price) < 1e-9:
                return book.level_size(side, i)
            if better(price, level):
                return 0.0
        return None if count else 0.0


def _usable(price: float, size: float) -> bool:
    return math.isfinite(price) and price > 0 and math.isfinite(size) and size >= 0
