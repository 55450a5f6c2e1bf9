"""A strategy for the kill-mode and remove tests: one bracket whose entry fills at once.

On its first usable tick it sends one bracket: a buy of ``params.quantity`` (10) at the ask
plus ``params.cross_ticks`` (2) ticks (marketable: it fills), a take-profit ``params.away``
(0.02) above the mid and a stop-loss as far under it. The exits then work at the broker
while the strategy holds the position: what a kill must keep (``on_kill = "keep_exits"``).
A bracket refused for a passing reason (no mark yet) is sent again.
"""
from __future__ import annotations

import math

from proto.schema import Tick
from services.strategy.base import Strategy


class BracketHolder(Strategy):
    TRANSIENT = {"stale_market_data", "gateway_not_synchronised"}

    def on_start(self) -> None:
        self.sent: tuple[str, ...] = ()
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")

    def on_tick(self, tick: Tick) -> None:
        if self.sent or not (math.isfinite(tick.bid) and math.isfinite(tick.ask)):
            return
        step = self.instrument(tick.symbol).min_tick
        mid = (tick.bid + tick.ask) / 2
        away = float(self.params.get("away", 0.02))
        legs = self.submit_bracket(
            tick.symbol, "BUY", float(self.params.get("quantity", 10)),
            entry=round((tick.ask + int(self.params.get("cross_ticks", 2)) * step) / step)
            * step,
            stop_loss=round(mid * (1 - away) / step) * step,
            take_profit=round(mid * (1 + away) / step) * step)
        self.sent = tuple(legs or ())

    def on_rejected(self, decision) -> None:
        if decision.client_order_id in self.sent and decision.reason in self.TRANSIENT:
            self.sent = ()  # the group was refused as a whole: send it again
