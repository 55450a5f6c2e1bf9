"""The class a trader subclasses. It never sees a socket or a wire field.

A strategy reacts to callbacks (``on_tick``, ``on_depth``, ``on_fill``...) and acts through
``submit`` / ``modify`` / ``cancel`` / ``flatten``. Its positions and open orders are kept here
from execution's order updates (fills deduplicated by execId) and recovered from execution's
snapshot when the process restarts, never from the strategy's own memory. The same class runs
live (``services.strategy.runner``) and in a backtest (``services.backtest``): both implement
``StrategyHost``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Protocol

from core.book import BookError, OrderBook
from proto.schema import (Bar, DepthUpdate, OrderIntent, OrderUpdate, QuoteTick, RiskDecision,
                          Tick, TradeTick)
from services.runtime.instruments import InstrumentInfo, Instruments
from services.runtime.positions import Holding

TERMINAL = {"filled", "cancelled", "rejected", "inactive"}


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
        self.holdings: dict[str, Holding] = {}
        self.orders: dict[str, OrderUpdate] = {}  # open orders (and just-submitted intents)
        self.rejections: list[RiskDecision] = []
        self.paused = False
        self._exec_ids: set[str] = set()
        self._incarnation = incarnation
        self._next_id = 0

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
        """Send a new order intent through risk; returns its client order id (None if paused)."""
        if self.paused:
            return None
        info = self.instrument(symbol)
        coid = self._new_id()
        intent = OrderIntent(strategy=self.name, client_order_id=coid, action="new",
                             symbol=symbol, side=side, quantity=quantity, order_type=order_type,
                             limit_price=_round(info, limit_price),
                             stop_price=_round(info, stop_price), tif=tif, parent_id=parent_id,
                             oca_group=oca_group, transmit=transmit)
        self.orders[coid] = OrderUpdate(strategy=self.name, client_order_id=coid, state="new",
                                        symbol=symbol, side=side, quantity=quantity,
                                        limit_price=intent.limit_price,
                                        stop_price=intent.stop_price, order_type=order_type,
                                        parent_id=parent_id)
        self.host.send_intent(intent)
        return coid

    def submit_bracket(self, symbol: str, side: str, quantity: float, entry: float,
                       stop_loss: float, take_profit: float) -> tuple[str, str, str] | None:
        """An entry limit with a take-profit limit and a stop-loss stop, linked as IB links them:
        the children wait for the parent to fill and cancel each other."""
        if self.paused:
            return None
        exit_side = "SELL" if side == "BUY" else "BUY"
        parent = self.submit(symbol, side, quantity, "LMT", entry, transmit=False)
        oca = f"{parent}-oca"
        take = self.submit(symbol, exit_side, quantity, "LMT", take_profit, parent_id=parent,
                           oca_group=oca, transmit=False)
        stop = self.submit(symbol, exit_side, quantity, "STP", stop_price=stop_loss,
                           parent_id=parent, oca_group=oca, transmit=True)
        return parent, take, stop

    def modify(self, client_order_id: str, quantity: float = 0.0,
               limit_price: float = math.nan, stop_price: float = math.nan) -> None:
        order = self.orders.get(client_order_id)
        if order is None or order.state in TERMINAL:
            return
        info = self.instrument(order.symbol)
        self.host.send_intent(OrderIntent(strategy=self.name, client_order_id=client_order_id,
                                          action="modify", symbol=order.symbol,
                                          quantity=quantity,
                                          limit_price=_round(info, limit_price),
                                          stop_price=_round(info, stop_price)))

    def cancel(self, client_order_id: str) -> None:
        order = self.orders.get(client_order_id)
        if order is None or order.state in TERMINAL:
            return
        self.host.send_intent(OrderIntent(strategy=self.name, client_order_id=client_order_id,
                                          action="cancel", symbol=order.symbol))

    def flatten(self, symbol: str) -> str | None:
        """Cancel this symbol's open orders and close its position at market."""
        for coid, order in list(self.orders.items()):
            if order.symbol == symbol:
                self.cancel(coid)
        qty = self.position(symbol)
        if qty == 0:
            return None
        return self.submit(symbol, "SELL" if qty > 0 else "BUY", abs(qty), "MKT")

    # -- STATE --------------------------------------------------------------------------------
    def position(self, symbol: str) -> float:
        holding = self.holdings.get(symbol)
        return holding.quantity if holding else 0.0

    def open_orders(self, symbol: str | None = None) -> list[OrderUpdate]:
        return [o for o in self.orders.values()
                if o.state not in TERMINAL and (symbol is None or o.symbol == symbol)]

    def pnl(self) -> tuple[float, float]:
        """(realized, unrealized) in the instruments' currency, marked to the last mid."""
        realized = unrealized = 0.0
        for symbol, h in self.holdings.items():
            mult = self.instrument(symbol).multiplier
            realized += h.realized * mult
            mid = self.mids.get(symbol)
            if mid is not None and h.quantity:
                unrealized += (mid - h.avg_cost) * h.quantity * mult
        return realized, unrealized

    def instrument(self, symbol: str) -> InstrumentInfo:
        return self.instruments.get(symbol)

    def book(self, symbol: str) -> OrderBook:
        return self.books[symbol]

    # -- FED BY THE HOST ----------------------------------------------------------------------
    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self.name}-{self._incarnation}-{self._next_id}"

    def handle_update(self, update: OrderUpdate) -> None:
        """An order update from execution (live or from a snapshot): state, then fill."""
        if update.state in TERMINAL:
            self.orders.pop(update.client_order_id, None)
        else:
            self.orders[update.client_order_id] = update
        if update.exec_id and update.exec_id not in self._exec_ids:
            self._exec_ids.add(update.exec_id)
            signed = update.last_fill_qty if update.side == "BUY" else -update.last_fill_qty
            self.holdings.setdefault(update.symbol, Holding()).apply(signed,
                                                                     update.last_fill_price)
            self.on_fill(update)
        self.on_order_update(update)

    def handle_decision(self, decision: RiskDecision) -> None:
        if decision.approved:
            return
        self.rejections.append(decision)
        self.orders.pop(decision.client_order_id, None)
        self.log.warning("intent rejected by risk",
                         extra={"client_order_id": decision.client_order_id,
                                "reason": decision.reason, "text": decision.text})
        self.on_rejected(decision)

    def restore_position(self, symbol: str, quantity: float, avg_cost: float,
                         realized: float) -> None:
        self.holdings[symbol] = Holding(quantity, avg_cost, realized)

    def handle_market_data(self, msg) -> bool:
        """Route one market-data message to its callback. False if a depth update was refused
        (the book is reset: IB re-sends it as inserts after a resubscription)."""
        if isinstance(msg, DepthUpdate):
            return self.handle_depth(msg)
        if isinstance(msg, Tick):
            self.handle_tick(msg)
        elif isinstance(msg, QuoteTick):
            self.handle_quote(msg)
        elif isinstance(msg, TradeTick):
            self.on_trade(msg)
        elif isinstance(msg, Bar):
            self.on_bar(msg)
        return True

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
