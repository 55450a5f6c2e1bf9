"""Simulated execution: orders against the recorded market, emitting OrderUpdates as
execution would (pending_submit, submitted, partially_filled, filled, pending_cancel,
cancelled, rejected; each fill with its exec_id and last_fill_qty/price).

Rules (the approximations are documented in docs/backtest.md):

- An order acts at its *arrival* (send time + latency), on the book as recorded then.
- Taking (market orders, marketable limits, triggered stops): walk the recorded book level
  by level, one fill per level, up to the limit. The recorded book does not shrink by what we
  take (no market impact); an unfilled market remainder walks again on the next update.
- Resting limits fill at their limit price when the market crosses them (the opposite touch
  at or through the price, or a trade through it). At the price itself the queue model
  decides: ``none`` fills as soon as a trade touches the price; ``proportional`` first lets
  the size displayed ahead at arrival trade (trades at the price consume it) or be removed
  (a displayed decrease not explained by a trade removes ahead-size pro rata: cancellations
  are assumed spread evenly through the queue).
- Stops trigger when a trade prints at or through the stop, or the touch they would take
  reaches it; then they take like a market (STP) or rest/take like a limit (STP LMT).
- Brackets: ``transmit=False`` orders wait at the "gateway" until an order transmitted with
  their ``parent_id`` arrives; children work only once the parent is completely filled; a
  completely filled OCA member cancels the others; a cancelled parent cancels its children.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import msgspec

from proto.schema import OrderIntent, OrderUpdate
from services.backtest.market import ASK, BID, SymbolMarket

TERMINAL = frozenset({"filled", "cancelled", "rejected", "inactive"})
QUEUE_MODELS = ("none", "proportional")
EPS = 1e-9


@dataclass
class SimOrder:
    intent: OrderIntent  # the current terms (a modify replaces them)
    ib_order_id: int
    state: str = "pending_submit"
    filled: float = 0.0
    avg_price: float = 0.0
    arrived: bool = False
    released: bool = False  # transmitted: at the "exchange"
    triggered: bool = False  # stops: became a market / limit order
    cancel_pending: bool = False
    ahead: float = 0.0  # proportional queue: size displayed ahead of us at our price
    seen_level: float | None = None  # displayed size at our price when last looked
    explained: float = 0.0  # traded at our price, not yet seen leaving the book
    children: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return self.intent.quantity - self.filled

    @property
    def buy(self) -> bool:
        return self.intent.side == "BUY"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class SimulatedExchange:
    def __init__(self, markets: dict[str, SymbolMarket], emit: Callable[[OrderUpdate], None],
                 queue_model: str = "proportional", exec_prefix: str = "bt") -> None:
        if queue_model not in QUEUE_MODELS:
            raise ValueError(f"queue model {queue_model!r}: one of {', '.join(QUEUE_MODELS)}")
        self.markets = markets
        self.emit = emit
        self.queue_model = queue_model
        self.exec_prefix = exec_prefix
        self.orders: dict[str, SimOrder] = {}  # insertion order = send order: deterministic
        self._live: dict[str, dict[str, SimOrder]] = {s: {} for s in markets}  # by symbol
        self._next_ib_id = 0
        self._next_exec = 0

    # -- FROM THE HOST, AT SEND TIME ----------------------------------------------------------
    def accept(self, intent: OrderIntent) -> None:
        """An approved new order leaves for the exchange: execution reports pending_submit."""
        self._next_ib_id += 1
        order = SimOrder(intent=intent, ib_order_id=self._next_ib_id)
        self.orders[intent.client_order_id] = order
        parent = self.orders.get(intent.parent_id) if intent.parent_id else None
        if parent is not None:
            parent.children.append(intent.client_order_id)
        self._report(order)

    def cancel_sent(self, client_order_id: str) -> bool:
        order = self.orders.get(client_order_id)
        if order is None or order.terminal or order.cancel_pending:
            return False
        order.cancel_pending = True
        order.state = "pending_cancel"
        self._report(order)
        return True

    # -- AT ARRIVAL (send time + latency) -----------------------------------------------------
    def arrive(self, client_order_id: str) -> None:
        order = self.orders.get(client_order_id)
        if order is None or order.terminal or order.arrived:
            return
        order.arrived = True
        if not order.intent.transmit:
            return  # held, as TWS holds it, until a transmitted order of its bracket arrives
        group = [order]
        if order.intent.parent_id:
            parent = self.orders.get(order.intent.parent_id)
            if parent is None or parent.state in ("rejected", "cancelled", "inactive"):
                for member in self._staged_siblings(order) + [order]:
                    self._finish(member, "rejected", "parent order is not working")
                return
            group = ([parent] if parent.arrived and not parent.released else []) \
                + self._staged_siblings(order) + [order]
        for member in group:
            member.released = True
            if not member.cancel_pending:
                member.state = "submitted"
            self._report(member)
        for member in group:
            if self._working(member):
                self._start(member)

    def _staged_siblings(self, order: SimOrder) -> list[SimOrder]:
        """Orders of the same bracket that arrived but wait for a transmitted one."""
        same_parent = [o for o in self.orders.values()
                       if o is not order and o.intent.parent_id == order.intent.parent_id]
        return [o for o in same_parent if o.arrived and not o.released and not o.terminal]

    def cancel_arrives(self, client_order_id: str) -> None:
        order = self.orders.get(client_order_id)
        if order is None or order.terminal:
            return  # filled before the cancel got there: the fill wins
        self._finish(order, "cancelled", "cancelled by the strategy")

    def modify_arrives(self, intent: OrderIntent) -> None:
        order = self.orders.get(intent.client_order_id)
        if order is None or order.terminal:
            return
        terms = order.intent
        order.intent = msgspec.structs.replace(
            terms, quantity=intent.quantity or terms.quantity,
            limit_price=_pick(intent.limit_price, terms.limit_price),
            stop_price=_pick(intent.stop_price, terms.stop_price))
        order.seen_level = None  # a modified order loses its place in the queue
        self._report(order)
        if order.remaining <= EPS:
            self._finish(order, "filled")
        elif self._working(order):
            self._start(order)

    # -- MARKET DATA --------------------------------------------------------------------------
    def on_market(self, symbol: str, trades: list[tuple[float, float]]) -> None:
        """The recorded market of ``symbol`` changed: match its working orders, oldest first."""
        for order in [o for o in self._live.get(symbol, {}).values() if self._working(o)]:
            if order.terminal:
                continue  # an OCA sibling filled earlier in this loop
            self._match(order, trades)

    # -- MATCHING -----------------------------------------------------------------------------
    def _working(self, order: SimOrder) -> bool:
        if order.terminal or not order.released:
            return False
        parent_id = order.intent.parent_id
        if parent_id:
            parent = self.orders.get(parent_id)
            return parent is not None and parent.state == "filled"
        return True

    def _start(self, order: SimOrder) -> None:
        """An order begins working: take what is marketable, queue the rest."""
        market = self.markets[order.intent.symbol]
        order.seen_level = None
        if not self._triggered(order, market, []):
            return
        limit = self._limit(order)
        self._take(order, market, limit)
        if order.terminal:
            return
        if order.intent.tif == "IOC":
            self._finish(order, "cancelled", "IOC remainder")
        elif math.isfinite(limit):
            self._join_queue(order, market)

    def _match(self, order: SimOrder, trades: list[tuple[float, float]]) -> None:
        market = self.markets[order.intent.symbol]
        if not order.triggered and order.intent.order_type in ("STP", "STP LMT"):
            if self._triggered(order, market, trades):
                self._start(order)
            return
        limit = self._limit(order)
        if not math.isfinite(limit):  # a market (or triggered stop) remainder
            self._take(order, market, limit)
            return
        touch = market.book.best_ask_price() if order.buy else market.book.best_bid_price()
        if math.isfinite(touch) and (touch <= limit + EPS if order.buy
                                     else touch >= limit - EPS):
            self._take_at_limit(order, market, limit)
            return
        if self.queue_model == "proportional":
            self._track_queue(order, market)
        for price, size in trades:
            if order.terminal:
                return
            through = price < limit - EPS if order.buy else price > limit + EPS
            at = abs(price - limit) <= EPS
            if through:
                self._fill(order, order.remaining, limit)
            elif at and self.queue_model == "none":
                self._fill(order, order.remaining, limit)
            elif at:
                order.explained += size
                excess = size - order.ahead
                order.ahead = max(0.0, order.ahead - size)
                if excess > EPS:
                    self._fill(order, min(order.remaining, excess), limit)

    def _triggered(self, order: SimOrder, market: SymbolMarket,
                   trades: list[tuple[float, float]]) -> bool:
        if order.intent.order_type not in ("STP", "STP LMT") or order.triggered:
            return True
        stop = order.intent.stop_price
        book = market.book
        touch = book.best_ask_price() if order.buy else book.best_bid_price()
        prices = [p for p, _ in trades] + ([touch] if math.isfinite(touch) else [])
        if any((p >= stop - EPS) if order.buy else (p <= stop + EPS) for p in prices):
            order.triggered = True
        return order.triggered

    def _limit(self, order: SimOrder) -> float:
        kind = order.intent.order_type
        return order.intent.limit_price if kind in ("LMT", "STP LMT") else math.nan

    def _take(self, order: SimOrder, market: SymbolMarket, limit: float) -> None:
        """Walk the opposite side of the recorded book, best level first, up to ``limit``."""
        book = market.book
        side = ASK if order.buy else BID
        count = book.ask_count if order.buy else book.bid_count
        for i in range(count):
            if order.remaining <= EPS or order.terminal:
                return
            price, size = market.available(side, i)
            if math.isfinite(limit) and (price > limit + EPS if order.buy
                                         else price < limit - EPS):
                return
            if size > EPS:
                quantity = min(order.remaining, size)
                market.take(side, price, quantity)
                self._fill(order, quantity, price)

    def _take_at_limit(self, order: SimOrder, market: SymbolMarket, limit: float) -> None:
        """Crossed while resting: the displayed size at or through our price trades with us,
        at our price (we were there first)."""
        side = ASK if order.buy else BID
        for i in range(market.book.ask_count if order.buy else market.book.bid_count):
            price, size = market.available(side, i)
            if order.remaining <= EPS or order.terminal or (
                    price > limit + EPS if order.buy else price < limit - EPS):
                return
            if size > EPS:
                quantity = min(order.remaining, size)
                market.take(side, price, quantity)
                self._fill(order, quantity, limit)

    def _join_queue(self, order: SimOrder, market: SymbolMarket) -> None:
        shown = market.level_size_at(BID if order.buy else ASK, order.intent.limit_price)
        order.ahead = shown or 0.0
        order.seen_level = shown
        order.explained = 0.0

    def _track_queue(self, order: SimOrder, market: SymbolMarket) -> None:
        """Displayed size at our price went down: what trades do not explain was cancelled,
        and the part of it ahead of us is taken pro rata."""
        shown = market.level_size_at(BID if order.buy else ASK, order.intent.limit_price)
        if shown is None:
            return  # our price is beyond the visible book: nothing to learn
        before = order.seen_level
        order.seen_level = shown
        if before is None or shown >= before:
            return  # orders joining behind us do not move us
        decrease = before - shown
        unexplained = max(0.0, decrease - order.explained)
        order.explained = max(0.0, order.explained - decrease)
        if before > EPS:
            order.ahead = max(0.0, order.ahead - unexplained * order.ahead / before)

    # -- OUTCOMES -----------------------------------------------------------------------------
    def _fill(self, order: SimOrder, quantity: float, price: float) -> None:
        if quantity <= EPS:
            return
        self._next_exec += 1
        total = order.filled + quantity
        order.avg_price = (order.avg_price * order.filled + price * quantity) / total
        order.filled = total
        done = order.remaining <= EPS
        order.state = "filled" if done else (
            "pending_cancel" if order.cancel_pending else "partially_filled")
        self._report(order, exec_id=f"{self.exec_prefix}-{self._next_exec:08d}",
                     last_qty=quantity, last_price=price)
        if not done:
            return
        for child_id in order.children:  # the bracket's exits start working now
            child = self.orders[child_id]
            if self._working(child):
                self._start(child)
        group = order.intent.oca_group
        if group:
            for other in list(self.orders.values()):
                if other is not order and other.intent.oca_group == group and not other.terminal:
                    self._finish(other, "cancelled", "OCA: another order of the group filled")

    def _finish(self, order: SimOrder, state: str, reason: str = "") -> None:
        order.state = state
        self._report(order, reason=reason)
        if state != "filled":
            for child_id in order.children:
                child = self.orders[child_id]
                if not child.terminal:
                    self._finish(child, "cancelled", "parent order cancelled")

    def _report(self, order: SimOrder, exec_id: str = "", last_qty: float = 0.0,
                last_price: float = 0.0, reason: str = "") -> None:
        i = order.intent
        live = self._live.setdefault(i.symbol, {})
        if order.terminal:
            live.pop(i.client_order_id, None)
        else:
            live[i.client_order_id] = order
        self.emit(OrderUpdate(strategy=i.strategy, client_order_id=i.client_order_id,
                              state=order.state, symbol=i.symbol, side=i.side,
                              quantity=i.quantity, filled=order.filled,
                              avg_fill_price=order.avg_price, limit_price=i.limit_price,
                              stop_price=i.stop_price, order_type=i.order_type,
                              ib_order_id=order.ib_order_id, parent_id=i.parent_id,
                              exec_id=exec_id, last_fill_qty=last_qty,
                              last_fill_price=last_price, reason=reason))


def _pick(new: float, old: float) -> float:
    return new if math.isfinite(new) else old

