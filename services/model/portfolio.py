"""Fills -> positions, commissions and realized PnL: the one definition every process uses.

Execution owns the live ``Portfolio`` (it books every fill IB reports); the backtest books its
simulated fills into the same class; risk and strategies mirror execution's published numbers
(``StrategyPosition``) and never recompute them.

Rules, each from IB's behaviour:
- A fill is identified by IB's ``execId``. IB repeats executions (``reqExecutions`` after a
  reconnect, a replay after a restart): the same execId is the same fill, booked once.
- IB corrects an execution by sending it again with the last field of the execId raised
  (``0000e0d5.6575a7f3.01.01`` corrected by ``...01.02``; TWS API docs, "Executions and
  Commissions"). The correction *replaces* the corrected fill; an older one arriving after a
  newer one is ignored.
- Commissions come separately (``commissionAndFeesReport``), keyed by execId, before or after
  their fill or never; realized PnL is reported net of the commissions booked.
- Average cost: a fill through zero realises the closed part and opens the rest at its price.
- Daily figures belong to the trading day of the fill's execution time (``TradingDay``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from enum import Enum

from services.model.orders import OrderSide
from services.model.trading_day import TradingDay
from services.runtime.instruments import Instruments

EPSILON = 1e-9


@dataclass
class Holding:
    """Average-cost position in one instrument. ``realized`` is in price units x quantity
    (multiply by the instrument's multiplier for money)."""

    quantity: float = 0.0
    avg_cost: float = 0.0
    realized: float = 0.0

    def apply(self, signed_qty: float, price: float) -> float:
        """A fill of ``signed_qty`` (negative sells) at ``price``; returns what it realised.
        Through zero it realises the closed part and flips at this fill's price."""
        q = self.quantity
        if q == 0 or (q > 0) == (signed_qty > 0):
            total = q + signed_qty
            self.avg_cost = (self.avg_cost * abs(q) + price * abs(signed_qty)) / abs(total)
            self.quantity = total
            return 0.0
        closing = min(abs(q), abs(signed_qty))
        gained = closing * (price - self.avg_cost) * (1 if q > 0 else -1)
        self.realized += gained
        rest = q + signed_qty
        if abs(rest) < 1e-12:
            self.quantity, self.avg_cost = 0.0, 0.0
        elif (rest > 0) == (q > 0):
            self.quantity = rest
        else:
            self.quantity, self.avg_cost = rest, price
        return gained


@dataclass(frozen=True)
class Fill:
    """One execution as booked: ``owner`` is the strategy (or "external")."""

    exec_id: str
    owner: str
    symbol: str
    side: OrderSide
    quantity: float
    price: float
    time_ns: int
    client_order_id: str = ""

    @property
    def signed_quantity(self) -> float:
        return self.quantity * self.side.sign


class Booked(str, Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # the same execId again: nothing changed
    CORRECTED = "corrected"  # replaced an earlier execution of the same base
    STALE = "stale"  # an older version of an execution already corrected: ignored


def exec_base(exec_id: str) -> tuple[str, int]:
    """(the execution's identity without its correction number, the correction number)."""
    base, dot, last = exec_id.rpartition(".")
    if dot and last.isdigit():
        return base, int(last)
    return exec_id, 0


@dataclass
class PositionBook:
    """Everything booked for one (owner, symbol): fills in order, and what they add up to."""

    fills: list[Fill] = field(default_factory=list)
    holding: Holding = field(default_factory=Holding)
    realized: float = 0.0  # money, gross of commissions
    commissions: float = 0.0
    daily_realized: dict[date, float] = field(default_factory=dict)  # money, gross
    daily_commissions: dict[date, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PositionView:
    """What execution publishes for one (owner, symbol) (``StrategyPosition``)."""

    owner: str
    symbol: str
    quantity: float
    avg_cost: float
    realized: float  # net of commissions, lifetime
    commissions: float
    realized_day: float  # net of commissions, ``trading_day``
    trading_day: str
    multiplier: float


class Portfolio:
    def __init__(self, instruments: Instruments | None = None,
                 trading_day: TradingDay | None = None) -> None:
        self.instruments = instruments or Instruments()
        self.trading_day = trading_day or TradingDay()
        self.books: dict[tuple[str, str], PositionBook] = {}
        self._by_base: dict[str, tuple[tuple[str, str], int]] = {}  # base -> (key, correction)
        self._fill_of: dict[str, Fill] = {}  # execId -> the booked fill (current version)
        self._commission: dict[str, float] = {}  # execId -> amount (may precede the fill)

    # -- BOOKING ------------------------------------------------------------------------------
    def book_fill(self, fill: Fill) -> Booked:
        if fill.exec_id in self._fill_of:
            return Booked.DUPLICATE
        base, number = exec_base(fill.exec_id)
        known = self._by_base.get(base)
        if known is not None:
            key, old_number = known
            if number <= old_number:
                return Booked.STALE
            book = self.books[key]
            old = next(f for f in book.fills if exec_base(f.exec_id)[0] == base)
            book.fills[book.fills.index(old)] = fill
            del self._fill_of[old.exec_id]
            self._commission.pop(old.exec_id, None)  # the correction carries its own
            if (fill.owner, fill.symbol) != key:  # corrected onto another owner or symbol
                book.fills.remove(fill)
                self._book(fill)
            self._by_base[base] = ((fill.owner, fill.symbol), number)
            self._fill_of[fill.exec_id] = fill
            self._recompute(key)
            self._recompute((fill.owner, fill.symbol))
            return Booked.CORRECTED
        self._by_base[base] = ((fill.owner, fill.symbol), number)
        self._fill_of[fill.exec_id] = fill
        self._book(fill)
        return Booked.NEW

    def _book(self, fill: Fill) -> None:
        key = (fill.owner, fill.symbol)
        book = self.books.setdefault(key, PositionBook())
        book.fills.append(fill)
        gained = book.holding.apply(fill.signed_quantity, fill.price) * self._multiplier(
            fill.symbol)
        day = self.trading_day.of(fill.time_ns)
        book.realized += gained
        book.daily_realized[day] = book.daily_realized.get(day, 0.0) + gained
        amount = self._commission.get(fill.exec_id)
        if amount is not None:
            book.commissions += amount
            book.daily_commissions[day] = book.daily_commissions.get(day, 0.0) + amount

    def _recompute(self, key: tuple[str, str]) -> None:
        fills = self.books[key].fills
        self.books[key] = PositionBook()
        for f in fills:
            self._book(f)

    def book_commission(self, exec_id: str, amount: float) -> bool:
        """IB's commission for one execution; True if it changed anything (a repeat does not)."""
        if exec_id in self._commission:
            return False
        self._commission[exec_id] = amount
        fill = self._fill_of.get(exec_id)
        if fill is not None:
            book = self.books[(fill.owner, fill.symbol)]
            day = self.trading_day.of(fill.time_ns)
            book.commissions += amount
            book.daily_commissions[day] = book.daily_commissions.get(day, 0.0) + amount
        return True

    def reassign(self, owner: str, to: str) -> list[str]:
        """Every book of ``owner`` becomes ``to``'s (a removed strategy's, handed to the
        ``unowned`` book): its fills are re-booked under ``to``, merged with ``to``'s own in
        the symbol in execution-time order (a stable sort: equal times keep their order), so
        quantities, PnL and commissions add up exactly. Returns the symbols moved."""
        moved = sorted(s for o, s in self.books if o == owner)
        for symbol in moved:
            book = self.books.pop((owner, symbol))
            target = self.books.get((to, symbol))
            fills = [replace(f, owner=to) for f in book.fills]
            for f in fills:
                self._fill_of[f.exec_id] = f
                base, number = exec_base(f.exec_id)
                self._by_base[base] = ((to, symbol), number)
            merged = sorted((target.fills if target else []) + fills, key=lambda f: f.time_ns)
            self.books[(to, symbol)] = PositionBook(fills=merged)
            self._recompute((to, symbol))
        return moved

    # -- QUERIES ------------------------------------------------------------------------------
    def has_fill(self, exec_id: str) -> bool:
        return exec_id in self._fill_of

    def knows_execution(self, exec_id: str) -> bool:
        """Has any version of this execution (its execId without the correction number)
        been booked?"""
        return exec_base(exec_id)[0] in self._by_base

    def booked_fills(self) -> list[Fill]:
        """Every booked fill, current versions only."""
        return list(self._fill_of.values())

    def commissions(self) -> dict[str, float]:
        """Commission by execId, including those whose fill has not come yet."""
        return dict(self._commission)

    def commissions_unknown(self, owner: str, symbol: str) -> int:
        """Booked fills of (owner, symbol) with no commission report yet: IB sends it at its
        own pace (before the fill, seconds after, or never: docs/simulator.md F26), so a
        missing one is counted, never taken as 0."""
        book = self.books.get((owner, symbol))
        return 0 if book is None else sum(1 for f in book.fills if f.exec_id not in self._commission)

    def fill(self, exec_id: str) -> Fill | None:
        return self._fill_of.get(exec_id)

    def quantity(self, owner: str, symbol: str) -> float:
        book = self.books.get((owner, symbol))
        return book.holding.quantity if book else 0.0

    def owners(self) -> set[str]:
        return {o for o, _ in self.books}

    def net_positions(self) -> dict[str, float]:
        """Per symbol, over every owner; flat symbols left out."""
        out: dict[str, float] = {}
        for (_, symbol), book in self.books.items():
            out[symbol] = out.get(symbol, 0.0) + book.holding.quantity
        return {s: q for s, q in out.items() if abs(q) > EPSILON}

    def view(self, owner: str, symbol: str, now_ns: int) -> PositionView:
        book = self.books.get((owner, symbol)) or PositionBook()
        today = self.trading_day.of(now_ns)
        return PositionView(owner=owner, symbol=symbol, quantity=book.holding.quantity,
                            avg_cost=book.holding.avg_cost,
                            realized=book.realized - book.commissions,
                            commissions=book.commissions,
                            realized_day=(book.daily_realized.get(today, 0.0)
                                          - book.daily_commissions.get(today, 0.0)),
                            trading_day=today.isoformat(),
                            multiplier=self._multiplier(symbol))

    def views(self, now_ns: int, owner: str | None = None) -> list[PositionView]:
        return [self.view(o, s, now_ns) for (o, s) in sorted(self.books)
                if owner is None or o == owner]

    def _multiplier(self, symbol: str) -> float:
        return self.instruments.get(symbol).multiplier if symbol in self.instruments else 1.0


def unrealized(quantity: float, avg_cost: float, mark: float, multiplier: float) -> float:
    """Open PnL of a position at ``mark`` (money)."""
    return (mark - avg_cost) * quantity * multiplier if quantity else 0.0
