"""What a backtest report reads from the ``ExecutionEngine``'s ``Portfolio`` (the model's one
definition of positions, realized PnL and commissions): no book-keeping of its own.

``snapshot`` is the account of one strategy at one moment (an equity-curve sample: realized
net of commissions, unrealized at the given mids, gross exposure, positions); ``trading``
counts what its fills add up to (fills, orders filled, round trips, shares, notional).
"""
from __future__ import annotations

from dataclasses import dataclass

from services.model.portfolio import EPSILON, Portfolio, unrealized


@dataclass
class AccountSnapshot:
    realized: float  # net of commissions: the Portfolio's own number
    realized_gross: float
    commissions: float
    unrealized: float  # at the mids given
    gross_exposure: float  # sum of |position| x mid (avg cost without a mid) x multiplier
    positions: dict[str, float]

    @property
    def equity(self) -> float:
        """Realized net of commissions plus unrealized: the run starts flat at 0."""
        return self.realized + self.unrealized


def symbols_of(portfolio: Portfolio, owner: str, symbols: list[str]) -> list[str]:
    """``symbols`` then any other symbol ``owner`` has booked, in a fixed order."""
    extra = sorted({s for (o, s) in portfolio.books if o == owner} - set(symbols))
    return list(symbols) + extra


def snapshot(portfolio: Portfolio, owner: str, symbols: list[str],
             mids: dict[str, float]) -> AccountSnapshot:
    """``owner``'s account now: the Portfolio's positions, realized PnL and commissions (read
    from its books: ``PositionView.realized`` is ``book.realized - book.commissions``)."""
    gross_realized = commissions = open_pnl = gross = 0.0
    positions: dict[str, float] = {}
    books = portfolio.books
    for symbol in symbols_of(portfolio, owner, symbols):
        book = books.get((owner, symbol))
        if book is None:
            positions[symbol] = 0.0
            continue
        quantity, avg_cost = book.holding.quantity, book.holding.avg_cost
        multiplier = _multiplier(portfolio, symbol)
        positions[symbol] = quantity
        commissions += book.commissions
        gross_realized += book.realized
        mid = mids.get(symbol)
        if mid is not None:
            open_pnl += unrealized(quantity, avg_cost, mid, multiplier)
        gross += abs(quantity) * (mid if mid is not None else avg_cost) * multiplier
    return AccountSnapshot(gross_realized - commissions, gross_realized, commissions, open_pnl,
                           gross, positions)


def _multiplier(portfolio: Portfolio, symbol: str) -> float:
    instruments = portfolio.instruments
    return instruments.get(symbol).multiplier if symbol in instruments else 1.0


@dataclass
class TradingStats:
    fills: int = 0
    filled_orders: int = 0
    round_trips: int = 0  # a position opened from flat and brought back to flat (or through)
    shares: float = 0.0
    notional: float = 0.0


def trading(portfolio: Portfolio, owner: str) -> TradingStats:
    stats = TradingStats()
    orders: dict[str, None] = {}  # insertion-ordered set
    for (o, symbol), book in sorted(portfolio.books.items()):
        if o != owner:
            continue
        multiplier = _multiplier(portfolio, symbol)
        quantity = 0.0
        for fill in book.fills:
            before = quantity
            quantity += fill.signed_quantity
            if abs(quantity) < EPSILON:
                quantity = 0.0
            if before != 0 and (quantity == 0 or (quantity > 0) != (before > 0)):
                stats.round_trips += 1
            stats.fills += 1
            stats.shares += fill.quantity
            stats.notional += fill.quantity * fill.price * multiplier
            orders[fill.client_order_id] = None
    stats.filled_orders = len(orders)
    return stats
