"""The risk process: the only way from a strategy to execution.

Sockets:
- ``risk`` ROUTER (reliable): OrderIntent from ``strategy.NAME`` (for strategy NAME only) and
  Control (kill switch, pause/resume, flatten) from anyone local. An approved intent is
  acknowledged only after execution has acknowledged it (durably journaled), so an
  acknowledgement to a strategy always means "in execution's hands".
- ``execution`` DEALER (reliable): approved intents and kill/flatten controls.
- bus SUB: ``md.tick.``, ``md.quote.`` (marks), ``ord.update.`` (fills and open orders),
  ``gw.state``. (Execution compares positions with the broker's; risk mirrors execution.)
- ``risk-snap`` ROUTER: per-strategy trading state and PnL (for ``ibfleet status``), and
  each strategy's ``TradingState`` on ``ctl.state.NAME`` (what a starting strategy joins).
- bus PUB: ``TradingState`` on ``ctl.state.NAME`` on every change of a strategy's state
  (a control, a daily-loss breach, errors) and every ``STATE_REPEAT_S`` for every strategy
  it knows, so each strategy process applies it (and confirms it in its heartbeat).

Risk also reads the strategies' heartbeats (``hb.strategy.``): one whose ``callback_errors``
reach its ``max_errors`` within ``error_window_s`` is halted as ``errored``.
"""
from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path

from proto.schema import (Ack, Alert, Control, GatewayState, Heartbeat, Instrument, Message,
                          OrderIntent,
                          OrderUpdate, PnL, QuoteTick, RiskDecision, StrategyDigest,
                          StrategyPosition, SubscribeRequest, Tick, TradingState)
from services.bus import snapshot
from services.bus.reliable import DEFER, Refused, ReliableClient, ReliableServer, Token
from services.bus.snapshot import SnapshotServer, SnapshotTimeout
from services.bus.subscriber import Subscriber
from services.risk.engine import (ACTIVE, GROUP_TIMEOUT_S, HALTED, PAUSED, REDUCING, GroupDesk,
                                  RiskEngine)
from services.model.owners import RESERVED_OWNERS, UNOWNED
from services.model.trading_day import TradingDay
from services.runtime.broker_clock import BrokerClock
from services.risk.limits import LimitBook
from services.runtime.cli import add_common_args, load_config
from services.runtime.config import ConfigError, FleetConfig
from services.runtime.instruments import Instruments
from services.runtime.journal import write_json
from services.runtime.service import Service

TOPICS = ("md.tick.", "md.quote.", "ord.update.", "gw.state", "hb.strategy.", "ref.instrument.")
CONTROL_STATES = {"kill": HALTED, "resume_all": ACTIVE, "pause": PAUSED, "resume": ACTIVE}
STATE_REPEAT_S = 2.0  # every strategy's TradingState again (PUB/SUB may lose one)
FROM_EXECUTION = (OrderUpdate, StrategyPosition, StrategyDigest)
SAVE_ALERT_EVERY = 30  # failed saves of the trading state between two alerts (one a second)


class RiskService(Service):
    def __init__(self, config: FleetConfig, strategies_dir: Path | None = None) -> None:
        super().__init__("risk", config)
        self.broker_clock = BrokerClock()  # IB's clock: the daily loss's trading day
        self.engine = RiskEngine(LimitBook.from_config(config.raw, strategies_dir),
                                 Instruments(config.raw.get("instruments")),
                                 trading_day=TradingDay.from_config(config.raw),
                                 wall_clock=self.broker_clock.now_ns)
        self._report_refused(list(self.engine.limits.refused.values()))
        # alerted again at the first timer: a publisher that has just connected may lose its
        # first messages (the broker's subscription has not reached it yet)
        self.refusals_to_repeat = list(self.engine.limits.refused.values())
        self.state_file = config.service_state_dir("risk") / "trading_state.json"
        self.state_dirty = False  # the state in memory is not on disk yet (a save failed)
        self.save_failures = 0  # consecutive failed saves
        self._load_trading_state()
        bus = config.bus
        self.server = ReliableServer(self.ctx, bus.endpoint("risk"), self.source,
                                     self._on_request)
        self.execution = ReliableClient(self.ctx, bus.endpoint("execution"), self.source,
                                        resend_after=5.0)
        self.feed = self.track(Subscriber(self.ctx, bus.endpoint("bus-out"), TOPICS))
        self.snapshots = SnapshotServer(self.ctx, bus.endpoint("risk-snap"), self.source,
                                        self._snapshot)
        # marks for every symbol a strategy trades, whatever data the strategy itself uses
        self.strategies_dir = strategies_dir
        self.strategies_seen = _listing(strategies_dir)
        self.watched: set[str] = set(_strategy_symbols(strategies_dir))
        self.engine.symbols = _symbols_by_strategy(strategies_dir)
        # execution seq -> (the strategy's request, its decision, the intent)
        self.waiting: dict[int, tuple[Token, RiskDecision, OrderIntent]] = {}
        self.groups = GroupDesk()  # bracket legs held until the group's transmitting leg
        self.resync_wanted: dict[str, str] = {}  # strategy -> why its mirror must re-join
        self.controls_waiting: dict[int, Token] = {}  # execution seq -> the kill's sender
        self.removals: dict[int, str] = {}  # execution seq -> the strategy being removed
        self.heard: set[str] = set()  # strategies whose heartbeat risk has seen
        self.published_states: dict[str, tuple[str, str]] = {}  # strategy -> last published
        self.on_socket(self.server.socket, self._on_requests)
        self.on_socket(self.execution.socket, self._on_execution_reply)
        self.on_socket(self.feed.socket, self._on_feed)
        self.on_socket(self.snapshots.socket, self.snapshots.process_ready)
        self.every(1.0, self._housekeeping)
        self.every(2.0, self._subscribe_marks)
        self.every(STATE_REPEAT_S, lambda: self._publish_states(force=True))

    def _subscribe_marks(self) -> None:
        """Subscription requests ride PUB/SUB: repeat them; the gateway de-duplicates.
        A strategy added to the running fleet brings its budget and symbols: pick them up."""
        for text in self.refusals_to_repeat:
            self.publisher.publish(Alert(severity="critical", code="budget_refused", text=text))
        self.refusals_to_repeat = []
        listing = _listing(self.strategies_dir)
        if listing != self.strategies_seen:
            before, self.strategies_seen = self.strategies_seen, listing
            for name, when in list(self.engine.removed.items()):  # added again since?
                file = f"{name}.toml"  # ``ibfleet strategy add`` writes NAME.toml
                if file in listing and (file not in before or listing[file] > when):
                    del self.engine.removed[name]
                    self.state_dirty = True
            self._report_refused(self.engine.limits.load_strategy_budgets(self.strategies_dir))
            for name in self.engine.removed:  # a stale file of a removed strategy
                self.engine.limits.forget(name)
            self.watched |= set(_strategy_symbols(self.strategies_dir))
            self.engine.symbols = _symbols_by_strategy(self.strategies_dir)
            self.log.info("strategy budgets reloaded", extra={"symbols": sorted(self.watched)})
        for symbol in sorted(self.watched):
            self.publisher.publish(SubscribeRequest(requester=self.source, symbol=symbol,
                                                    kind="tick"))

    def _report_refused(self, refusals: list[str]) -> None:
        """Strategy files whose budget risk cannot use (the others still apply): the engine
        refuses those strategies' new orders; the operator is told what to fix."""
        for text in refusals:
            self.log.error("strategy risk budget refused", extra={"error": text})
            self.publisher.publish(Alert(severity="critical", code="budget_refused", text=text))

    def on_start(self) -> None:
        self._restore_from_execution()

    # -- STATE THAT MUST SURVIVE A RESTART ----------------------------------------------------
    def _load_trading_state(self) -> None:
        """The kill switch stays thrown across a restart of risk."""
        try:
            saved = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.log.error("trading state unreadable; starting halted", extra={"error": str(exc)})
            self.engine.global_state = HALTED
            return
        self.engine.global_state = saved.get("global", ACTIVE)
        for name, state in saved.get("strategies", {}).items():
            self.engine.book(name).state = state
        for name, day in saved.get("loss_days", {}).items():
            self.engine.book(name).loss_day = day
        for name, reason in saved.get("reasons", {}).items():
            self.engine.book(name).reason = reason
        for name, when in saved.get("removed", {}).items():
            self.engine.forget(name, UNOWNED, float(when))

    def _save_trading_state(self) -> bool:
        """Atomically, durably (fsync, rename, fsync of the directory), so that a thrown kill
        switch survives a crash. A save that fails (disk full, read-only, gone) is logged,
        counted and alerted, and retried every housekeeping until it succeeds: it never
        raises, so it can never stand between the operator and a cancel."""
        self.state_dirty = True
        try:
            write_json(self.state_file, {
                "global": self.engine.global_state,
                "strategies": {n: b.state for n, b in self.engine.strategies.items()},
                "loss_days": {n: b.loss_day for n, b in self.engine.strategies.items()
                              if b.loss_day},
                "reasons": {n: b.reason for n, b in self.engine.strategies.items()
                            if b.reason},
                "removed": dict(self.engine.removed)})
        except OSError as exc:
            self.counters["state_save_errors"] += 1
            self.log.error("trading state not saved; retrying",
                           extra={"path": str(self.state_file), "error": str(exc),
                                  "failures": self.save_failures + 1})
            if self.save_failures % SAVE_ALERT_EVERY == 0:
                self.publisher.publish(Alert(
                    severity="critical", code="state_save_failed",
                    text=f"risk could not save its trading state ({self.engine.global_state})"
                         f" to {self.state_file}: {exc}; retrying every second; a restart "
                         f"of risk now would not remember it"))
            self.save_failures += 1
            return False
        if self.save_failures:
            self.log.warning("trading state saved after failures",
                             extra={"failures": self.save_failures})
            self.publisher.publish(Alert(severity="info", code="state_saved",
                                         text=f"risk saved its trading state after "
                                              f"{self.save_failures} failed attempts"))
        self.state_dirty, self.save_failures = False, 0
        return True

    def _restore_from_execution(self) -> None:
        """Positions and open orders from execution's snapshot, not from memory; the
        instruments' reference data (the gateway's) from the bus cache."""
        try:
            state, live = snapshot.join(self.ctx, self.feed, self.config.bus.endpoint("bus-snap"),
                                        "ref.instrument.", timeout=3.0)
        except SnapshotTimeout:
            self.log.warning("no reference data snapshot yet; continuing from live data")
        else:
            for _, msg in state + live:
                self._apply(msg)
        self._join_execution("", "start")
        try:
            state, live = snapshot.join(self.ctx, self.feed, self.config.bus.endpoint("bus-snap"),
                                        "gw.state", timeout=3.0)
        except SnapshotTimeout:
            self.log.warning("no gateway state snapshot yet; continuing from live data")
        else:
            for _, msg in state + live:
                self._apply(msg)

    def _join_execution(self, strategy: str, why: str) -> bool:
        """Re-join execution's snapshot for one strategy ("" all): its mirror is replaced."""
        prefix = f"ord.update.{strategy}" if strategy else "ord.update."
        try:
            state, live = snapshot.join(self.ctx, self.feed,
                                        self.config.bus.endpoint("execution-snap"), prefix,
                                        timeout=3.0)
        except SnapshotTimeout:
            self.log.warning("no snapshot from execution; keeping the mirror",
                             extra={"strategy": strategy or "*", "reason": why})
            return False
        by_strategy: dict[str, list[Message]] = {}
        for topic, msg in state:
            by_strategy.setdefault(topic.split(".", 2)[-1], []).append(msg)
        names = set(by_strategy) | ({strategy} if strategy else set(self.engine.strategies))
        names -= set(self.engine.removed)
        for name in names:
            self.engine.resync(name, by_strategy.get(name, []))
            self.feed.gaps.broken.discard(f"ord.update.{name}")
            self.resync_wanted.pop(name, None)
        for _, msg in live:
            self._apply(msg)
        self.counters["resyncs"] += 1
        return True

    def _maybe_resync(self) -> None:
        for topic in [t for t in self.feed.gaps.broken if t.startswith("ord.update.")]:
            self.resync_wanted.setdefault(topic.split(".", 2)[-1], "sequence gap")
            self.feed.gaps.broken.discard(topic)
        for name, why in sorted(self.resync_wanted.items()):
            self.log.warning("re-joining execution's snapshot",
                             extra={"strategy": name, "reason": why})
            self._join_execution(name, why)

    # -- REQUESTS -----------------------------------------------------------------------------
    def _on_request(self, msg: Message, peer: str):
        role = self.server.peer_role  # its connection's key; None without role keys
        if role is not None:
            if isinstance(msg, Control) and role != "operator":
                text = (f"risk refused a {msg.command!r} control from a peer keyed "
                        f"{role!r} (writing {peer!r}): controls come from the operator only")
                self.refuse_peer(text, role=role, src=peer)
                raise Refused(text)
            if isinstance(msg, OrderIntent) and role != f"strategy.{msg.strategy}":
                text = (f"a peer keyed {role!r} (writing {peer!r}) may not send intents for "
                        f"strategy {msg.strategy!r}")
                self.refuse_peer(text, role=role, src=peer)
                raise Refused(text)
        if isinstance(msg, Control):
            return self._control(msg, peer)
        if not isinstance(msg, OrderIntent):
            raise Refused(f"risk does not take {type(msg).__name__}")
        if not peer.startswith("strategy.") or peer.split(".", 1)[1] != msg.strategy:
            raise Refused(f"{peer!r} may not send intents for strategy {msg.strategy!r}")
        self.counters["checks"] += 1
        limits = self.engine.limits
        if msg.strategy not in limits.per_strategy and msg.strategy not in limits.refused:
            self._subscribe_marks()  # a strategy just added: its budget before its first order
        if msg.symbol and msg.symbol not in self.watched and msg.symbol in self.engine.instruments:
            self.watched.add(msg.symbol)
            self._subscribe_marks()
        if self.groups.wants(msg):
            return self._group_leg(msg)
        decision = self.engine.check(msg)
        reply = self._decision(msg, decision.approved, decision.reason, decision.text)
        if not decision.approved:
            self.counters[f"rejected_{decision.reason}"] += 1
            self.publisher.publish(reply)
            return [reply]
        self.engine.approved(msg)
        seq = self.execution.send(msg)
        self.waiting[seq] = (self.server.current, reply, msg)
        return DEFER

    @staticmethod
    def _decision(msg: OrderIntent, approved: bool, reason: str = "",
                  text: str = "") -> RiskDecision:
        return RiskDecision(strategy=msg.strategy, client_order_id=msg.client_order_id,
                            approved=approved, reason=reason, text=text)

    def _group_leg(self, msg: OrderIntent):
        """Hold a group's legs until its transmitting leg; then decide the group as one."""
        legs = self.groups.add(msg, self.server.current, time.monotonic())
        if legs is None:
            return DEFER
        intents = [leg for leg, _ in legs]
        decision = self.engine.check_group(intents)
        if not decision.approved:
            self.counters[f"rejected_{decision.reason}"] += 1
            self._refuse_legs(legs, decision.reason, decision.text)
            return DEFER
        self.counters["groups_approved"] += 1
        for leg, token in legs:  # entry first: execution sends the exits once it has its id
            self.engine.approved(leg)
            seq = self.execution.send(leg)
            self.waiting[seq] = (token, self._decision(leg, True), leg)
        return DEFER

    def _refuse_legs(self, legs, reason: str, text: str) -> None:
        for leg, token in legs:
            reply = self._decision(leg, False, reason, f"group refused as a whole: {text}")
            self.publisher.publish(reply)
            self.server.complete(token, [reply])

    def _control(self, msg: Control, peer: str):
        """Cancel first, persist after: the state changes in memory (no intent is approved
        from here on), a kill or flatten goes to execution at once, and only then is the
        state saved; a save that fails is logged, counted, alerted and retried by the
        housekeeping, never a reason not to cancel. A kill or flatten is acknowledged once
        execution has acknowledged it (it sends its cancels before it acknowledges)."""
        self.log.warning("control", extra={"command": msg.command, "target": msg.target,
                                           "peer": peer, "reason": msg.reason})
        if msg.command == "remove":
            return self._remove(msg)
        if msg.command not in CONTROL_STATES and msg.command != "flatten":
            raise Refused(f"risk does not take a {msg.command!r} control")
        state = CONTROL_STATES.get(msg.command)
        if msg.command == "flatten":  # flattening is the kill switch (or a pause) and more
            state = PAUSED if msg.target else HALTED
        if state is not None:
            per_strategy = msg.command in ("pause", "resume", "flatten") and msg.target
            self.engine.set_state(msg.target if per_strategy else "", state,
                                  f"{msg.command} by the operator ({msg.reason})"
                                  if per_strategy and state != ACTIVE else "")
            self._publish_states([msg.target] if per_strategy else None)
        seq = None
        if msg.command in ("kill", "flatten"):
            # each strategy's kill mode from its TOML (on_kill): execution applies it
            on_kill = dict(self.engine.limits.on_kill) if msg.command == "kill" else {}
            seq = self.execution.send(Control(command=msg.command, target=msg.target,
                                              reason=msg.reason, on_kill=on_kill))
            self.counters[f"control_{msg.command}"] += 1
        self.publisher.publish(Alert(severity="critical" if msg.command in ("kill", "flatten")
                                     and not msg.target else "info",
                                     code=f"control_{msg.command}",
                                     text=f"{msg.command} {msg.target or 'all'} by {peer}"))
        if state is not None:
            self.state_dirty = True
            self._save_trading_state()
        if seq is None:
            return []
        self.controls_waiting[seq] = self.server.current
        return DEFER

    def _remove(self, msg: Control):
        """``ibfleet strategy remove NAME`` (the CLI stopped NAME's process first): execution
        hands NAME's orders and positions to the ``unowned`` book (journalled); once it has
        acknowledged, risk forgets NAME (its book, limits and state: no longer listed, its
        intents refused) and acknowledges the operator. Execution refusing: nothing is
        forgotten, the operator gets the reason."""
        name = msg.target
        if not name or name in RESERVED_OWNERS:
            raise Refused(f"remove needs a strategy's name, not {name!r}")
        seq = self.execution.send(Control(command="remove", target=name, reason=msg.reason))
        self.counters["control_remove"] += 1
        self.controls_waiting[seq] = self.server.current
        self.removals[seq] = name
        return DEFER

    def _forget(self, name: str, when: float) -> None:
        """Risk's part of a removal: nothing of ``name`` is kept but the fact it was removed
        (saved with the trading states, so a restart of risk does not list it again)."""
        self.engine.forget(name, UNOWNED, when)
        self.heard.discard(name)
        self.published_states.pop(name, None)
        self.resync_wanted.pop(name, None)

    def _on_requests(self) -> None:
        """Strategies' requests: those approved go to execution as one frame per batch."""
        with self.execution.corked():
            self.server.process_ready()

    def _on_execution_reply(self) -> None:
        """An intent execution acknowledged is in its hands: now acknowledge the strategy.
        A batch of acks becomes one reply frame per strategy and one decision frame per
        topic (fewer sends; the order within each is kept)."""
        decisions: dict[str, list[RiskDecision]] = {}
        with self.server.batched():
            for msg in self.execution.poll():
                if not isinstance(msg, Ack) or msg.ref_src != self.source:
                    continue
                control = self.controls_waiting.pop(msg.ref_seq, None)
                removed = self.removals.pop(msg.ref_seq, None)
                if removed is not None and msg.ok:
                    self._forget(removed, time.time())
                    self._save_trading_state()
                    self.log.warning("strategy removed: forgotten; its book is unowned",
                                     extra={"strategy": removed})
                    self.publisher.publish(Alert(
                        severity="info", code="strategy_removed",
                        text=f"strategy {removed} removed; its orders and positions, if "
                             f"any, are in the {UNOWNED} book"))
                if control is not None:
                    self.server.complete(control, ok=msg.ok,
                                         error="" if msg.ok else f"execution: {msg.error}")
                    continue
                waiting = self.waiting.pop(msg.ref_seq, None)
                if waiting is None:
                    continue
                token, reply, intent = waiting
                if msg.ok:
                    self.counters["approved"] += 1
                else:
                    reply.approved, reply.reason, reply.text = (False, "execution_refused",
                                                                msg.error)
                    self.counters["rejected_execution_refused"] += 1
                    self.engine.execution_refused(intent)
                decisions.setdefault(reply.topic(), []).append(reply)
                self.server.complete(token, [reply])
            for topic, batch in decisions.items():
                self.publisher.publish_batch(batch, topic)
        self.execution.nacked.clear()

    # -- BUS ----------------------------------------------------------------------------------
    def _on_feed(self) -> None:
        for msg in self.feed.drain(1000):
            self._apply(msg)
        self._maybe_resync()

    def _apply(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            self._strategy_heartbeat(msg)
        elif isinstance(msg, (Tick, QuoteTick)):
            self.engine.on_mark(msg.symbol, msg.bid, msg.ask)
        elif isinstance(msg, FROM_EXECUTION):
            if msg.strategy in self.engine.removed:
                return  # its last words (a flat position): its book now is the unowned one
            if not self.engine.on_execution_message(msg):
                self.counters["digest_mismatches"] += 1
                self.resync_wanted.setdefault(msg.strategy, "digest differs from the mirror")
        elif isinstance(msg, GatewayState):
            self.engine.gateway_state = msg.state
            self.broker_clock.on_gateway_state(msg)
        elif isinstance(msg, Instrument):
            if self.engine.instruments.apply(msg):
                self.counters["instruments"] = len(self.engine.instruments.symbols())

    # -- STRATEGIES' STATES -------------------------------------------------------------------
    def _known_strategies(self) -> set[str]:
        return (set(self.engine.strategies) | set(self.engine.limits.per_strategy)
                | self.heard) - set(self.engine.removed) - RESERVED_OWNERS

    def _trading_state(self, name: str) -> TradingState:
        state, reason = self.engine.effective_state(name)
        return TradingState(strategy=name, state=state, reason=reason)

    def _publish_states(self, names: list[str] | None = None, force: bool = False) -> None:
        """Each strategy's state on ``ctl.state.NAME``: those that changed (of ``names``,
        None: every strategy risk knows), or all of them (``force``: the periodic repeat)."""
        for name in sorted(self._known_strategies() if names is None else names):
            msg = self._trading_state(name)
            key = (msg.state, msg.reason)
            if not force and self.published_states.get(name) == key:
                continue
            if self.published_states.get(name, (ACTIVE, ""))[0] != msg.state:
                self.log.warning("strategy trading state", extra={
                    "strategy": name, "state": msg.state, "detail": msg.reason})
            self.published_states[name] = key
            self.publisher.publish(msg)
            self.counters["states_published"] += 1

    def _strategy_heartbeat(self, hb: Heartbeat) -> None:
        """A strategy's heartbeat: risk learns it runs (it gets its state), and counts its
        callback errors; too many in the window halt it as ``errored``."""
        head, _, name = hb.src.partition(".")
        if head != "strategy" or not name or name in self.engine.removed:
            return
        if name not in self.heard:
            self.heard.add(name)
            self._publish_states([name], force=True)
        reason = self.engine.note_errors(name, int(hb.counters.get("callback_errors", 0)))
        if reason is None:
            return
        self.counters["strategies_errored"] += 1
        self.log.error("strategy halted: errored", extra={"strategy": name, "detail": reason})
        self.publisher.publish(Alert(severity="critical", code="strategy_errored",
                                     text=f"{name} halted by risk as errored: {reason}; "
                                          f"fix it, then `ibfleet unpause {name}`"))
        self._publish_states([name])
        self._save_trading_state()

    def _housekeeping(self) -> None:
        self.execution.resend_stale()
        if self.state_dirty:
            self._save_trading_state()
        for name in list(self.engine.strategies):
            self.engine.evaluate_loss(name)
        for strategy, text in self.engine.breaches:
            self.log.error("daily loss limit breached", extra={"strategy": strategy})
            self.publisher.publish(Alert(severity="critical", code="daily_loss",
                                         text=f"{strategy}: {text}"))
            self._save_trading_state()
            self._publish_states([strategy])
            if self.engine.limits.for_strategy(strategy).flatten_on_loss:
                self.execution.send(Control(command="flatten", target=strategy,
                                            reason="daily loss limit"))
        self.engine.breaches.clear()
        for strategy, text in self.engine.notices:
            self.log.warning("trading state", extra={"strategy": strategy, "detail": text})
            self.publisher.publish(Alert(severity="info", code="daily_loss_reset",
                                         text=f"{strategy}: {text}"))
            self._save_trading_state()
            self._publish_states([strategy])
        self.engine.notices.clear()
        for legs in self.groups.expired(time.monotonic()):
            self.counters["rejected_incomplete_group"] += 1
            self._refuse_legs(legs, "incomplete_group",
                              f"no transmitting leg within {GROUP_TIMEOUT_S:g}s")
        self._maybe_resync()
        for name in self.engine.strategies:
            realized, unrealized = self.engine.pnl(name)
            book = self.engine.book(name)
            position = sum(abs(p.quantity) for p in book.mirror.positions.values())
            self.publisher.publish(PnL(strategy=name, realized=realized, unrealized=unrealized,
                                       daily=realized + unrealized, position=position))
        self.counters["global_halted"] = int(self.engine.global_state == HALTED)
        self.counters["reducing"] = sum(b.state == REDUCING
                                        for b in self.engine.strategies.values())
        self.counters["waiting_on_execution"] = len(self.waiting)

    def _snapshot(self, prefix: str):
        items = []
        for name, book in self.engine.strategies.items():
            realized, unrealized = self.engine.pnl(name)
            msg = PnL(strategy=name, realized=realized, unrealized=unrealized,
                      daily=realized + unrealized,
                      position=sum(abs(p.quantity) for p in book.mirror.positions.values()))
            msg.src, msg.ts = self.source, time.time_ns()
            items.append((f"risk.{name}.{book.state}", msg))
            for position in book.mirror.positions.values():  # the mirror, for audits
                items.append((f"risk.pos.{name}", position))
            for order in book.mirror.orders.values():  # its working orders, for audits
                items.append((f"risk.ord.{name}", order))
        msg = Alert(severity="info", code="global_state", text=self.engine.global_state)
        msg.src, msg.ts = self.source, time.time_ns()
        items.append(("risk.global", msg))
        # each strategy's TradingState, as a starting strategy joins it (``ctl.state.NAME``:
        # also a strategy risk has not heard of yet, which may be under the kill switch)
        names = self._known_strategies()
        asked = prefix[len("ctl.state."):] if prefix.startswith("ctl.state.") else ""
        if asked:
            names.add(asked)
        last_seq = {}
        for name in sorted(names):
            msg = self._trading_state(name)
            topic = msg.topic()
            msg.src, msg.ts = self.source, time.time_ns()
            msg.tseq = self.publisher.stamper.topic_seq.get(topic, 0)
            items.append((topic, msg))
            if msg.tseq:
                last_seq[f"{self.source}|{topic}"] = msg.tseq
        return items, last_seq


def _listing(strategies_dir: Path | None) -> dict[str, float]:
    if strategies_dir is None:
        return {}
    return {p.name: p.stat().st_mtime for p in Path(strategies_dir).glob("*.toml")}


def _symbols_by_strategy(strategies_dir: Path | None) -> dict[str, frozenset[str]]:
    """Each strategy's configured ``symbols`` (by its declared name): what it may trade."""
    out: dict[str, frozenset[str]] = {}
    if strategies_dir is None:
        return out
    for path in sorted(Path(strategies_dir).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue  # LimitBook reports an unreadable strategy file
        name = data.get("name") or path.stem
        symbols = data.get("symbols", [])
        if isinstance(name, str) and isinstance(symbols, list):
            out[name] = frozenset(s for s in symbols if isinstance(s, str))
    return out


def _strategy_symbols(strategies_dir: Path | None) -> list[str]:
    if strategies_dir is None:
        return []
    symbols: list[str] = []
    for path in sorted(Path(strategies_dir).glob("*.toml")):
        try:
            symbols += list(tomllib.loads(path.read_text()).get("symbols", []))
        except (OSError, tomllib.TOMLDecodeError):
            pass  # LimitBook reports an unreadable strategy file
    return symbols


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet risk", description="Run the risk service.")
    add_common_args(parser)
    parser.add_argument("--strategies-dir", help="directory of strategy TOML files whose "
                                                 "[risk] tables set per-strategy limits")
    args = parser.parse_args(argv)
    config = load_config(parser, args)
    try:
        service = RiskService(config, Path(args.strategies_dir) if args.strategies_dir else None)
    except ConfigError as exc:
        parser.exit(2, f"ibfleet risk: {exc}\n")
    return service.run()
