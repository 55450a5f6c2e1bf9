"""A mirror of execution's truth for one strategy: its open orders and its positions.

Execution owns orders, fills and positions; strategies and risk keep a ``StrategyMirror`` per
strategy fed from ``ord.update.STRATEGY`` (``OrderUpdate``, ``StrategyPosition``,
``StrategyDigest``). The mirror stores execution's numbers as published and computes none of
its own. It converges after a lost message: the host re-joins execution's snapshot
(``reset``) when the bus shows a gap on the topic or when a digest disagrees (``agrees``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from proto.schema import Message, OrderUpdate, StrategyDigest, StrategyPosition
from services.model.orders import DONE_VALUES
from services.model.portfolio import EPSILON


@dataclass
class StrategyMirror:
    strategy: str
    orders: dict[str, OrderUpdate] = field(default_factory=dict)  # active orders by coid
    positions: dict[str, StrategyPosition] = field(default_factory=dict)  # by symbol
    resyncs: int = 0

    def apply(self, msg: Message) -> tuple[OrderUpdate | None, OrderUpdate | None]:
        """One message from execution. For an ``OrderUpdate``: (the order as it was, as it
        is now; None when not active), so a host can keep derived sums incrementally."""
        if isinstance(msg, StrategyPosition):
            self.positions[msg.symbol] = msg
        elif isinstance(msg, OrderUpdate):
            old = self.orders.pop(msg.client_order_id, None)
            if msg.state in DONE_VALUES:
                return old, None
            self.orders[msg.client_order_id] = msg
            return old, msg
        return None, None

    def agrees(self, digest: StrategyDigest) -> bool:
        """Does this mirror hold what execution's digest says? (open orders, positions)"""
        if digest.open_orders != len(self.orders):
            return False
        mine = {s: p.quantity for s, p in self.positions.items() if abs(p.quantity) > EPSILON}
        theirs = {s: q for s, q in digest.positions.items() if abs(q) > EPSILON}
        return mine.keys() == theirs.keys() and all(abs(mine[s] - theirs[s]) <= EPSILON
                                                    for s in mine)

    def reset(self, state: list[Message]) -> None:
        """Replace everything with execution's snapshot for this strategy."""
        self.orders.clear()
        self.positions.clear()
        self.resyncs += 1
        for msg in state:
            self.apply(msg)

    def quantity(self, symbol: str) -> float:
        p = self.positions.get(symbol)
        return p.quantity if p else 0.0
