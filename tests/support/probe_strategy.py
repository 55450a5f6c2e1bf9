"""A strategy for tests: it does on purpose what the tests need to see happen."""
from __future__ import annotations

import math

from proto.schema import Tick
from services.strategy.base import Strategy


class Probe(Strategy):
    """params.mode:
    - "intents": on the first tick, submit each of params.intents (dicts of submit() keywords,
      prices given as ticks away from the mid under "ticks_from_mid").
    - "churn": keep trading: every timer, cross the spread with a small order (alternating
      sides) so fills keep coming; cancel anything working for more than 2 s. At most 2
      orders open, except with params.past_cancels: orders already asked to cancel do not
      count (a refused cancel then does not stop new orders).
    - "rest": on the first tick, rest params.count buy orders 1% under the bid (never filled).
    - "rest_far": on the first tick, rest params.count buys of params.quantity (10) a fraction
      params.below (0.01) under the mid: far enough never to fill while a test runs.
    - "echo": log the z-score of the mid and the side it would take for every tick, and
      never trade (to compare a live run with a replay of it).
    - "target": hold params.target shares, buying whatever is missing (from its recovered
      position, so a restart that forgot the position would buy twice); params.side is the
      side exactly as written ("buy" tests the model's parsing).
    - "modify_off_tick": rest one buy params.below ticks under the mid; once IB has it
      working, modify its price by params.modify_by (a price IB may refuse: error 110).
    - "bracket": on the first tick, one bracket (entry under the mid, take-profit above,
      stop-loss under); a bracket refused for a passing reason is sent again whole.
    - "modify_pending": once the file params.go exists, one buy params.below (0.01) under the
      mid; as soon as execution reports it pending (IB has not answered yet), modify its
      price to params.modify_below (0.015) under the mid: a modify execution must hold.
    params.bars: also subscribe to real-time bars of the symbols (a feed a test can flood).
    """

    TRANSIENT = {"stale_market_data", "gateway_not_synchronised"}

    def on_start(self) -> None:
        self.mode = self.params.get("mode", "churn")
        self.todo = list(self.params.get("intents", []))  # intents mode: still to send
        self.specs: dict[str, dict] = {}
        if self.mode == "echo":
            from core.signals import ZScore
            self.z = ZScore(int(self.params.get("window", 20)))
        self.rest_sent = 0
        self.flip = False
        self.sent_at: dict[str, int] = {}
        self.cancel_asked: set[str] = set()
        self.modified = False
        self.bracket_sent = False
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")
            if self.params.get("bars"):
                self.subscribe(symbol, "bar")

    def on_tick(self, tick: Tick) -> None:
        if not (math.isfinite(tick.bid) and math.isfinite(tick.ask)):
            return
        tick_size = self.instrument(tick.symbol).min_tick
        if self.mode == "echo":  # what it would do, logged per input: never sends anything
            z = self.z.update((tick.bid + tick.ask) / 2)
            signal = "buy" if z < -1 else "sell" if z > 1 else "none"
            self.log.info("echo", extra={"src_": tick.src, "tseq": tick.tseq, "z": z,
                                         "signal": signal})
            return
        if self.mode == "intents":
            # risk may not have a fresh mark yet when the first tick arrives: intents refused
            # for such a passing reason go back on the list (see on_rejected)
            mid = (tick.bid + tick.ask) / 2
            todo, self.todo = self.todo, []
            for original in todo:
                spec = dict(original)
                offset = spec.pop("ticks_from_mid", None)
                if offset is not None:
                    spec["limit_price"] = round(mid / tick_size) * tick_size + offset * tick_size
                raw = spec.pop("raw_price", None)
                if raw is not None:
                    spec["limit_price"] = raw
                coid = self.submit_raw(spec.pop("symbol", tick.symbol), **spec)
                self.specs[coid] = original
        elif self.mode == "target":  # hold exactly params.target; buy what is missing
            missing = float(self.params.get("target", 100)) - self.position(tick.symbol)
            if missing > 0 and not self.open_orders(tick.symbol):
                self.submit(tick.symbol, self.params.get("side", "BUY"), missing, "LMT",
                            tick.ask + tick_size)
        elif self.mode == "modify_off_tick":
            grid = float(self.params.get("grid", tick_size))  # IB's tick, maybe not ours
            mid = round((tick.bid + tick.ask) / 2 / grid) * grid
            if not self.rest_sent:
                self.rest_sent = 1
                coid = self.submit(tick.symbol, "BUY", 10, "LMT",
                                   round(mid - int(self.params.get("below", 20)) * grid, 6))
                self.specs[coid] = {}
        elif self.mode == "bracket" and not self.bracket_sent:
            mid = round((tick.bid + tick.ask) / 2 / tick_size) * tick_size
            self.bracket_sent = True
            legs = self.submit_bracket(tick.symbol, "BUY", 10, mid - 30 * tick_size,
                                       mid - 60 * tick_size, mid + 30 * tick_size)
            for coid in legs or ():
                self.specs[coid] = {"bracket": True}
        elif self.mode == "rest_far":  # as "rest", far from the market
            if self.rest_sent < int(self.params.get("count", 1)):
                mid = (tick.bid + tick.ask) / 2
                coid = self.submit(tick.symbol, "BUY", float(self.params.get("quantity", 10)),
                                   "LMT", mid * (1 - float(self.params.get("below", 0.01))))
                self.specs[coid] = {}
                self.rest_sent += 1
        elif self.mode == "rest":  # rest `count` orders (one refused for a passing reason: again)
            if self.rest_sent < int(self.params.get("count", 3)):
                # 1% under the bid, on the tick grid: a test's random walk never reaches it
                # (5 ticks did, now and then, and a filled "resting" order broke the test)
                far = round(tick.bid * 0.99 / tick_size) * tick_size
                coid = self.submit(tick.symbol, "BUY", 10, "LMT",
                                   round(far - self.rest_sent * tick_size, 6))
                self.specs[coid] = {}
                self.rest_sent += 1

    def submit_raw(self, symbol, **spec):
        """Submit exactly what the test asked for: no rounding of the price."""
        from proto.schema import OrderIntent
        coid = self._new_id()
        intent = OrderIntent(strategy=self.name, client_order_id=coid, action="new",
                             symbol=symbol, side=spec.get("side", "BUY"),
                             quantity=spec.get("quantity", 10),
                             order_type=spec.get("order_type", "LMT"),
                             limit_price=spec.get("limit_price", math.nan))
        self.host.send_intent(intent)
        return coid

    def on_order_update(self, update) -> None:
        if self.mode == "modify_pending" and not self.modified \
                and update.client_order_id in self.specs and update.state == "pending_submit":
            from proto.schema import OrderIntent
            self.modified = True
            mid = self.mids.get(update.symbol)
            tick = self.instrument(update.symbol).min_tick
            price = round(mid * (1 - float(self.params.get("modify_below", 0.015))) / tick) \
                * tick
            self.host.send_intent(OrderIntent(
                strategy=self.name, client_order_id=update.client_order_id, action="modify",
                symbol=update.symbol, limit_price=round(price, 6)))
            self.log.info("modify sent", extra={"client_order_id": update.client_order_id,
                                                "limit_price": round(price, 6)})
        if self.mode == "modify_off_tick" and not self.modified and update.state == "submitted":
            from proto.schema import OrderIntent
            self.modified = True  # raw: the strategy does not round it, IB judges it
            self.host.send_intent(OrderIntent(
                strategy=self.name, client_order_id=update.client_order_id, action="modify",
                symbol=update.symbol,
                limit_price=update.limit_price + float(self.params.get("modify_by", 0.005))))

    def on_rejected(self, decision) -> None:
        spec = self.specs.pop(decision.client_order_id, None)
        if spec is None or decision.reason not in self.TRANSIENT:
            return
        if spec.get("bracket"):
            self.bracket_sent = False
            return
        if self.mode == "modify_off_tick":
            self.rest_sent = 0
            return
        if self.mode == "rest":
            self.rest_sent -= 1
        elif self.mode == "rest_far":
            self.rest_sent -= 1
        else:
            self.todo.append(spec)

    def on_timer(self, now_ns: int) -> None:
        if self.mode == "modify_pending" and not self.rest_sent:
            import os
            symbol = self.symbols[0]
            if os.path.exists(self.params["go"]) and self.mids.get(symbol):
                self.rest_sent = 1
                mid = self.mids[symbol]
                coid = self.submit(symbol, "BUY", 10, "LMT",
                                   mid * (1 - float(self.params.get("below", 0.01))))
                self.specs[coid] = {}
            return
        if self.mode != "churn" or self.paused:
            return
        for order in self.open_orders():
            sent = self.sent_at.get(order.client_order_id, now_ns)
            if now_ns - sent > 2e9 and order.state not in ("new", "pending_cancel"):
                self.cancel(order.client_order_id)
                self.cancel_asked.add(order.client_order_id)
        counted = [o for o in self.open_orders() if not (
            self.params.get("past_cancels") and o.client_order_id in self.cancel_asked)]
        if len(counted) >= 2:
            return
        symbol = self.symbols[0]
        mid = self.mids.get(symbol)
        if mid is None:
            return
        tick = self.instrument(symbol).min_tick
        self.flip = not self.flip
        side = "BUY" if self.flip else "SELL"
        price = mid + 2 * tick if side == "BUY" else mid - 2 * tick  # crosses a 1-tick spread
        coid = self.submit(symbol, side, float(self.params.get("quantity", 10)), "LMT", price)
        if coid:
            self.sent_at[coid] = now_ns
