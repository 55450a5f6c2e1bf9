"""A probe for the latency tests: a market order of ``qty`` on the first book with both
sides, then (``every`` > 0) another, alternating sides, every ``every``-th depth update."""
from __future__ import annotations

import math

from services.strategy.base import Strategy


class MarketProbe(Strategy):
    def on_start(self) -> None:
        self.updates = 0
        self.sent = 0
        self.subscribe(self.symbols[0], "depth")

    def on_depth(self, symbol, book) -> None:
        if not (math.isfinite(book.best_bid_price()) and math.isfinite(book.best_ask_price())):
            return
        self.updates += 1
        every = int(self.params.get("every", 0))
        if self.updates == 1 or (every and self.updates % every == 0):
            side = "BUY" if self.sent % 2 == 0 else "SELL"
            self.submit(symbol, side, float(self.params.get("qty", 100)), "MKT")
            self.sent += 1
