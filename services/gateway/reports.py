"""Reports: what IB says about orders, fills, positions and the account, onto the bus as it is.

Open orders (``OpenOrder``), order statuses (``OrderStatus``: the only source of order statuses
on the bus), executions (``Execution``, each execId once, ever: ``ExecutionLedger``),
commissions, completed orders (``CompletedOrder``), positions, account values and PnL.

A reconciliation *run* (after every connect, 1101/1102, and on execution's ``reconcile``
command) asks IB for open orders (reqAllOpenOrders), executions (reqExecutions, this client,
from a minute before the last fill seen), positions (reqPositions) and today's completed orders
(reqCompletedOrders, API orders only). The run is complete only when all four end markers are
in: silence is "not yet", never "nothing". Then ``ReconcileEnd`` goes out, after every message
of the run (one publisher, so the bus keeps the order), with:

- ``open_ids``: our client's orders IB listed open in this run (one that IB reported done
  during the run is taken out again);
- ``in_flight_ids``: places IB cannot have told about yet (the order desk's);
- ``completed_included``: False if IB never answered reqCompletedOrders (older servers) within
  ``completed_timeout``, or the server is too old to be asked.

Execution closes what IB no longer lists; the gateway never decides an order's fate.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter
from ibapi.server_versions import MIN_SERVER_VER_COMPLETED_ORDERS

from proto.schema import AccountValue, PnL, ReconcileEnd
from services.gateway import translate
from services.gateway.con_ids import ConIdNames
from services.gateway.contracts import ContractResolver
from services.gateway.options import GatewayOptions
from services.gateway.order_desk import EXECUTION_ASKED, OrderDesk
from services.gateway.outbox import Outbox
from services.gateway.reconcile import ExecutionLedger

PARTS = ("open_orders", "executions", "positions", "completed")
#: statuses that take an order out of ``open_ids`` when IB reports them during the run
NOT_OPEN = frozenset({"Filled", "Cancelled", "ApiCancelled"})
#: statuses after which an order works no more (an audit counts every other one as working)
DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
AUDIT_TIMEOUT = 10.0  # s an operator's audit waits for openOrderEnd before it says "unknown"


@dataclass
class OrderAudit:
    """An operator's question "what is working at the broker?": one reqAllOpenOrders (every
    client of the account, TWS's own orders included), its openOrder / orderStatus messages
    until its openOrderEnd. ``done(connected, working)`` gets one line per working order."""

    done: Callable[[bool, list[str]], None]
    started: float
    sent: bool = False
    finished: bool = False
    #: perm id (or (client id, order id)) -> [description, status]
    seen: dict[Any, list[str]] = field(default_factory=dict)

    def working(self) -> list[str]:
        return [f"{text} {status}" for text, status in self.seen.values()
                if status not in DONE]


@dataclass
class ReconcileRun:
    """One reconciliation: what is still awaited, and what IB listed open."""

    reason: str
    exec_req_id: int
    started: float
    waiting: set[str] = field(default_factory=lambda: set(PARTS))
    counts: Counter = field(default_factory=Counter)
    open_ids: set[int] = field(default_factory=set)
    #: execution asked for it (it lost something on the bus): every execution it finds is
    #: published, even one published before
    replay: bool = False
    #: the order desk's place count when reqAllOpenOrders went out (None: not yet sent)
    sends_mark: int | None = None
    completed_sent_at: float | None = None
    completed_included: bool = True

    def saw(self, part: str) -> None:
        self.counts[part] += 1

    def ended(self, part: str) -> None:
        self.waiting.discard(part)

    @property
    def done(self) -> bool:
        return not self.waiting


class Reports:
    def __init__(self, opts: GatewayOptions, state_dir: Path, outbox: Outbox,
                 contracts: ContractResolver, desk: OrderDesk, publisher: Any,
                 counters: Counter, log: logging.Logger,
                 on_run_done: Callable[[], None]) -> None:
        self.client_id = opts.client_id
        self.account_updates = opts.account_updates
        self.completed_timeout = opts.completed_timeout
        self.outbox = outbox
        self.contracts = contracts
        self.desk = desk
        self.publisher = publisher
        self.counters = counters
        self.log = log
        self.on_run_done = on_run_done
        self.ledger = ExecutionLedger(state_dir)
        #: bus symbols of the contracts IB reports, the exchange filled (con_ids.py)
        self.names = ConIdNames(outbox, contracts, counters, log, self._maybe_done)
        self.run: ReconcileRun | None = None
        #: end markers still due for requests sent without a request id (the latest run's
        #: answer is the one whose end brings the count to 0; older runs' ends come first)
        self.pending_ends: Counter = Counter()
        self.account = ""
        self.audits: list[OrderAudit] = []
        #: reqAllOpenOrders sent, oldest first: None for a run's, the audit for an audit's
        #: (IB answers them in order, so each openOrderEnd closes the head)
        self.open_requests: deque[OrderAudit | None] = deque()

    # -- THE RECONCILIATION RUN ------------------------------------------------------------
    def start_run(self, reason: str, server_version: int) -> None:
        rid = self.outbox.req_id()
        run = ReconcileRun(reason, rid, time.monotonic(), replay=reason == EXECUTION_ASKED)
        self.run = run
        flt = ExecutionFilter()
        flt.clientId = self.client_id
        flt.time = translate.filter_time(self.ledger.last_exec_ns)
        desk = self.desk

        def open_orders(client) -> None:
            client.reqAllOpenOrders()
            self.open_requests.append(None)
            run.sends_mark = desk.sends

        def completed(client) -> None:
            client.reqCompletedOrders(True)
            run.completed_sent_at = time.monotonic()

        self.pending_ends["open_orders"] += 1
        self.pending_ends["positions"] += 1
        self.outbox.submit("reconcile", open_orders)
        self.outbox.submit("reconcile", lambda c: c.reqExecutions(rid, flt))
        self.outbox.submit("reconcile", lambda c: c.reqPositions())
        if server_version and server_version < MIN_SERVER_VER_COMPLETED_ORDERS:
            run.completed_included = False
            run.ended("completed")
        else:
            self.pending_ends["completed"] += 1
            self.outbox.submit("reconcile", completed)

    # -- THE OPERATOR'S AUDIT ----------------------------------------------------------------
    def audit_open_orders(self, done: Callable[[bool, list[str]], None]) -> None:
        """Ask IB for every working order of the account (all clients); ``done`` is called
        once: with the working orders at the openOrderEnd, or (False, []) if the socket dies
        or IB does not answer within ``AUDIT_TIMEOUT``."""
        audit = OrderAudit(done, time.monotonic())
        self.audits.append(audit)
        self.pending_ends["open_orders"] += 1

        def send(client) -> None:
            client.reqAllOpenOrders()
            audit.sent = True
            self.open_requests.append(audit)
        self.outbox.submit("audit", send, urgent=True)

    def _finish_audit(self, audit: OrderAudit, connected: bool) -> None:
        if audit.finished:
            return
        audit.finished = True
        if audit in self.audits:
            self.audits.remove(audit)
        self.counters["order_audits"] += 1
        audit.done(connected, audit.working() if connected else [])

    def _audit_saw(self, key: Any, text: str | None, status: str) -> None:
        for audit in self.audits:
            if not audit.sent:
                continue
            entry = audit.seen.get(key)
            if entry is None:
                if text is None:
                    continue  # a status of an order this audit has not listed
                audit.seen[key] = [text, status]
            else:
                entry[1] = status or entry[1]

    def tick(self, now: float) -> None:
        """A server that never answers reqCompletedOrders must not hold the run forever."""
        for audit in [a for a in self.audits if now - a.started > AUDIT_TIMEOUT]:
            self.counters["order_audit_timeouts"] += 1
            self._finish_audit(audit, False)
        run = self.run
        if run is None or "completed" not in run.waiting or run.completed_sent_at is None:
            return
        if now - run.completed_sent_at < self.completed_timeout:
            return
        self.counters["completed_orders_timeouts"] += 1
        self.log.warning("no completedOrdersEnd: reconciling without completed orders",
                         extra={"seconds": self.completed_timeout})
        run.completed_included = False
        run.ended("completed")
        self._maybe_done()

    def _ended(self, part: str) -> None:
        self.pending_ends[part] = max(0, self.pending_ends[part] - 1)
        if self.run is not None and self.pending_ends[part] == 0:
            self.run.ended(part)
            self._maybe_done()

    def _maybe_done(self) -> None:
        run = self.run
        if run is None or not run.done or self.names.busy:  # after the positions it names
            return
        self.run = None
        self.desk.reconciled(run.sends_mark)
        in_flight = self.desk.in_flight_ids()
        self.log.info("reconciled", extra={"reason": run.reason, "counts": dict(run.counts),
                                           "open": len(run.open_ids),
                                           "in_flight": len(in_flight),
                                           "completed_included": run.completed_included,
                                           "seconds": round(time.monotonic() - run.started, 3)})
        self.counters["reconciliations"] += 1
        self.publisher.publish(ReconcileEnd(reason=run.reason, open_ids=sorted(run.open_ids),
                                            in_flight_ids=in_flight,
                                            completed_included=run.completed_included))
        self.on_run_done()

    def on_lost(self) -> None:
        """The socket died: the run is abandoned (the next connection starts a new one), and
        so are the audits (their answer is "unknown")."""
        self.run = None
        self.pending_ends.clear()
        self.open_requests.clear()
        self.names.on_lost()
        for audit in list(self.audits):
            self._finish_audit(audit, False)

    # -- CALLBACKS: ORDERS -----------------------------------------------------------------
    def on_open_order(self, order_id: int, contract: Contract, order, state) -> None:
        order_id = int(order_id)
        symbol = self.names.now(contract)
        status = getattr(state, "status", "") or ""
        if int(order.clientId or 0) == self.client_id:
            self.desk.on_open_order(order_id, order.orderRef or "", symbol,
                                    translate.SIDES.get(order.action, "BUY"),
                                    translate.size(order.totalQuantity), status)
            if self.run is not None and status not in NOT_OPEN:
                self.run.open_ids.add(order_id)
        if self.run is not None:
            self.run.saw("open_orders")
        if self.audits:
            key = int(getattr(order, "permId", 0) or 0) or (int(order.clientId or 0), order_id)
            self._audit_saw(key, f"clientId {int(order.clientId or 0)} order {order_id} "
                                 f"(permId {int(getattr(order, 'permId', 0) or 0)}) "
                                 f"{order.action} {translate.size(order.totalQuantity):g} "
                                 f"{symbol or contract.symbol}", status)
        self.publisher.publish(translate.open_order(order_id, contract, order, state, symbol))

    def on_open_order_end(self) -> None:
        head = self.open_requests.popleft() if self.open_requests else None
        self._ended("open_orders")
        if head is not None:
            self._finish_audit(head, True)

    def on_order_status(self, order_id, status, filled, remaining, avg_fill_price, perm_id,
                        parent_id, last_fill_price, client_id, why_held, mkt_cap_price) -> None:
        coid = ""
        if int(client_id or 0) == self.client_id:
            coid = self.desk.on_order_status(int(order_id), status, translate.size(filled),
                                             translate.size(remaining), int(perm_id or 0))
            if self.run is not None and status in NOT_OPEN:
                self.run.open_ids.discard(int(order_id))
        if self.audits and perm_id:
            self._audit_saw(int(perm_id), None, status)
        self.publisher.publish(translate.order_status(order_id, coid, status, filled, remaining,
                                                      avg_fill_price, perm_id, parent_id,
                                                      last_fill_price, why_held))

    def on_completed_order(self, contract: Contract, order, state) -> None:
        if self.run is not None:
            self.run.saw("completed")
        status = getattr(state, "status", "") or ""
        ib_id = self.desk.on_completed_order(int(order.orderId or 0), order.orderRef or "",
                                             status)
        if self.run is not None and status in NOT_OPEN:
            self.run.open_ids.discard(ib_id)
        self.publisher.publish(translate.completed_order(
            contract, order, state, self.names.now(contract), ib_id))

    def on_completed_orders_end(self) -> None:
        self._ended("completed")

    # -- CALLBACKS: FILLS ------------------------------------------------------------------
    def on_exec_details(self, req_id: int, contract: Contract, ex) -> None:
        if self.run is not None and req_id == self.run.exec_req_id:
            self.run.saw("executions")
        if int(ex.clientId or 0) == self.client_id:
            self.desk.on_execution(int(ex.orderId), translate.size(ex.cumQty))
        new = self.ledger.is_new_exec(ex.execId)
        # the answer to a reconciliation execution asked for is published whole, even what
        # was published before: execution asks because it lost something on the bus (a gap:
        # the broker restarted), and only it knows what (it books each execId once).
        # Otherwise (a reconnect: the bus lost nothing) an execution IB tells again is not
        # published twice
        replay = self.run is not None and self.run.replay and req_id == self.run.exec_req_id
        if not new and not replay:
            self.counters["duplicate_execs_suppressed"] += 1
            return
        msg = translate.execution(contract, ex, self.names.now(contract))
        self.publisher.publish(msg)
        if not new:
            self.counters["executions_replayed"] += 1
            return
        try:
            self.ledger.record_exec(ex.execId, msg.exec_time_ns)
        except OSError as exc:  # published; not remembered: a replay publishes it again
            self._ledger_failed(exc)  # (consumers dedupe by execId), never lost
        self.counters["executions"] += 1

    def on_exec_details_end(self, req_id: int) -> None:
        if self.run is not None and req_id == self.run.exec_req_id:
            self.run.ended("executions")
            self._maybe_done()

    def on_commission(self, report) -> None:
        new = self.ledger.is_new_commission(report.execId)
        if not new and not (self.run is not None and self.run.replay):  # replayed with its
            # execution in a run execution asked for
            self.counters["duplicate_commissions_suppressed"] += 1
            return
        self.publisher.publish(translate.commission(report))
        if not new:
            return
        try:
            self.ledger.record_commission(report.execId)
        except OSError as exc:
            self._ledger_failed(exc)

    def _ledger_failed(self, exc: OSError) -> None:
        self.counters["exec_ledger_write_failures"] += 1
        self.log.error("execution ledger cannot write (a replay publishes it again)",
                       extra={"error": str(exc)})

    # -- CALLBACKS: ACCOUNT ----------------------------------------------------------------
    def on_position(self, account: str, contract: Contract, qty, avg_cost) -> None:
        if self.run is not None:
            self.run.saw("positions")

        self.names.name(contract, lambda symbol: self.publisher.publish(  # now, or once IB
            translate.position(account, contract, qty, avg_cost, symbol)))  # named the exchange

    def on_position_end(self) -> None:
        self._ended("positions")

    def on_managed_accounts(self, accounts: str) -> None:
        """Part of the handshake: subscribe to the (first) account's values and PnL."""
        first = accounts.split(",")[0].strip()
        if first:
            self.account = first
        if self.account_updates and self.account:
            acct = self.account
            self.outbox.submit("account_updates", lambda c: c.reqAccountUpdates(True, acct))
            rid = self.outbox.req_id()
            self.outbox.submit("pnl", lambda c: c.reqPnL(rid, acct, ""))

    def on_account_value(self, key: str, value: str, currency: str, account: str) -> None:
        self.publisher.publish(AccountValue(account=account, key=key, value=value,
                                            currency=currency or ""))

    def on_pnl(self, req_id: int, daily, unrealized, realized) -> None:
        self.publisher.publish(PnL(account=self.account, daily=translate.price(daily),
                                   unrealized=translate.price(unrealized),
                                   realized=translate.price(realized)))

    def close(self) -> None:
        self.ledger.close()
