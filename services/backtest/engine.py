"""The backtest event loop and the second ``StrategyHost``: the live trading path in one
process, with a simulated venue and the recording's clock.

What runs is what runs live: the strategy's intents go through the real ``RiskEngine``
(single orders through ``check``; bracket/OCA legs sent with ``transmit=False`` are held until
their group's transmitting leg and decided together by ``check_group``, as
``services.risk.service`` does), approved intents into the real ``ExecutionEngine``, whose
``OrderCommand``s go to the simulated venue (``matching.SimulatedVenue``). The venue's
gateway side answers a place at once with its IB order id (``on_placed``); its exchange side
acts ``latency_ns`` later and answers with IB's reports (OpenOrder, OrderStatus, Execution,
Commission, errors), which reach execution's ``on_*`` methods ``report_latency_ns`` after
that. Execution's frames (``OrderUpdate``, ``StrategyPosition`` on ``ord.update.STRATEGY``)
go to risk's mirror and then to the strategy (``Strategy.handle_execution``), in order and
after the callback that caused them returns, as they arrive over the bus live. Positions, PnL
and commissions are execution's ``Portfolio``.

One clock: the recording's receive times (the strategy's ``now_ns``, risk's ``clock`` and
``wall_clock``, execution's ``clock``, the venue's execution times). Recorded market data and
scheduled events (a command reaching the exchange, reports reaching execution, the strategy's
timer, risk's housekeeping) are merged in time order; an event due at or before a message's
receive time runs before it, and ties keep the order they were scheduled in (a heap keyed by
(due, sequence)).

Bars: recorded ``Bar`` messages (IB's 5-second bars) are used as they are; a symbol without
them gets 5-second bars built from its recorded trade prints, as IB builds them. Either way
the strategy's bars of other sizes are aggregated from those (``services.strategy.bars``), and
``Strategy.history`` is answered from the bars before the current time: with
``Settings.warmup_ns`` the strategy starts that long after the recording's first message, the
data before it serving as history. The strategy's own timers (``every``, ``at``, the market's
open and close) are events of the same heap; its ``account`` is published from execution's
``Portfolio`` (``Settings.initial_cash`` plus the strategy's equity) at every account sample.

Several strategies (a list of configs) share the run's one account, as live: one risk engine
(each strategy's budget), one execution engine and Portfolio, one venue, one clock; each has
its ``StrategySlot`` (its host: subscriptions, timers, plotted series), and the account
values they get are the account's (cash plus every strategy's equity). ``result_for(name)``
is one strategy's part of the run.

Delays come from ``Settings.latency_model`` (``services.backtest.latency``): commands to the
exchange (order), its reports back (report) and, when set, market data to risk and the
strategies (data: the venue matches at the data's time, the strategies see it later), each a
base plus a seeded jitter, in order per direction.
"""
from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgspec

from proto.schema import (AccountValue, Bar, Commission, DepthUpdate, Execution, GatewayError,
                          GatewayState, Instrument, Message, OpenOrder, OrderCommand,
                          OrderIntent,
                          OrderStatus, OrderUpdate, QuoteTick, RiskDecision, Tick, TradeTick)
from services.backtest.account import snapshot
from services.backtest.journal import MemoryJournal
from services.backtest.latency import LatencyModel
from services.backtest.market import SymbolMarket
from services.backtest.matching import CLIENT_ID, CommissionModel, SimulatedVenue
from services.execution.engine import ExecutionEngine, IntentRefused
from services.model.portfolio import Portfolio
from services.risk.engine import RiskEngine
from services.risk.limits import LimitBook, Limits, build_limits
from services.risk.engine import GROUP_TIMEOUT_S, GroupDesk
from services.runtime.instruments import STOCK_DEFAULT, Instruments
from services.strategy.bars import IB_BAR, BarAggregator, aggregate, bar_seconds
from services.strategy.base import Strategy
from services.strategy.config import StrategyConfig

log = logging.getLogger("backtest.engine")
KINDS = {Tick: "tick", QuoteTick: "quote", TradeTick: "trade", DepthUpdate: "depth", Bar: "bar"}
INCARNATION = "bt"  # client order ids: NAME-bt-N, the same on every run
SOURCE = "backtest"
HOUSEKEEPING_NS = 1_000_000_000  # risk's housekeeping, every second as live
IN_FLIGHT = ("command", "reports", "data")
ACCOUNT = "account"  # the name of the account-wide result of a run with several strategies


@dataclass(frozen=True)
class Settings:
    latency_ns: int = 5_000_000  # an intent's command to the exchange
    queue_model: str = "proportional"
    commission: CommissionModel = field(default_factory=CommissionModel)
    report_latency_ns: int | None = None  # the exchange's reports back; None: latency_ns
    warmup_ns: int = 0  # the strategy starts this long after the first message (history)
    initial_cash: float = 1_000_000.0  # the account's cash at the start (account values)
    #: periodic events (the strategy's timer, risk's housekeeping) over a gap in the data run
    #: once when due and once more at the next message, not every period (bars: a day's gap)
    coalesce_idle: bool = False
    #: the latency model (``services.backtest.latency``: order, report and data delays, a
    #: seeded jitter); None: ``latency_ns`` and ``return_latency_ns``, no jitter, no data delay
    latency: LatencyModel | None = None
    #: account-wide limits (the fleet config's ``[risk]``): the base of each strategy's budget
    account_risk: dict | None = None

    @property
    def return_latency_ns(self) -> int:
        return self.latency_ns if self.report_latency_ns is None else self.report_latency_ns

    @property
    def latency_model(self) -> LatencyModel:
        if self.latency is not None:
            return self.latency
        return LatencyModel(self.latency_ns, self.return_latency_ns)


@dataclass
class Sample:
    """The account at one moment, for the equity curve, drawdown and exposure."""
    t_ns: int
    equity: float  # realized net of commissions + unrealized
    gross: float
    positions: dict[str, float]
    mids: dict[str, float]


@dataclass
class BacktestResult:
    strategy: str
    symbols: list[str]
    settings: Settings
    start_ns: int
    end_ns: int
    messages: int
    intents: list[OrderIntent]
    fills: list[OrderUpdate]  # execution's updates that carry a fill, as the strategy got them
    executions: list[Execution]  # the venue's fills as IB reported them (exec_time_ns: when)
    rejections: Counter
    samples: list[Sample]
    portfolio: Portfolio  # execution's
    mids: dict[str, float]
    callback_errors: int
    unsent_at_end: int  # commands and reports still in flight, group legs still held
    alerts: Counter = field(default_factory=Counter)  # execution's and risk's, by code


class StrategySlot:
    """One strategy's ``StrategyHost`` in a run: its subscriptions, plotted series, own
    timers and counts; orders, data and the clock are the engine's (one account, one risk
    engine, one execution engine, one venue for every strategy of the run, as live)."""

    def __init__(self, engine: "BacktestEngine", cfg: StrategyConfig, index: int) -> None:
        self.engine = engine
        self.cfg = cfg
        self.name = cfg.name
        self.index = index
        self.strategy: Strategy | None = None
        self.subscriptions: set[tuple[str, str]] = set()  # membership only, never iterated
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.wake_due: int | None = None  # the earliest "wake" event scheduled
        self.samples: list[Sample] = []
        self.rejections: Counter = Counter()
        self.callback_errors = 0

    def __getattr__(self, name: str) -> Any:
        # the rest of the host is the run's (execution, risk, venue...), as code holding the
        # engine as its host reads it
        return getattr(self.engine, name)

    def send_intent(self, intent: OrderIntent) -> None:
        self.engine.send_intent(intent)

    def request_data(self, symbol: str, kind: str) -> None:
        if kind not in KINDS.values():
            raise ValueError(f"unknown market data kind {kind!r}; one of {sorted(KINDS.values())}")
        self.subscriptions.add((symbol, kind))

    def now_ns(self) -> int:
        return self.engine.now

    def plot(self, name: str, value: float) -> None:
        """A value of one of the strategy's series (its indicators), for the report."""
        self.series.setdefault(name, []).append((self.engine.now, float(value)))

    def wake_at(self, t_ns: int) -> None:
        """The strategy's next own timer: an event of the heap."""
        engine = self.engine
        if self.wake_due is not None and self.wake_due <= t_ns and self.wake_due >= engine.now:
            return
        self.wake_due = t_ns
        engine._schedule(max(t_ns, engine.now), "wake", (self.index, t_ns))

    def history(self, symbol: str, bar_size: str, count: int, what_to_show: str = "TRADES",
                use_rth: bool = True, timeout: float = 0.0) -> list[Bar]:
        return self.engine.history(symbol, bar_size, count, what_to_show, use_rth, timeout)


class BacktestEngine:
    """``cfg``: one strategy, or a list of strategies sharing the run's one account (one
    RiskEngine with each strategy's ``[risk]`` budget on ``Settings.account_risk``, one
    ExecutionEngine and Portfolio, one venue: they see each other's liquidity taken and
    their orders queue at the venue together). ``strategy_class`` is the first one's."""

    def __init__(self, cfg: StrategyConfig | list[StrategyConfig],
                 settings: Settings = Settings(),
                 instruments: Instruments | None = None,
                 strategy_class: type[Strategy] | None = None) -> None:
        cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
        if not cfgs:
            raise ValueError("no strategy to run")
        names = [c.name for c in cfgs]
        if len(set(names)) != len(names):
            raise ValueError(f"two strategies named alike: {', '.join(names)}")
        self.cfgs = cfgs
        self.cfg = cfgs[0]
        #: every strategy's symbols, in order of first mention
        self.symbols = list(dict.fromkeys(s for c in cfgs for s in c.symbols))
        self.settings = settings
        self.latency = settings.latency_model.clock()
        self._delay_data = settings.latency_model.delays_data
        # reference data: given (a catalog's metadata), else the recording's own (the
        # gateway's ``Instrument`` messages, applied by ``run``), else a US stock's
        self.instruments = instruments or Instruments(default=STOCK_DEFAULT)
        self.now = 0
        self._events: list[tuple[int, int, str, Any]] = []
        self._event_seq = 0
        self._outbox: deque[Message] = deque()  # to risk and the strategy, in order
        self._stamp_seq = 0
        self.markets = {s: SymbolMarket(s) for s in self.symbols}
        account = build_limits(settings.account_risk or {}, "the account's [risk]", Limits())
        limits = LimitBook(account, {c.name: build_limits(c.risk, f"[risk] of {c.name}",
                                                          account) for c in cfgs})
        self.risk = RiskEngine(limits, self.instruments, clock=self._seconds,
                               wall_clock=self.now_ns)
        self.risk.gateway_state = "synchronised"
        self.groups = GroupDesk()  # bracket legs held until the transmitting one, as live
        self.journal = MemoryJournal()
        self.portfolio = Portfolio(self.instruments)
        self.execution = ExecutionEngine(self.journal, portfolio=self.portfolio,
                                         clock=self.now_ns)
        self.execution.on_gateway_state(GatewayState(state="synchronised", client_id=CLIENT_ID))
        self.venue = SimulatedVenue(self.markets, settings.queue_model, settings.commission,
                                    clock=self.now_ns)
        self.slots = [StrategySlot(self, c, i) for i, c in enumerate(cfgs)]
        self._slot_of = {slot.name: slot for slot in self.slots}
        for slot in self.slots:
            c = slot.cfg
            cls = (strategy_class if slot.index == 0 else None) or c.load_class()
            if not (isinstance(cls, type) and issubclass(cls, Strategy)):
                raise TypeError(f"{c.class_path} is not a Strategy subclass")
            params = c.params_for(cls)  # its typed Params, as live (services.strategy.runner)
            slot.strategy = cls(c.name, c.symbols, c.params, slot, self.instruments,
                                INCARNATION, c.depth_rows)
            slot.strategy.params = params
        self.strategy: Strategy = self.slots[0].strategy
        # the first strategy's subscriptions (the fast depth path reads them: one strategy)
        self._subscriptions = self.slots[0].subscriptions
        self._owner: dict[str, str] = {}  # client order id -> strategy (commissions' owner)
        self._exec_owner: dict[str, str] = {}  # exec id -> strategy
        self.intents: list[OrderIntent] = []
        self.fills: list[OrderUpdate] = []
        self.executions: list[Execution] = []
        self.rejections: Counter = Counter()
        self.alerts: Counter = Counter()
        # one strategy: its samples are the account's; several: the account's sum
        self.samples: list[Sample] = self.slots[0].samples if len(cfgs) == 1 else []
        self.callback_errors = 0
        self.messages = 0
        self._account_sent: dict[str, str] = {}  # account values as last published
        self.start_ns = 0
        self._started = False
        self._last_mids: dict[str, float] = {}
        self._first_ns: int | None = None
        # 5-second bars per symbol (recorded, else built from trade prints), for the strategy
        # and its history; trade prints kept for bars under 5 seconds
        self.bars: dict[str, list[Bar]] = {s: [] for s in self.symbols}
        self.prints: dict[str, list[tuple[int, float, float]]] = {s: [] for s in self.symbols}
        self._bar_makers = {s: BarAggregator(s, IB_BAR, keep_partial_first=True)
                            for s in self.symbols}
        self._recorded_bars: set[str] = set()
        #: every OrderUpdate execution published (the report's stops and targets) and the
        #: series the strategy plotted (``Strategy.plot``): name -> [(t_ns, value)]
        self.updates: list[OrderUpdate] = []
        self.series = self.slots[0].series  # the first strategy's

    # -- StrategyHost (the first strategy's; each strategy's is its StrategySlot) -------------
    def send_intent(self, intent: OrderIntent) -> None:
        self.intents.append(msgspec.structs.replace(intent, src=SOURCE, seq=len(self.intents) + 1,
                                                    ts=self.now))
        if intent.client_order_id:
            self._owner[intent.client_order_id] = intent.strategy
        self._risk(intent)

    def request_data(self, symbol: str, kind: str) -> None:
        self.slots[0].request_data(symbol, kind)

    def now_ns(self) -> int:
        return self.now

    def plot(self, name: str, value: float) -> None:
        self.slots[0].plot(name, value)

    def wake_at(self, t_ns: int) -> None:
        self.slots[0].wake_at(t_ns)

    def history(self, symbol: str, bar_size: str, count: int, what_to_show: str = "TRADES",
                use_rth: bool = True, timeout: float = 0.0) -> list[Bar]:
        """The recording's bars before now (complete windows), as the gateway would answer."""
        seconds = bar_seconds(bar_size)
        if seconds % IB_BAR == 0:
            bars = aggregate(self.bars.get(symbol, []), seconds, until_ns=self.now)
        else:
            maker = BarAggregator(symbol, seconds)
            bars = []
            for t, price, size in self.prints.get(symbol, []):
                bars += maker.add_trade(t, price, size)
            bars += maker.flush(self.now)
        return [msgspec.structs.replace(b, request="backtest")
                for b in bars[-count:] if b.start_ns + b.seconds * 1_000_000_000 <= self.now]

    def _seconds(self) -> float:
        return self.now / 1e9

    # -- RISK (as services.risk.service does it) ----------------------------------------------
    def _risk(self, intent: OrderIntent) -> None:
        if self.groups.wants(intent):
            self._group_leg(intent)
            return
        decision = self.risk.check(intent)
        if not decision.approved:
            self._refuse([intent], decision.reason, decision.text)
            return
        self.risk.approved(intent)
        self._to_execution([intent])

    def _group_leg(self, intent: OrderIntent) -> None:
        """Hold a group's legs until its transmitting leg; then decide the group as one."""
        held = self.groups.add(intent, None, self._seconds())
        if held is None:
            return
        legs = [leg for leg, _ in held]
        decision = self.risk.check_group(legs)
        if not decision.approved:
            self._refuse(legs, decision.reason, f"group refused as a whole: {decision.text}")
            return
        for leg in legs:  # entry first: execution sends the exits once it has its IB id
            self.risk.approved(leg)
        self._to_execution(legs)

    def _refuse(self, intents: list[OrderIntent], reason: str, text: str) -> None:
        for intent in intents:
            self.rejections[reason] += 1
            self._count_rejection(intent.strategy, reason)
            self._outbox.append(_decision(intent, False, reason, text))

    def _to_execution(self, intents: list[OrderIntent]) -> None:
        """Approved intents into execution; each is approved for the strategy once execution
        took it, or refused (``execution_refused``) if execution could not act on it."""
        commands: list[OrderCommand] = []
        decisions = []
        for intent in intents:
            try:
                commands += self.execution.on_intent(intent)
            except IntentRefused as exc:
                self.rejections["execution_refused"] += 1
                self._count_rejection(intent.strategy, "execution_refused")
                decisions.append(_decision(intent, False, "execution_refused", str(exc)))
                self.risk.execution_refused(intent)  # as the risk service does
            else:
                decisions.append(_decision(intent, True))
        self._collect()
        self._outbox.extend(decisions)
        self._send(commands)

    def _count_rejection(self, strategy: str, reason: str) -> None:
        slot = self._slot_of.get(strategy)
        if slot is not None:
            slot.rejections[reason] += 1

    def _housekeeping(self) -> None:
        """Risk's periodic work, as the risk service does it every second: the daily loss
        limit (marks move), and groups whose transmitting leg never came."""
        for name in list(self.risk.strategies):
            self.risk.evaluate_loss(name)
        for strategy, text in self.risk.breaches:
            self.alerts["daily_loss"] += 1
            log.warning("daily loss limit breached", extra={"strategy": strategy, "text": text})
            if self.risk.limits.for_strategy(strategy).flatten_on_loss:
                self._send(self.execution.cancel_all(strategy))
        self.risk.breaches.clear()
        for _strategy, _text in self.risk.notices:
            self.alerts["daily_loss_reset"] += 1
        self.risk.notices.clear()
        for held in self.groups.expired(self._seconds()):
            self._refuse([leg for leg, _ in held], "incomplete_group",
                         f"no transmitting leg within {GROUP_TIMEOUT_S:g}s")

    # -- EXECUTION <-> VENUE ------------------------------------------------------------------
    def _send(self, commands: list[OrderCommand]) -> None:
        """Commands to the gateway, which answers a place at once with its IB id; each reaches
        the exchange after the latency."""
        queue = deque(commands)
        while queue:
            cmd = queue.popleft()
            reply = self.venue.command(cmd)
            self._schedule(self.latency.due("order", self.now), "command", cmd)
            if reply is not None:
                queue.extend(self.execution.on_placed(reply))
        self._collect()

    def _venue_out(self) -> None:
        """What the exchange said in this step reaches execution after the return latency."""
        reports = self.venue.reports
        if not reports:
            return
        self.venue.reports = []
        due = self.latency.due("report", self.now)
        if due > self.now:
            self._schedule(due, "reports", reports)
        else:
            self._reports(reports)

    def _reports(self, reports: list[Message]) -> None:
        ex = self.execution
        commands: list[OrderCommand] = []
        booked = False
        for msg in reports:
            if isinstance(msg, OrderStatus):
                commands += ex.on_status(msg)
            elif isinstance(msg, OpenOrder):
                commands += ex.on_open_order(msg)
            elif isinstance(msg, Execution):
                self.executions.append(msg)
                owner = self._owner.get(msg.client_order_id)
                if owner is not None:
                    self._exec_owner[msg.exec_id] = owner
                commands += ex.on_execution(msg)
                booked = True
            elif isinstance(msg, Commission):
                ex.on_commission(msg)
                self._outbox.append(msg)  # to the strategy: its fill's commission
                booked = True
            elif isinstance(msg, GatewayError):
                commands += ex.on_order_error(msg)
        self._collect()
        if commands:
            self._send(commands)
        if booked:
            self._sample()

    def _collect(self) -> None:
        """Execution's frames, stamped as its publisher would, queued for risk and the
        strategy; its alerts counted."""
        ex = self.execution
        if ex.frames:
            for _topic, msgs in ex.frames:
                for msg in msgs:
                    self._stamp_seq += 1
                    msg.src, msg.seq, msg.ts = SOURCE, self._stamp_seq, self.now
                    if isinstance(msg, OrderUpdate):
                        self.updates.append(msg)
                        if msg.exec_id:
                            self.fills.append(msg)
                    self._outbox.append(msg)
            ex.frames.clear()
        if ex.alerts:
            for severity, code, text in ex.alerts:
                self.alerts[code] += 1
                log.warning("execution alert", extra={"code": code, "severity": severity,
                                                      "text": text})
            ex.alerts.clear()

    def _deliver(self) -> None:
        """Decisions and execution's messages reach risk's mirror and then the strategy, in
        order, outside the callback that caused them (they come over the bus live); what the
        strategy sends meanwhile queues behind."""
        outbox = self._outbox
        while outbox:
            msg = outbox.popleft()
            if isinstance(msg, RiskDecision):
                slot = self._slot_of.get(msg.strategy)
                if slot is not None:
                    self._call(slot.strategy.handle_decision, msg)
                continue
            if isinstance(msg, Commission):  # to the strategy whose fill it is
                slot = self._slot_of.get(self._exec_owner.get(msg.exec_id, self.cfg.name))
                if slot is not None:
                    self._call(slot.strategy.handle_commission, msg)
                continue
            self.risk.on_execution_message(msg)
            slot = self._slot_of.get(msg.strategy)
            if slot is not None:
                self._call(slot.strategy.handle_execution, msg)

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # as live: a strategy bug is counted and logged, the run goes on
            self.callback_errors += 1
            owner = getattr(fn, "__self__", None)
            slot = self._slot_of.get(getattr(owner, "name", None))
            if slot is not None:
                slot.callback_errors += 1
            log.exception("strategy callback failed")

    # -- THE LOOP -----------------------------------------------------------------------------
    def run(self, messages: Iterable[tuple[int, Message]]) -> BacktestResult:
        """Run over ``(receive_ns, message)`` pairs in recording order."""
        symbols = set(self.symbols)
        for recv_ns, msg in messages:
            kind = KINDS.get(type(msg))
            if kind is None or msg.symbol not in symbols:
                if isinstance(msg, Instrument) and msg.symbol in symbols:
                    self.instruments.apply(msg)  # the recording's reference data
                continue
            if not self._started:
                if self._first_ns is None:
                    self._first_ns = recv_ns
                if recv_ns < self._first_ns + self.settings.warmup_ns:
                    self.now = max(self.now, recv_ns)
                    self._warm(msg)
                    continue
                self._start(recv_ns)
            if self._events[0][0] <= recv_ns:
                self._advance(recv_ns)
            if recv_ns > self.now:
                self.now = recv_ns
            self.messages += 1
            self._market(msg, kind)
        if self._started:
            for slot in self.slots:
                self._call(slot.strategy.on_stop)
                self._deliver()
            self._sample()
        self._in_flight = sum(1 for e in self._events if e[2] in IN_FLIGHT) + self.groups.held()
        self._mids_at_end = self._mids()
        if len(self.slots) == 1:
            return self.result_for(self.cfg.name)
        return BacktestResult(
            strategy=ACCOUNT, symbols=list(self.symbols), settings=self.settings,
            start_ns=self.start_ns, end_ns=self.now, messages=self.messages,
            intents=self.intents, fills=self.fills, executions=self.executions,
            rejections=self.rejections, samples=self.samples, portfolio=self.portfolio,
            mids=dict(self._mids_at_end), callback_errors=self.callback_errors,
            unsent_at_end=self._in_flight, alerts=self.alerts)

    def result_for(self, name: str) -> BacktestResult:
        """One strategy's part of the finished run: its intents, fills, executions, samples,
        refusals and callback errors (market messages, in-flight count and alerts are the
        run's). With one strategy, the run's result itself."""
        slot = self._slot_of[name]
        single = len(self.slots) == 1
        return BacktestResult(
            strategy=name, symbols=list(slot.cfg.symbols), settings=self.settings,
            start_ns=self.start_ns, end_ns=self.now, messages=self.messages,
            intents=self.intents if single else [i for i in self.intents if i.strategy == name],
            fills=self.fills if single else [f for f in self.fills if f.strategy == name],
            executions=self.executions if single else
            [e for e in self.executions if self._exec_owner.get(e.exec_id) == name],
            rejections=self.rejections if single else slot.rejections, samples=slot.samples,
            portfolio=self.portfolio,
            mids={s: m for s, m in self._mids_at_end.items() if s in slot.cfg.symbols},
            callback_errors=self.callback_errors if single else slot.callback_errors,
            unsent_at_end=self._in_flight, alerts=self.alerts)

    def _start(self, t_ns: int) -> None:
        self._started = True
        self.now = self.start_ns = t_ns
        self._sample()  # the run starts flat
        for slot in self.slots:
            self._call(slot.strategy.handle_start)
            self._deliver()
        for slot in self.slots:
            self._schedule(t_ns + self._timer_ns(slot), "timer", slot.index)
        self._schedule(t_ns + HOUSEKEEPING_NS, "housekeeping", None)

    def _timer_ns(self, slot: StrategySlot | None = None) -> int:
        return max(1, int((slot or self.slots[0]).cfg.timer_s * 1e9))

    def _schedule(self, due_ns: int, kind: str, payload: Any) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (due_ns, self._event_seq, kind, payload))

    def _advance(self, until_ns: int) -> None:
        events = self._events
        while events and events[0][0] <= until_ns:
            due, _, kind, payload = heapq.heappop(events)
            self.now = max(self.now, due)
            if kind == "command":
                self.venue.arrive(payload)
                self._venue_out()
            elif kind == "reports":
                self._reports(payload)
            elif kind == "data":  # market data reaching the strategies after its latency
                self._to_strategies(*payload)
            elif kind == "wake":  # the strategy's own timers (every, at, market open/close)
                slot = self.slots[payload[0]]
                if slot.wake_due == payload[1]:
                    slot.wake_due = None
                self._call(slot.strategy.run_timers, self.now)
            elif kind == "timer":  # the strategy's timer, which also samples the account
                slot = self.slots[payload]
                self._call(slot.strategy.on_timer, self.now)
                self._sample()
                self._schedule(self._next_due(due, self._timer_ns(slot), until_ns), "timer",
                               payload)
            else:
                self._housekeeping()
                self._schedule(self._next_due(due, HOUSEKEEPING_NS, until_ns), "housekeeping",
                               None)
            self._deliver()

    def _next_due(self, due: int, period: int, until_ns: int) -> int:
        nxt = due + period
        if self.settings.coalesce_idle and nxt < until_ns:
            return until_ns  # a gap in the data: once more at the next message
        return nxt

    def _market(self, msg: Message, kind: str) -> None:
        """The venue matches on the new market first; the strategy then sees the data (and,
        with no return latency, the fills it caused before the data itself)."""
        market = self.markets[msg.symbol]
        trades = market.apply(msg)
        book = market.book
        bid, ask = book.best_bid_price(), book.best_ask_price()
        if not self._delay_data:
            self.risk.on_mark(msg.symbol, bid, ask)
        venue = self.venue
        venue.on_market(msg.symbol, trades)
        if venue.reports:
            self._venue_out()
        if self._outbox:
            self._deliver()
        done = self._bars_from(msg, trades)  # bars completed before this message
        if self._delay_data:  # risk and the strategies see it after the data latency
            self._schedule(self.latency.due("data", self.now), "data",
                           (msg, kind, done, bid, ask))
            return
        self._to_strategies(msg, kind, done)

    def _to_strategies(self, msg: Message, kind: str, bars: list[Bar],
                       bid: float | None = None, ask: float | None = None) -> None:
        """A market message (and the bars it completed) to each strategy subscribed; with a
        data latency risk's mark too (``bid``, ``ask``: the book when the data was true)."""
        symbol = msg.symbol
        if bid is not None:
            self.risk.on_mark(symbol, bid, ask)
        for bar in bars:
            for slot in self.slots:
                if (symbol, "bar") in slot.subscriptions:
                    self._call(slot.strategy.handle_market_data, bar)
                    if self._outbox:
                        self._deliver()
        for slot in self.slots:
            if (symbol, kind) in slot.subscriptions:
                self._call(slot.strategy.handle_market_data, msg)
                if self._outbox:
                    self._deliver()

    def _warm(self, msg: Message) -> None:
        """A message before the strategy starts (``warmup_ns``): the market and the bars."""
        trades = self.markets[msg.symbol].apply(msg)
        self._bars_from(msg, trades)

    def _bars_from(self, msg: Message, trades: list[tuple[float, float]]) -> list[Bar]:
        """Keep a recorded 5-second bar, or build them from the trade prints (IB's way) for
        a symbol that has none recorded; returns the bars completed by this message."""
        symbol = msg.symbol
        if isinstance(msg, Bar):
            if symbol not in self._recorded_bars:
                self._recorded_bars.add(symbol)
                self.bars[symbol] = []
            self.bars[symbol].append(msg)
            return []  # it goes to the strategy as itself
        if trades:
            self.prints[symbol].extend((self.now, p, q) for p, q in trades)
        if symbol in self._recorded_bars:
            return []
        maker = self._bar_makers[symbol]
        done = maker.flush(self.now)
        for price, size in trades:
            done += maker.add_trade(self.now, price, size)
        if done:
            self.bars[symbol].extend(done)
        return done

    # -- ACCOUNT ------------------------------------------------------------------------------
    def _mids(self) -> dict[str, float]:
        mids = {}
        for symbol in self.symbols:
            mid = self.markets[symbol].mid()
            if math.isfinite(mid):
                mids[symbol] = mid
            elif symbol in self._last_mids:
                mids[symbol] = self._last_mids[symbol]
        self._last_mids = mids
        return mids

    def _sample(self) -> None:
        mids = self._mids()
        accounts = []
        for slot in self.slots:
            account = snapshot(self.portfolio, slot.name, slot.cfg.symbols, mids)
            slot.samples.append(Sample(self.now, account.equity, account.gross_exposure,
                                       account.positions, mids))
            accounts.append(account)
        if len(accounts) > 1:  # the account: every strategy's books together
            account = combined(accounts)
            self.samples.append(Sample(self.now, account.equity, account.gross_exposure,
                                       account.positions, mids))
        self._account_values(account, mids)

    def _account_values(self, account, mids: dict[str, float]) -> None:
        """The account's values as the gateway would publish them, from execution's
        Portfolio: cash plus every strategy's equity (one IB account), to every strategy
        (no margin model: buying power and available funds are the net liquidation value)."""
        net_liq = self.settings.initial_cash + account.equity
        position_value = sum(q * mids.get(s, 0.0) * self.instruments.get(s).multiplier
                             for s, q in account.positions.items())
        values = {"NetLiquidation": net_liq, "TotalCashValue": net_liq - position_value,
                  "BuyingPower": net_liq, "AvailableFunds": net_liq,
                  "GrossPositionValue": account.gross_exposure,
                  "RealizedPnL": account.realized, "UnrealizedPnL": account.unrealized}
        for key, value in values.items():
            text = f"{value:.2f}"
            if self._account_sent.get(key) == text:  # IB streams changes only (updateAccountValue)
                continue
            self._account_sent[key] = text
            value_msg = AccountValue(account="BACKTEST", key=key, value=text, currency="USD")
            for slot in self.slots:
                self._call(slot.strategy.handle_account, value_msg)


def combined(accounts: list) -> Any:
    """Several strategies' ``AccountSnapshot``s as one account's: sums, positions by symbol."""
    from services.backtest.account import AccountSnapshot
    positions: dict[str, float] = {}
    for a in accounts:
        for symbol, q in a.positions.items():
            positions[symbol] = positions.get(symbol, 0.0) + q
    return AccountSnapshot(sum(a.realized for a in accounts),
                           sum(a.realized_gross for a in accounts),
                           sum(a.commissions for a in accounts),
                           sum(a.unrealized for a in accounts),
                           sum(a.gross_exposure for a in accounts), positions)


def _decision(intent: OrderIntent, approved: bool, reason: str = "",
              text: str = "") -> RiskDecision:
    return RiskDecision(strategy=intent.strategy, client_order_id=intent.client_order_id,
                        approved=approved, reason=reason, text=text)
