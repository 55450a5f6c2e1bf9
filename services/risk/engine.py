"""Risk's checks and book-keeping, free of sockets.

Positions and realized PnL are a mirror of execution's (``StrategyPosition``, one
``StrategyMirror`` per strategy, re-joined from execution's snapshot after a loss); marks come
from market data. ``check`` decides one intent (``check_group`` a bracket or OCA group); a
refusal changes nothing, an approval only takes a token from the rate bucket; ``approved``
then counts what the approval adds (a new open order, a modify's raised quantity) before
execution reports it. Every path to the broker is checked: a new order, a child sent on its
own (its parent an open order of the same strategy; then every check, like any order), a
group's legs, a modify (its new terms: size, price band, position and exposure with the new
quantity), a cancel (only of the strategy's own open order). Daily figures are the trading
day's (``services.model.trading_day``): a strategy reduced for its daily loss is active again
on the next trading day.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

from proto.schema import Message, OrderIntent, OrderUpdate, StrategyDigest, StrategyPosition
from services.model.mirror import StrategyMirror
from services.model.orders import OrderSide, OrderType, TimeInForce
from services.model.owners import RESERVED_OWNERS
from services.model.portfolio import EPSILON, unrealized
from services.model.trading_day import TradingDay
from services.risk.limits import LimitBook
from services.runtime.instruments import Instruments, UnknownInstrument

log = logging.getLogger("risk.engine")
ACTIVE, REDUCING, HALTED = "active", "reducing", "halted"
PAUSED, ERRORED = "paused", "errored"  # one strategy: ``ibfleet pause``; its callbacks raise
STOPPED = (HALTED, PAUSED, ERRORED)  # a strategy in one of these sends no new orders
ACTIONS = ("new", "modify", "cancel")
GROUP_TIMEOUT_S = 10.0  # a group whose transmitting leg never comes is refused as a whole


@dataclass
class Decision:
    approved: bool
    reason: str = ""
    text: str = ""


@dataclass
class Bucket:
    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class GroupDesk:
    """The legs of a bracket or OCA group (``transmit=False``) held until the group's
    transmitting leg, so risk decides the group as one (``RiskEngine.check_group``). Each leg
    carries the caller's token (the live service's request token; nothing in a backtest).
    A group is its strategy's: a leg of another strategy never joins it (a held leg whose
    group id another strategy holds is handed back alone, for ``check_group`` to refuse)."""

    def __init__(self) -> None:
        self.legs: dict[str, list[tuple[OrderIntent, object]]] = {}
        self.started: dict[str, float] = {}

    def wants(self, intent: OrderIntent) -> bool:
        return intent.action == "new" and (
            not intent.transmit or self._owner(intent.parent_id) == intent.strategy)

    def _owner(self, key: str) -> str | None:
        legs = self.legs.get(key) if key else None
        return legs[0][0].strategy if legs else None

    def add(self, intent: OrderIntent, token: object, now: float
            ) -> list[tuple[OrderIntent, object]] | None:
        """Hold a leg; the whole group (entry first) once its transmitting leg is here."""
        key = intent.parent_id or intent.client_order_id
        owner = self._owner(key)
        if owner is not None and owner != intent.strategy:
            return [(intent, token)]  # another strategy's group: decided (refused) alone
        self.legs.setdefault(key, []).append((intent, token))
        self.started.setdefault(key, now)
        if not intent.transmit:
            return None
        self.started.pop(key, None)
        return self.legs.pop(key)

    def expired(self, now: float, timeout: float = GROUP_TIMEOUT_S
                ) -> list[list[tuple[OrderIntent, object]]]:
        keys = [k for k, t in self.started.items() if now - t > timeout]
        for key in keys:
            self.started.pop(key)
        return [self.legs.pop(key, []) for key in keys]

    def held(self) -> int:
        return sum(len(legs) for legs in self.legs.values())


@dataclass
class StrategyBook:
    """One strategy as risk sees it: execution's mirror, its open orders (the mirror's plus
    approvals execution has not reported yet), and what those could still add to positions."""

    mirror: StrategyMirror
    open_orders: dict[str, OrderUpdate] = field(default_factory=dict)  # + approved, unreported
    state: str = ACTIVE
    loss_day: str = ""  # the trading day whose loss made the strategy reduce-only
    bucket: Bucket | None = None
    # (symbol, buy side?) -> signed quantity working: kept as orders change, so a check costs
    # the same with 5 open orders or 5,000
    working: dict[tuple[str, bool], float] = field(default_factory=dict)
    # client order id -> (its working key, what it adds there): removed exactly as added
    counted: dict[str, tuple[tuple[str, bool], float]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)  # parent -> its open children
    # approved modifies that raise an order's quantity, not yet carried by execution's
    # updates: client order id -> (the largest quantity asked, the order's reason then)
    modifying: dict[str, tuple[float, str]] = field(default_factory=dict)
    # (monotonic time, the strategy's callback_errors counter): its heartbeats' samples
    errors: deque = field(default_factory=deque)
    reason: str = ""  # why the state is what it is (an operator's pause, errors), for humans

    def weight(self, symbol: str, side: str, quantity: float, filled: float = 0.0,
               parent_id: str = "") -> float:
        """What an order could still add to the position in ``symbol``, signed. An exit (the
        other side of its open parent) only closes what the parent opens: only a size beyond
        the parent's adds."""
        left = quantity - filled if quantity > filled else 0.0
        if parent_id:
            parent = self.open_orders.get(parent_id)
            if parent is not None and parent.symbol == symbol and parent.side != side:
                left = max(0.0, left - parent.quantity)
        return left if side == "BUY" else -left

    def counted_on(self, coid: str, key: tuple[str, bool]) -> float:
        entry = self.counted.get(coid)
        return entry[1] if entry is not None and entry[0] == key else 0.0

    def set_open(self, coid: str, order: OrderUpdate | None) -> None:
        old = self.open_orders.pop(coid, None)
        self._uncount(coid)
        if old is not None and old.parent_id:
            siblings = self.children.get(old.parent_id)
            if siblings is not None:
                siblings.discard(coid)
                if not siblings:
                    del self.children[old.parent_id]
        if order is None:
            self.modifying.pop(coid, None)
        else:
            self.open_orders[coid] = order
            if order.parent_id:
                self.children.setdefault(order.parent_id, set()).add(coid)
            self._count(coid)
        kids = self.children.get(coid)
        if kids:
            for child in list(kids):  # an exit weighs by its parent
                self._uncount(child)
                self._count(child)

    def _count(self, coid: str) -> None:
        order = self.open_orders[coid]
        quantity = order.quantity
        if self.modifying and coid in self.modifying:
            quantity = max(quantity, self.modifying[coid][0])
        key = (order.symbol, order.side == "BUY")
        amount = self.weight(order.symbol, order.side, quantity, order.filled, order.parent_id)
        self.working[key] = self.working.get(key, 0.0) + amount
        self.counted[coid] = (key, amount)

    def _uncount(self, coid: str) -> None:
        entry = self.counted.pop(coid, None)
        if entry is not None:
            key, amount = entry
            self.working[key] = self.working.get(key, 0.0) - amount

    def modify_asked(self, coid: str, quantity: float) -> None:
        """An approved modify of ``coid`` to ``quantity``: a raise counts at once (the largest
        asked), until execution's updates carry it or IB refuses it."""
        order = self.open_orders.get(coid)
        if order is None or not quantity > order.quantity + EPSILON:
            return
        asked = self.modifying.get(coid, (0.0, ""))[0]
        self.modifying[coid] = (max(asked, quantity), order.reason)
        self._uncount(coid)
        self._count(coid)

    def modify_settled(self, update: OrderUpdate) -> None:
        """Execution's update of an order: a pending raise is over once the order carries the
        quantity asked, or IB refused the modify (the order works on with its old terms)."""
        pending = self.modifying.get(update.client_order_id)
        if pending is None or update.state == "pending_modify":
            return
        asked, reason_then = pending
        if update.quantity + EPSILON >= asked or (
                update.reason.startswith("modify refused") and update.reason != reason_then):
            del self.modifying[update.client_order_id]

    def modify_dropped(self, coid: str) -> None:
        if self.modifying.pop(coid, None) is not None and coid in self.open_orders:
            self._uncount(coid)
            self._count(coid)

    def held(self, symbol: str) -> float:
        return self.mirror.quantity(symbol)

    def rebuild(self) -> None:
        """After the mirror was re-joined: open orders are the mirror's, plus approvals
        execution has not reported yet."""
        pending = {c: o for c, o in self.open_orders.items()
                   if o.state == "new" and c not in self.mirror.orders}
        orders = {**pending, **self.mirror.orders}
        self.open_orders, self.working, self.counted, self.children = {}, {}, {}, {}
        self.modifying = {c: m for c, m in self.modifying.items() if c in orders}
        for coid, order in orders.items():
            self.set_open(coid, order)


class RiskEngine:
    def __init__(self, limits: LimitBook, instruments: Instruments,
                 clock=time.monotonic, trading_day: TradingDay | None = None,
                 wall_clock=time.time_ns) -> None:
        self.limits = limits
        self.instruments = instruments
        self.clock = clock
        self.wall_clock = wall_clock
        self.trading_day = trading_day or TradingDay()
        self.global_state = ACTIVE
        self.gateway_state = "disconnected"
        self.strategies: dict[str, StrategyBook] = {}
        self.marks: dict[str, tuple[float, float]] = {}  # symbol -> (mid, when)
        self.breaches: list[tuple[str, str]] = []  # (strategy, text): to alert, drained
        self.notices: list[tuple[str, str]] = []  # (strategy, text): to log, drained
        # client order id -> its strategy: every order risk approved or execution reported
        # (whose order a modify, a cancel, a reused id or a child's parent names)
        self.owners: dict[str, str] = {}
        #: strategies removed from the fleet (``ibfleet strategy remove``): name -> when (s
        #: since the epoch); their intents are refused until they are added again
        self.removed: dict[str, float] = {}
        #: each strategy's configured symbols (its TOML's ``symbols``): a new order in any
        #: other is refused (``symbol_not_configured``); a strategy not listed: no such check
        self.symbols: dict[str, frozenset[str]] = {}

    def forget(self, strategy: str, to: str, when: float) -> None:
        """A strategy removed from the fleet: its book (mirror, state, counters) is dropped,
        its orders are ``to``'s (execution handed them over), its limits forgotten; from
        now on its intents are refused (``removed``) until it is added again."""
        self.strategies.pop(strategy, None)
        for coid, owner in self.owners.items():
            if owner == strategy:
                self.owners[coid] = to
        self.limits.forget(strategy)
        self.removed[strategy] = when

    def book(self, strategy: str) -> StrategyBook:
        book = self.strategies.get(strategy)
        if book is None:
            limits = self.limits.for_strategy(strategy)
            book = StrategyBook(StrategyMirror(strategy),
                                bucket=Bucket(limits.order_rate, limits.order_burst))
            self.strategies[strategy] = book
        return book

    # -- INPUTS -------------------------------------------------------------------------------
    def on_mark(self, symbol: str, bid: float, ask: float) -> None:
        if math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0:
            self.marks[symbol] = ((bid + ask) / 2.0, self.clock())

    def on_execution_message(self, msg: Message) -> bool:
        """A message of execution's stream for one strategy; False when a digest disagrees
        with the mirror (the caller re-joins execution's snapshot for that strategy)."""
        book = self.book(msg.strategy)
        if isinstance(msg, StrategyDigest):
            return book.mirror.agrees(msg)
        old, new = book.mirror.apply(msg)
        if isinstance(msg, OrderUpdate):
            self.owners[msg.client_order_id] = msg.strategy
            if book.modifying:
                book.modify_settled(msg)
            book.set_open(msg.client_order_id, new)
        elif isinstance(msg, StrategyPosition):
            self.evaluate_loss(msg.strategy)
        return True

    def on_update(self, update: OrderUpdate) -> None:
        self.on_execution_message(update)

    def resync(self, strategy: str, state: list[Message]) -> None:
        """Execution's snapshot for ``strategy`` replaces risk's mirror of it."""
        book = self.book(strategy)
        book.mirror.reset([m for m in state if not isinstance(m, StrategyDigest)])
        for msg in state:
            if isinstance(msg, OrderUpdate):
                self.owners[msg.client_order_id] = msg.strategy
        book.rebuild()
        self.evaluate_loss(strategy)

    # -- PNL ----------------------------------------------------------------------------------
    def today(self) -> str:
        return self.trading_day.of(self.wall_clock()).isoformat()

    def pnl(self, strategy: str) -> tuple[float, float]:
        """(realized net of commissions this trading day, unrealized at the last mids): the
        figures the daily loss limit is about."""
        realized = unrealized_total = 0.0
        today = self.today()
        for symbol, p in self.book(strategy).mirror.positions.items():
            if p.trading_day == today:
                realized += p.realized_day
            mark = self.marks.get(symbol)
            if mark:
                unrealized_total += unrealized(p.quantity, p.avg_cost, mark[0], p.multiplier)
        return realized, unrealized_total

    def evaluate_loss(self, strategy: str) -> None:
        limits = self.limits.for_strategy(strategy)
        book = self.book(strategy)
        today = self.today()
        if book.state == REDUCING and book.loss_day and book.loss_day != today:
            book.state, book.loss_day = ACTIVE, ""  # a new trading day: a new loss budget
            self.notices.append((strategy, f"new trading day {today}: active again"))
        if limits.daily_loss_limit <= 0 or book.state != ACTIVE:
            return
        realized, unrealized_total = self.pnl(strategy)
        if realized + unrealized_total < -limits.daily_loss_limit:
            book.state, book.loss_day = REDUCING, today
            self.breaches.append((strategy, f"daily loss {realized + unrealized_total:,.2f} "
                                            f"beyond -{limits.daily_loss_limit:,.2f} on "
                                            f"{today}: reducing only"))

    def _multiplier(self, symbol: str) -> float:
        return self.instruments.get(symbol).multiplier if symbol in self.instruments else 1.0

    # -- CHECKS -------------------------------------------------------------------------------
    def check(self, intent: OrderIntent) -> Decision:
        """One intent: new, modify or cancel. A modify or cancel must name an open order of
        the strategy itself; a modify is checked with its new terms as a new order would be
        (nothing is skipped for a child: a child outside a group is an order like any other,
        whose parent must be an open order of the same strategy)."""
        if intent.action not in ACTIONS:  # the bus's decoder refuses it, a direct caller may not
            return Decision(False, "bad_terms", f"action {intent.action!r} is not one of "
                                                f"{', '.join(ACTIONS)}")
        if intent.strategy in RESERVED_OWNERS:
            return Decision(False, "reserved_owner", f"{intent.strategy!r} is not a strategy: "
                                                     f"no intent may trade its book")
        if intent.strategy in self.removed:
            return Decision(False, "removed", f"strategy {intent.strategy} was removed from "
                                              f"the fleet")
        book = self.book(intent.strategy)
        order = None
        if intent.action in ("modify", "cancel"):
            order = book.open_orders.get(intent.client_order_id)
            if order is None:
                return self._not_open(intent)
            if intent.action == "cancel":
                return Decision(True)  # cancelling its own order only ever reduces risk
        limits = self.limits.for_strategy(intent.strategy)
        for check in (self._identity, self._parent, self._budget, self._trading_state,
                      self._gateway, self._instrument, self._terms, self._size, self._price,
                      self._market_data, self._exposure, self._open_orders, self._rate):
            decision = check(intent, order, book, limits)
            if decision is not None:
                return decision
        return Decision(True)

    def check_group(self, intents: list[OrderIntent]) -> Decision:
        """A bracket or OCA group, approved or refused as a whole (its legs are sent only
        together: ``transmit=False`` until the last). The worst case is the entry filling:
        the exits only close what it opens, so they must be on the other side, no larger
        than the entry, with valid terms, sizes and prices; the entry gets every check; the
        group's legs count as open orders together. A refused group changes nothing."""
        if len({i.strategy for i in intents}) != 1:
            return Decision(False, "bad_group", "a group's legs must all be one strategy's")
        coids = [i.client_order_id for i in intents]
        if len(set(coids)) != len(coids):
            return Decision(False, "bad_group", "two legs of the group share a client order id")
        if not any(i.transmit for i in intents):
            return Decision(False, "bad_group", "no leg of the group transmits it")
        if any(i.action != "new" for i in intents):  # as GroupDesk holds them: new orders
            return Decision(False, "bad_group", "every leg of a group must be a new order")
        entries = [i for i in intents if not i.parent_id]
        exits = [i for i in intents if i.parent_id]
        if not entries:
            return Decision(False, "bad_group", "a group needs its entry (the parent) order")
        if len(entries) > 1:  # only the entry gets every check: a second one would get none
            return Decision(False, "bad_group", f"a group has one entry (the parent), not "
                                                f"{len(entries)} legs without a parent")
        entry = entries[0]
        for leg in exits:
            if leg.parent_id != entry.client_order_id or leg.symbol != entry.symbol:
                return Decision(False, "bad_group", f"{leg.client_order_id} is not an exit of "
                                                    f"{entry.client_order_id} in {entry.symbol}")
            if leg.side == entry.side or not leg.quantity <= entry.quantity:
                return Decision(False, "bad_group", f"exit {leg.client_order_id} must be on the "
                                                    f"other side and at most the entry's size")
        book = self.book(entry.strategy)
        limits = self.limits.for_strategy(entry.strategy)
        for leg in exits:
            for check in (self._identity, self._instrument, self._terms, self._size,
                          self._price):
                decision = check(leg, None, book, limits)
                if decision is not None:
                    return Decision(False, decision.reason,
                                    f"exit {leg.client_order_id}: {decision.text}")
        bucket = (book.bucket.tokens, book.bucket.at)
        decision = self.check(entry)
        if decision.approved and limits.max_open_orders \
                and len(book.open_orders) + len(intents) > limits.max_open_orders:
            decision = Decision(False, "max_open_orders",
                                f"{len(book.open_orders)} open orders and a group of "
                                f"{len(intents)}: the limit is {limits.max_open_orders}")
        if not decision.approved:
            book.bucket.tokens, book.bucket.at = bucket  # refused: the rate is not charged
        return decision

    def _not_open(self, intent: OrderIntent) -> Decision:
        """A modify or cancel of an order that is not an open order of its strategy."""
        coid, action = intent.client_order_id, intent.action
        owner = self.owners.get(coid)
        if owner is not None and owner != intent.strategy:
            return Decision(False, "not_owner", f"order {coid} is another strategy's: "
                                                f"{intent.strategy} may only {action} its own "
                                                f"orders")
        if owner is not None:
            return Decision(False, "unknown_order", f"order {coid} of {intent.strategy} is no "
                                                    f"longer open: nothing to {action}")
        return Decision(False, "unknown_order", f"no open order {coid} of {intent.strategy} "
                                                f"to {action}")

    def _identity(self, intent, order, book, limits) -> Decision | None:
        """A new order's client order id is its own: not another strategy's order, and not
        one of this strategy's finished orders (execution would take it for a resend of that
        one and do nothing). The same open order sent again is a resend."""
        if intent.action != "new":
            return None
        coid = intent.client_order_id
        owner = self.owners.get(coid)
        if owner is None or (owner == intent.strategy and coid in book.open_orders):
            return None
        if owner != intent.strategy:
            return Decision(False, "not_owner", f"client order id {coid} is another "
                                                f"strategy's order")
        return Decision(False, "duplicate_order_id", f"{coid} was already an order of "
                                                     f"{intent.strategy}: a new order needs a "
                                                     f"new client order id")

    def _parent(self, intent, order, book, limits) -> Decision | None:
        """A child sent on its own (not in a group): its parent is an open order of the same
        strategy in the same instrument."""
        if intent.action != "new" or not intent.parent_id:
            return None
        parent_id, coid = intent.parent_id, intent.client_order_id
        parent = book.open_orders.get(parent_id)
        if parent is None:
            owner = self.owners.get(parent_id)
            if owner is not None and owner != intent.strategy:
                return Decision(False, "not_owner", f"parent {parent_id} of {coid} is another "
                                                    f"strategy's order")
            state = "no longer open" if owner is not None else "not an order"
            return Decision(False, "unknown_parent", f"parent {parent_id} of {coid} is "
                                                     f"{state} of {intent.strategy}")
        if parent.symbol != intent.symbol:
            return Decision(False, "bad_parent", f"{coid} is in {intent.symbol!r} but its "
                                                 f"parent {parent_id} in {parent.symbol!r}")
        return None

    def _budget(self, intent, order, book, limits) -> Decision | None:
        refusal = self.limits.refused.get(intent.strategy)
        if refusal is not None:  # its file is bad: which limits it meant is unknown
            return Decision(False, "budget_refused", f"the risk budget of {intent.strategy} "
                                                     f"was refused: {refusal}")
        return None

    def _trading_state(self, intent, order, book, limits) -> Decision | None:
        if self.global_state == HALTED:
            return Decision(False, "halted", "trading is halted (kill switch)")
        if book.state in STOPPED:
            return Decision(False, "strategy_halted", f"{intent.strategy} is {book.state}"
                                                      + (f" ({book.reason})" if book.reason
                                                         else ""))
        if REDUCING in (self.global_state, book.state) \
                and not self._reduces(intent, order, book):
            return Decision(False, "reducing_only",
                            f"{intent.strategy} may only reduce its position")
        return None

    def _gateway(self, intent, order, book, limits) -> Decision | None:
        if self.gateway_state != "synchronised":
            return Decision(False, "gateway_not_synchronised",
                            f"the gateway is {self.gateway_state}: no new orders")
        return None

    def _instrument(self, intent, order, book, limits) -> Decision | None:
        """A new order in one of the strategy's own symbols (exactly: ``MS`` is not
        ``MSFT``), with the instrument's reference data from the gateway (IB's tick, size
        increment, multiplier: nothing is checked against a guess)."""
        if intent.action == "modify":
            return None
        try:
            self.instruments.get(intent.symbol)
        except UnknownInstrument:
            if intent.symbol in self.symbols.get(intent.strategy, ()) \
                    and intent.symbol not in self.marks:
                # one of its own symbols the gateway is still resolving (it publishes the
                # reference data before it subscribes the market data): a passing refusal
                return Decision(False, "stale_market_data",
                                f"no market data nor reference data for {intent.symbol} "
                                f"yet: no new orders")
            return Decision(False, "unknown_symbol",
                            f"no reference data for {intent.symbol!r}: the gateway has not "
                            f"published IB's contract details for it (unknown at IB, or not "
                            f"resolved yet)")
        allowed = self.symbols.get(intent.strategy)
        if allowed is not None and intent.symbol not in allowed:
            return Decision(False, "symbol_not_configured",
                            f"{intent.symbol!r} is not one of {intent.strategy}'s symbols "
                            f"({', '.join(sorted(allowed)) or 'none'})")
        return None

    def _terms(self, intent, order, book, limits) -> Decision | None:
        """What the broker needs to take the order at all: every price given a positive
        number; for a new order IB's side, type and time in force, exactly, and the prices its
        type needs (LMT and STP LMT a limit price, STP and STP LMT a stop price). A modify
        keeps its order's side, type and time in force (NaN: a price left as it is)."""
        for label, price in (("limit", intent.limit_price), ("stop", intent.stop_price)):
            if not math.isnan(price) and not (math.isfinite(price) and price > 0):
                return Decision(False, "bad_price", f"{label} price {price} must be a positive "
                                                     f"number")
        if order is not None:
            return None
        for name, enum, value in (("side", OrderSide, intent.side),
                                  ("order type", OrderType, intent.order_type),
                                  ("time in force", TimeInForce, intent.tif)):
            if value not in enum._value2member_map_:  # IB's exact spelling only
                return Decision(False, "bad_terms", f"{name} {value!r} is not one of "
                                                    f"{', '.join(m.value for m in enum)}")
        kind = OrderType._value2member_map_[intent.order_type]
        if kind.needs_limit and math.isnan(intent.limit_price):
            return Decision(False, "missing_price", f"a {kind.value} order needs a limit price")
        if kind.needs_stop and math.isnan(intent.stop_price):
            return Decision(False, "missing_price", f"a {kind.value} order needs a stop price")
        return None

    def _size(self, intent, order, book, limits) -> Decision | None:
        """Positive, finite, a whole number of the instrument's size increment (as it goes to
        the broker: 5e-10 or 10.0000000001 shares are not), within the order limit (what the
        order could open: ``_opening``, the reducing-order rule); a modify not below what
        its order has filled."""
        symbol = order.symbol if order else intent.symbol
        info = self.instruments.get(symbol)
        qty = self._quantity(intent, order)
        if not (qty > 0) or not math.isfinite(qty):
            return Decision(False, "bad_quantity", f"quantity {qty!r} must be a positive number")
        if order is not None and qty + EPSILON < order.filled:
            return Decision(False, "bad_quantity", f"quantity {qty!r} is less than the "
                                                   f"{order.filled:g} already filled of "
                                                   f"{order.client_order_id}")
        if not info.on_size_increment(qty):
            return Decision(False, "size_increment", f"quantity {qty!r} is not a whole number "
                                                     f"of the size increment "
                                                     f"{info.size_increment:g} of {symbol}")
        if limits.max_order_quantity and qty > limits.max_order_quantity:
            opening = self._opening(intent, order, book)
            if opening > limits.max_order_quantity:
                what = f"{qty:g} is" if opening == qty else \
                    f"{qty:g} would open {opening:g} beyond the position (the rest closes it):"
                return Decision(False, "max_order_quantity",
                                f"{what} over the maximum order quantity "
                                f"{limits.max_order_quantity:g}")
        return None

    def _price(self, intent, order, book, limits) -> Decision | None:
        symbol = order.symbol if order else intent.symbol
        info = self.instruments.get(symbol)
        for label, price in (("limit", intent.limit_price), ("stop", intent.stop_price)):
            if math.isfinite(price) and not info.on_tick(price):
                return Decision(False, "min_tick", f"{label} price {price} is not on the "
                                                   f"tick {info.tick_at(price):g} of {symbol} "
                                                   f"at that price")
        return None

    def _market_data(self, intent, order, book, limits) -> Decision | None:
        """Fresh market data; the limit price within the band around the mid (a new order's,
        or a modify's that sets a price or raises the quantity: its terms in force after it);
        the notional of what the order could open (``_opening``) within the order limit."""
        symbol = order.symbol if order else intent.symbol
        mark = self.marks.get(symbol)
        if mark is None or (limits.stale_after_s and self.clock() - mark[1] >
                            limits.stale_after_s):
            return Decision(False, "stale_market_data",
                            f"no fresh market data for {symbol}: no new orders")
        mid = mark[0]
        price = intent.limit_price
        if order is not None and math.isnan(price):
            price = order.limit_price
        banded = order is None or not math.isnan(intent.limit_price) \
            or self._raises(intent, order)
        if limits.price_band and banded and math.isfinite(price) \
                and abs(price - mid) > limits.price_band * mid:
            return Decision(False, "price_band", f"limit {price} is more than "
                                                 f"{limits.price_band:.1%} from the mid {mid:.4f}")
        info = self.instruments.get(symbol)
        qty = self._opening(intent, order, book)
        notional = qty * (price if math.isfinite(price) else mid) * info.multiplier
        if limits.max_order_notional and notional > limits.max_order_notional:
            return Decision(False, "max_order_notional", f"notional {notional:,.0f} is over "
                                                         f"{limits.max_order_notional:,.0f}")
        return None

    def _exposure(self, intent, order, book, limits) -> Decision | None:
        """The worst case: the position now, every working order on the same side filling, and
        this one (a modify: with its new quantity instead of its old). A child weighs like any
        order; an exit of an open parent only by what it could add beyond the parent. A modify
        that does not raise the quantity cannot raise the worst case."""
        if order is not None and not self._raises(intent, order):
            return None
        if order is not None:
            symbol, side, filled, parent_id = (order.symbol, order.side, order.filled,
                                               order.parent_id)
        else:
            symbol, side, filled, parent_id = intent.symbol, intent.side, 0.0, intent.parent_id
        qty = self._quantity(intent, order)
        added = book.weight(symbol, side, qty, filled, parent_id)
        key = (symbol, side == "BUY")
        held = book.held(symbol)
        working = book.working.get(key, 0.0)
        if order is not None:
            working -= book.counted_on(order.client_order_id, key)
        after = held + working + added
        if limits.max_position and abs(after) > limits.max_position and abs(after) > abs(held):
            return Decision(False, "max_position", f"{symbol} position would reach {after:g}, "
                                                   f"over {limits.max_position:g}")
        if limits.max_gross_exposure:
            gross = 0.0
            for sym, p in book.mirror.positions.items():
                mark = self.marks.get(sym)
                if mark:
                    gross += abs(p.quantity) * mark[0] * self._multiplier(sym)
            mark = self.marks[symbol][0]
            gross += abs(added) * mark * self._multiplier(symbol) if abs(after) > abs(held) else 0
            if gross > limits.max_gross_exposure:
                return Decision(False, "max_gross_exposure", f"gross exposure would be "
                                                             f"{gross:,.0f}, over "
                                                             f"{limits.max_gross_exposure:,.0f}")
        return None

    def _open_orders(self, intent, order, book, limits) -> Decision | None:
        if intent.action == "new" and limits.max_open_orders \
                and len(book.open_orders) >= limits.max_open_orders:
            return Decision(False, "max_open_orders",
                            f"{len(book.open_orders)} open orders: the limit is "
                            f"{limits.max_open_orders}")
        return None

    def _rate(self, intent, order, book, limits) -> Decision | None:
        if not book.bucket.take(self.clock()):
            return Decision(False, "order_rate", f"over {limits.order_rate:g} orders/s")
        return None

    @staticmethod
    def _quantity(intent: OrderIntent, order: OrderUpdate | None) -> float:
        """The quantity after the intent: a modify's 0 leaves its order's."""
        return intent.quantity or (order.quantity if order is not None else 0.0)

    def _opening(self, intent: OrderIntent, order: OrderUpdate | None,
                 book: StrategyBook) -> float:
        """What an order could open: the measure of the order-size limits
        (``max_order_quantity``, ``max_order_notional``). THE REDUCING-ORDER RULE (issue 15,
        finding 9): the part of an order that closes the strategy's position in the
        instrument only reduces risk and is not counted, so a close or a protective stop of a
        position larger than the limit is never refused for its size (refused, it would leave
        the position unprotected); the part beyond zero, which opens the other side, is held
        to the limit. With max_order_quantity 50 and 199 shares held: SELL 199 (a close) is
        approved, SELL 240 (-41 beyond zero) too, SELL 300 (-101) is refused; BUY 60 is
        refused as before. The position is the one execution reports now, without working
        orders: what they could add is max_position's worst case (``_exposure``), checked on
        every order. A modify: its new quantity less what its order has filled (the filled
        part is in the position already); an order that closes nothing counts whole."""
        if order is not None:
            symbol, side, filled = order.symbol, order.side, order.filled
        else:
            symbol, side, filled = intent.symbol, intent.side, 0.0
        qty = self._quantity(intent, order)
        held = book.held(symbol)
        closes = abs(held) if held and (held > 0) != (side == "BUY") else 0.0
        if not closes:
            return qty
        return max(0.0, qty - filled - closes)

    @staticmethod
    def _raises(intent: OrderIntent, order: OrderUpdate) -> bool:
        """Does this modify ask for more than its order's quantity? (NaN: treated as more.)"""
        return bool(intent.quantity) and not intent.quantity <= order.quantity + EPSILON

    def _reduces(self, intent: OrderIntent, order: OrderUpdate | None,
                 book: StrategyBook) -> bool:
        if order is not None:
            if not self._raises(intent, order):
                return True  # a modify that does not raise the quantity stays what it was
            symbol, side = order.symbol, order.side
        else:
            symbol, side = intent.symbol, intent.side
        held = book.held(symbol)
        qty = self._quantity(intent, order)
        signed = qty if side == "BUY" else -qty
        return held != 0 and (held > 0) != (signed > 0) and abs(signed) <= abs(held)

    # -- STATES -------------------------------------------------------------------------------
    def set_state(self, target: str, state: str, reason: str = "") -> None:
        """One strategy's state (``target``), or the global one (""): lifting the kill switch
        (ACTIVE) also lifts what it halted, never a pause or an errored strategy."""
        if target:
            book = self.book(target)
            book.state, book.reason = state, reason
            if state == ACTIVE:
                book.errors.clear()  # an unpaused strategy starts a new error window
        else:
            self.global_state = state
            if state == ACTIVE:
                for book in self.strategies.values():
                    if book.state == HALTED:
                        book.state = ACTIVE

    def approved(self, intent: OrderIntent) -> None:
        """What an approved intent changes at once, so a burst cannot overshoot: a new order
        counts as open, a modify's raised quantity as working, before execution reports
        either."""
        book = self.book(intent.strategy)
        coid = intent.client_order_id
        if intent.action == "new":
            self.owners[coid] = intent.strategy
            if coid not in book.open_orders:
                book.set_open(coid, OrderUpdate(
                    strategy=intent.strategy, client_order_id=coid, state="new",
                    symbol=intent.symbol, side=intent.side, quantity=intent.quantity,
                    limit_price=intent.limit_price, stop_price=intent.stop_price,
                    order_type=intent.order_type, parent_id=intent.parent_id, tif=intent.tif,
                    oca_group=intent.oca_group))
        elif intent.action == "modify":
            book.modify_asked(coid, intent.quantity)

    def execution_refused(self, intent: OrderIntent) -> None:
        """Execution could not act on an approved intent: undo what approving it counted."""
        book = self.book(intent.strategy)
        coid = intent.client_order_id
        if intent.action == "new":
            pending = book.open_orders.get(coid)
            if pending is not None and pending.state == "new":
                book.set_open(coid, None)
                if self.owners.get(coid) == intent.strategy:
                    del self.owners[coid]  # execution never took it: the id was not used
        elif intent.action == "modify":
            book.modify_dropped(coid)

    def effective_state(self, strategy: str) -> tuple[str, str]:
        """(state, reason) of ``strategy`` as it must trade (``TradingState``): errored
        first (lifting the kill switch does not lift it), then the kill switch, then its own
        (paused, reducing, active). Creates no book for a strategy risk does not know."""
        book = self.strategies.get(strategy)
        state, reason = (book.state, book.reason) if book is not None else (ACTIVE, "")
        if state == ERRORED:
            return state, reason
        if self.global_state == HALTED:
            return HALTED, "kill switch"
        if state == REDUCING and not reason:
            reason = "daily loss limit"
        return state, reason

    def note_errors(self, strategy: str, total: int, now: float | None = None) -> str | None:
        """A heartbeat of ``strategy`` says its callbacks raised ``total`` times since it
        started. Returns a reason once they reach its ``max_errors`` within
        ``error_window_s`` (the strategy is then ERRORED: no new orders until unpaused);
        None otherwise, and for a strategy already stopped."""
        now = self.clock() if now is None else now
        limits = self.limits.for_strategy(strategy)
        book = self.book(strategy)
        samples = book.errors
        if samples and total < samples[-1][1]:
            samples.clear()  # the strategy restarted: its counter did too
        # the first sample is the base: errors from before risk heard it (a restart of risk,
        # an unpause) are not counted again
        samples.append((now, total))
        # 0: no window, every error since the base counts; a window should span a few
        # heartbeat intervals (errors are sampled by the heartbeat)
        window = limits.error_window_s
        while len(samples) > 1 and window and now - samples[0][0] > window:
            samples.popleft()  # the base: the oldest sample within the window
        if limits.max_errors <= 0 or book.state in STOPPED:
            return None
        errors = total - samples[0][1]
        if errors < limits.max_errors:
            return None
        book.state = ERRORED
        book.reason = (f"{errors} callback errors within {now - samples[0][0]:.1f}s "
                       f"(max_errors {limits.max_errors} in {window:g}s)")
        return book.reason
