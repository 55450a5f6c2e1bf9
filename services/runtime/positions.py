"""Average-cost position keeping, the one definition execution, risk and strategies share."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Holding:
    quantity: float = 0.0
    avg_cost: float = 0.0
    realized: float = 0.0  # per unit of price: multiply by the instrument's multiplier

    def apply(self, signed_qty: float, price: float) -> None:
        """A fill of ``signed_qty`` (negative sells) at ``price``; through zero it realises
        the closed part and flips, the new side's cost being this fill's price."""
        q = self.quantity
        if q == 0 or (q > 0) == (signed_qty > 0):
            total = q + signed_qty
            self.avg_cost = (self.avg_cost * abs(q) + price * abs(signed_qty)) / abs(total)
            self.quantity = total
            return
        closing = min(abs(q), abs(signed_qty))
        self.realized += closing * (price - self.avg_cost) * (1 if q > 0 else -1)
        rest = q + signed_qty
        if abs(rest) < 1e-12:
            self.quantity, self.avg_cost = 0.0, 0.0
        elif (rest > 0) == (q > 0):
            self.quantity = rest
        else:
            self.quantity, self.avg_cost = rest, price
