"""Positions, PnL and commissions from the simulated fills: the backtest's books.

Average-cost accounting (as execution and risk keep it); commission is IB's fixed pricing,
simplified: ``per_share`` a share with a ``minimum`` per order, charged as an order's
cumulative fills grow (an order filled in pieces pays the minimum once).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from proto.schema import OrderUpdate
from services.runtime.instruments import Instruments
from services.runtime.positions import Holding


@dataclass(frozen=True)
class CommissionModel:
    per_share: float = 0.005
    minimum: float = 1.0

    def for_order(self, cumulative_quantity: float) -> float:
        """What an order filled ``cumulative_quantity`` so far has paid in total."""
        if cumulative_quantity <= 0:
            return 0.0
        return max(self.minimum, self.per_share * cumulative_quantity)


@dataclass
class Ledger:
    instruments: Instruments
    commission_model: CommissionModel = field(default_factory=CommissionModel)
    holdings: dict[str, Holding] = field(default_factory=dict)
    commissions: float = 0.0
    fills: int = 0
    shares: float = 0.0
    notional: float = 0.0
    round_trips: int = 0  # a position opened from flat and brought back to flat (or through)
    _order_quantity: dict[str, float] = field(default_factory=dict)

    def apply(self, fill: OrderUpdate) -> float:
        """Book one fill; returns the commission it cost."""
        signed = fill.last_fill_qty if fill.side == "BUY" else -fill.last_fill_qty
        holding = self.holdings.setdefault(fill.symbol, Holding())
        before = holding.quantity
        holding.apply(signed, fill.last_fill_price)
        if before != 0 and (holding.quantity == 0 or (holding.quantity > 0) != (before > 0)):
            self.round_trips += 1
        done = self._order_quantity.get(fill.client_order_id, 0.0)
        self._order_quantity[fill.client_order_id] = done + fill.last_fill_qty
        cost = (self.commission_model.for_order(done + fill.last_fill_qty)
                - self.commission_model.for_order(done))
        self.commissions += cost
        self.fills += 1
        self.shares += fill.last_fill_qty
        self.notional += fill.last_fill_qty * fill.last_fill_price * self._multiplier(fill.symbol)
        return cost

    def realized(self) -> float:
        return sum(h.realized * self._multiplier(s) for s, h in sorted(self.holdings.items()))

    def unrealized(self, mids: dict[str, float]) -> float:
        total = 0.0
        for symbol, h in sorted(self.holdings.items()):
            mid = mids.get(symbol)
            if h.quantity and mid is not None:
                total += (mid - h.avg_cost) * h.quantity * self._multiplier(symbol)
        return total

    def gross_exposure(self, mids: dict[str, float]) -> float:
        return sum(abs(h.quantity) * mids.get(s, h.avg_cost) * self._multiplier(s)
                   for s, h in sorted(self.holdings.items()))

    def position(self, symbol: str) -> float:
        holding = self.holdings.get(symbol)
        return holding.quantity if holding else 0.0

    def _multiplier(self, symbol: str) -> float:
        return self.instruments.get(symbol).multiplier if symbol in self.instruments else 1.0
