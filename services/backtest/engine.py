"""The backtest event loop and the second ``StrategyHost``.

One clock: the recording's receive times. Recorded market data and scheduled events (an
intent or cancel arriving at the exchange after the latency, the strategy's timer) are merged
in time order; an event due at or before a message's receive time runs before it, and ties
between events keep the order they were scheduled in (a heap keyed by (due, sequence)).
The strategy's intents go through the real ``RiskEngine`` (whose clock is this one); the
simulated exchange's updates go to risk and then to the strategy, after the callback that
caused them returns, as they would arrive from execution live.
"""
from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgspec

from proto.schema import (Bar, DepthUpdate, Message, OrderIntent, OrderUpdate, QuoteTick,
                          RiskDecision, Tick, TradeTick)
from services.backtest.ledger import CommissionModel, Ledger
from services.backtest.market import SymbolMarket
from services.backtest.matching import SimulatedExchange
from services.risk.engine import RiskEngine
from services.risk.limits import LimitBook, Limits, build_limits
from services.runtime.instruments import Instruments
from services.strategy.base import Strategy
from services.strategy.config import StrategyConfig

log = logging.getLogger("backtest.engine")
KINDS = {Tick: "tick", QuoteTick: "quote", TradeTick: "trade", DepthUpdate: "depth", Bar: "bar"}
INCARNATION = "bt"  # client order ids: NAME-bt-N, the same on every run
SOURCE = "backtest"


@dataclass(frozen=True)
class Settings:
    latency_ns: int = 5_000_000
    queue_model: str = "proportional"
    commission: CommissionModel = field(default_factory=CommissionModel)


@dataclass
class Sample:
    """The account at one moment, for the equity curve, drawdown and exposure."""
    t_ns: int
    equity: float  # realized + unrealized - commissions
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
    fills: list[OrderUpdate]
    rejections: Counter
    samples: list[Sample]
    ledger: Ledger
    mids: dict[str, float]
    callback_errors: int
    unsent_at_end: int  # events still in flight when the recording ended


class BacktestEngine:
    def __init__(self, cfg: StrategyConfig, settings: Settings = Settings(),
                 instruments: Instruments | None = None,
                 strategy_class: type[Strategy] | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.instruments = instruments or Instruments()
        self.now = 0
        self._events: list[tuple[int, int, str, Any]] = []
        self._event_seq = 0
        self._outbox: deque[Message] = deque()
        self._subscriptions: set[tuple[str, str]] = set()  # membership only, never iterated
        self._update_seq = 0
        self.markets = {s: SymbolMarket(s) for s in cfg.symbols}
        limits = LimitBook(Limits(), {cfg.name: build_limits(cfg.risk, f"[risk] of {cfg.name}",
                                                       Limits())})
        self.risk = RiskEngine(limits, self.instruments, clock=lambda: self.now / 1e9)
        self.risk.gateway_state = "synchronised"
        self.exchange = SimulatedExchange(self.markets, self._on_update, settings.queue_model)
        self.ledger = Ledger(self.instruments, settings.commission)
        cls = strategy_class or cfg.load_class()
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"{cfg.class_path} is not a Strategy subclass")
        self.strategy: Strategy = cls(cfg.name, cfg.symbols, cfg.params, self, self.instruments,
                                      INCARNATION, cfg.depth_rows)
        self.intents: list[OrderIntent] = []
        self.fills: list[OrderUpdate] = []
        self.rejections: Counter = Counter()
        self.samples: list[Sample] = []
        self.callback_errors = 0
        self.messages = 0
        self.start_ns = 0
        self._started = False
        self._last_mids: dict[str, float] = {}

    # -- StrategyHost -------------------------------------------------------------------------
    def send_intent(self, intent: OrderIntent) -> None:
        self.intents.append(msgspec.structs.replace(intent, src=SOURCE, seq=len(self.intents) + 1,
                                                    ts=self.now))
        decision = self.risk.check(intent)
        self._outbox.append(RiskDecision(strategy=intent.strategy,
                                         client_order_id=intent.client_order_id,
                                         approved=decision.approved, reason=decision.reason,
                                         text=decision.text))
        if not decision.approved:
            self.rejections[decision.reason] += 1
            return
        self.risk.approved(intent)
        if intent.action == "new":
            self.exchange.accept(intent)
            self._schedule(self.now + self.settings.latency_ns, "arrive", intent.client_order_id)
        elif intent.action == "cancel":
            if self.exchange.cancel_sent(intent.client_order_id):
                self._schedule(self.now + self.settings.latency_ns, "cancel",
                               intent.client_order_id)
        else:
            self._schedule(self.now + self.settings.latency_ns, "modify", intent)

    def request_data(self, symbol: str, kind: str) -> None:
        if kind not in KINDS.values():
            raise ValueError(f"unknown market data kind {kind!r}; one of {sorted(KINDS.values())}")
        self._subscriptions.add((symbol, kind))

    def now_ns(self) -> int:
        return self.now

    # -- THE LOOP -----------------------------------------------------------------------------
    def run(self, messages: Iterable[tuple[int, Message]]) -> BacktestResult:
        """Run over ``(receive_ns, message)`` pairs in recording order."""
        symbols = set(self.cfg.symbols)
        for recv_ns, msg in messages:
            kind = KINDS.get(type(msg))
            if kind is None or msg.symbol not in symbols:
                continue
            if not self._started:
                self._start(recv_ns)
            self._advance(recv_ns)
            self.now = max(self.now, recv_ns)
            self.messages += 1
            self._market(msg, kind)
        if self._started:
            self._call(self.strategy.on_stop)
            self._deliver()
            self._sample()
        return BacktestResult(
            strategy=self.cfg.name, symbols=list(self.cfg.symbols), settings=self.settings,
            start_ns=self.start_ns, end_ns=self.now, messages=self.messages,
            intents=self.intents, fills=self.fills, rejections=self.rejections,
            samples=self.samples, ledger=self.ledger, mids=self._mids(),
            callback_errors=self.callback_errors,
            unsent_at_end=sum(1 for e in self._events if e[2] != "timer"))

    def _start(self, t_ns: int) -> None:
        self._started = True
        self.now = self.start_ns = t_ns
        self._sample()  # the run starts flat
        self._call(self.strategy.on_start)
        self._deliver()
        self._schedule(t_ns + self._timer_ns(), "timer", None)

    def _timer_ns(self) -> int:
        return max(1, int(self.cfg.timer_s * 1e9))

    def _schedule(self, due_ns: int, kind: str, payload: Any) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (due_ns, self._event_seq, kind, payload))

    def _advance(self, until_ns: int) -> None:
        while self._events and self._events[0][0] <= until_ns:
            due, _, kind, payload = heapq.heappop(self._events)
            self.now = max(self.now, due)
            if kind == "arrive":
                self.exchange.arrive(payload)
            elif kind == "cancel":
                self.exchange.cancel_arrives(payload)
            elif kind == "modify":
                self.exchange.modify_arrives(payload)
            else:  # the strategy's timer, which also samples the account
                self._call(self.strategy.on_timer, self.now)
                self._sample()
                self._schedule(due + self._timer_ns(), "timer", None)
            self._deliver()

    def _market(self, msg: Message, kind: str) -> None:
        """Fills caused by this data reach the strategy before the data itself does."""
        market = self.markets[msg.symbol]
        trades = market.apply(msg)
        book = market.book
        self.risk.on_mark(msg.symbol, book.best_bid_price(), book.best_ask_price())
        self.exchange.on_market(msg.symbol, trades)
        self._deliver()
        if (msg.symbol, kind) in self._subscriptions:
            self._call(self._to_strategy, msg)
            self._deliver()

    def _to_strategy(self, msg: Message) -> None:
        self.strategy.handle_market_data(msg)

    # -- UPDATES ------------------------------------------------------------------------------
    def _on_update(self, update: OrderUpdate) -> None:
        self._update_seq += 1
        update = msgspec.structs.replace(update, src=SOURCE, seq=self._update_seq, ts=self.now)
        self.risk.on_update(update)
        if update.exec_id:
            self.fills.append(update)
            self.ledger.apply(update)
            self._sample()
        self._outbox.append(update)

    def _deliver(self) -> None:
        """Decisions and updates reach the strategy in order, outside the callback that
        caused them (they come over the bus live); what it sends meanwhile queues behind."""
        while self._outbox:
            msg = self._outbox.popleft()
            if isinstance(msg, RiskDecision):
                self._call(self.strategy.handle_decision, msg)
            else:
                self._call(self.strategy.handle_update, msg)

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # as live: a strategy bug is counted and logged, the run goes on
            self.callback_errors += 1
            log.exception("strategy callback failed")

    # -- ACCOUNT ------------------------------------------------------------------------------
    def _mids(self) -> dict[str, float]:
        mids = {}
        for symbol in self.cfg.symbols:
            mid = self.markets[symbol].mid()
            if math.isfinite(mid):
                mids[symbol] = mid
            elif symbol in self._last_mids:
                mids[symbol] = self._last_mids[symbol]
        self._last_mids = mids
        return mids

    def _sample(self) -> None:
        mids = self._mids()
        ledger = self.ledger
        equity = ledger.realized() + ledger.unrealized(mids) - ledger.commissions
        self.samples.append(Sample(self.now, equity, ledger.gross_exposure(mids),
                                   {s: ledger.position(s) for s in self.cfg.symbols}, mids))
