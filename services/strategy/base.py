"""The class a trader subclasses. It never sees a socket or a wire field.

A strategy reacts to callbacks (``on_tick``, ``on_depth``, ``on_fill``...) and acts through
``submit`` / ``modify`` / ``cancel`` / ``flatten``. Its positions and open orders are a mirror
of execution's (``services.model.mirror``): execution's numbers as published, re-joined from
execution's snapshot on a restart, a lost message or a digest that disagrees; never computed
from the strategy's own memory. Order terms are checked here with the model's enums
(``OrderSide``, ``OrderType``, ``TimeInForce``), identically live and in a backtest. The same class runs
live (``services.strategy.runner``) and in a backtest (``services.backtest``): both implement
``StrategyHost``.

What a strategy gets beyond the callbacks (``docs/strategy_api.md`` is generated from these
docstrings by ``python -m services.strategy.apidoc``): bars of any size from 1 second to 1
day (``subscribe_bars``; ``services.strategy.bars``), a warm-up from the gateway's paced
historical requests (``history``), an order handle that outlives the order (``submit``
returns an ``OrderHandle``, which is also the client order id), ``modify`` with keyword
arguments for what changes, ``bracket`` (market or limit entry, returned as ib_async orders
them: parent, take-profit, stop-loss), ``target_position``, the account's values
(``account``), commissions on fills, timers (``every``, ``at``) and the market's open and
close (``on_market_open``, ``on_market_close``; ``services.strategy.clock``).
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any, Callable, Protocol

from core.book import BookError, OrderBook
from proto.schema import (AccountValue, Bar, Commission, DepthUpdate, Message, OrderIntent,
                          OrderUpdate, QuoteTick, RiskDecision, StrategyDigest,
                          StrategyPosition, Tick, TradeTick)
from services.model.mirror import StrategyMirror
from services.model.orders import (DONE_VALUES, InvalidOrder, OrderSide, OrderType,
                                   TimeInForce)
from services.model.portfolio import unrealized
from services.runtime.instruments import InstrumentInfo, Instruments, UnknownInstrument
from services.strategy.account import Account
from services.strategy.bars import IB_BAR, BarAggregator, bar_seconds, bar_size_name
from services.strategy.clock import (EXCHANGE_ZONE, Timer, TimerQueue, TradingCalendar,
                                     parse_time_of_day)
from services.strategy.handle import Fill, OrderHandle  # noqa: F401 (re-exported)

TERMINAL = DONE_VALUES
KEEP_DONE_HANDLES = 10_000  # handles of finished orders kept (the oldest are let go)


class StrategyHost(Protocol):
    """What runs a strategy: the live runner or the backtest engine.

    Optional (a host without them gives no history, and timers only at ``on_timer``):
    ``history(symbol, bar_size, count, what_to_show, use_rth, timeout) -> list[Bar]`` and
    ``wake_at(t_ns)``, after which the host calls ``Strategy.run_timers(now_ns)``."""

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
        #: every order this strategy sent (or execution reported for it), by client order
        #: id, kept after it is done (the last ``KEEP_DONE_HANDLES`` finished ones)
        self.handles: OrderedDict[str, OrderHandle] = OrderedDict()
        self._done_handles = 0
        #: the account's values, as IB reports them (``services.strategy.account``)
        self.account = Account()
        #: the trading calendar ``on_market_open`` / ``on_market_close`` follow
        self.calendar = TradingCalendar()
        self._timers = TimerQueue()
        self._wake_ns: int | None = None
        self._from_5s: dict[str, list[BarAggregator]] = {}  # symbol -> bars built from 5 s
        self._from_trades: dict[str, list[BarAggregator]] = {}  # symbol -> from trades
        self._raw_bars: set[str] = set()  # symbols whose 5-second bars go to on_bar as is
        self._wanted: set[tuple[str, str]] = set()  # (symbol, kind) asked by the subclass
        self._commissions: OrderedDict[str, float] = OrderedDict()  # execId -> amount
        self.commissions_matched = 0  # IB commissions set on this strategy's fills

    # -- CALLBACKS (override) -----------------------------------------------------------------
    def on_start(self) -> None:
        """Once, before any other callback; positions, open orders (their handles), the
        trading state and the account are already known. Subscribe and warm up here."""

    def on_tick(self, tick: Tick) -> None:
        """Top of book and last trade (``Tick``), after ``mids`` is updated."""

    def on_quote(self, quote: QuoteTick) -> None:
        """A tick-by-tick bid/ask (``QuoteTick``)."""

    def on_trade(self, trade: TradeTick) -> None:
        """A tick-by-tick trade print (``TradeTick``)."""

    def on_depth(self, symbol: str, book: OrderBook) -> None:
        """The order book (``core.book.OrderBook``) after one depth update."""

    def on_bar(self, bar: Bar) -> None:
        """A complete bar (``Bar``) of a subscribed size; ``bar.seconds`` is its size."""

    def on_order_update(self, update: OrderUpdate) -> None:
        """Execution's report on one of this strategy's orders (``OrderUpdate``), after its
        ``OrderHandle`` and ``orders`` are updated (and after ``on_fill`` for a fill)."""

    def on_fill(self, update: OrderUpdate) -> None:
        """A fill (once per execId): ``update.last_fill_qty`` at ``update.last_fill_price``;
        the position (``position``) already includes it. Its commission comes later, on
        ``handle(update.client_order_id).fills`` (``OrderHandle.on("commission", fn)``)."""

    def on_rejected(self, decision: RiskDecision) -> None:
        """Risk refused an intent (``RiskDecision``: ``reason`` code, ``text``); the order's
        handle is ``rejected``."""

    def on_timer(self, now_ns: int) -> None:
        """Every ``timer_s`` seconds of the strategy's TOML (default 1 s)."""

    def on_market_open(self, now_ns: int) -> None:
        """The regular session opened (``calendar``; 09:30 America/New_York on a weekday)."""

    def on_market_close(self, now_ns: int) -> None:
        """The regular session closed (``calendar``; 16:00 America/New_York)."""

    def on_stop(self) -> None:
        """Once, when the process stops (or the backtest's data ends)."""

    # -- ACTIONS ------------------------------------------------------------------------------
    def subscribe(self, symbol: str, kind: str = "tick", bar_size: str | None = None) -> None:
        """Ask for market data: ``kind`` is ``tick`` (top of book and last trade: ``on_tick``),
        ``quote`` (tick-by-tick bid/ask: ``on_quote``), ``trade`` (tick-by-tick prints:
        ``on_trade``), ``depth`` (``on_depth`` with the order book) or ``bar`` (``on_bar``).
        For ``bar``, ``bar_size`` is IB's string, ``"1 secs"`` to ``"1 day"`` (see
        ``subscribe_bars``); without it, IB's 5-second bars. Raises ``BarSizeError`` (a
        ``ValueError``) for a bar size IB does not have, ``ValueError`` for an unknown kind."""
        if kind == "bar" and bar_size is not None:
            self.subscribe_bars(symbol, bar_size)
            return
        self._wanted.add((symbol, kind))
        if kind == "bar":
            self._raw_bars.add(symbol)
        self.host.request_data(symbol, kind)

    def subscribe_bars(self, symbol: str, bar_size: str = "5 secs") -> None:
        """Bars of ``bar_size`` for ``symbol`` to ``on_bar`` (``Bar.seconds`` tells sizes
        apart when several are subscribed). ``bar_size``: IB's strings from ``"1 secs"`` to
        ``"1 day"`` (``services.strategy.bars.BAR_SIZES``; ``"1 min"``, ``"5 mins"``,
        ``"1 hour"``...). Multiples of 5 seconds are aggregated from IB's 5-second real-time
        bars, 1-3 second bars from the trade prints; windows are aligned on the exchange
        zone's clock, and only complete bars are delivered (the first, joined midway, is
        not), each as soon as its last 5-second bar arrives. Raises ``BarSizeError``."""
        seconds = bar_seconds(bar_size)
        if seconds == IB_BAR:
            self.subscribe(symbol, "bar")
            return
        by_5s = seconds % IB_BAR == 0
        table = self._from_5s if by_5s else self._from_trades
        aggs = table.setdefault(symbol, [])
        if all(a.seconds != seconds for a in aggs):
            aggs.append(BarAggregator(symbol, seconds))
        self.host.request_data(symbol, "bar" if by_5s else "trade")

    def history(self, symbol: str, bar_size: str = "1 min", count: int = 100, *,
                what_to_show: str = "TRADES", use_rth: bool = True,
                timeout: float = 30.0) -> list[Bar]:
        """The last ``count`` complete bars of ``bar_size`` before now, oldest first
        (``list[Bar]``; ``Bar.request`` is set on them), for a warm-up. Live: one historical
        request through the gateway, which paces it as IB requires; the call blocks until
        the answer (at most ``timeout`` seconds), so make it in ``on_start``. In a backtest:
        the recording's bars before the current time (``--warmup``). Returns fewer bars (or
        none) when there is less data; when the gateway refuses or does not answer in time
        the reason is logged and the list is empty. Raises ``BarSizeError`` for a bad size
        and ``ValueError`` for a count < 1."""
        seconds = bar_seconds(bar_size)
        if count < 1:
            raise ValueError(f"history count {count!r} must be >= 1")
        fetch = getattr(self.host, "history", None)
        if fetch is None:
            self.log.warning("history not available from this host")
            return []
        bars = fetch(symbol, bar_size_name(seconds), int(count), what_to_show, use_rth, timeout)
        return list(bars)[-int(count):]

    def plot(self, name: str, value: float) -> None:
        """One value of a series to chart (an indicator: ``self.plot("sma 10", avg)``), at
        the current time: drawn in the backtest's report; live hosts ignore it."""
        record = getattr(self.host, "plot", None)
        if record is not None:
            record(name, value)

    def submit(self, symbol: str, side: str, quantity: float, order_type: str = "LMT",
               limit_price: float = math.nan, stop_price: float = math.nan, tif: str = "DAY",
               parent_id: str = "", oca_group: str = "", transmit: bool = True
               ) -> OrderHandle | None:
        """Send a new order intent through risk; returns its ``OrderHandle`` (a ``str``: the
        client order id, usable wherever the id is) or None while the strategy is paused.

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
            raise InvalidOrder(f"symbol {symbol!r} has no reference data (the gateway "
                               f"publishes it once IB has resolved the symbol)") from None
        if not (quantity > 0) or not math.isfinite(quantity):
            raise InvalidOrder(f"quantity {quantity!r} must be positive")
        if kind.needs_limit and not math.isfinite(limit_price):
            raise InvalidOrder(f"a {kind.value} order needs limit_price")
        if kind.needs_stop and not math.isfinite(stop_price):
            raise InvalidOrder(f"a {kind.value} order needs stop_price")
        coid = self._new_id()
        parent_id, oca_group = str(parent_id), str(oca_group)
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
        handle = OrderHandle(coid, symbol=symbol, side=side_, quantity=quantity,
                             order_type=kind.value, limit_price=intent.limit_price,
                             stop_price=intent.stop_price, tif=tif_, parent_id=parent_id,
                             oca_group=oca_group, time_ns=self._now())
        self._keep(handle)
        self.host.send_intent(intent)
        return handle

    def submit_bracket(self, symbol: str, side: str, quantity: float, entry: float,
                       stop_loss: float, take_profit: float) -> tuple[str, str, str] | None:
        """An entry limit with a take-profit limit and a stop-loss stop, linked as IB links them:
        the children wait for the parent to fill and cancel each other. Returns (parent,
        take-profit, stop-loss) handles. Kept for existing strategies: ``bracket`` is the
        same with keyword arguments and a market entry."""
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

    def bracket(self, symbol: str, side: str, quantity: float, *,
                stop_loss: float | None = None, take_profit: float | None = None,
                entry: float | None = None, tif: str = "DAY"
                ) -> tuple[OrderHandle, OrderHandle | None, OrderHandle | None] | None:
        """An entry with a stop-loss and/or a take-profit attached, linked as IB links them:
        the exits wait for the entry to fill completely and cancel each other (one OCA
        group). ``entry`` is the entry's limit price; None enters at market. ``stop_loss``
        (a stop order's trigger) and ``take_profit`` (a limit) are prices; at least one is
        needed. Returns ``(parent, take_profit, stop_loss)`` handles in ib_async's order
        (``None`` for a leg not asked for), or None while paused. Risk decides the legs as
        one group: all are approved or all refused. Raises ``InvalidOrder`` for a stop or
        target on the wrong side of a limit entry, or neither given."""
        if stop_loss is None and take_profit is None:
            raise InvalidOrder("a bracket needs stop_loss or take_profit (or both)")
        buy = OrderSide.parse(side, "side") is OrderSide.BUY
        if entry is not None:
            for name, price, below in (("stop_loss", stop_loss, True),
                                       ("take_profit", take_profit, False)):
                if price is not None and (price < entry) != (below if buy else not below):
                    raise InvalidOrder(f"{name} {price} is on the wrong side of the entry "
                                       f"{entry} for a {'buy' if buy else 'sell'}")
        if self.paused:
            return None
        exit_side = "SELL" if buy else "BUY"
        parent = (self.submit(symbol, side, quantity, "MKT", tif=tif, transmit=False)
                  if entry is None else
                  self.submit(symbol, side, quantity, "LMT", entry, tif=tif, transmit=False))
        oca = f"{parent}-oca"
        take = stop = None
        if take_profit is not None:
            take = self.submit(symbol, exit_side, quantity, "LMT", take_profit, tif=tif,
                               parent_id=parent, oca_group=oca, transmit=stop_loss is None)
        if stop_loss is not None:
            stop = self.submit(symbol, exit_side, quantity, "STP", stop_price=stop_loss,
                               tif=tif, parent_id=parent, oca_group=oca, transmit=True)
        return parent, take, stop

    def modify(self, client_order_id: str, *, quantity: float | None = None,
               limit_price: float | None = None, stop_price: float | None = None
               ) -> OrderHandle | None:
        """Change a working order's terms: pass only what changes (keyword arguments), the
        rest stays. ``quantity`` is the new total (shares, > 0, not below what has filled:
        IB refuses that with 201); prices are rounded to the instrument's tick. Returns the
        order's handle, or None when the order is not open (done or unknown) or the strategy
        is paused; the change shows in ``OrderHandle.status`` (``pending_modify``, then back
        to ``submitted`` with the new terms, or a refusal's ``reason``). Raises
        ``InvalidOrder`` when nothing changes or a value is not a positive finite number."""
        if quantity is None and limit_price is None and stop_price is None:
            raise InvalidOrder("modify needs quantity, limit_price or stop_price")
        for name, value in (("quantity", quantity), ("limit_price", limit_price),
                            ("stop_price", stop_price)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidOrder(f"{name} {value!r} must be a positive number")
        order = self.order(client_order_id)
        if order is None or self.paused:
            return None
        info = self.instrument(order.symbol)
        self.host.send_intent(OrderIntent(
            strategy=self.name, client_order_id=str(client_order_id), action="modify",
            symbol=order.symbol, quantity=0.0 if quantity is None else float(quantity),
            limit_price=math.nan if limit_price is None else _round(info, limit_price),
            stop_price=math.nan if stop_price is None else _round(info, stop_price)))
        return self.handles.get(client_order_id)

    def cancel(self, client_order_id: str) -> None:
        """Cancel an open order (by handle or client order id); nothing if it is done,
        unknown, or the strategy is paused. The handle's status becomes ``cancelled`` when IB
        confirms (a fill that got there first wins)."""
        order = self.order(client_order_id)
        if order is None or self.paused:
            return
        self.host.send_intent(OrderIntent(strategy=self.name,
                                          client_order_id=str(client_order_id),
                                          action="cancel", symbol=order.symbol))
        handle = self.handles.get(client_order_id)
        if handle is not None:
            handle._cancel_sent = True

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

    def target_position(self, symbol: str, quantity: float, order_type: str = "MKT",
                        limit_price: float = math.nan) -> OrderHandle | None:
        """Trade toward a signed position (``-100``: short 100) in ``symbol``: sends the
        difference between ``quantity`` and execution's position (market, or a limit at
        ``limit_price``) and returns its handle; None when already there (or paused). An
        order this method sent earlier for the symbol that is still working is kept if it
        already makes up the difference (None is returned), else cancelled, and the new
        difference is sent at the next call once the cancel is confirmed; other orders
        (brackets, stops) are neither counted nor touched. Call it as often as you like.
        Raises ``InvalidOrder`` as ``submit``."""
        if self.paused:
            return None
        if not math.isfinite(quantity):
            raise InvalidOrder(f"target quantity {quantity!r} must be a number")
        delta = quantity - self.position(symbol)
        mine = [h for h in self.handles.values() if getattr(h, "_target", False)
                and h.symbol == symbol and h.active and self.order(h) is not None]
        if len(mine) == 1 and abs(mine[0].signed_remaining - delta) < 1e-9:
            return None
        for h in mine:
            if not getattr(h, "_cancel_sent", False):
                self.cancel(h)
        if mine or abs(delta) < 1e-9:
            return None  # a cancelled order's fills may still come: decide on the next call
        handle = self.submit(symbol, "BUY" if delta > 0 else "SELL", abs(delta), order_type,
                             limit_price)
        if handle is not None:
            handle._target = True
        return handle

    # -- TIMERS -------------------------------------------------------------------------------
    def every(self, seconds: float, fn: Callable[[], None]) -> Timer:
        """Call ``fn()`` every ``seconds`` (host clock: wall time live, the recording's in a
        backtest; live, within about 50 ms of the due time), first ``seconds`` from now.
        Returns a ``Timer`` (``timer.cancel()``).
        Raises ``ValueError`` for a period that is not positive."""
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"timer period {seconds!r} must be a positive number of seconds")
        timer = Timer(fn, interval_ns=max(1, int(seconds * 1e9)))
        self._arm(timer, self._now() + timer.interval_ns)
        return timer

    def at(self, time_of_day: str, fn: Callable[[], None], zone: str = EXCHANGE_ZONE,
           trading_days_only: bool = True) -> Timer:
        """Call ``fn()`` every day at ``time_of_day`` (``"15:55"``, ``"09:31:30"``) in
        ``zone`` (IANA name; the exchange's, New York, by default), on the calendar's
        trading days only unless ``trading_days_only=False``. Returns a ``Timer``. Raises
        ``ValueError`` for a malformed time, ``ZoneInfoNotFoundError`` for an unknown zone."""
        from zoneinfo import ZoneInfo
        ZoneInfo(zone)  # an unknown zone raises now, not when it is due
        timer = Timer(fn, at=parse_time_of_day(time_of_day), zone=zone,
                      trading_days=self.calendar if trading_days_only else None)
        self._arm(timer, timer.next_due(self._now()))
        return timer

    def _arm(self, timer: Timer, due_ns: int) -> None:
        self._timers.add(timer, due_ns)
        self._ask_wake()

    def _ask_wake(self) -> None:
        due = self._timers.next_due()
        wake = getattr(self.host, "wake_at", None)
        if due is not None and wake is not None and due != self._wake_ns:
            self._wake_ns = due
            wake(due)

    def run_timers(self, now_ns: int) -> None:
        """Called by the host at (or after) the time it was asked to wake: fire the timers
        due at ``now_ns``, in due order."""
        for _, timer in self._timers.due(now_ns):
            timer.fn()
        self._wake_ns = None
        self._ask_wake()

    def _calendar_timer(self, kind: str) -> Timer:
        """A one-shot timer for the calendar's next open or close, which arms the next."""
        timer = Timer(lambda: None, name=f"market_{kind}")

        def fire() -> None:
            timer.cancel()
            now = self._now()
            t, what = self.calendar.next_event(now)
            self._arm(self._calendar_timer(what), t)
            (self.on_market_open if kind == "open" else self.on_market_close)(now)
        timer.fn = fire
        return timer

    # -- STATE --------------------------------------------------------------------------------
    def position(self, symbol: str) -> float:
        """Execution's position of this strategy in ``symbol``: signed shares (negative:
        short), 0.0 when flat."""
        return self.mirror.quantity(symbol)

    @property
    def orders(self) -> dict[str, OrderUpdate]:
        """Open orders by client order id: execution's, and intents it has not reported yet."""
        return {**self.submitted, **self.mirror.orders}

    def order(self, client_order_id: str) -> OrderUpdate | None:
        """An open order (or a just-submitted intent) as execution last reported it; None
        once it is done (its ``handle`` stays)."""
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

    def handle(self, client_order_id: str) -> OrderHandle | None:
        """The ``OrderHandle`` of an order of this strategy, open or done (None if unknown or
        let go: the last ``KEEP_DONE_HANDLES`` finished orders are kept)."""
        return self.handles.get(client_order_id)

    def instrument(self, symbol: str) -> InstrumentInfo:
        """The instrument's reference data (tick size, lot size, multiplier)."""
        return self.instruments.get(symbol)

    def book(self, symbol: str) -> OrderBook:
        """The symbol's order book (fed by a ``depth`` subscription); ``KeyError`` for a
        symbol not in the strategy's ``symbols``."""
        return self.books[symbol]

    # -- FED BY THE HOST ----------------------------------------------------------------------
    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self.name}-{self._incarnation}-{self._next_id}"

    def _now(self) -> int:
        try:
            return int(self.host.now_ns())
        except Exception:
            return 0

    def _keep(self, handle: OrderHandle) -> OrderHandle:
        self.handles[handle.client_order_id] = handle
        return handle

    def _let_go(self) -> None:
        """Forget the oldest finished handles beyond KEEP_DONE_HANDLES."""
        self._done_handles += 1
        if self._done_handles <= KEEP_DONE_HANDLES:
            return
        for coid, h in list(self.handles.items()):
            if h.done:
                del self.handles[coid]
                self._done_handles -= 1
                if self._done_handles <= KEEP_DONE_HANDLES:
                    return

    def _handle_for(self, update: OrderUpdate) -> OrderHandle:
        handle = self.handles.get(update.client_order_id)
        if handle is None:  # an order from before a restart
            handle = self._keep(OrderHandle(
                update.client_order_id, symbol=update.symbol, side=update.side,
                quantity=update.quantity, order_type=update.order_type,
                limit_price=update.limit_price, stop_price=update.stop_price, tif=update.tif,
                parent_id=update.parent_id, oca_group=update.oca_group, time_ns=self._now()))
        return handle

    def handle_start(self) -> None:
        """Called by the host instead of ``on_start``: arms the market open/close callbacks
        (if the subclass has them), then ``on_start``."""
        cls = type(self)
        if cls.on_market_open is not Strategy.on_market_open or \
                cls.on_market_close is not Strategy.on_market_close:
            t, kind = self.calendar.next_event(self._now())
            self._arm(self._calendar_timer(kind), t)
        self.on_start()

    def handle_commission(self, msg: Commission) -> bool:
        """IB's commission for one execution (``ord.comm``): set on the fill it belongs to
        (True), or kept until that fill arrives (those of other strategies' fills are let
        go after a while)."""
        if not math.isfinite(msg.commission):
            return False
        for handle in reversed(self.handles.values()):
            if handle.fills and handle._commission(msg.exec_id, msg.commission):
                self.commissions_matched += 1
                return True
        self._commissions[msg.exec_id] = msg.commission
        while len(self._commissions) > 1000:
            self._commissions.popitem(last=False)
        return False

    def handle_account(self, msg: AccountValue) -> None:
        """One of the account's values (``acct.value``), into ``account``."""
        self.account.update(msg.key, msg.value, msg.currency, msg.account, self._now())

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
        if not update.owner:
            handle = self._handle_for(update)
            was_done = handle.done
            fill = handle._apply(update, self._now())
            if fill is not None and fill.exec_id in self._commissions:
                handle._commission(fill.exec_id, self._commissions.pop(fill.exec_id))
                self.commissions_matched += 1
            if handle.done and not was_done:
                self._let_go()
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
        for update in self.mirror.orders.values():
            if not update.owner:
                self._handle_for(update)._apply(update, self._now())

    def handle_decision(self, decision: RiskDecision) -> None:
        if decision.approved:
            return
        self.rejections.append(decision)
        self.submitted.pop(decision.client_order_id, None)
        handle = self.handles.get(decision.client_order_id)
        if handle is not None and handle.status == "new":
            handle._refused(decision.reason, decision.text, self._now())
            self._let_go()
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
            self.handle_trade(msg)
        elif isinstance(msg, Bar):
            self.handle_bar(msg)
        return True

    def handle_bar(self, bar: Bar) -> None:
        """An IB 5-second bar: to ``on_bar`` if subscribed as is, and into the bars of other
        sizes built from it."""
        if bar.request:
            return  # a historical bar: ``history`` returns those
        aggs = self._from_5s.get(bar.symbol)
        if aggs:
            for agg in aggs:
                for done in agg.add_bar(bar):
                    self.on_bar(done)
        if bar.symbol in self._raw_bars or not aggs:
            self.on_bar(bar)

    def handle_trade(self, trade: TradeTick) -> None:
        """A trade print: into the bars built from trades, and to ``on_trade`` if asked."""
        aggs = self._from_trades.get(trade.symbol)
        if aggs:
            t = trade.exch_ts or trade.ts or self._now()
            for agg in aggs:
                for done in agg.add_trade(t, trade.price, trade.size):
                    self.on_bar(done)
            if (trade.symbol, "trade") not in self._wanted:
                return
        self.on_trade(trade)

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
