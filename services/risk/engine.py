"""Risk's checks and book-keeping, free of sockets.

Positions and realized PnL are a mirror of execution's (``StrategyPosition``, one
``StrategyMirror`` per strategy, re-joined from execution's snapshot after a loss); marks come
from market data. ``check`` decides one intent; it never changes state except the rate bucket
and the count of open orders it has approved. Daily figures are the trading day's
(``services.model.trading_day``): a strategy reduced for its daily loss is active again on the
next trading day.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from proto.schema import Message, OrderIntent, OrderUpdate, StrategyDigest, StrategyPosition
from services.model.mirror import StrategyMirror
from services.model.orders import DONE_VALUES
from services.model.portfolio import unrealized
from services.model.trading_day import TradingDay
from services.risk.limits import LimitBook
from services.runtime.instruments import Instruments, UnknownInstrument

log = logging.getLogger("risk.engine")
ACTIVE, REDUCING, HALTED = "active", "reducing", "halted"
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


def _working(order: OrderUpdate) -> float:
    """What an open order could still add to the position, signed; a bracket's exits none."""
    if order.parent_id:
        return 0.0
    left = order.quantity - order.filled
    return left if order.side == "BUY" else -left


class GroupDesk:
    """The legs of a bracket or OCA group (``transmit=False``) held until the group's
    transmitting leg, so risk decides the group as one (``RiskEngine.check_group``). Each leg
    carries the caller's token (the live service's request token; nothing in a backtest)."""

    def __init__(self) -> None:
        self.legs: dict[str, list[tuple[OrderIntent, object]]] = {}
        self.started: dict[str, float] = {}

    def wants(self, intent: OrderIntent) -> bool:
        return intent.action == "new" and (not intent.transmit or intent.parent_id in self.legs)

    def add(self, intent: OrderIntent, token: object, now: float
            ) -> list[tuple[OrderIntent, object]] | None:
        """Hold a leg; the whole group (entry first) once its transmitting leg is here."""
        key = intent.parent_id or intent.client_order_id
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
    mirror: StrategyMirror
    open_orders: dict[str, OrderUpdate] = field(default_factory=dict)  # + approved, unreported
    state: str = ACTIVE
    loss_day: str = ""  # the trading day whose loss made the strategy reduce-only
    bucket: Bucket | None = None
    # (symbol, buy side?) -> signed quantity working: kept as orders change, so a check costs
    # the same with 5 open orders or 5,000
    working: dict[tuple[str, bool], float] = field(default_factory=dict)

    def set_open(self, coid: str, order: OrderUpdate | None) -> None:
        old = self.open_orders.pop(coid, None)
        if old is not None:
            key = (old.symbol, old.side == "BUY")
            self.working[key] = self.working.get(key, 0.0) - _working(old)
        if order is not None:
            self.open_orders[coid] = order
            key = (order.symbol, order.side == "BUY")
            self.working[key] = self.working.get(key, 0.0) + _working(order)

    def held(self, symbol: str) -> float:
        return self.mirror.quantity(symbol)

    def rebuild(self) -> None:
        """After the mirror was re-joined: open orders are the mirror's, plus approvals
        execution has not reported yet."""
        pending = {c: o for c, o in self.open_orders.items()
                   if o.state == "new" and c not in self.mirror.orders}
        self.open_orders, self.working = {}, {}
        for coid, order in {**pending, **self.mirror.orders}.items():
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
        book = self.book(intent.strategy)
        if intent.action == "cancel":
            return Decision(True)  # cancelling only ever reduces risk
        limits = self.limits.for_strategy(intent.strategy)
        order = None
        if intent.action == "modify":
            order = book.open_orders.get(intent.client_order_id)
            if order is None:
                return Decision(False, "unknown_order",
                                f"no open order {intent.client_order_id} to modify")
        for check in (self._trading_state, self._gateway, self._instrument, self._size,
                      self._price, self._market_data, self._exposure, self._open_orders,
                      self._rate):
            decision = check(intent, order, book, limits)
            if decision is not None:
                return decision
        return Decision(True)

    def check_group(self, intents: list[OrderIntent]) -> Decision:
        """A bracket or OCA group, approved or refused as a whole (its legs are sent only
        together: ``transmit=False`` until the last). The worst case is the entry filling:
        the exits only close what it opens, so they must be on the other side, no larger
        than the entry, and valid prices; the group's legs count as open orders together."""
        entry = next((i for i in intents if not i.parent_id), None)
        exits = [i for i in intents if i.parent_id]
        if entry is None:
            return Decision(False, "bad_group", "a group needs its entry (the parent) order")
        for leg in exits:
            if leg.parent_id != entry.client_order_id or leg.symbol != entry.symbol:
                return Decision(False, "bad_group", f"{leg.client_order_id} is not an exit of "
                                                    f"{entry.client_order_id} in {entry.symbol}")
            if leg.side == entry.side or leg.quantity > entry.quantity:
                return Decision(False, "bad_group", f"exit {leg.client_order_id} must be on the "
                                                    f"other side and at most the entry's size")
        decision = self.check(entry)
        if not decision.approved:
            return decision
        book = self.book(entry.strategy)
        limits = self.limits.for_strategy(entry.strategy)
        for leg in exits:
            for check in (self._size, self._price):
                decision = check(leg, None, book, limits)
                if decision is not None:
                    return Decision(False, decision.reason,
                                    f"exit {leg.client_order_id}: {decision.text}")
        if limits.max_open_orders and len(book.open_orders) + len(intents) > \
                limits.max_open_orders:
            return Decision(False, "max_open_orders",
                            f"{len(book.open_orders)} open orders and a group of "
                            f"{len(intents)}: the limit is {limits.max_open_orders}")
        return Decision(True)

    def _trading_state(self, intent, order, book, limits) -> Decision | None:
        if self.global_state == HALTED:
            return Decision(False, "halted", "trading is halted (kill switch)")
        if book.state == HALTED:
            return Decision(False, "strategy_halted", f"{intent.strategy} is halted")
        if REDUCING in (self.global_state, book.state) and not self._reduces(intent, book):
            return Decision(False, "reducing_only",
                            f"{intent.strategy} may only reduce its position")
        return None

    def _gateway(self, intent, order, book, limits) -> Decision | None:
        if self.gateway_state != "synchronised":
            return Decision(False, "gateway_not_synchronised",
                            f"the gateway is {self.gateway_state}: no new orders")
        return None

    def _instrument(self, intent, order, book, limits) -> Decision | None:
        if intent.action == "modify":
            return None
        try:
            self.instruments.get(intent.symbol)
        except UnknownInstrument:
            return Decision(False, "unknown_symbol", f"unknown instrument {intent.symbol!r}")
        return None

    def _size(self, intent, order, book, limits) -> Decision | None:
        symbol = order.symbol if order else intent.symbol
        info = self.instruments.get(symbol)
        qty = intent.quantity or (order.quantity if order else 0.0)
        if not (qty > 0) or not math.isfinite(qty):
            return Decision(False, "bad_quantity", f"quantity {qty} must be positive")
        if abs(qty / info.lot_size - round(qty / info.lot_size)) > 1e-9:
            return Decision(False, "lot_size", f"{qty} is not a multiple of the lot size "
                                               f"{info.lot_size} of {symbol}")
        if limits.max_order_quantity and qty > limits.max_order_quantity:
            return Decision(False, "max_order_quantity",
                            f"{qty} is over the maximum order quantity {limits.max_order_quantity}")
        return None

    def _price(self, intent, order, book, limits) -> Decision | None:
        symbol = order.symbol if order else intent.symbol
        info = self.instruments.get(symbol)
        for label, price in (("limit", intent.limit_price), ("stop", intent.stop_price)):
            if math.isfinite(price) and not info.on_tick(price):
                return Decision(False, "min_tick", f"{label} price {price} is not on the "
                                                   f"minimum tick {info.min_tick} of {symbol}")
        order_type = order.order_type if order else intent.order_type
        if order_type in ("LMT", "STP LMT") and not math.isfinite(intent.limit_price) \
                and order is None:
            return Decision(False, "missing_price", f"a {order_type} order needs a limit price")
        return None

    def _market_data(self, intent, order, book, limits) -> Decision | None:
        symbol = order.symbol if order else intent.symbol
        mark = self.marks.get(symbol)
        if mark is None or (limits.stale_after_s and self.clock() - mark[1] >
                            limits.stale_after_s):
            return Decision(False, "stale_market_data",
                            f"no fresh market data for {symbol}: no new orders")
        mid = mark[0]
        price = intent.limit_price
        is_child = bool(intent.parent_id) or (order is not None and order.parent_id)
        if limits.price_band and math.isfinite(price) and not is_child \
                and abs(price - mid) > limits.price_band * mid:
            return Decision(False, "price_band", f"limit {price} is more than "
                                                 f"{limits.price_band:.1%} from the mid {mid:.4f}")
        info = self.instruments.get(symbol)
        qty = intent.quantity or (order.quantity if order else 0.0)
        notional = qty * (price if math.isfinite(price) else mid) * info.multiplier
        if limits.max_order_notional and notional > limits.max_order_notional:
            return Decision(False, "max_order_notional", f"notional {notional:,.0f} is over "
                                                         f"{limits.max_order_notional:,.0f}")
        return None

    def _exposure(self, intent, order, book, limits) -> Decision | None:
        if intent.parent_id or (order is not None and order.parent_id):
            return None  # a bracket's exits only ever reduce what the parent opened
        symbol = order.symbol if order else intent.symbol
        side = order.side if order else intent.side
        qty = intent.quantity or (order.quantity if order else 0.0)
        signed = qty if side == "BUY" else -qty
        held = book.held(symbol)
        # worst case: every working order on the same side fills too (but this one, if it is
        # a modify: its new terms replace its old)
        working = book.working.get((symbol, signed > 0), 0.0)
        if order is not None and (order.side == "BUY") == (signed > 0):
            working -= _working(order)
        after = held + working + signed
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
            gross += abs(qty) * mark * self._multiplier(symbol) if abs(after) > abs(held) else 0
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

    def _reduces(self, intent: OrderIntent, book: StrategyBook) -> bool:
        if intent.action != "new":
            return True  # a modify of a reducing order stays reducing; keep it simple
        held = book.held(intent.symbol)
        signed = intent.quantity if intent.side == "BUY" else -intent.quantity
        return held != 0 and (held > 0) != (signed > 0) and abs(signed) <= abs(held)

    # -- STATES -------------------------------------------------------------------------------
    def set_state(self, target: str, state: str) -> None:
        if target:
            self.book(target).state = state
        else:
            self.global_state = state
            if state == ACTIVE:
                for book in self.strategies.values():
                    if book.state == HALTED:
                        book.state = ACTIVE

    def approved(self, intent: OrderIntent) -> None:
        """Count an approved new order as open at once, so a burst cannot overshoot."""
        if intent.action == "new":
            book = self.book(intent.strategy)
            if intent.client_order_id not in book.open_orders:
                book.set_open(intent.client_order_id, OrderUpdate(
                    strategy=intent.strategy, client_order_id=intent.client_order_id,
                    state="new", symbol=intent.symbol, side=intent.side,
                    quantity=intent.quantity, limit_price=intent.limit_price,
                    order_type=intent.order_type, parent_id=intent.parent_id))
