"""Mean reversion on the z-score of the mid, entered with bracket orders.

When the mid's z-score over a rolling window passes ``entry_z`` (stretched down: buy; up:
sell), enter at the mid with a bracket: a stop ``stop_sigmas`` standard deviations away and a
take-profit back at the rolling mean. The size comes from the stop: quantity = risk per trade
(a fraction of equity) / |entry - stop|, rounded down to the lot size and capped by
``max_quantity``. One position per symbol at a time; a position recovered after a restart
counts, so a restarted strategy does not enter twice.

params (``MeanReversion.Params``, decoded strictly from the TOML's ``[params]``):
window (60), entry_z (2.0), stop_sigmas (2.0), risk_fraction (0.001), equity (1_000_000),
max_quantity (500), min_sigma_ticks (2), entry_timeout_s (30)
"""
from __future__ import annotations

import math

import msgspec

from core.signals import RollingMean, RollingStd, ZScore
from proto.schema import Tick
from services.strategy.base import Strategy


def position_size(equity: float, risk_fraction: float, entry: float, stop: float,
                  lot_size: float, max_quantity: float) -> float:
    """Shares such that hitting the stop loses ``risk_fraction`` of equity, in whole lots."""
    risk_per_unit = abs(entry - stop)
    if risk_per_unit <= 0 or not math.isfinite(risk_per_unit):
        return 0.0
    raw = equity * risk_fraction / risk_per_unit
    lots = math.floor(raw / lot_size + 1e-9)
    return min(lots * lot_size, math.floor(max_quantity / lot_size) * lot_size)


class MeanReversion(Strategy):
    class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        window: int = 60  # ticks of the rolling mean, deviation and z-score
        entry_z: float = 2.0  # |z| that enters
        stop_sigmas: float = 2.0  # the stop's distance in standard deviations
        risk_fraction: float = 0.001  # of equity lost if the stop is hit
        equity: float = 1_000_000
        max_quantity: float = 500
        min_sigma_ticks: float = 2  # no entry while the deviation is under this many ticks
        entry_timeout_s: float = 30  # an entry not filled by then is cancelled

    params: Params

    def on_start(self) -> None:
        p = self.params
        window = p.window
        self.entry_z = p.entry_z
        self.stop_sigmas = p.stop_sigmas
        self.risk_fraction = p.risk_fraction
        self.equity = p.equity
        self.max_quantity = p.max_quantity
        self.min_sigma_ticks = p.min_sigma_ticks
        self.entry_timeout_ns = int(p.entry_timeout_s * 1e9)
        self.entries: dict[str, int] = {}  # parent client order id -> when it was sent
        self.quiet_until = 0  # after a rejection, do not ask again on every tick
        self.z = {s: ZScore(window) for s in self.symbols}
        self.mean = {s: RollingMean(window) for s in self.symbols}
        self.std = {s: RollingStd(window) for s in self.symbols}
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")

    def on_tick(self, tick: Tick) -> None:
        symbol = tick.symbol
        mid = self.mids.get(symbol)
        if mid is None:
            return
        z = self.z[symbol].update(mid)
        mean = self.mean[symbol].update(mid)
        sigma = self.std[symbol].update(mid)
        if not (math.isfinite(z) and math.isfinite(sigma)):
            return  # still warming up
        if self.position(symbol) != 0 or self.open_orders(symbol):
            return
        if self.host.now_ns() < self.quiet_until:
            return
        info = self.instrument(symbol)
        sigma = max(sigma, self.min_sigma_ticks * info.min_tick)
        if z <= -self.entry_z:
            side, stop, target = "BUY", mid - self.stop_sigmas * sigma, mean
        elif z >= self.entry_z:
            side, stop, target = "SELL", mid + self.stop_sigmas * sigma, mean
        else:
            return
        entry = info.round_price(mid)
        stop, target = info.round_price(stop), info.round_price(target)
        if (side == "BUY" and not stop < entry < target) or \
                (side == "SELL" and not target < entry < stop):
            return
        quantity = position_size(self.equity, self.risk_fraction, entry, stop, info.lot_size,
                                 self.max_quantity)
        if quantity > 0:
            ids = self.submit_bracket(symbol, side, quantity, entry, stop, target)
            if ids:
                self.entries[ids[0]] = self.host.now_ns()

    def on_rejected(self, decision) -> None:
        self.quiet_until = self.host.now_ns() + 2_000_000_000

    def on_timer(self, now_ns: int) -> None:
        """An entry the market never came back to is cancelled (IB cancels its children)."""
        for parent, sent_at in list(self.entries.items()):
            order = self.orders.get(parent)
            if order is None or order.filled > 0:
                del self.entries[parent]
            elif now_ns - sent_at > self.entry_timeout_ns and order.state != "pending_cancel":
                self.cancel(parent)
