"""The class a trader subclasses. It never sees a socket or a wire field.

A strategy reacts to callbacks (``on_tick``, ``on_depth``, ``on_fill``...) and acts through
``submit`` / ``modify`` / ``cancel`` / ``flatten``. Its positions and open orders are a mirror
of execution's (``services.model.mirror``): execution's numbers as published, re-joined from
execution's snapshot on a restart, a lost message or a digest that disagrees; never computed
from the strategy's own memory. Order terms are checked here with the model's enums
(``OrderSide``, ``OrderType``, ``TimeInForce``), identically live and in a backtest. The same class runs
live (``services.strategy.runner``) and in a backtest (``services.backtest``): both implement
``StrategyHost``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Protocol

from core.book import BookError, OrderBook
from proto.schema import (Bar, DepthUpdate, Message, OrderIntent, OrderUpdate, QuoteTick,
                          RiskDecision, StrategyDigest, StrategyPosition, Tick, TradeTick)
from services.model.mirror import StrategyMirror
from services.model.orders import (DONE_VALUES, InvalidOrder, OrderSide, OrderType,
                                   TimeInForce)
from services.model.portfolio import unrealized
from services.runtime.instruments import InstrumentInfo, Instruments, UnknownInstrument

TERMINAL = DONE_VALUES


class StrategyHost(Protocol):
    """What runs a strategy: the live runner or the backtest engine."""

    def send_intent(self, intent: OrderIntent) -> None: ...

    def request_data(self, symbol: str, kind: str) -> None: ...

    def now_ns(self) -> int: ...


class Strategy:
    """Subclass and override the ``on_*`` callbacks you need."""

    def __init__(self, name: str, symbols: list[str], params: dict[str, Any], host: StrategyHost,
                 instruments: Instruments | None = None, incarnation: str = "0",
                 depth_rows: int = 10) -> None:
        self.name = name
        self.symbols = list(symbols)
        self.params = dict(params)
        self.host = host
        self.instruments = instruments or Instruments()
        self.log = logging.getLogger(f"strategy.{name}")
        self.books: dict[str, OrderBook] = {s: OrderBook(depth_rows) for s in symbols}
        self.mids: dict[str, float] = {}
        self.mirror = StrategyMirror(name)  # execution's truth: open orders, positions
        self.submitted: dict[str, OrderUpdate] = {}  # intents execution has not reported yet
        self.rejections: list[RiskDecision] = []
        #: risk's trading state says no (paused, halted, errored; set by the host): nothing
        #: is sent, not even a modify or a cancel (a kill's cancels are execution's)
        self.paused = False
        self._exec_ids: set[str] = set()
        self._incarnation = incarnation
        self._next_id = 0
        #: the strategy config's ``require_live_data``: delayed market data (``Tick.delayed``,
        #: IB's 15-20 minute late data on an account without live API data) is not acted on;
        #: the first one per symbol is logged and alerted (``host.alert`` when the host has it)
        self.require_live_data = False
        self.delayed_refused: dict[str, int] = {}  # symbol -> delayed messages not acted on

    # -- CALLBACKS (override) -----------------------------------------------------------------
    def on_start(self) -> None: ...

    def on_tick(self, tick: Tick) -> None: ...

    def on_quote(self, quote: QuoteTick) -> None: ...

    def on_trade(self, trade: TradeTick) -> None: ...

    def on_depth(self, symbol: str, book: OrderBook) -> None: ...

    def on_bar(self, bar: Bar) -> None: ...

    def on_order_update(self, update: OrderUpdate) -> None: ...

    def on_fill(self, update: OrderUpdate) -> None: ...

    def on_rejected(self, decision: RiskDecision) -> None: ...

    def on_timer(self, now_ns: int) -> None: ...

    def on_stop(self) -> None: ...

    # -- ACTIONS ------------------------------------------------------------------------------
    def subscribe(self, symbol: str, kind: str = "tick") -> None:
        """kind: tick, quote, trade, depth or bar."""
        self.host.request_data(symbol, kind)

    def submit(self, symbol: str, side: str, quantity: float, order_type: str = "LMT",
               limit_price: float = math.nan, stop_price: float = math.nan, tif: str = "DAY",
               parent_id: str = "", oca_group: str = "", transmit: bool = True) -> str | None:
        """Send a new order intent through risk; returns its client order id (None if paused).

        ``side`` is an ``OrderSide`` or its name in any case ("BUY", "buy"); ``order_type`` an
        ``OrderType`` or IB's code ("LMT", "MKT", "STP", "STP LMT"); ``tif`` a
        ``TimeInForce`` ("DAY", "GTC", "IOC"). Raises ``InvalidOrder`` (naming the field) for
        anything else, an unknown symbol, a quantity that is not positive, or a missing price;
        nothing is sent then."""
        if self.paused:
            return None
        side_ = OrderSide.parse(side, "side").value
        kind = OrderType.parse(order_type, "order_type")
        tif_ = TimeInForce.parse(tif, "tif").value
        try:
            info = self.instrument(symbol)
        except UnknownInstrument:
            raise InvalidOrder(f"symbol {symbol!r} is not a known instrument") from None
        if not (quantity > 0) or not math.isfinite(quantity):
            raise InvalidOrder(f"quantity {quantity!r} must be positive")
        if kind.needs_limit and not math.isfinite(limit_price):
            raise InvalidOrder(f"a {kind.value} order needs limit_price")
        if kind.needs_stop and not math.isfinite(stop_price):
            raise InvalidOrder(f"a {kind.value} order needs stop_price")
        coid = self._new_id()
        intent = OrderIntent(strategy=self.name, client_order_id=coid, action="new",
                             symbol=symbol, side=side_, quantity=quantity,
                             order_type=kind.value, limit_price=_round(info, limit_price),
                             stop_price=_round(info, stop_price), tif=tif_,
                             parent_id=parent_id, oca_group=oca_group, transmit=transmit)
        self.submitted[coid] = OrderUpdate(strategy=self.name, client_order_id=coid,
                                           state="new", symbol=symbol, side=side_,
                                           quantity=quantity, limit_price=intent.limit_price,
                                           stop_price=intent.stop_price,
                                           order_type=kind.value, parent_id=parent_id,
                                           tif=tif_, oca_group=oca_group)
        self.host.send_intent(intent)
        return coid

    def submit_bracket(self, symbol: str, side: str, quantity: float, entry: float,
                       stop_loss: float, take_profit: float) -> tuple[str, str, str] | None:
        """An entry limit with a take-profit limit and a stop-loss stop, linked as IB links them:
        the children wait for the parent to fill and cancel each other."""
        if self.paused:
            return None
        exit_side = OrderSide.parse(side, "side").opposite.value
        parent = self.submit(symbol, side, quantity, "LMT", entry, transmit=False)
        oca = f"{parent}-oca"
        take = self.submit(symbol, exit_side, quantity, "LMT", take_profit, parent_id=parent,
                           oca_group=oca, transmit=False)
        stop = self.submit(symbol, exit_side, quantity, "STP", stop_price=stop_loss,
                           parent_id=parent, oca_group=oca, transmit=True)
        return parent, take, stop

    def modify(self, client_order_id: str, quantity: float = 0.0,
               limit_price: float = math.nan, stop_price: float = math.nan) -> None:
        order = self.order(client_order_id)
        if order is None or self.paused:
            return
        info = self.instrument(order.symbol)
        self.host.send_intent(OrderIntent(strategy=self.name, client_order_id=client_order_id,
                                          action="modify", symbol=order.symbol,
                                          quantity=quantity,
                                          limit_price=_round(info, limit_price),
                                          stop_price=_round(info, stop_price)))

    def cancel(self, client_order_id: str) -> None:
        order = self.order(client_order_id)
        if order is None or self.paused:
            return
        self.host.send_intent(OrderIntent(strategy=self.name, client_order_id=client_order_id,
                                          action="cancel", symbol=order.symbol))

    def flatten(self, symbol: str) -> str | None:
        """Cancel this symbol's open orders and close its position at market (nothing while
        paused: ``ibfleet flatten NAME`` has execution do it then)."""
        if self.paused:
            return None
        for order in self.open_orders(symbol):
            self.cancel(order.client_order_id)
        qty = self.position(symbol)
        if qty == 0:
            return None
        return self.submit(symbol, "SELL" if qty > 0 else "BUY", abs(qty), "MKT")

    # -- STATE --------------------------------------------------------------------------------
    def position(self, symbol: str) -> float:
        """Execution's position of this strategy in ``symbol`` (signed quantity)."""
        return self.mirror.quantity(symbol)

    @property
    def orders(self) -> dict[str, OrderUpdate]:
        """Open orders by client order id: execution's, and intents it has not reported yet."""
        return {**self.submitted, **self.mirror.orders}

    def order(self, client_order_id: str) -> OrderUpdate | None:
        """An open order (or a just-submitted intent); None once it is done."""
        return self.mirror.orders.get(client_order_id) or self.submitted.get(client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        """Open orders (of ``symbol``), as ``orders``; called per event by strategies, so it
        merges only when intents are still unreported."""
        orders = self.orders if self.submitted else self.mirror.orders
        return [o for o in orders.values()
                if o.state not in TERMINAL and (symbol is None or o.symbol == symbol)]

    def pnl(self) -> tuple[float, float]:
        """(realized net of commissions, unrealized marked to the last mid), in the
        instruments' currency; realized is execution's number."""
        realized = unrealized_total = 0.0
        for symbol, p in self.mirror.positions.items():
            realized += p.realized
            mid = self.mids.get(symbol)
            if mid is not None:
                unrealized_total += unrealized(p.quantity, p.avg_cost, mid, p.multiplier)
        return realized, unrealized_total

    def instrument(self, symbol: str) -> InstrumentInfo:
        return self.instruments.get(symbol)

    def book(self, symbol: str) -> OrderBook:
        return self.books[symbol]

    # -- FED BY THE HOST ----------------------------------------------------------------------
    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self.name}-{self._incarnation}-{self._next_id}"

    def handle_execution(self, msg: Message) -> bool:
        """A message from execution's stream (live or a snapshot). False when a digest
        disagrees with the mirror: the host must re-join execution's snapshot."""
        if isinstance(msg, StrategyDigest):
            return self.mirror.agrees(msg)
        if isinstance(msg, StrategyPosition):
            self.mirror.apply(msg)
        elif isinstance(msg, OrderUpdate):
            self.handle_update(msg)
        return True

    def handle_update(self, update: OrderUpdate) -> None:
        """An order update from execution: state, then fill (``on_fill`` once per execId)."""
        self.submitted.pop(update.client_order_id, None)
        self.mirror.apply(update)
        if update.exec_id and update.exec_id not in self._exec_ids:
            self._exec_ids.add(update.exec_id)
            self.on_fill(update)
        self.on_order_update(update)

    def resync(self, state: list[Message]) -> None:
        """Execution's snapshot for this strategy replaces the mirror (after a restart, a lost
        message or a digest that disagreed). Intents not yet reported stay pending."""
        self.mirror.reset([m for m in state if not isinstance(m, StrategyDigest)])
        for coid in list(self.submitted):
            if coid in self.mirror.orders:
                del self.submitted[coid]

    def handle_decision(self, decision: RiskDecision) -> None:
        if decision.approved:
            return
        self.rejections.append(decision)
        self.submitted.pop(decision.client_order_id, None)
        self.log.warning("intent rejected by risk",
                         extra={"client_order_id": decision.client_order_id,
                                "reason": decision.reason, "text": decision.text})
        self.on_rejected(decision)

    def handle_market_data(self, msg) -> bool:
        """Route one market-data message to its callback. False if a depth update was refused
        (the book is reset: IB re-sends it as inserts after a resubscription)."""
        if isinstance(msg, DepthUpdate):
            return self.handle_depth(msg)
        if self.require_live_data and getattr(msg, "delayed", False):
            self._refuse_delayed(msg)
            return True
        if isinstance(msg, Tick):
            self.handle_tick(msg)
        elif isinstance(msg, QuoteTick):
            self.handle_quote(msg)
        elif isinstance(msg, TradeTick):
            self.on_trade(msg)
        elif isinstance(msg, Bar):
            self.on_bar(msg)
        return True

    def _refuse_delayed(self, msg) -> None:
        """A delayed tick under ``require_live_data``: no callback, no mid; said once."""
        n = self.delayed_refused.get(msg.symbol, 0)
        self.delayed_refused[msg.symbol] = n + 1
        if n:
            return
        text = (f"{msg.symbol}: market data is delayed (no live data from IB) and this strategy "
                f"requires live data (require_live_data): not acting on it")
        self.log.warning("delayed market data not acted on",
                         extra={"symbol": msg.symbol, "type": type(msg).__name__})
        alert = getattr(self.host, "alert", None)
        if callable(alert):
            alert("warning", "strategy.delayed_data_refused", text)

    def handle_depth(self, msg: DepthUpdate) -> bool:
        book = self.books.get(msg.symbol)
        if book is None:
            return True
        try:
            book.update_depth(msg.position, msg.operation, msg.side, msg.price, msg.size)
        except BookError as exc:
            self.log.warning("depth update refused; book reset",
                             extra={"symbol": msg.symbol, "error": str(exc)})
            book.reset()
            return False
        mid = book.mid()
        if math.isfinite(mid):
            self.mids[msg.symbol] = mid
        self.on_depth(msg.symbol, book)
        return True

    def handle_tick(self, tick: Tick) -> None:
        if math.isfinite(tick.bid) and math.isfinite(tick.ask) and tick.bid > 0 < tick.ask:
            self.mids[tick.symbol] = (tick.bid + tick.ask) / 2.0
        self.on_tick(tick)

    def handle_quote(self, quote: QuoteTick) -> None:
        if quote.bid > 0 < quote.ask:
            self.mids[quote.symbol] = (quote.bid + quote.ask) / 2.0
        self.on_quote(quote)


def _round(info: InstrumentInfo, price: float) -> float:
    return info.round_price(price) if math.isfinite(price) else price
