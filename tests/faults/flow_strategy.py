"""The fault matrix's strategy: a place, a modify and a cancel always on their way.

Every timer (params.timer_s in the strategy file; 0.5 s in the matrix) it
- cancels (again every 2 s) any order IB has not confirmed within 2 s, whatever holds it up;
- keeps one order crossing the spread working (alternating sides, so fills keep coming and
  the position stays near flat), cancelling it if it has worked for more than 2 s;
- keeps one order resting 1% under the mid (never filled while a test runs): once IB has it
  working it is modified (one tick down, one tick up), then cancelled, and a new one is placed.
So in any half second the fleet carries new orders, modifies and cancels. After a restart it
works from execution's view of its open orders (a resting order is one far under the mid)."""
from __future__ import annotations

from services.strategy.base import Strategy

FAR = 0.005  # an order more than this fraction under the mid is the resting one


class Flow(Strategy):
    def on_start(self) -> None:
        self.flip = False
        self.first_seen: dict[str, int] = {}
        self.modifies: dict[str, int] = {}
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")

    def on_timer(self, now_ns: int) -> None:
        if self.paused:
            return
        symbol = self.symbols[0]
        mid = self.mids.get(symbol)
        if not mid:
            return
        tick = self.instrument(symbol).min_tick
        quantity = float(self.params.get("quantity", 10))
        crossing, resting = [], []
        for order in self.open_orders(symbol):
            first = self.first_seen.setdefault(order.client_order_id, now_ns)
            if order.state == "new" and now_ns - first > 5e9:
                continue  # an intent nobody reported on (refused while execution could not
                # write, then lost in a re-join): not an order; do not wait for it forever
            far = order.side == "BUY" and order.limit_price < mid * (1 - FAR)
            (resting if far else crossing).append(order)
            if order.state != "submitted":
                # not confirmed yet (e.g. IB's answer waits for execution's journal): a cancel
                # now and then, so intents keep flowing whatever state the orders are in
                if now_ns - first > 2e9:
                    self.cancel(order.client_order_id)
                    self.first_seen[order.client_order_id] = now_ns
                continue
            if far:
                done = self.modifies.get(order.client_order_id, 0)
                if done < 2:  # a modify: one tick down, then back up
                    step = -tick if done == 0 else tick
                    self.modify(order.client_order_id, limit_price=order.limit_price + step)
                    self.modifies[order.client_order_id] = done + 1
                elif done == 2 or now_ns - first > 5e9:  # then a cancel (again if it lingers)
                    self.cancel(order.client_order_id)
                    self.modifies[order.client_order_id] = 3
                    self.first_seen[order.client_order_id] = now_ns
            elif now_ns - first > 2e9:
                self.cancel(order.client_order_id)
                self.first_seen[order.client_order_id] = now_ns
        if not crossing:
            self.flip = not self.flip
            side = "BUY" if self.flip else "SELL"
            price = mid + 2 * tick if side == "BUY" else mid - 2 * tick
            self.submit(symbol, side, quantity, "LMT", price)
        if not resting:
            far_price = round(mid * 0.99 / tick) * tick
            self.submit(symbol, "BUY", quantity, "LMT", far_price)
