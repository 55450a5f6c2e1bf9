import msgspec
from services.strategy import Strategy


class SmaCross(Strategy):  # long above the slow average, short below; stops risk `risk` $

    class Params(msgspec.Struct, forbid_unknown_fields=True):  # [params]: a typo is refused
        bar: str = "1 min"; fast: int = 10; slow: int = 30  # noqa: E702 (kept to 30 lines)
        risk: float = 200.0; stop_ranges: float = 2.0; max_qty: int = 500  # noqa: E702

    def on_start(self):
        p = self.params
        self.sym, self.fast, self.slow, self.size = self.symbols[0], p.fast, p.slow, p.bar
        self.bars = self.history(self.sym, self.size, self.slow)  # warm-up from the gateway
        self.subscribe_bars(self.sym, self.size)

    def on_bar(self, bar):
        self.bars = (self.bars + [bar])[-self.slow:]
        if len(self.bars) < self.slow:
            return
        closes = [b.close for b in self.bars]
        side = "BUY" if sum(closes[-self.fast:]) / self.fast > sum(closes) / self.slow else "SELL"
        pos = self.position(self.sym)
        if pos and (pos > 0) != (side == "BUY"):
            self.flatten(self.sym)  # the averages crossed: out (the stop is cancelled)
        elif not pos and not self.open_orders(self.sym):
            dist = self.params.stop_ranges * sum(b.high - b.low for b in self.bars) / self.slow
            qty = max(1, min(int(self.params.risk / max(dist, 0.01)), self.params.max_qty))
            stop = bar.close - dist if side == "BUY" else bar.close + dist
            self.bracket(self.sym, side, qty, stop_loss=stop)  # market entry, stop attached
