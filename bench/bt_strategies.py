"""The two strategies of ``bench/bench_backtest.py``: live ``Strategy`` subclasses whose
``on_depth`` reads the book on every depth update (the same classes would run live)."""
from __future__ import annotations

from core.book import OrderBook
from services.strategy.base import Strategy


class TopOfBook(Strategy):
    """Reads the best bid and ask (price and size) on every update."""

    def on_start(self) -> None:
        self.updates = 0
        self.spread_sum = 0.0
        for symbol in self.symbols:
            self.subscribe(symbol, "depth")

    def on_depth(self, symbol: str, book: OrderBook) -> None:
        bid = book.best_bid_price()
        ask = book.best_ask_price()
        self.top = (bid, book.best_bid_size(), ask, book.best_ask_size())
        self.updates += 1
        self.spread_sum += ask - bid


class Imbalance5(Strategy):
    """Bid/ask size imbalance over the top 5 levels on every update
    (``book.size_imbalance(5)``: (B - A) / (B + A), sizes summed over 5 levels a side)."""

    def on_start(self) -> None:
        self.updates = 0
        self.imbalance_sum = 0.0
        for symbol in self.symbols:
            self.subscribe(symbol, "depth")

    def on_depth(self, symbol: str, book: OrderBook) -> None:
        value = book.size_imbalance(5)
        self.updates += 1
        if value == value:
            self.imbalance_sum += value


if not hasattr(OrderBook, "size_imbalance"):  # an older core (the baseline): the same in Python
    def _on_depth(self, symbol: str, book: OrderBook) -> None:
        b = a = 0.0
        for i in range(min(5, book.bid_count)):
            b += book.level_size(1, i)
        for i in range(min(5, book.ask_count)):
            a += book.level_size(0, i)
        value = (b - a) / (b + a) if b + a else float("nan")
        self.updates += 1
        if value == value:
            self.imbalance_sum += value

    Imbalance5.on_depth = _on_depth
