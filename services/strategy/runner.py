"""A strategy as a live bus process: ``ibfleet strategy run CONFIG``.

Adding a strategy to a running fleet is starting one more of these; nothing else restarts.
On start it recovers its positions and open orders from execution's snapshot, so a strategy
killed and restarted does not double its position; it re-joins that snapshot whenever the bus
shows a gap on its order topic or execution's digest disagrees with its mirror.

Sockets: bus SUB on its symbols' market data, ``ord.update.NAME``, ``gw.state``,
``ctl.state.NAME``; ``risk`` DEALER (reliable) for intents; PUB for its subscription requests
and heartbeat.

Its trading state is risk's (``TradingState`` on ``ctl.state.NAME``, joined from risk's
snapshot on start): paused, halted or errored, it sends no intent at all; its heartbeat's
``state`` is that trading state (``active``, ``reducing``, ``paused``, ``halted``,
``errored``), published at once on a change: the strategy's confirmation, which ``ibfleet
pause`` waits for and ``ibfleet status`` shows.

A callback that raises is counted (``callback_errors``, which risk watches: too many within
its window and risk halts the strategy as errored) and logged with its traceback once per
kind (exception type and where it was raised), then as a count every ``REPEAT_LOG_S``.
"""
from __future__ import annotations

import argparse
import os
import time
import traceback

from proto.schema import (AccountValue, Alert, Bar, Commission, Control, DepthUpdate,
                          GatewayState, HistoricalEnd, HistoricalRequest, Instrument,
                          OrderIntent,
                          OrderUpdate, QuoteTick, RiskDecision, StrategyDigest,
                          StrategyPosition, SubscribeRequest, Tick, TradeTick, TradingState)
from services.bus import snapshot
from services.bus.reliable import ReliableClient
from services.bus.snapshot import SnapshotTimeout
from services.bus.subscriber import Subscriber
from services.runtime.cli import add_common_args, load_config
from services.runtime.config import ConfigError, FleetConfig
from services.runtime.instruments import Instruments
from services.runtime.service import Service
from services.strategy import config as strategy_config
from services.strategy.base import Strategy

KIND_TOPICS = {"tick": "md.tick", "quote": "md.quote", "trade": "md.trade", "depth": "md.depth",
               "bar": "md.bar"}
MARKET_DATA = (DepthUpdate, Tick, QuoteTick, TradeTick, Bar)
FROM_EXECUTION = (OrderUpdate, StrategyPosition, StrategyDigest)
RESYNC_MIN_INTERVAL = 0.5  # s: a burst of gaps costs one snapshot, not one each
RESUBSCRIBE_S = 2.0  # subscription requests ride PUB/SUB: repeat them, the gateway dedupes
TRADING = ("active", "reducing")  # risk's states in which a strategy may send intents
REPEAT_LOG_S = 10.0  # a callback error of a kind already logged: its count, this often
STRATEGY_TIMERS_S = 0.05  # how often the strategy's own timers (every/at) are checked
HISTORY_RESEND_S = 10.0  # a historical request rides PUB/SUB: asked again if unanswered


class StrategyRunner(Service):
    def __init__(self, config: FleetConfig, cfg: strategy_config.StrategyConfig,
                 recover: bool = True) -> None:
        super().__init__("strategy", config, instance=cfg.name)
        self.cfg = cfg
        self.recover = recover
        bus = config.bus
        self.state_topic = f"ctl.state.{cfg.name}"
        # its own topics exactly: a prefix would also bring strategy "mr1"'s to "mr"
        self.feed = self.track(Subscriber(self.ctx, bus.endpoint("bus-out"),
                                          ["gw.state", AccountValue.TOPIC, Commission.TOPIC],
                                          exact=[f"ord.update.{cfg.name}", self.state_topic,
                                                 # its instruments' reference data (gateway)
                                                 *(f"{Instrument.TOPIC}.{s}"
                                                   for s in cfg.symbols)]))
        # historical bars (hist.strategy.NAME) and their ends (hist), read only by history()
        # (subscribed only while history() waits, so nothing queues up in between)
        self.hist_feed = Subscriber(self.ctx, bus.endpoint("bus-out"), [])
        self.history_requests = 0
        self.wake_ns: int | None = None  # when the strategy's next own timer is due
        self.risk = ReliableClient(self.ctx, bus.endpoint("risk"), self.source,
                                   resend_after=3.0)
        self.requests: set[tuple[str, str]] = set()
        self.refreshed: dict[str, float] = {}
        self.gateway_state = "disconnected"
        self.order_topic = f"ord.update.{cfg.name}"
        self.resync_wanted = ""
        self.last_resync = -1e9
        self.trading_state, self.state_reason = "active", ""  # risk's, as last received
        # callback errors by kind (exception type, where raised): total, since the last log
        # line, and when that was
        self.error_kinds: dict[tuple[str, str], list] = {}
        cls = cfg.load_class()
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(f"{cfg.class_path} is not a Strategy subclass")
        params = cfg.params_for(cls)  # its typed Params (ConfigError if [params] is bad)
        incarnation = _base36(time.time_ns() // 1_000_000)
        self.strategy: Strategy = cls(cfg.name, cfg.symbols, cfg.params, self,
                                      Instruments(config.raw.get("instruments")), incarnation,
                                      cfg.depth_rows)
        self.strategy.params = params
        self.strategy.require_live_data = cfg.require_live_data
        self.on_socket(self.feed.socket, self._on_feed)
        self.on_socket(self.risk.socket, self._on_risk_reply)
        self.every(cfg.timer_s, self._timer)
        self.every(RESUBSCRIBE_S, self._resubscribe)
        self.every(STRATEGY_TIMERS_S, self._strategy_timers)

    # -- StrategyHost -------------------------------------------------------------------------
    def send_intent(self, intent: OrderIntent) -> None:
        if self.strategy.paused:  # the base class sends nothing then; a subclass going
            self.counters["intents_blocked"] += 1  # around it is stopped here
            self.strategy.submitted.pop(intent.client_order_id, None)
            if self.counters["intents_blocked"] == 1:
                self.log.warning("intent not sent: the strategy is not trading",
                                 extra={"state": self.trading_state,
                                        "client_order_id": intent.client_order_id})
            return
        self.risk.send(intent)
        self.counters["intents"] += 1

    def request_data(self, symbol: str, kind: str) -> None:
        if kind not in KIND_TOPICS:
            raise ValueError(f"unknown market data kind {kind!r}; one of {sorted(KIND_TOPICS)}")
        if (symbol, kind) not in self.requests:
            self.requests.add((symbol, kind))
            self.feed.subscribe(f"{KIND_TOPICS[kind]}.{symbol}", exact=True)  # MS is not MSFT
        self.publisher.publish(SubscribeRequest(requester=self.source, symbol=symbol, kind=kind))

    def now_ns(self) -> int:
        return time.time_ns()

    def wake_at(self, t_ns: int) -> None:
        """The strategy's next own timer (``every``/``at``) is due at ``t_ns``."""
        self.wake_ns = t_ns

    def _strategy_timers(self) -> None:
        if self.wake_ns is None or time.time_ns() < self.wake_ns:
            return
        self.wake_ns = None
        try:
            self.strategy.run_timers(time.time_ns())
        except Exception as exc:
            self._callback_failed(exc, "timer")
            self.strategy._ask_wake()

    def history(self, symbol: str, bar_size: str, count: int, what_to_show: str = "TRADES",
                use_rth: bool = True, timeout: float = 30.0) -> list[Bar]:
        """One historical request through the gateway (paced there), waited for here; the
        rest of the process waits meanwhile (call it from ``on_start``)."""
        self.history_requests += 1
        request = f"h{self.history_requests}-{time.time_ns() % 1_000_000_007}"
        req = HistoricalRequest(requester=self.source, request=request, symbol=symbol,
                                duration=history_duration(bar_size, count, use_rth),
                                bar_size=bar_size, what_to_show=what_to_show, use_rth=use_rth)
        self.hist_feed.subscribe("hist")
        try:
            return self._wait_history(req, symbol, bar_size, timeout)
        finally:
            self.hist_feed.unsubscribe("hist")

    def _wait_history(self, req: HistoricalRequest, symbol: str, bar_size: str,
                      timeout: float) -> list[Bar]:
        request = req.request
        bars: list[Bar] = []
        deadline = time.monotonic() + timeout
        sent = -1e9
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.counters["history_timeouts"] += 1
                self.log.warning("no historical bars in time", extra={
                    "symbol": symbol, "bar_size": bar_size, "timeout_s": timeout})
                return []
            if now - sent >= HISTORY_RESEND_S:
                self.publisher.publish(req)
                sent = now
            got = self.hist_feed.recv(timeout_ms=int(min(deadline - now, 0.5) * 1000) + 1)
            if got is None:
                continue
            _topic, msgs = got
            for msg in msgs:
                if isinstance(msg, Bar) and msg.request == request:
                    bars.append(msg)
                elif isinstance(msg, HistoricalEnd) and msg.requester == self.source \
                        and msg.request == request:
                    if msg.error:
                        self.counters["history_errors"] += 1
                        self.log.warning("historical request refused", extra={
                            "symbol": symbol, "bar_size": bar_size, "error": msg.error})
                        return []
                    bars = complete_bars(bars, time.time_ns())
                    self.counters["history_bars"] += len(bars)
                    return bars

    def alert(self, severity: str, code: str, text: str) -> None:
        """Something the operator must see (e.g. delayed data refused under
        ``require_live_data``), on the bus's ``alert`` topic."""
        self.counters["alerts"] += 1
        self.publisher.publish(Alert(severity=severity, code=code,
                                     text=f"strategy {self.cfg.name}: {text}"))

    # -- LIFECYCLE ----------------------------------------------------------------------------
    def on_start(self) -> None:
        if self.recover:  # --no-recover (a replay's bus): no snapshot, live messages only
            self._join_instruments()
            self._recover()
        self.strategy.handle_start()

    def _join_instruments(self) -> None:
        """Its symbols' reference data (the gateway's ``Instrument`` messages) from the bus
        cache before its first callback; later ones arrive live."""
        wanted = set(self.cfg.symbols)
        try:
            state, live = snapshot.join(self.ctx, self.feed, self.config.bus.endpoint("bus-snap"),
                                        f"{Instrument.TOPIC}.", timeout=5.0)
        except SnapshotTimeout:
            self.log.warning("no reference data snapshot; waiting for the gateway's")
            return
        for _, msg in state + live:
            if isinstance(msg, Instrument) and msg.symbol in wanted:
                self.strategy.instruments.apply(msg)
            elif not isinstance(msg, Instrument):
                self._dispatch(msg)
        missing = sorted(wanted - set(self.strategy.instruments.symbols()))
        if missing:
            self.log.warning("no reference data yet", extra={"symbols": missing})

    def heartbeat(self) -> None:
        """The trading state risk set, as applied here (``starting``/``stopping`` around)."""
        running = self.state == "running"
        if running:
            self.state = self.trading_state
        try:
            super().heartbeat()
        finally:
            if running:
                self.state = "running"

    def on_stop(self) -> None:
        for (kind, where), (total, unlogged, _) in sorted(self.error_kinds.items()):
            self.log.error("strategy callback errors", extra={
                "error": kind, "where": where, "count": total, "not_logged": unlogged})
        self.strategy.on_stop()
        for symbol, kind in self.requests:
            self.publisher.publish(SubscribeRequest(requester=self.source, symbol=symbol,
                                                    kind=kind, active=False))

    def _recover(self) -> None:
        """Positions and open orders from execution, the trading state from risk, the gateway
        state from the bus cache."""
        self._join_execution()
        try:
            state, live = snapshot.join(self.ctx, self.feed, self.config.bus.endpoint("risk-snap"),
                                        self.state_topic, timeout=5.0, exact=True)
        except SnapshotTimeout:
            self.log.warning("no trading state from risk yet; it repeats it every few seconds")
        else:
            for _, msg in state + live:
                self._dispatch(msg)
        try:
            state, live = snapshot.join(self.ctx, self.feed, self.config.bus.endpoint("bus-snap"),
                                        "gw.state", timeout=5.0)
        except SnapshotTimeout:
            self.log.warning("no gateway state snapshot; starting from live data")
        else:
            for _, msg in state + live:
                self._dispatch(msg)
        try:  # the account's values the bus keeps (the gateway streams changes only)
            state, live = snapshot.join(self.ctx, self.feed, self.config.bus.endpoint("bus-snap"),
                                        AccountValue.TOPIC, timeout=5.0)
        except SnapshotTimeout:
            self.log.warning("no account values snapshot; starting from live data")
        else:
            for _, msg in state + live:
                self._dispatch(msg)
        self.log.info("recovered", extra={
            "positions": {s: p.quantity for s, p in self.strategy.mirror.positions.items()},
            "open_orders": len(self.strategy.open_orders())})

    def _join_execution(self) -> bool:
        """Replace the mirror with execution's snapshot (the Clone pattern), then apply what
        arrived meanwhile."""
        self.last_resync = time.monotonic()
        try:
            state, live = snapshot.join(self.ctx, self.feed,
                                        self.config.bus.endpoint("execution-snap"),
                                        self.order_topic, timeout=5.0, exact=True)
        except SnapshotTimeout:
            self.log.warning("no snapshot from execution; keeping the mirror",
                             extra={"reason": self.resync_wanted or "start"})
            return False
        self.feed.gaps.broken.discard(self.order_topic)
        self.strategy.resync([m for _, m in state])
        self.resync_wanted = ""
        for _, msg in live:
            self._dispatch(msg)
        return True

    def _maybe_resync(self) -> None:
        if self.order_topic in self.feed.gaps.broken:
            self.resync_wanted = self.resync_wanted or "sequence gap on the order topic"
        if self.resync_wanted and time.monotonic() - self.last_resync >= RESYNC_MIN_INTERVAL:
            self.counters["resyncs"] += 1
            self.log.warning("re-joining execution's snapshot",
                             extra={"reason": self.resync_wanted})
            self._join_execution()

    # -- INPUTS -------------------------------------------------------------------------------
    def _on_feed(self) -> None:
        for msg in self.feed.drain(2000):
            self._dispatch(msg)
        self._maybe_resync()

    def _dispatch(self, msg) -> None:
        s = self.strategy
        try:
            if isinstance(msg, MARKET_DATA):
                if not s.handle_market_data(msg):
                    self.counters["book_errors"] += 1
                    self._refresh_depth(msg.symbol)
            elif isinstance(msg, FROM_EXECUTION):
                if not s.handle_execution(msg):
                    self.counters["digest_mismatches"] += 1
                    self.resync_wanted = "execution's digest differs from the mirror"
            elif isinstance(msg, Instrument):
                s.instruments.apply(msg)
            elif isinstance(msg, GatewayState):
                self.gateway_state = msg.state
            elif isinstance(msg, AccountValue):
                s.handle_account(msg)
            elif isinstance(msg, Commission):
                s.handle_commission(msg)
            elif isinstance(msg, TradingState):
                self._trading_state(msg)
            elif isinstance(msg, Control):
                self._control(msg)
        except Exception as exc:  # a bug in the strategy's callback must not kill the process
            self._callback_failed(exc, type(msg).__name__)

    def _callback_failed(self, exc: BaseException, during: str) -> None:
        """Counted every time; the traceback logged once per kind (type and where it was
        raised), then a count every REPEAT_LOG_S: a strategy raising on every tick must not
        fill the disk. Risk halts it as errored when the count grows too fast."""
        self.counters["callback_errors"] += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
        key = (type(exc).__name__, where)
        now = time.monotonic()
        entry = self.error_kinds.get(key)
        if entry is None:
            self.error_kinds[key] = [1, 0, now]
            self.log.error("strategy callback failed", exc_info=exc, extra={
                "error": key[0], "where": where, "during": during,
                "note": f"logged once; repeats are counted every {REPEAT_LOG_S:g}s"})
            return
        entry[0] += 1
        entry[1] += 1
        if now - entry[2] >= REPEAT_LOG_S:
            self.log.error("strategy callback failed again", extra={
                "error": key[0], "where": where, "during": during, "count": entry[0],
                "since_last_log": entry[1], "detail": str(exc)[:200]})
            entry[1], entry[2] = 0, now

    def _trading_state(self, msg: TradingState) -> None:
        """Risk's decision for this strategy: applied, and confirmed in a heartbeat now."""
        if msg.strategy != self.cfg.name or not msg.src.startswith("risk."):
            return
        self.strategy.paused = msg.state not in TRADING
        if (msg.state, msg.reason) == (self.trading_state, self.state_reason):
            return
        self.trading_state, self.state_reason = msg.state, msg.reason
        self.counters["state_changes"] += 1
        self.log.warning("trading state", extra={"state": msg.state, "detail": msg.reason})
        if self.state == "running":
            self.heartbeat()

    def _refresh_depth(self, symbol: str) -> None:
        """A depth update did not fit our book (one was lost): have IB send the book afresh."""
        now = time.monotonic()
        if now - self.refreshed.get(symbol, -1e9) < 5.0:
            return
        self.refreshed[symbol] = now
        self.publisher.publish(SubscribeRequest(requester=self.source, symbol=symbol,
                                                kind="depth", refresh=True))

    def _control(self, msg: Control) -> None:
        """A control on the bus is not an order to this process: risk applies controls and
        publishes the resulting ``TradingState``, which is what the strategy obeys."""
        self.counters["controls_ignored"] += 1
        self.log.warning("control on the bus ignored: the trading state comes from risk",
                         extra={"command": msg.command, "target": msg.target})

    def _on_risk_reply(self) -> None:
        for msg in self.risk.poll():
            if isinstance(msg, RiskDecision):
                self.counters["approved" if msg.approved else "rejected"] += 1
                self.strategy.handle_decision(msg)
        for intent, ack in self.risk.nacked:
            self.counters["refused"] += 1
            self.strategy.handle_decision(RiskDecision(
                strategy=self.cfg.name, client_order_id=intent.client_order_id, approved=False,
                reason="refused", text=ack.error))
        self.risk.nacked.clear()

    def _timer(self) -> None:
        try:
            self.strategy.on_timer(time.time_ns())
        except Exception as exc:
            self._callback_failed(exc, "on_timer")
        self._maybe_resync()
        realized, unrealized = self.strategy.pnl()
        positions = self.strategy.mirror.positions
        self.counters["position_abs"] = int(sum(abs(p.quantity) for p in positions.values()))
        for key in [k for k in self.counters if k.startswith("pos.")]:
            del self.counters[key]
        for symbol, p in positions.items():  # the mirror, for audits and `ibfleet status`
            self.counters[f"pos.{symbol}"] = int(round(p.quantity))
        self.counters["open_orders"] = len(self.strategy.mirror.orders)
        self.counters["account_values"] = len(self.strategy.account)
        self.counters["commissions_matched"] = self.strategy.commissions_matched
        self.counters["pnl_cents"] = int(round((realized + unrealized) * 100))
        self.counters["realized_cents"] = int(round(realized * 100))

    def _resubscribe(self) -> None:
        for symbol, kind in self.requests:
            self.publisher.publish(SubscribeRequest(requester=self.source, symbol=symbol,
                                                    kind=kind))


def history_duration(bar_size: str, count: int, use_rth: bool = True) -> str:
    """IB's durationStr covering ``count`` bars of ``bar_size`` back from now: seconds below
    one minute bars, else whole days (a regular session is 6.5 hours), with a day's margin
    for a closed market; the answer's last ``count`` complete bars are kept."""
    from services.strategy.bars import bar_seconds
    seconds = bar_seconds(bar_size)
    span = seconds * count
    if seconds < 60:
        return f"{min(max(span * 2, 60), 86400)} S"
    if seconds >= 86400:
        return f"{count * 7 // 5 + 5} D" if count * 7 // 5 + 5 <= 365 else \
            f"{-(-count // 250) + 1} Y"
    session = 23400 if use_rth else 86400
    return f"{-(-span // session) + 1} D"


def complete_bars(bars: list[Bar], now_ns: int) -> list[Bar]:
    """Historical bars oldest first, without the one still in progress (IB includes it)."""
    bars = sorted(bars, key=lambda b: b.start_ns)
    return [b for b in bars if b.start_ns + b.seconds * 1_000_000_000 <= now_ns]


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet strategy",
                                     description="Run one strategy as a bus process.")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run the strategy configured in CONFIG")
    run.add_argument("strategy_config", help="the strategy's TOML file")
    run.add_argument("--no-recover", action="store_true",
                     help="start without execution's snapshot (e.g. on a replay bus)")
    add_common_args(run)
    args = parser.parse_args(argv)
    config = load_config(run, args)
    try:
        cfg = strategy_config.load(args.strategy_config)
        runner = StrategyRunner(config, cfg, recover=not args.no_recover)
    except ConfigError as exc:
        run.exit(2, f"ibfleet strategy run: {exc}\n")
    return runner.run()
