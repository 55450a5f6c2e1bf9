"""The execution process: approved intents in (from risk only), order commands out (to the
gateway only), order updates and snapshots for strategies and risk.

Sockets:
- ``execution`` ROUTER (reliable): OrderIntent and Control from ``risk.*``; anyone else is
  refused with a clear error.
- ``gateway`` DEALER (reliable): OrderCommand to the gateway bridge.
- bus SUB: the gateway's reports: ``ord.status``, ``ord.open``, ``ord.exec``, ``ord.comm``,
  ``ord.completed``, ``ord.recon``, ``gw.error`` (order errors), ``acct.pos``, ``gw.state``.
- PUB ``ord.update.STRATEGY``: ``OrderUpdate`` and ``StrategyPosition`` on every change, and a
  ``StrategyDigest`` per strategy every heartbeat (mirrors re-join the snapshot on a gap or a
  difference).
- ``execution-snap`` ROUTER: open orders, positions and a digest per strategy (topic
  ``ord.update.STRATEGY``), for strategies and risk that (re)start or lost a message.
"""
from __future__ import annotations

import argparse
import errno
import itertools
import os
import time

from proto.schema import (Alert, Commission, CompletedOrder, Control, Execution, GatewayError,
                          Instrument,
                          GatewayState, Message, OpenOrder, OrderCommand, OrderIntent,
                          OrderStatus, Position, ReconcileEnd)
from services.bus.reliable import Refused, ReliableClient, ReliableServer
from services.bus import snapshot
from services.bus.snapshot import SnapshotServer
from services.bus.subscriber import Subscriber
from services.execution.engine import ExecutionEngine, IntentRefused
from services.runtime.broker_clock import BrokerClock
from services.model.portfolio import Portfolio
from services.model.trading_day import TradingDay
from services.runtime.instruments import Instruments
from services.runtime.cli import add_common_args, load_config
from services.runtime.config import FleetConfig
from services.runtime.journal import Journal
from services.runtime.service import Service

EVENT_TOPICS = ("ord.status", "ord.open", "ord.exec", "ord.comm", "ord.completed", "ord.recon",
                "gw.state", "gw.error", "acct.pos", "ref.instrument.")
RECONCILE_MIN_INTERVAL = 2.0  # s between reconciliations execution asks for
COMPACT_AFTER_RECORDS = 20_000  # journal records on top of the last snapshot
JOURNAL_ALERT_EVERY = 30.0  # s between repeated critical alerts while the journal cannot write
MAX_DEFERRED = 200_000  # gateway reports kept while the journal cannot write (then: reconcile)


def journal_reason(exc: OSError) -> str:
    """``ENOSPC (No space left on device): ...`` for a refusal or an alert."""
    code = exc.errno or errno.EIO
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)}): {exc}"


class _Reply:
    """The gateway's synchronous reply to a place (not a bus event: ``on_placed``)."""
    __slots__ = ("status",)

    def __init__(self, status: OrderStatus) -> None:
        self.status = status


class ExecutionService(Service):
    def __init__(self, config: FleetConfig, cancel_on_reconnect: bool = False,
                 ack_timeout: float = 5.0) -> None:
        super().__init__("execution", config)
        self.ack_timeout = ack_timeout
        self.last_query = 0.0
        state_dir = config.service_state_dir("execution")
        # group commit: records are made durable once per batch, before anything acts on them
        self.journal = Journal(state_dir / "journal.bin", fsync=False)
        self.outbox: list[OrderCommand] = []
        self.cancel_on_reconnect = cancel_on_reconnect
        #: why the journal cannot write ("" while it can); new intents are refused meanwhile
        self.journal_error = ""
        self._journal_alerted = 0.0
        #: gateway reports that arrived while the journal could not write, in order: applied
        #: once it can (IB does not tell a fill twice: the gateway publishes each execId once)
        self.deferred: list[Message] = []
        #: reports applied since the last good sync: kept again if that sync fails
        self._batch: list[Message] = []
        #: the gateway's reference data (multipliers for PnL), from the bus cache before the
        #: journal is replayed, then live; kept across rebuilds of the engine
        self.instruments = Instruments(self.config.raw.get("instruments"))
        self._join_instruments()
        self.broker_clock = BrokerClock()  # IB's clock: the trading day of the day figures
        self.engine = self._new_engine()
        bus = config.bus
        self.server = ReliableServer(self.ctx, bus.endpoint("execution"), self.source,
                                     self._on_request)
        self.gateway = ReliableClient(self.ctx, bus.endpoint("gateway"), self.source,
                                      resend_after=ack_timeout)
        self.events = self.track(Subscriber(self.ctx, bus.endpoint("bus-out"), EVENT_TOPICS))
        self.snapshots = SnapshotServer(self.ctx, bus.endpoint("execution-snap"), self.source,
                                        self._snapshot)
        self.server.on_commit = self._commit
        self.on_socket(self.server.socket, self.server.process_ready)
        self.on_socket(self.gateway.socket, self._on_gateway_reply)
        self.on_socket(self.events.socket, self._on_event)
        self.on_socket(self.snapshots.socket, self.snapshots.process_ready)
        self.every(0.5, self._housekeeping)
        # fills the last run booked but died before telling: told now, before a compaction
        self._publish_updates()
        if self.journal.maybe_compact(self.engine.compaction, COMPACT_AFTER_RECORDS):
            self.log.info("journal compacted", extra={"records": self.journal.file_records})
        self.log.info("journal restored", extra={"orders": len(self.engine.orders),
                                                 "fills": len(self.engine.portfolio.booked_fills()),
                                                 "fills_told_again": self.engine.republished,
                                                 "torn_bytes": self.journal.torn_bytes})

    def _join_instruments(self) -> None:
        feed = Subscriber(self.ctx, self.config.bus.endpoint("bus-out"), ["ref.instrument."])
        try:
            state, live = snapshot.join(self.ctx, feed, self.config.bus.endpoint("bus-snap"),
                                        "ref.instrument.", timeout=3.0)
        except snapshot.SnapshotTimeout:
            self.log.warning("no reference data snapshot; multipliers from live data")
            return
        finally:
            feed.close()
        for _, msg in state + live:
            if isinstance(msg, Instrument):
                self.instruments.apply(msg)

    def _new_engine(self) -> ExecutionEngine:
        portfolio = Portfolio(self.instruments, TradingDay.from_config(self.config.raw))
        return ExecutionEngine(self.journal, self.cancel_on_reconnect, portfolio,
                               clock=self.broker_clock.now_ns)

    # -- JOURNAL FAILURES (fail closed, resume when the disk works again) ---------------------
    def _journal_failed(self, exc: OSError, where: str) -> str:
        """A journal write or sync failed: what is in memory may be ahead of the journal, so
        the engine is rebuilt from the journal (nothing that was not journalled acts), IB's
        view is asked for again, a critical alert goes out. Returns the reason."""
        reason = journal_reason(exc)
        self.counters["journal_failures"] += 1
        first = not self.journal_error
        self.journal_error = reason
        self.log.error("journal cannot write: state rebuilt from the journal, new orders "
                       "refused until it can", extra={"where": where, "error": reason})
        now = time.monotonic()
        if first or now - self._journal_alerted > JOURNAL_ALERT_EVERY:
            self._journal_alerted = now
            self.counters["alert_journal_write_failed"] += 1
            self.publisher.publish(Alert(
                severity="critical", code="journal_write_failed",
                text=f"execution journal cannot write ({where}): {reason}; new orders are "
                     f"refused until it can"))
        self._rebuild_engine()
        return reason

    def _rebuild_engine(self) -> None:
        old = self.engine
        try:
            engine = self._new_engine()
        except OSError as exc:  # cannot even read it back: keep what we have, fail closed
            self.counters["journal_rebuild_failures"] += 1
            self.log.error("journal unreadable after a failed write", extra={"error": str(exc)})
            return
        engine.gateway_state, engine.client_id = old.gateway_state, old.client_id
        engine._was_synchronised = old._was_synchronised
        engine.broker_positions = dict(old.broker_positions)
        # a flatten asked for and not yet done is not in the journal: it stays asked for
        engine.flatten_wanted = dict(getattr(old, "flatten_wanted", {}))
        # what IB said that could not be journalled: have it said again
        engine.reconcile_wanted = "execution journal failed a write; state rebuilt"
        self.engine = engine
        self.counters["engine_rebuilds"] += 1

    def _probe_journal(self) -> None:
        """While the journal cannot write: try one record; if it is durable, trading resumes."""
        try:
            self.journal.append_record({"probe": time.time_ns()})
            self.journal.sync()
        except OSError as exc:
            self.journal_error = journal_reason(exc)
            self.counters["journal_probe_failures"] += 1
            now = time.monotonic()
            if now - self._journal_alerted > JOURNAL_ALERT_EVERY:
                self._journal_alerted = now
                self.publisher.publish(Alert(severity="critical", code="journal_write_failed",
                                             text=f"execution journal still cannot write: "
                                                  f"{self.journal_error}"))
            return
        self.log.warning("journal writes again: trading resumes",
                         extra={"was": self.journal_error, "deferred": len(self.deferred)})
        self.journal_error = ""
        self.counters["journal_recoveries"] += 1
        deferred, self.deferred = self.deferred, []
        for msg in deferred:
            self._apply(self._report, msg)
        self._commit_quietly()
        self.engine.reconcile_wanted = self.engine.reconcile_wanted or "execution journal recovered"
        self.publisher.publish(Alert(severity="info", code="journal_recovered",
                                     text="execution journal writes again; orders accepted"))

    # -- REQUESTS FROM RISK -------------------------------------------------------------------
    def _on_request(self, msg: Message, peer: str) -> list[Message]:
        role = self.server.peer_role  # its connection's key; None without role keys
        if role is not None and not (role == "risk" or (
                role == "operator" and isinstance(msg, Control) and msg.command == "kill")):
            text = (f"execution refused {type(msg).__name__} from a peer keyed {role!r} "
                    f"(writing {peer!r}): orders come from risk only")
            self.refuse_peer(text, role=role, src=peer)
            raise Refused(text)
        if role == "operator":
            peer = f"risk.operator:{peer}"  # the operator's kill is as good as risk's
        if not peer.startswith("risk."):
            self.counters["refused"] += 1
            self.log.error("refused a request not from risk", extra={"peer": peer})
            raise Refused(f"execution takes orders only from risk, not from {peer!r}")
        if self.journal_error and isinstance(msg, OrderIntent):
            # until a probe write succeeds and the reports that waited are applied
            self.counters["intents_refused_journal"] += 1
            raise Refused(f"journal cannot write: {self.journal_error}")
        try:
            return self._handle_request(msg)
        except OSError as exc:
            self.counters["intents_refused_journal"] += 1
            reason = self._journal_failed(exc, f"{type(msg).__name__}")
            raise Refused(f"journal cannot write: {reason}") from None

    def _handle_request(self, msg: Message) -> list[Message]:
        if isinstance(msg, OrderIntent):
            self.counters["intents"] += 1
            try:
                self._send(self.engine.on_intent(msg))
            except IntentRefused as exc:
                self.counters["intents_refused"] += 1
                self.log.warning("intent refused", extra={
                    "client_order_id": msg.client_order_id, "action": msg.action,
                    "strategy": msg.strategy, "error": str(exc)})
                raise Refused(str(exc)) from None
        elif isinstance(msg, Control) and msg.command in ("kill", "flatten"):
            self._kill(msg)
        elif isinstance(msg, Control) and msg.command == "remove":
            self._remove(msg)
        else:
            raise ValueError(f"execution does not handle {type(msg).__name__}")
        return []

    # -- THE KILL SWITCH ------------------------------------------------------------------------
    def _kill(self, msg: Control) -> None:
        """Cancel first, persist after: the cancels go to the gateway before any durable
        write (a journal that cannot be written is alerted, never a reason not to cancel).
        A ``kill`` applies each owner's mode (``msg.on_kill``, from risk: ``keep_exits`` keeps
        protective exits working, ``cancel_all``, ``flatten``; ``engine.kill``); then, for the
        whole account and only if no exit was kept, IB's global cancel as the backstop for
        orders execution does not know (another client's, TWS's, ghosts): with exits kept,
        ``ibfleet kill`` checks the broker's working orders against them and global-cancels
        if anything else still works. ``flatten`` cancels everything and closes the positions
        at market once the target's orders are done (``engine.flatten_due``)."""
        modes = dict(msg.on_kill) if msg.command == "kill" else None
        commands = self.engine.kill(msg.target, modes)
        for cmd in commands:
            self.gateway.send(cmd)
            self.counters["commands"] += 1
        kept = list(self.engine.kept_exits)
        global_cancel = not msg.target and not kept
        if global_cancel:
            self.gateway.send(OrderCommand(command="global_cancel", client_order_id=""))
            self.counters["global_cancels"] += 1
        self.counters[f"control_{msg.command}"] += 1
        self.counters["kill_exits_kept"] = len(kept)
        self.log.warning("kill switch: cancels sent", extra={
            "command": msg.command, "target": msg.target or "*", "cancels": len(commands),
            "global_cancel": global_cancel, "exits_kept": kept})
        if kept:
            self.publisher.publish(Alert(
                severity="warning", code="kill_exits_kept",
                text=f"kill: {len(kept)} protective exit(s) kept working (on_kill = "
                     f"keep_exits): {', '.join(kept)}"))
        if msg.command == "flatten":
            self.engine.want_flatten(msg.target)
        self._journal_sync_quietly("kill")

    def _remove(self, msg: Control) -> None:
        """``ibfleet strategy remove NAME`` (through risk): NAME's orders and positions become
        the ``unowned`` book's (``engine.reassign``, journalled and made durable before the
        acknowledgement); an OSError refuses the control (``_on_request``)."""
        try:
            handed = self.engine.reassign(msg.target)
        except IntentRefused as exc:
            raise Refused(str(exc)) from None
        self.journal.sync()
        self.counters["strategies_removed"] += 1
        self.log.warning("strategy removed: its book handed to unowned",
                         extra={"strategy": msg.target, "handed": handed})

    def _journal_sync_quietly(self, what: str) -> bool:
        try:
            self.journal.sync()
        except OSError as exc:
            self.counters["journal_errors"] += 1
            self.log.error("journal not durable", extra={"during": what, "error": str(exc)})
            self.publisher.publish(Alert(severity="critical", code="journal_failed",
                                         text=f"execution could not make its journal durable "
                                              f"during {what}: {exc}"))
            return False
        return True

    def _flatten_if_due(self) -> None:
        try:
            commands = self.engine.flatten_due()
        except OSError as exc:  # the journal: the market orders are not sent unjournalled
            self.counters["journal_errors"] += 1
            self.log.error("flatten: could not journal the closing orders",
                           extra={"error": str(exc)})
            self.publisher.publish(Alert(severity="critical", code="flatten_failed",
                                         text=f"flatten: could not journal the closing "
                                              f"orders: {exc}"))
            return
        if commands:
            self.counters["flatten_orders"] += len(commands)
            self.log.warning("flatten: closing positions at market",
                             extra={"orders": [c.client_order_id for c in commands]})
            self._send(commands)
            self._commit_quietly()

    # -- GATEWAY ------------------------------------------------------------------------------
    def _send(self, commands: list[OrderCommand]) -> None:
        self.outbox.extend(commands)

    def _commit(self, must_sync: bool = True) -> None:
        """Journal durable first (one fsync for the batch), then commands and updates out.
        If the sync fails, nothing of the batch goes out: the records appended since the last
        good sync are cut, the engine is rebuilt from what is durable, and the batch's
        acknowledgements become refusals (``Refused`` for the reliable server)."""
        if not (must_sync or self.outbox or self.engine.frames or self.engine.alerts):
            # nothing acts on this batch's records (e.g. only IB ids learned, which the
            # gateway gives again for the same client order id): they reach the disk with the
            # next sync that something waits for, or the housekeeping's, not one of their own
            return
        try:
            self.journal.sync()
        except OSError as exc:
            self.outbox.clear()
            # the batch's records are cut: its reports wait for the journal (in order)
            self.deferred[:0], self._batch = self._batch, []
            reason = self._journal_failed(exc, "sync")
            raise Refused(f"journal cannot write: {reason}") from None
        self._batch.clear()
        with self.gateway.corked():  # the batch's commands in one frame
            for cmd in self.outbox:
                self.gateway.send(cmd)
        self.counters["commands"] += len(self.outbox)
        self.outbox.clear()
        self._publish_updates()

    def _apply(self, fn, msg: Message) -> None:
        """One gateway report into the engine. While the journal cannot write, reports wait
        (in order) for it; a journal failure rebuilds the engine from the journal and keeps
        the report for then: nothing IB said is lost, nothing unjournalled acts."""
        if self.journal_error:
            self._defer(msg)
            return
        try:
            result = fn(msg)
        except OSError as exc:
            self._journal_failed(exc, type(msg).__name__)
            self._defer(msg)
            return
        self._batch.append(msg)
        if result:
            self._send(result)

    def _defer(self, msg: Message) -> None:
        if len(self.deferred) >= MAX_DEFERRED:  # IB's view is asked for again instead
            self.counters["deferred_dropped"] += 1
            self.engine.reconcile_wanted = "reports dropped while the journal could not write"
            return
        self.deferred.append(msg)
        self.counters["reports_deferred"] += 1

    def _report(self, msg: Message) -> list[OrderCommand] | None:
        """A report of either kind: the gateway's reply (an OrderStatus mapping, or the error
        a refused command stands for) or an event from the bus."""
        if isinstance(msg, _Reply):
            return self.engine.on_placed(msg.status)
        return self._event(msg)

    def _commit_quietly(self, must_sync: bool = False) -> None:
        """``_commit`` outside the reliable server (reports, timers): no acknowledgement
        waits on it, so it syncs only when something goes out (or ``must_sync``); a failure
        is handled (counted, alerted, engine rebuilt) and goes no further."""
        try:
            self._commit(must_sync)
        except Refused:
            pass

    def _on_gateway_reply(self) -> None:
        for msg in self.gateway.poll():
            if isinstance(msg, OrderStatus):
                self._apply(self._report, _Reply(msg))
        for command, ack in self.gateway.nacked:
            self.counters["gateway_nacks"] += 1
            self.log.error("gateway refused a command",
                           extra={"client_order_id": command.client_order_id,
                                  "error": ack.error})
            if command.command in ("place", "modify", "cancel"):
                # the gateway refused it before IB saw it: the same as IB refusing it
                error = GatewayError(
                    code=201 if command.command == "place" else 10147, text=ack.error,
                    req_id=command.ib_order_id, scope="order", ref=command.client_order_id)
                self._apply(self._report, error)
        self.gateway.nacked.clear()
        self._commit_quietly()

    def _on_event(self) -> None:
        for msg in self.events.drain(500):
            if isinstance(msg, Instrument):  # reference data: mirrored, never journaled
                self.instruments.apply(msg)
                continue
            self._apply(self._report, msg)
        self._commit_quietly()

    def _event(self, msg: Message) -> list[OrderCommand] | None:
        engine = self.engine
        if isinstance(msg, OrderStatus):
            return engine.on_status(msg)
        if isinstance(msg, OpenOrder):
            return engine.on_open_order(msg)
        if isinstance(msg, Execution):
            return engine.on_execution(msg)
        if isinstance(msg, Commission):
            engine.on_commission(msg)
        elif isinstance(msg, GatewayError):
            if msg.scope == "order":
                return engine.on_order_error(msg)
        elif isinstance(msg, CompletedOrder):
            return engine.on_completed(msg)
        elif isinstance(msg, Position):
            engine.on_broker_position(msg)
        elif isinstance(msg, ReconcileEnd):
            self.counters["reconciliations"] += 1
            return engine.on_reconcile_end(msg)
        elif isinstance(msg, GatewayState):
            self.broker_clock.on_gateway_state(msg)
            return engine.on_gateway_state(msg)
        return None

    def _publish_updates(self) -> None:
        # one frame per run of the same topic: the bus order is kept, the sends are fewer
        for topic, run in itertools.groupby(self.engine.frames, key=lambda frame: frame[0]):
            self.publisher.publish_batch([m for _, msgs in run for m in msgs], topic)
        self.engine.frames.clear()
        mark = self.engine.published_mark()
        if mark is not None:
            try:  # durable with the next sync; lost, it only means those fills are told again
                self.journal.append_record(mark)
            except OSError:
                self.counters["published_mark_failures"] += 1
        for severity, code, text in self.engine.alerts:
            self.counters[f"alert_{code}"] += 1
            self.log.warning("alert", extra={"code": code, "text": text})
            self.publisher.publish(Alert(severity=severity, code=code, text=text))
        self.engine.alerts.clear()

    # -- SNAPSHOT, HOUSEKEEPING ---------------------------------------------------------------
    def _snapshot(self, prefix: str):
        stamped = []
        for topic, msg in self.engine.snapshot():
            msg.src, msg.ts = self.source, time.time_ns()
            stamped.append((topic, msg))
        last = {f"{self.source}|{t}": s for t, s in self.publisher.stamper.topic_seq.items()}
        return stamped, last

    def heartbeat(self) -> None:
        """Each heartbeat also carries a digest per strategy on its order topic: a mirror
        that lost the last update sees the gap (or the difference) within one interval."""
        for owner in sorted(self.engine.owners()):
            self.publisher.publish(self.engine.digest(owner))
        for kind, count in self.engine.errors.items():
            self.counters[f"error_{kind}"] = count
        for key, value in self.journal.stats().items():
            self.counters[f"journal_{key}"] = value
        super().heartbeat()

    def _housekeeping(self) -> None:
        self.gateway.resend_stale()
        if self.journal.dirty and not self.journal_error:
            self._commit_quietly(must_sync=True)  # records no sync has covered yet
        if self.engine.flatten_wanted:
            self._flatten_if_due()
        if self.journal_error:
            self._probe_journal()
        try:
            if not self.outbox and not self.journal_error and self.journal.maybe_compact(
                    self.engine.compaction, COMPACT_AFTER_RECORDS):
                self.counters["journal_compactions"] += 1
        except OSError as exc:  # the old journal is untouched (or reopened on the next write)
            self.counters["journal_compaction_failures"] += 1
            self.log.error("journal compaction failed", extra={"error": journal_reason(exc)})
        now = time.monotonic()
        stuck = self.engine.unconfirmed(now, self.ack_timeout)
        if stuck and self.engine.gateway_state == "synchronised" \
                and now - self.last_query > self.ack_timeout:
            self.last_query = now
            self.counters["status_queries"] += 1
            self.log.warning("orders unconfirmed by IB; querying",
                             extra={"client_order_ids": [o.client_order_id for o in stuck]})
            self.gateway.send(OrderCommand(command="reconcile", client_order_id=""))
        if self.engine.reconcile_wanted and not self.journal_error \
                and self.engine.gateway_state == "synchronised" \
                and now - self.last_query > RECONCILE_MIN_INTERVAL:
            self.last_query = now
            self.counters["reconciles_asked"] += 1
            self.log.info("asking the gateway to reconcile",
                          extra={"reason": self.engine.reconcile_wanted})
            self.engine.reconcile_wanted = ""
            self.gateway.send(OrderCommand(command="reconcile", client_order_id=""))
        if self.engine.gateway_state == "synchronised":
            repeats = self.engine.stuck_cancels(now, 2 * self.ack_timeout)
            if repeats:
                self.counters["cancels_repeated"] += len(repeats)
                self._send(repeats)
                self._commit_quietly()
        self.counters["open_orders"] = len(self.engine.open_orders())
        self.counters["reports_deferred_now"] = len(self.deferred)
        self.counters["pending_commands"] = len(self.gateway.pending)
        if self.events.gaps.counters.gaps > self.counters.get("gaps_alerted", 0):
            self.counters["gaps_alerted"] = self.events.gaps.counters.gaps
            # events lost on the bus: ask the gateway to replay IB's view
            self.gateway.send(OrderCommand(command="reconcile", client_order_id=""))
            self.publisher.publish(Alert(severity="warning", code="event_gap",
                                         text="execution missed gateway events; reconciling"))

    def on_stop(self) -> None:
        self._commit_quietly()
        try:
            self.journal.close()
        except OSError as exc:
            self.log.error("journal close failed", extra={"error": journal_reason(exc)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet execution",
                                     description="Run the execution service.")
    add_common_args(parser)
    parser.add_argument("--cancel-on-reconnect", action="store_true",
                        help="cancel every open order when the gateway comes back")
    args = parser.parse_args(argv)
    return ExecutionService(load_config(parser, args), args.cancel_on_reconnect).run()
