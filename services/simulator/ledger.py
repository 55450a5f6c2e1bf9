"""The broker's ground truth: every order request, fill, commission and position, independent of
what any client was told. Tests compare a client's beliefs against this over the control socket."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .contracts import Instrument
from .wire import UNSET_DOUBLE


@dataclass
class Fill:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    symbol: str
    sec_type: str
    side: str               # BOT / SLD
    qty: float
    price: float
    time: float             # simulated epoch seconds
    cum_qty: float
    avg_price: float
    order_ref: str
    account: str
    exchange: str
    liquidity: int          # 1 added, 2 removed
    commission: float = 0.0
    realized_pnl: float = UNSET_DOUBLE


@dataclass
class Position:
    qty: float = 0.0
    avg_cost: float = 0.0        # per unit, including the multiplier (as IB reports it)
    realized: float = 0.0


@dataclass
class Ledger:
    account: str
    cash: float
    order_requests: list[dict[str, Any]] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    positions: dict[int, Position] = field(default_factory=dict)
    commissions: float = 0.0
    realized: float = 0.0
    cancels: list[dict[str, Any]] = field(default_factory=list)
    daily_start_value: float | None = None
    initial_cash: float | None = None       # the account's cash at creation (rebooking starts here)
    replaced: set[int] = field(default_factory=set)   # indexes of fills rewritten since the last commit

    def __post_init__(self) -> None:
        if self.initial_cash is None:
            self.initial_cash = self.cash

    def record_request(self, **entry: Any) -> None:
        self.order_requests.append(entry)

    def apply_fill(self, fill: Fill, inst: Instrument) -> None:
        """Book a fill and keep it."""
        self._book(fill, inst)
        self.fills.append(fill)

    def rebook(self, instrument: Callable[[int], Instrument | None]) -> None:
        """Recompute positions, cash, realized P&L and commissions from the fills, in order
        (after an execution correction replaced one). Fills of instruments no longer in the
        universe are kept but cannot be booked."""
        self.cash = float(self.initial_cash or 0.0)
        self.positions = {}
        self.commissions = 0.0
        self.realized = 0.0
        for fill in self.fills:
            inst = instrument(fill.con_id)
            if inst is not None:
                self._book(fill, inst)

    def _book(self, fill: Fill, inst: Instrument) -> None:
        """Position, average cost, realized P&L and cash of one fill."""
        signed = fill.qty if fill.side == "BOT" else -fill.qty
        mult = inst.multiplier
        pos = self.positions.setdefault(fill.con_id, Position())
        realized = 0.0
        closing = pos.qty != 0 and (pos.qty > 0) != (signed > 0)
        if closing:
            closed = min(abs(signed), abs(pos.qty))
            direction = 1.0 if pos.qty > 0 else -1.0
            realized = direction * closed * (fill.price * mult - pos.avg_cost)
            new_qty = pos.qty + signed
            if abs(new_qty) < 1e-12:
                pos.qty, pos.avg_cost = 0.0, 0.0
            elif (new_qty > 0) == (pos.qty > 0):
                pos.qty = new_qty
            else:   # flipped through zero: the remainder opens at this price
                pos.qty, pos.avg_cost = new_qty, fill.price * mult
        else:
            total = abs(pos.qty) + abs(signed)
            pos.avg_cost = (abs(pos.qty) * pos.avg_cost + abs(signed) * fill.price * mult) / total
            pos.qty += signed
        realized -= fill.commission
        pos.realized += realized
        self.realized += realized
        self.commissions += fill.commission
        fill.realized_pnl = realized if closing else UNSET_DOUBLE
        if inst.sec_type == "FUT":   # futures settle variation, not notional
            self.cash += realized if closing else -fill.commission
        else:
            self.cash -= signed * fill.price * mult + fill.commission

    def snapshot(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "cash": self.cash,
            "commissions": self.commissions,
            "realized": self.realized,
            "order_requests": list(self.order_requests),
            "fills": [asdict(f) for f in self.fills],
            "positions": {str(k): asdict(v) for k, v in self.positions.items() if v.qty or v.realized},
            "cancels": list(self.cancels),
        }
