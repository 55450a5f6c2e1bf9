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
import time

from proto.schema import (Alert, Commission, CompletedOrder, Control, Execution, GatewayError,
                          GatewayState, Message, OpenOrder, OrderCommand, OrderIntent,
                          OrderStatus, Position, ReconcileEnd)
from services.bus.reliable import Refused, ReliableClient, ReliableServer
from services.bus.snapshot import SnapshotServer
from services.bus.subscriber import Subscriber
from services.execution.engine import ExecutionEngine, IntentRefused
from services.model.portfolio import Portfolio
from services.model.trading_day import TradingDay
from services.runtime.instruments import Instruments
from services.runtime.cli import add_common_args, load_config
from services.runtime.config import FleetConfig
from services.runtime.journal import Journal
from services.runtime.service import Service

EVENT_TOPICS = ("ord.status", "ord.open", "ord.exec", "ord.comm", "ord.completed", "ord.recon",
                "gw.state", "gw.error", "acct.pos")
RECONCILE_MIN_INTERVAL = 2.0  # s between reconciliations execution asks for
COMPACT_AFTER_RECORDS = 20_000  # journal records on top of the last snapshot


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
        portfolio = Portfolio(Instruments(config.raw.get("instruments")),
                              TradingDay.from_config(config.raw))
        self.engine = ExecutionEngine(self.journal, cancel_on_reconnect, portfolio)
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
        if self.journal.maybe_compact(self.engine.compaction, COMPACT_AFTER_RECORDS):
            self.log.info("journal compacted", extra={"records": self.journal.file_records})
        self.log.info("journal restored", extra={"orders": len(self.engine.orders),
                                                 "fills": len(self.engine.portfolio.booked_fills()),
                                                 "torn_bytes": self.journal.torn_bytes})

    # -- REQUESTS FROM RISK -------------------------------------------------------------------
    def _on_request(self, msg: Message, peer: str) -> list[Message]:
        if not peer.startswith("risk."):
            self.counters["refused"] += 1
            self.log.error("refused a request not from risk", extra={"peer": peer})
            raise Refused(f"execution takes orders only from risk, not from {peer!r}")
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
            self._send(self.engine.cancel_all(msg.target))
        else:
            raise ValueError(f"execution does not handle {type(msg).__name__}")
        return []

    # -- GATEWAY ------------------------------------------------------------------------------
    def _send(self, commands: list[OrderCommand]) -> None:
        self.outbox.extend(commands)

    def _commit(self) -> None:
        """Journal durable first (one fsync for the batch), then commands and updates out."""
        self.journal.sync()
        for cmd in self.outbox:
            self.gateway.send(cmd)
            self.counters["commands"] += 1
        self.outbox.clear()
        self._publish_updates()

    def _on_gateway_reply(self) -> None:
        for msg in self.gateway.poll():
            if isinstance(msg, OrderStatus):
                self._send(self.engine.on_placed(msg))
        for command, ack in self.gateway.nacked:
            self.counters["gateway_nacks"] += 1
            self.log.error("gateway refused a command",
                           extra={"client_order_id": command.client_order_id,
                                  "error": ack.error})
            if command.command in ("place", "modify", "cancel"):
                # the gateway refused it before IB saw it: the same as IB refusing it
                self._send(self.engine.on_order_error(GatewayError(
                    code=201 if command.command == "place" else 10147, text=ack.error,
                    req_id=command.ib_order_id, scope="order", ref=command.client_order_id)))
        self.gateway.nacked.clear()
        self._commit()

    def _on_event(self) -> None:
        for msg in self.events.drain(500):
            if isinstance(msg, OrderStatus):
                self._send(self.engine.on_status(msg))
            elif isinstance(msg, OpenOrder):
                self._send(self.engine.on_open_order(msg))
            elif isinstance(msg, Execution):
                self._send(self.engine.on_execution(msg))
            elif isinstance(msg, Commission):
                self.engine.on_commission(msg)
            elif isinstance(msg, GatewayError):
                if msg.scope == "order":
                    self._send(self.engine.on_order_error(msg))
            elif isinstance(msg, CompletedOrder):
                self._send(self.engine.on_completed(msg))
            elif isinstance(msg, Position):
                self.engine.on_broker_position(msg)
            elif isinstance(msg, ReconcileEnd):
                self.counters["reconciliations"] += 1
                self._send(self.engine.on_reconcile_end(msg))
            elif isinstance(msg, GatewayState):
                self._send(self.engine.on_gateway_state(msg))
        self._commit()

    def _publish_updates(self) -> None:
        for topic, msgs in self.engine.frames:
            self.publisher.publish_batch(msgs, topic)
        self.engine.frames.clear()
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
        if not self.outbox and self.journal.maybe_compact(self.engine.compaction,
                                                          COMPACT_AFTER_RECORDS):
            self.counters["journal_compactions"] += 1
        now = time.monotonic()
        stuck = self.engine.unconfirmed(now, self.ack_timeout)
        if stuck and self.engine.gateway_state == "synchronised" \
                and now - self.last_query > self.ack_timeout:
            self.last_query = now
            self.counters["status_queries"] += 1
            self.log.warning("orders unconfirmed by IB; querying",
                             extra={"client_order_ids": [o.client_order_id for o in stuck]})
            self.gateway.send(OrderCommand(command="reconcile", client_order_id=""))
        if self.engine.reconcile_wanted and self.engine.gateway_state == "synchronised" \
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
                self._commit()
        self.counters["open_orders"] = len(self.engine.open_orders())
        self.counters["pending_commands"] = len(self.gateway.pending)
        if self.events.gaps.counters.gaps > self.counters.get("gaps_alerted", 0):
            self.counters["gaps_alerted"] = self.events.gaps.counters.gaps
            # events lost on the bus: ask the gateway to replay IB's view
            self.gateway.send(OrderCommand(command="reconcile", client_order_id=""))
            self.publisher.publish(Alert(severity="warning", code="event_gap",
                                         text="execution missed gateway events; reconciling"))

    def on_stop(self) -> None:
        self._commit()
        self.journal.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet execution",
                                     description="Run the execution service.")
    add_common_args(parser)
    parser.add_argument("--cancel-on-reconnect", action="store_true",
                        help="cancel every open order when the gateway comes back")
    args = parser.parse_args(argv)
    return ExecutionService(load_config(parser, args), args.cancel_on_reconnect).run()
