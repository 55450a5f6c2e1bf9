"""The simulated venue: the gateway's synchronous side and the exchange, answering execution's
``OrderCommand``s with IB's reports, matched against the recorded market.

The backtest runs the live ``ExecutionEngine``; only this venue and the clock are simulated.

- ``command(cmd)`` is the gateway receiving a command from execution: a place gets an IB order
  id at once (the gateway's synchronous reply, ``OrderStatus`` PendingSubmit, which execution
  takes in ``on_placed``); a modify or cancel is completed with its IB id. The host then
  delivers the command to the exchange after the latency: ``arrive(cmd)``.
- The exchange answers as IB does, into ``reports`` (the host drains them after each step and
  feeds them to execution after the return latency): an order that starts working gets
  ``OpenOrder`` + ``OrderStatus`` (Submitted; PreSubmitted for a stop not yet triggered or a
  bracket child waiting for its parent, ``why_held="child"``); a fill gets ``Execution``
  (execId ``TOKEN.SEQ.01.01`` as IB shapes them), ``OrderStatus`` (Submitted or Filled, with
  the cumulative quantities) and ``Commission`` (keyed by execId); a cancel gets error 202 and
  ``OrderStatus`` Cancelled; a modify ``OpenOrder`` with the new terms and ``OrderStatus``;
  refusals IB's error codes (200 no security definition, 201 rejected, 104 modify of a
  filled order, 10147 cancel of an unknown order, 10148 cancel of an order that is done).

Matching rules (the approximations are documented in docs/backtest.md):

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
- Brackets: ``transmit=False`` orders are held (as TWS holds them) until an order of their
  group is transmitted; children work only once the parent is completely filled; a completely
  filled OCA member cancels the others; a cancelled or rejected parent cancels its children.
- Commission: IB's fixed pricing, ``per_share`` a share with a ``minimum`` per order, charged
  as the order's cumulative quantity grows (an order filled in pieces pays the minimum once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from proto.schema import (Commission, Execution, GatewayError, Message, OpenOrder, OrderCommand,
                          OrderStatus)
from services.backtest.market import ASK, BID, SymbolMarket

QUEUE_MODELS = ("none", "proportional")
EPS = 1e-9
ACCOUNT = "BACKTEST"
CLIENT_ID = 1  # the gateway's IB client id in a backtest
EXEC_TOKEN = 0x0000B7E5  # the first field of every execId: fixed, so runs are identical
DONE = frozenset({"Filled", "Cancelled", "Inactive"})


def exec_id(seq: int, correction: int = 1) -> str:
    """IB's execId shape, e.g. ``0000b7e5.0000002a.01.01``."""
    return f"{EXEC_TOKEN:08x}.{seq:08x}.01.{correction:02d}"


#: IB's published schedules (https://www.interactivebrokers.com/en/pricing/commissions-stocks.php,
#: .../commissions-futures.php, IBKR Pro, United States): stocks fixed USD 0.005 a share, at
#: least USD 1.00 and at most 1 % of the trade value an order; stocks tiered by the month's
#: shares so far, at least USD 0.35 and at most 1 % an order, plus clearing (NSCC/DTC USD
#: 0.00020 a share) and exchange fees; futures USD 0.85 a contract (fixed; tiered by the
#: month's contracts: 0.85 / 0.65 / 0.45 / 0.25), plus exchange and regulatory fees.
STOCK_TIERS = ((300_000, 0.0035), (3_000_000, 0.002), (20_000_000, 0.0015),
               (100_000_000, 0.001), (math.inf, 0.0005))
FUTURE_TIERS = ((1_000, 0.85), (10_000, 0.65), (20_000, 0.45), (math.inf, 0.25))
PRICING = ("fixed", "tiered")


@dataclass(frozen=True)
class CommissionModel:
    """IB's fixed pricing for US stocks: ``per_share`` a share, at least ``minimum`` and at
    most ``max_rate`` (1 %) of the trade value an order, charged as the order fills (each
    execution pays what the order's total has grown by); exchange and regulatory fees are
    included by IB in fixed pricing (the transaction fees on sales are not modelled)."""

    per_share: float = 0.005
    minimum: float = 1.0
    max_rate: float = 0.01  # of the order's traded value; 0: no cap

    def for_order(self, cumulative_quantity: float, value: float = math.nan) -> float:
        """What an order filled ``cumulative_quantity`` so far (worth ``value``) has paid."""
        if cumulative_quantity <= 0:
            return 0.0
        amount = max(self.minimum, self.per_share * cumulative_quantity)
        if self.max_rate and math.isfinite(value) and value > 0:
            amount = min(amount, self.max_rate * value)
        return amount

    def for_fill(self, filled_before: float, quantity: float, price: float = math.nan,
                 value_before: float = math.nan, symbol: str = "", t_ns: int = 0) -> float:
        """What one fill of ``quantity`` at ``price`` costs after ``filled_before`` (worth
        ``value_before``) of the same order."""
        value_after = value_before + quantity * price
        return self.for_order(filled_before + quantity, value_after) - \
            self.for_order(filled_before, value_before)


@dataclass
class IBCommissions:
    """IB's schedules by instrument type, for a run over several instruments: stocks fixed
    (``CommissionModel``) or tiered (``STOCK_TIERS`` by the calendar month's shares traded
    before the order's fill, at least ``stock_tiered_min``, at most 1 % of the value, plus
    ``clearing_per_share`` and ``exchange_per_share``); futures (``sec_types[symbol] ==
    "FUT"``) ``FUTURE_TIERS`` a contract (fixed: the first tier, 0.85) plus
    ``fees_per_contract`` (exchange + regulatory: what the exchange charges; 0 unless given).
    Tiers are taken marginally through the month, as IB does: the month's volume is counted
    in the order the fills happen, so a run gives the same figures each time."""

    pricing: str = "fixed"
    sec_types: dict[str, str] = field(default_factory=dict)
    stock_fixed: CommissionModel = field(default_factory=CommissionModel)
    stock_tiered_min: float = 0.35
    max_rate: float = 0.01
    clearing_per_share: float = 0.0002
    exchange_per_share: float = 0.0
    fees_per_contract: float = 0.0
    _month_volume: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pricing not in PRICING:
            raise ValueError(f"pricing {self.pricing!r}: one of {', '.join(PRICING)}")

    def for_fill(self, filled_before: float, quantity: float, price: float = math.nan,
                 value_before: float = math.nan, symbol: str = "", t_ns: int = 0) -> float:
        future = self.sec_types.get(symbol) == "FUT"
        if not future and self.pricing == "fixed":
            return self.stock_fixed.for_fill(filled_before, quantity, price, value_before)
        month = _month(t_ns)
        key = ("FUT" if future else "STK", month)
        done = self._month_volume.get(key, 0.0)
        self._month_volume[key] = done + quantity
        if future:
            tiers = FUTURE_TIERS if self.pricing == "tiered" else FUTURE_TIERS[:1]
            return _marginal(tiers, done, quantity) + self.fees_per_contract * quantity
        rate = _marginal(STOCK_TIERS, done, quantity) / quantity
        value_after = value_before + quantity * price

        def order_total(q: float, value: float) -> float:
            if q <= 0:
                return 0.0
            amount = max(self.stock_tiered_min, rate * q)
            if self.max_rate and math.isfinite(value) and value > 0:
                amount = min(amount, self.max_rate * value)
            return amount + (self.clearing_per_share + self.exchange_per_share) * q

        return order_total(filled_before + quantity, value_after) - \
            order_total(filled_before, value_before)


def _marginal(tiers, done: float, quantity: float) -> float:
    """The cost of ``quantity`` more units after ``done`` this month, each at its tier."""
    total, at, left = 0.0, done, quantity
    for upto, rate in tiers:
        if left <= 0:
            break
        if at >= upto:
            continue
        take = min(left, upto - at)
        total += take * rate
        at += take
        left -= take
    if left > 0:
        total += left * tiers[-1][1]
    return total


def _month(t_ns: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t_ns / 1e9, tz=timezone.utc).strftime("%Y-%m")


@dataclass
class SimOrder:
    terms: OrderCommand  # the terms in force (a modify replaces them)
    status: str = "PendingSubmit"  # IB's
    perm_id: int = 0
    filled: float = 0.0
    avg_price: float = 0.0
    arrived: bool = False  # the place reached the exchange
    transmitted: bool = False  # released by a transmitting order of its group (or itself)
    started: bool = False  # has begun working (taken what it could, joined the queue)
    triggered: bool = False  # stops: became a market / limit order
    ahead: float = 0.0  # proportional queue: size displayed ahead of us at our price
    seen_level: float | None = None  # displayed size at our price when last looked
    explained: float = 0.0  # traded at our price, not yet seen leaving the book
    parent: "SimOrder | None" = None
    children: list["SimOrder"] = field(default_factory=list)

    @property
    def ib_order_id(self) -> int:
        return self.terms.ib_order_id

    @property
    def remaining(self) -> float:
        return self.terms.quantity - self.filled

    @property
    def buy(self) -> bool:
        return self.terms.side == "BUY"

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def is_stop(self) -> bool:
        return self.terms.order_type in ("STP", "STP LMT")


class SimulatedVenue:
    def __init__(self, markets: dict[str, SymbolMarket], queue_model: str = "proportional",
                 commission: CommissionModel | None = None,
                 clock: Callable[[], int] = lambda: 0) -> None:
        if queue_model not in QUEUE_MODELS:
            raise ValueError(f"queue model {queue_model!r}: one of {', '.join(QUEUE_MODELS)}")
        self.markets = markets
        self.queue_model = queue_model
        self.commission = commission or CommissionModel()
        self.clock = clock
        self.reports: list[Message] = []  # IB's answers since the host last drained them
        self.orders: dict[int, SimOrder] = {}  # by IB id; insertion order = placing order
        self._by_ref: dict[str, int] = {}  # client order id (orderRef) -> IB id: the gateway's
        self._live: dict[str, dict[int, SimOrder]] = {s: {} for s in markets}  # transmitted
        self._oca: dict[str, list[SimOrder]] = {}
        self._next_id = 0
        self._next_perm = 0
        self._next_exec = 0

    # -- THE GATEWAY: synchronous, at send time -----------------------------------------------
    def command(self, cmd: OrderCommand) -> OrderStatus | None:
        """A command from execution reaches the gateway. A place is given its IB order id at
        once (the reply execution takes in ``on_placed``); a resent place gets the same one."""
        if cmd.command == "place":
            known = self._by_ref.get(cmd.client_order_id)
            if known is not None:
                order = self.orders[known]
                cmd.ib_order_id = known
                return self._status_message(order)
            self._next_id += 1
            cmd.ib_order_id = self._next_id
            self._by_ref[cmd.client_order_id] = cmd.ib_order_id
            self.orders[cmd.ib_order_id] = SimOrder(terms=cmd)
            return OrderStatus(ib_order_id=cmd.ib_order_id, client_order_id=cmd.client_order_id,
                               status="PendingSubmit", filled=0.0, remaining=cmd.quantity,
                               parent_id=cmd.parent_ib_id)
        if cmd.command in ("modify", "cancel") and not cmd.ib_order_id:
            cmd.ib_order_id = self._by_ref.get(cmd.client_order_id, 0)
        return None

    # -- THE EXCHANGE: at arrival (send time + latency) ---------------------------------------
    def arrive(self, cmd: OrderCommand) -> None:
        if cmd.command == "place":
            self._place(cmd)
        elif cmd.command == "modify":
            self._modify(cmd)
        elif cmd.command == "cancel":
            self._cancel_request(cmd)

    def _place(self, cmd: OrderCommand) -> None:
        order = self.orders.get(cmd.ib_order_id)
        if order is None or order.arrived:
            return  # a resent place: IB already has it
        order.arrived = True
        self._next_perm += 1
        order.perm_id = self._next_perm
        if cmd.symbol not in self.markets:
            self._reject(order, 200, "No security definition has been found for the request")
            return
        parent = self.orders.get(cmd.parent_ib_id) if cmd.parent_ib_id else None
        if cmd.parent_ib_id:
            if parent is None or not parent.arrived or parent.status in ("Cancelled",
                                                                          "Inactive"):
                for member in self._held_siblings(parent, order) + [order]:
                    self._reject(member, 201, "Order rejected - reason:Parent order is not "
                                              "live")
                return
            order.parent = parent
            parent.children.append(order)
        if cmd.oca_group:
            self._oca.setdefault(cmd.oca_group, []).append(order)
        if not cmd.transmit:
            return  # held, as TWS holds it, until a transmitted order of its group arrives
        group = [order]
        if parent is not None:
            group = ([parent] if not parent.transmitted else []) \
                + self._held_siblings(parent, order) + [order]
        for member in group:
            self._transmit(member)
        for member in group:
            if self._working(member) and not member.started:  # (a filled parent starts
                self._start(member)                            # its children itself)

    def _held_siblings(self, parent: SimOrder | None, order: SimOrder) -> list[SimOrder]:
        if parent is None:
            return []
        return [c for c in parent.children
                if c is not order and c.arrived and not c.transmitted and not c.done]

    def _transmit(self, order: SimOrder) -> None:
        order.transmitted = True
        self._live[order.terms.symbol][order.ib_order_id] = order
        held = order.parent is not None and order.parent.status != "Filled"
        order.status = "PreSubmitted" if held or (order.is_stop and not order.triggered) \
            else "Submitted"
        self.reports.append(self._open_message(order))
        self.reports.append(self._status_message(order, why_held="child" if held else ""))

    def _modify(self, cmd: OrderCommand) -> None:
        order = self.orders.get(cmd.ib_order_id)
        if order is None or not order.arrived:
            self._error(cmd.ib_order_id, cmd.client_order_id, 201,
                        "Order rejected - reason:no such order to modify")
            return
        if order.status == "Filled":
            self._error(order.ib_order_id, cmd.client_order_id, 104,
                        "Can't modify a filled order.")
            return
        if order.done:
            self._error(order.ib_order_id, cmd.client_order_id, 201,
                        f"Order rejected - reason:the order is {order.status}")
            return
        if cmd.quantity + EPS < order.filled:
            self._error(order.ib_order_id, cmd.client_order_id, 201,
                        "Order rejected - reason:New quantity is below the filled quantity")
            return
        cmd.parent_ib_id = order.terms.parent_ib_id
        cmd.oca_group = order.terms.oca_group
        cmd.transmit = order.terms.transmit
        order.terms = cmd
        order.seen_level = None  # a modified order loses its place in the queue
        if not order.transmitted:
            return
        self.reports.append(self._open_message(order))
        self.reports.append(self._status_message(order))
        if order.remaining <= EPS:
            self._complete(order)
        elif self._working(order):
            self._start(order)

    def _cancel_request(self, cmd: OrderCommand) -> None:
        order = self.orders.get(cmd.ib_order_id)
        if order is None or not order.arrived:
            self._error(cmd.ib_order_id, cmd.client_order_id, 10147,
                        f"OrderId {cmd.ib_order_id} that needs to be cancelled is not found.")
        elif order.done:
            self._error(order.ib_order_id, cmd.client_order_id, 10148,
                        f"OrderId {order.ib_order_id} that needs to be cancelled cannot be "
                        f"cancelled, state: {order.status}.")
        else:
            self._cancel(order, "")

    # -- MARKET DATA --------------------------------------------------------------------------
    def on_market(self, symbol: str, trades: list[tuple[float, float]]) -> None:
        """The recorded market of ``symbol`` changed: match its working orders, oldest first."""
        live = self._live.get(symbol)
        if not live:
            return
        for order in [o for o in live.values() if self._working(o)]:
            if order.done:
                continue  # an OCA sibling filled earlier in this loop
            self._match(order, trades)

    # -- MATCHING -----------------------------------------------------------------------------
    def _working(self, order: SimOrder) -> bool:
        if order.done or not order.transmitted:
            return False
        return order.parent is None or order.parent.status == "Filled"

    def _start(self, order: SimOrder) -> None:
        """An order begins working: take what is marketable, queue the rest."""
        market = self.markets[order.terms.symbol]
        order.started = True
        order.seen_level = None
        if not self._triggered(order, market, []):
            return
        limit = self._limit(order)
        self._take(order, market, limit)
        if order.done:
            return
        if order.terms.tif == "IOC":
            self._cancel(order, "")  # IB: the unfilled part of an IOC is cancelled at once
        elif math.isfinite(limit):
            self._join_queue(order, market)

    def _match(self, order: SimOrder, trades: list[tuple[float, float]]) -> None:
        market = self.markets[order.terms.symbol]
        if not order.triggered and order.is_stop:
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
            if order.done:
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
        if not order.is_stop or order.triggered:
            return True
        stop = order.terms.stop_price
        book = market.book
        touch = book.best_ask_price() if order.buy else book.best_bid_price()
        prices = [p for p, _ in trades] + ([touch] if math.isfinite(touch) else [])
        if any((p >= stop - EPS) if order.buy else (p <= stop + EPS) for p in prices):
            order.triggered = True
            order.status = "Submitted"  # IB: PreSubmitted until the trigger, then Submitted
            self.reports.append(self._status_message(order))
        return order.triggered

    def _limit(self, order: SimOrder) -> float:
        kind = order.terms.order_type
        return order.terms.limit_price if kind in ("LMT", "STP LMT") else math.nan

    def _take(self, order: SimOrder, market: SymbolMarket, limit: float) -> None:
        """Walk the opposite side of the recorded book, best level first, up to ``limit``."""
        book = market.book
        side = ASK if order.buy else BID
        count = book.ask_count if order.buy else book.bid_count
        for i in range(count):
            if order.remaining <= EPS or order.done:
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
            if order.remaining <= EPS or order.done or (
                    price > limit + EPS if order.buy else price < limit - EPS):
                return
            if size > EPS:
                quantity = min(order.remaining, size)
                market.take(side, price, quantity)
                self._fill(order, quantity, limit)

    def _join_queue(self, order: SimOrder, market: SymbolMarket) -> None:
        shown = market.level_size_at(BID if order.buy else ASK, order.terms.limit_price)
        order.ahead = shown or 0.0
        order.seen_level = shown
        order.explained = 0.0

    def _track_queue(self, order: SimOrder, market: SymbolMarket) -> None:
        """Displayed size at our price went down: what trades do not explain was cancelled,
        and the part of it ahead of us is taken pro rata."""
        shown = market.level_size_at(BID if order.buy else ASK, order.terms.limit_price)
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
        terms = order.terms
        before = order.filled
        value_before = order.avg_price * before
        total = before + quantity
        order.avg_price = (order.avg_price * before + price * quantity) / total
        order.filled = total
        done = order.remaining <= EPS
        if done:
            order.status = "Filled"
        self._next_exec += 1
        eid = exec_id(self._next_exec)
        self.reports.append(Execution(
            exec_id=eid, ib_order_id=terms.ib_order_id, client_order_id=terms.client_order_id,
            perm_id=order.perm_id, account=ACCOUNT, symbol=terms.symbol, side=terms.side,
            quantity=quantity, price=price, cum_quantity=total, avg_price=order.avg_price,
            exec_time_ns=self.clock(), exchange=ACCOUNT))
        self.reports.append(self._status_message(order, last_fill_price=price))
        self.reports.append(Commission(exec_id=eid,
                                       commission=self.commission.for_fill(
                                           before, quantity, price, value_before,
                                           terms.symbol, self.clock())))
        if done:
            self._after_filled(order)

    def _complete(self, order: SimOrder) -> None:
        """Nothing remains after a modify down to the filled quantity: the order is filled."""
        order.status = "Filled"
        self.reports.append(self._status_message(order))
        self._after_filled(order)

    def _after_filled(self, order: SimOrder) -> None:
        self._live[order.terms.symbol].pop(order.ib_order_id, None)
        for child in order.children:  # the bracket's exits start working now
            if self._working(child):
                child.status = "PreSubmitted" if child.is_stop and not child.triggered \
                    else "Submitted"
                self.reports.append(self._open_message(child))
                self.reports.append(self._status_message(child))
                self._start(child)
        group = order.terms.oca_group
        if group:
            for other in self._oca.get(group, ()):
                if other is not order and not other.done:
                    self._cancel(other, "OCA group cancelled")

    def _cancel(self, order: SimOrder, reason: str) -> None:
        order.status = "Cancelled"
        self._live[order.terms.symbol].pop(order.ib_order_id, None)
        self._error(order.ib_order_id, order.terms.client_order_id, 202,
                    f"Order Canceled - reason:{reason}")
        self.reports.append(self._status_message(order))
        for child in order.children:
            if not child.done:
                self._cancel(child, "Parent order cancelled")

    def _reject(self, order: SimOrder, code: int, text: str) -> None:
        order.status = "Inactive"
        if order.terms.symbol in self._live:
            self._live[order.terms.symbol].pop(order.ib_order_id, None)
        self._error(order.ib_order_id, order.terms.client_order_id, code, text)
        for child in order.children:
            if not child.done:
                self._reject(child, 201, "Order rejected - reason:Parent order is not live")

    # -- IB'S MESSAGES ------------------------------------------------------------------------
    def _error(self, ib_order_id: int, client_order_id: str, code: int, text: str) -> None:
        self.reports.append(GatewayError(code=code, text=text, req_id=ib_order_id,
                                         scope="order", ref=client_order_id))

    def _open_message(self, order: SimOrder) -> OpenOrder:
        t = order.terms
        return OpenOrder(ib_order_id=t.ib_order_id, client_order_id=t.client_order_id,
                         perm_id=order.perm_id, client_id=CLIENT_ID, account=ACCOUNT,
                         symbol=t.symbol, side=t.side, quantity=t.quantity,
                         order_type=t.order_type, limit_price=t.limit_price,
                         stop_price=t.stop_price, tif=t.tif, status=order.status,
                         parent_id=t.parent_ib_id, oca_group=t.oca_group)

    def _status_message(self, order: SimOrder, last_fill_price: float = 0.0,
                        why_held: str = "") -> OrderStatus:
        t = order.terms
        return OrderStatus(ib_order_id=t.ib_order_id, client_order_id=t.client_order_id,
                           status=order.status, filled=order.filled,
                           remaining=max(0.0, t.quantity - order.filled),
                           avg_fill_price=order.avg_price, last_fill_price=last_fill_price,
                           perm_id=order.perm_id, parent_id=t.parent_ib_id, why_held=why_held)
