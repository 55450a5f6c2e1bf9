"""The SMA crossover example (strategies/sma_cross.py) with its averages plotted
(``Strategy.plot``): the indicator series of the catalog backtest's report."""
from __future__ import annotations

from sma_cross import SmaCross


class SmaPlotted(SmaCross):
    def on_bar(self, bar):
        super().on_bar(bar)
        if len(self.bars) >= self.slow:
            closes = [b.close for b in self.bars]
            self.plot(f"sma {self.fast} (fast)", sum(closes[-self.fast:]) / self.fast)
            self.plot(f"sma {self.slow}", sum(closes) / self.slow)
