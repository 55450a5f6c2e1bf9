"""A strategy for the reference-data tests: it records what it receives (the symbols of its
ticks, its instruments' reference data) and runs a plan of orders one after the other, then
writes all of it to ``params.out`` (JSON) every timer.

Plan steps (``params.plan``), each sent once the step before is done (filled, refused,
cancelled) and the strategy has a quote and reference data for ``symbol``:
- ``{"kind": "cross", "side": "BUY", "quantity": 1}``: a limit that crosses the spread, priced
  with the base class's rounding (the instrument's band tick);
- ``{"kind": "raw", "symbol": "MSFT", "quantity": 1, "price": "mid+half_tick"}``: an intent
  exactly as written, around the base class (``price``: ``"mid"``, ``"mid+half_tick"``).
"""
from __future__ import annotations

import json
import math

from proto.schema import OrderIntent, Tick
from services.strategy.base import Strategy

DONE = {"filled", "cancelled", "rejected", "inactive"}
#: refusals for a passing reason (risk's first mark, the gateway's reconnect): the step again
TRANSIENT = {"stale_market_data", "gateway_not_synchronised"}


class RefData(Strategy):
    def on_start(self) -> None:
        self.plan = list(self.params.get("plan", []))
        self.step = 0
        self.waiting = ""  # the client order id of the step in flight
        self.seen: dict[str, int] = {}
        self.results: list[dict] = []
        self.quotes: dict[str, tuple[float, float]] = {}
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")
        for extra in self.params.get("also_subscribe", []):
            self.subscribe(extra, "tick")

    def on_tick(self, tick: Tick) -> None:
        self.seen[tick.symbol] = self.seen.get(tick.symbol, 0) + 1
        if math.isfinite(tick.bid) and math.isfinite(tick.ask) and tick.bid > 0:
            self.quotes[tick.symbol] = (tick.bid, tick.ask)
        self._next()

    def _next(self) -> None:
        if self.waiting or self.step >= len(self.plan):
            return
        spec = self.plan[self.step]
        symbol = spec.get("symbol", self.symbols[0])
        quote = self.quotes.get(self.symbols[0] if spec["kind"] == "raw" else symbol)
        if quote is None:
            return
        bid, ask = quote
        if spec["kind"] == "cross":
            if symbol not in self.instruments:
                return
            info = self.instrument(symbol)
            ticks = 8  # well through the spread: quotes arrive sparsely, the book moves
            price = ask + ticks * info.tick_at(ask) if spec["side"] == "BUY" \
                else bid - ticks * info.tick_at(bid)
            coid = str(self.submit(symbol, spec["side"], spec["quantity"], "LMT", price))
        else:
            mid = (bid + ask) / 2
            info = self.instruments.by_symbol.get(self.symbols[0])
            tick = info.tick_at(mid) if info else 0.01
            price = {"mid": round(round(mid / tick) * tick, 8),
                     "mid+half_tick": round(round(mid / tick) * tick + tick / 2, 8)}[spec["price"]]
            coid = self._new_id()
            self.host.send_intent(OrderIntent(
                strategy=self.name, client_order_id=coid, action="new", symbol=symbol,
                side=spec.get("side", "BUY"), quantity=spec["quantity"], order_type="LMT",
                limit_price=price))
        self.waiting = coid
        self.results.append({"step": self.step, "coid": coid, "symbol": symbol, "price": price,
                             "state": "sent", "reason": ""})

    def _result(self, coid: str) -> dict | None:
        return next((r for r in self.results if r["coid"] == coid), None)

    def on_order_update(self, update) -> None:
        result = self._result(update.client_order_id)
        if result is None:
            return
        result["state"] = update.state
        result["avg_fill_price"] = update.avg_fill_price
        if update.state in DONE and self.waiting == update.client_order_id:
            self.waiting, self.step = "", self.step + 1

    def on_rejected(self, decision) -> None:
        result = self._result(decision.client_order_id)
        if result is None:
            return
        result["state"], result["reason"] = "refused", decision.reason
        result["text"] = decision.text
        if self.waiting == decision.client_order_id:
            if decision.reason in TRANSIENT:
                self.results.remove(result)  # the same step again
                self.waiting = ""
            else:
                self.waiting, self.step = "", self.step + 1

    def on_timer(self, now_ns: int) -> None:
        self._next()
        instruments = {
            s: {"min_tick": i.min_tick, "multiplier": i.multiplier, "con_id": i.con_id,
                "local_symbol": i.local_symbol, "sec_type": i.sec_type,
                "bands": [list(b) for b in i.price_bands], "roll_date": i.roll_date,
                "time_zone_id": i.time_zone_id, "trading_hours": i.trading_hours,
                "source": i.source}
            for s, i in self.instruments.by_symbol.items()}
        out = {"seen": self.seen, "instruments": instruments, "results": self.results,
               "positions": {s: self.position(s) for s in self.symbols}}
        with open(self.params["out"] + ".tmp", "w") as f:
            json.dump(out, f)
        import os
        os.replace(self.params["out"] + ".tmp", self.params["out"])
