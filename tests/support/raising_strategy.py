"""A strategy with a bug: ``on_tick`` raises on every tick (a ZeroDivisionError), and
``on_timer`` raises a KeyError every other call; between the bugs ``on_timer`` rests one far
buy of 1 (params.below, 0.05, under the mid) while it may trade, so a test sees its intents
stop once risk halts it as errored."""
from __future__ import annotations

from proto.schema import Tick
from services.strategy.base import Strategy


class RaisingStrategy(Strategy):
    def on_start(self) -> None:
        self.timers = 0
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")

    def on_tick(self, tick: Tick) -> None:
        self.last_spread = (tick.ask - tick.bid) / 0  # the bug, on every tick

    def on_timer(self, now_ns: int) -> None:
        self.timers += 1
        if self.timers % 2:
            raise KeyError("a second bug, of another kind")
        symbol = self.symbols[0]
        mid = self.mids.get(symbol)
        if mid and len(self.open_orders()) < 5:
            self.submit(symbol, "BUY", 1, "LMT",
                        mid * (1 - float(self.params.get("below", 0.05))))
