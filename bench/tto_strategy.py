"""The fleet side of bench_tick_to_order.py: on a bid change, one resting buy limit at the bid.

Every order it sends is logged (``tto_intent``: client order id, bid, ``time_ns`` taken just
after ``submit`` returned, i.e. after the intent left on the reliable path) so the benchmark
can place the strategy's hop. The first quote it sees is only remembered: it reacts to changes.
"""
from __future__ import annotations

import math
import time

from proto.schema import Tick
from services.strategy.base import Strategy


class TickToOrder(Strategy):
    def on_start(self) -> None:
        self.last_bid: dict[str, float] = {}
        # capacity runs: order only on the bid changes whose cent count is ``slot`` modulo
        # ``every`` (every=1: on every change)
        self.every = int(self.params.get("every", 1))
        self.slot = int(self.params.get("slot", 0))
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")

    def on_tick(self, tick: Tick) -> None:
        bid = tick.bid
        if not math.isfinite(bid) or bid <= 0:
            return
        before = self.last_bid.get(tick.symbol)
        if before == bid:
            return  # a size update or a repeated quote: not a bid change
        self.last_bid[tick.symbol] = bid
        if before is None:
            return
        if self.every > 1 and round(bid * 100) % self.every != self.slot:
            return
        coid = self.submit(tick.symbol, "BUY", 1, "LMT", limit_price=bid)
        t_ns = time.time_ns()
        self.log.info("tto_intent", extra={"coid": coid, "symbol": tick.symbol, "bid": bid,
                                           "tick_ts": tick.ts, "t_ns": t_ns})
