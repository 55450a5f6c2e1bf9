"""The gateway service: composes the bridge's concerns and runs their one loop.

Threads: ibapi's reader and decoder threads (one pair per connection attempt, see ``client``)
only put events on a queue. Everything else runs on the service loop: draining that queue,
the order socket, subscription requests, the outbox's pacing, the connection's timers. No
call on this loop waits for IB.

Concerns (one module and class each; each gets its collaborators explicitly):

- ``Connection`` (connection.py): the socket's life, states, reconnects, the hang probe;
- ``ContractResolver`` (contracts.py): symbols resolved at IB, once;
- ``MarketData`` (market_data.py): subscriptions, ticks, depth, bars, history;
- ``OrderDesk`` (order_desk.py): execution's order commands, ids, held / resent places;
- ``Reports`` (reports.py): orders, fills, positions, account; the reconciliation run;
- ``ErrorRouter`` (error_router.py): each IB error to its owner;
- ``check_accounts`` (accounts.py): the account IB lands us on is the one the config expects;
- ``Outbox`` (outbox.py): every client call, paced.

This class wires them, maps every IB callback to its handler (``_callback_table``), and
decides two things of its own: whether the account IB named (``managedAccounts``) may be
traded, and when the bridge is ``synchronised`` again. Until the account has passed the check
nothing goes to IB but the handshake and the liveness probe: no reconciliation, subscription
or order; a refused account keeps the bridge ``connected`` for good (a critical alert, order
commands refused) until a new session lands on an account the config allows.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import zmq

from proto.schema import (Alert, BrokerOrders, ContractLookup, ContractLookupResult, Control,
                          HistoricalRequest, HistoricalTicksRequest, Message, OrderCommand,
                          SubscribeRequest)
from services.bus.reliable import DEFER, ReliableServer
from services.bus.subscriber import Subscriber
from services.gateway import ib_time
from services.gateway.accounts import AccountCheck, check_accounts
from services.gateway.connection import ConnState, Connection
from services.gateway.contracts import REPUBLISH_S, ContractResolver
from services.gateway.error_router import ErrorRouter
from services.gateway.history import send_due_ticks
from services.gateway.market_data import MarketData
from services.gateway.options import GatewayOptions
from services.gateway.order_desk import CommandRefused, OrderDesk
from services.gateway.outbox import Outbox
from services.gateway.reports import Reports
from services.gateway.wrapper import EventQueue
from services.runtime.config import LIVE_PORTS, FleetConfig
from services.runtime.service import Service

__all__ = ["Gateway", "GatewayOptions", "CommandRefused", "DELIBERATELY_IGNORED"]

S = ConnState

#: Forwarded callbacks the gateway does not act on, each for a reason. Together with the
#: dispatch table they cover every event the wrapper forwards (tests/gateway checks it).
DELIBERATELY_IGNORED = frozenset({
    "tickString",         # reqMktData extras (last timestamp, exchanges): not in a Tick
    "tickGeneric",        # reqMktData extras (halted, shortable...): not in a Tick
    "tickReqParams",      # minTick / BBO exchange / snapshot permissions of a request
    "updatePortfolio",    # reqAccountUpdates' per-position view: positions come from reqPositions
    "updateAccountTime",  # reqAccountUpdates' clock
    "accountDownloadEnd", # end of reqAccountUpdates' first batch: values are streamed anyway
    "pnlSingle",          # per-position PnL: never requested (execution computes its own)
})


LOOKUP_TIMEOUT_S = 10.0  # s an operator's symbol lookup waits for IB's answers


class Gateway(Service):
    def __init__(self, config: FleetConfig, options: GatewayOptions | None = None) -> None:
        options = options or GatewayOptions.from_config(config)
        if options.port in LIVE_PORTS and not options.live:
            # config.load refuses this too; a second guard because options can come from the CLI
            raise SystemExit(f"gateway: port {options.port} is a LIVE trading port and live "
                             f"trading is not enabled in the config; refusing to connect")
        super().__init__("gateway", config)
        self.opts = options
        logging.getLogger("ibapi").setLevel(logging.WARNING)  # it logs every message at INFO
        state_dir = config.service_state_dir("gateway")
        pub, counters, log = self.publisher, self.counters, self.log
        ib_time.default.counters, ib_time.default.log = counters, log  # errors counted here
        self.events = EventQueue()
        self.outbox = Outbox(options.rate)
        self.conn = Connection(options, self.events, self.outbox, pub, counters, log,
                               on_up=self._connected, on_down=self._disconnected)
        #: this session's verdict on IB's managedAccounts (None: not named yet)
        self.account: AccountCheck | None = None
        self.account_deadline: float | None = None  # managedAccounts due by then
        self.resync_due = False  # a resync waits for the account check
        # nothing but the handshake reaches IB before the account has passed the check
        socket_up = lambda: self.conn.socket_up and self.account_ok  # noqa: E731
        self.contracts = ContractResolver(self.outbox, socket_up, self._contract_resolved,
                                          self._contract_failed, pub.publish,
                                          specs=config.raw.get("instruments"))
        self.market = MarketData(options, self.outbox, self.contracts, pub, counters, socket_up,
                                 state_dir)
        self.desk = OrderDesk(state_dir, options.client_id, self.outbox, self.contracts,
                              lambda: self.conn.can_send_orders and self.account_ok,
                              pub, counters, log,
                              self._reconcile_requested)
        self.reports = Reports(options, state_dir, self.outbox, self.contracts, self.desk, pub,
                               counters, log, self._maybe_synchronised)
        self.errors = ErrorRouter(self.conn, self.market, self.contracts, self.desk,
                                  self.outbox, pub, counters, self._resync)
        self.errors.names = self.reports.names
        self.restore_barrier_passed = True
        self.callbacks = self._callback_table()
        #: the operator's symbol lookups waiting for IB: [token, symbols, resolved, failed,
        #: deadline] (``ibfleet strategy add`` checks a strategy's symbols)
        self.lookups: list[list] = []

        self.on_socket(self.events.fd, self._drain_events)  # type: ignore[arg-type]
        self.orders_server = ReliableServer(self.ctx, config.bus.endpoint("gateway"), self.source,
                                            self._on_order_request, config.bus.curve_dir)
        self.on_socket(self.orders_server.socket, self._on_orders)
        self.sub_requests = self.track(Subscriber(self.ctx, config.bus.endpoint("bus-out"),
                                                  [SubscribeRequest.TOPIC,
                                                   HistoricalRequest.TOPIC]))
        self.on_socket(self.sub_requests.socket, self._on_sub_requests)
        self.every(0.01, self._tick)
        # the state also goes out with every heartbeat: a subscriber whose subscription was
        # still propagating when a change was published learns it within one interval
        self.every(config.bus.heartbeat_ms / 1000.0, self.conn.publish_state)
        self.every(REPUBLISH_S, self.contracts.republish)  # a restarted bus lost its cache
        self.every(60.0, self.contracts.check_rolls)  # front months past their roll date

    def _callback_table(self) -> dict[str, Callable[..., None]]:
        """Every IB callback the wrapper forwards -> its handler (or DELIBERATELY_IGNORED)."""
        conn, contracts, market = self.conn, self.contracts, self.market
        reports, errors = self.reports, self.errors
        return {
            # -- connection
            "connectAck": conn.on_connect_ack,
            "nextValidId": self._on_next_valid_id,
            "connectionClosed": conn.on_connection_closed,
            "session_ended": conn.on_session_ended,
            "bad_frame": conn.on_bad_frame,
            "bad_frame_length": conn.on_bad_frame_length,
            "managedAccounts": self._on_managed_accounts,
            "currentTime": conn.on_current_time,  # IB's clock (and the hang probe's answer)
            # -- errors
            "error": errors.on_error,
            # -- contracts
            "contractDetails": self._on_contract_details,
            "contractDetailsEnd": self._on_contract_details_end,
            "marketRule": contracts.on_market_rule,
            # -- market data
            "tickPrice": market.on_tick_price,
            "tickSize": market.on_tick_size,
            "marketDataType": market.on_market_data_type,
            "tickByTickAllLast": market.on_tick_by_tick_all_last,
            "tickByTickBidAsk": market.on_tick_by_tick_bid_ask,
            "updateMktDepth": market.on_update_mkt_depth,
            "updateMktDepthL2": market.on_update_mkt_depth_l2,
            "realtimeBar": market.on_realtime_bar,
            "historicalData": market.on_historical_data,
            "historicalDataEnd": market.on_historical_data_end,
            # historical ticks: one answer with IB's ``done``, then published like bars
            "historicalTicks": self._on_historical_ticks,
            "historicalTicksBidAsk": self._on_historical_ticks,
            "historicalTicksLast": self._on_historical_ticks,
            # -- reports: orders and fills
            "openOrder": reports.on_open_order,
            "openOrderEnd": reports.on_open_order_end,
            "orderStatus": reports.on_order_status,
            "completedOrder": reports.on_completed_order,
            "completedOrdersEnd": reports.on_completed_orders_end,
            "execDetails": reports.on_exec_details,
            "execDetailsEnd": reports.on_exec_details_end,
            "commissionAndFeesReport": reports.on_commission,
            # -- reports: account
            "position": reports.on_position,
            "positionEnd": reports.on_position_end,
            "updateAccountValue": reports.on_account_value,
            "pnl": reports.on_pnl,
        }

    # -- LIFECYCLE -----------------------------------------------------------------------------
    def on_start(self) -> None:
        self.log.info("gateway starting", extra={"host": self.opts.host, "port": self.opts.port,
                                                 "client_id": self.opts.client_id,
                                                 "next_order_id": self.desk.ids.next_id,
                                                 "unsent_places": len(self.desk.unsent)})
        self.conn.publish_state()

    def on_stop(self) -> None:
        self.conn.abort()
        self.desk.close()
        self.reports.close()
        self.events.close()

    # -- THE LOOP ------------------------------------------------------------------------------
    def _drain_events(self) -> None:
        self.counters["drains"] += 1
        for ev in self.events.drain(5000):
            if ev.generation != self.conn.generation:
                self.counters["stale_events"] += 1
                continue
            self.counters["msgs_in"] += 1
            self.conn.inbound(time.monotonic())
            handler = self.callbacks.get(ev.name)
            if handler is None:  # DELIBERATELY_IGNORED
                self.counters["ignored_callbacks"] += 1
                continue
            try:
                handler(*ev.args)
            except Exception:  # noqa: BLE001 - one bad event must not stop the bridge
                self.counters["event_errors"] += 1
                self.log.exception("event handler failed", extra={"event": ev.name})
        self.market.flush()
        self._pump(time.monotonic())

    def _tick(self) -> None:
        """Timers: the connection's, history's pacing, reconciliation's, then the outbox."""
        now = time.monotonic()
        self.conn.tick(now)
        if self.account_deadline is not None and now > self.account_deadline:
            self.account_deadline = None
            if self.conn.socket_up and self.account is None:
                self.conn.lost(f"IB named no account (managedAccounts) within "
                               f"{self.opts.connect_timeout:g}s of the handshake",
                               backoff=True)  # a handshake that failed: backs off
        if self.conn.socket_up:
            if self.account_ok:  # nothing but the handshake before the account check
                self.market.send_due_history(now)
                send_due_ticks(self.market.history, now, self.contracts, self.outbox)
            self.reports.tick(now)
        if self.lookups:
            self._answer_lookups(now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        client = self.conn.client
        if client is None:
            return
        generation = self.conn.generation
        unsent, error = self.outbox.pump(client, now, lambda: self.conn.generation == generation)
        if error is not None:
            self.log.warning("client call failed", extra={"what": str(unsent[0][0])[:80],
                                                          "error": repr(error)})
            self.conn.lost(f"send failed: {error!r}")
        # after the loss: what this batch did not send goes before what the loss requeued
        self.desk.requeue([what for what, _ in unsent if isinstance(what, OrderCommand)])
        self.counters["msgs_out"] = self.outbox.sent

    def _on_orders(self) -> None:
        """Execution's commands, then out at once as far as the pacer allows: an order does
        not wait for the next timer tick (10 ms) when IB's rate limit has room."""
        if self.orders_server.process_ready():
            self._pump(time.monotonic())

    def _on_sub_requests(self) -> None:
        for _ in range(1000):
            try:
                parts = self.sub_requests.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            decoded = self.sub_requests.decode_parts(parts)
            if not decoded:
                continue
            for msg in decoded[1]:
                if isinstance(msg, SubscribeRequest):
                    self.market.on_subscribe(msg)
                elif isinstance(msg, (HistoricalRequest, HistoricalTicksRequest)):
                    self.market.on_history_request(msg)  # one desk, one pacer (history.py)

    def _on_historical_ticks(self, req_id: int, ticks, done: bool) -> None:
        if self.market.history.ticks(req_id, ticks, done):
            self.market.on_historical_data_end(req_id)  # publishes the ticks, then the end

    # -- THE KILL SWITCH'S BACKSTOP ------------------------------------------------------------
    def _on_order_request(self, msg: Message, peer: str):
        """The order socket: execution's commands (the desk's), its global cancel, and the
        operator CLI's kill / orders controls (the kill switch must work with risk and
        execution down).

        With role keys (``bus.auth``) the peer is its connection's key: order commands from
        execution's only, controls from the operator's only (services/bus/keys.py). Without
        them (unit tests) the source prefixes ``cli.`` / ``execution.`` still decide."""
        role = self.orders_server.peer_role  # its connection's key; None without role keys
        if isinstance(msg, ContractLookup):  # the operator's question, nobody else's
            if role == "operator" or role is None and peer.startswith("cli."):
                return self._lookup(msg)
            raise CommandRefused(f"symbol lookups come from the operator, not {peer!r}")
        if role is not None:
            if isinstance(msg, Control) and role == "operator":
                return self._operator_control(msg, peer)
            if role != "execution":
                text = (f"the gateway refused {type(msg).__name__} from a peer keyed {role!r} "
                        f"(writing {peer!r}): order commands come from execution only")
                self.refuse_peer(text, role=role, src=peer)
                raise CommandRefused(text)
            peer = peer if peer.startswith("execution.") else f"execution.{peer}"
        if isinstance(msg, Control) and peer.startswith("cli."):
            return self._operator_control(msg, peer)
        if self.account is not None and not self.account.ok and isinstance(msg, OrderCommand) \
                and msg.command in ("place", "modify"):
            self.counters[f"{msg.command}s_refused_account"] += 1
            raise CommandRefused(f"the gateway is not trading: {self.account.problem}")
        if isinstance(msg, OrderCommand) and msg.command == "global_cancel" \
                and peer.startswith("execution."):
            self.desk.counters["cmd_global_cancel"] += 1
            self._global_cancel(f"from {peer}")
            return []
        replies = self.desk.on_command(msg, peer)
        # to IB now (as far as the pacer allows), ahead of the acknowledgement: the command
        # is already durable in the desk's journal, the ack only tells execution so
        self._pump(time.monotonic())
        return replies

    def _global_cancel(self, why: str) -> bool:
        """reqGlobalCancel now if the socket is up (ahead of anything queued: the outbox's
        urgent lane), else first thing once synchronised. True if it went to the outbox."""
        cmd = OrderCommand(command="global_cancel", client_order_id="")
        self.log.warning("global cancel", extra={"why": why, "socket_up": self.conn.socket_up})
        self.counters["global_cancels"] += 1
        if self.conn.socket_up and not self.conn.link_lost and self.account_ok:
            self.desk.send_now(cmd)
            return True
        self.desk.held.appendleft(cmd)
        return False

    def _operator_control(self, msg: Control, peer: str):
        if msg.command not in ("kill", "flatten", "orders"):
            raise CommandRefused(f"the gateway takes kill, flatten and orders controls from "
                                 f"the operator, not {msg.command!r}")
        token = self.orders_server.current
        sent = False
        if msg.command in ("kill", "flatten"):
            self.log.warning("kill switch from the operator, straight to the gateway",
                             extra={"peer": peer, "command": msg.command, "reason": msg.reason})
            sent = self._global_cancel(f"{msg.command} by {peer}")
            self.publisher.publish(Alert(
                severity="critical", code="gateway_kill",
                text=f"global cancel of every order of the account by {peer}"
                     + ("" if sent else " (held: not connected to IB)")
                     + ("; flatten needs execution: positions are not closed by the gateway"
                        if msg.command == "flatten" else "")))
        if not self.conn.socket_up:
            return [BrokerOrders(connected=False, working=-1, global_cancel=sent,
                                 text=f"the gateway is {self.conn.state.value}, not connected "
                                      f"to IB: working orders unknown")]
        if not self.account_ok:
            why = self.account.problem if self.account else "IB has not named the account yet"
            return [BrokerOrders(connected=False, working=-1, global_cancel=sent,
                                 text=f"the gateway does not trade on this session ({why}): "
                                      f"working orders unknown")]

        def done(connected: bool, working: list[str]) -> None:
            reply = BrokerOrders(connected=connected, working=len(working) if connected else -1,
                                 orders=working, global_cancel=sent,
                                 text="" if connected else "IB did not list the open orders")
            self.orders_server.complete(token, [reply])
        self.reports.audit_open_orders(done)
        return DEFER

    # -- WIRING BETWEEN CONCERNS ---------------------------------------------------------------
    def _on_next_valid_id(self, order_id: int) -> None:
        self.desk.observe_next_valid_id(order_id)
        self.conn.on_next_valid_id(order_id)

    def _connected(self) -> None:
        self._resync("reconnected", reconcile=True, resubscribe=False)

    def _disconnected(self) -> None:
        """The session is gone: order commands queued for it go back to the desk, in order;
        data requests are rebuilt by the next re-synchronisation."""
        queued = self.outbox.take_all()
        self.desk.requeue([what for what, _ in queued if isinstance(what, OrderCommand)])
        self.market.on_lost()
        self.contracts.on_lost()
        self.reports.on_lost()
        for token, *_ in self.lookups:  # IB will not answer them on this session
            self.orders_server.complete(token, [ContractLookupResult(
                connected=False, text="the connection to IB was lost: symbols cannot be "
                                      "checked now")])
        self.lookups.clear()
        # a new session may land on another account: checked again from scratch
        self.account, self.account_deadline, self.resync_due = None, None, False

    # -- THE ACCOUNT ---------------------------------------------------------------------------
    @property
    def account_ok(self) -> bool:
        return self.account is not None and self.account.ok

    def _on_managed_accounts(self, accounts: str) -> None:
        """IB names the login's accounts: trade only on the one the config allows."""
        check = check_accounts(accounts, self.opts.live, self.opts.account)
        was_ok, self.account = self.account_ok, check
        self.account_deadline = None
        if not check.ok:
            self._refuse_account(check, was_ok)
            return
        self.log.info("account verified", extra={"account": check.account,
                                                  "accounts": list(check.accounts),
                                                  "live": self.opts.live})
        self.reports.on_managed_accounts(check.account)
        if self.resync_due and self.conn.state == S.CONNECTED:
            self.resync_due = False
            self._resync(f"account {check.account} verified", reconcile=True,
                         resubscribe=False)

    def _refuse_account(self, check: AccountCheck, was_ok: bool) -> None:
        self.counters["account_refused"] += 1
        where = f"{self.opts.host}:{self.opts.port}"
        self.log.error("account refused: not trading", extra={
            "accounts": list(check.accounts), "expected": self.opts.account,
            "live": self.opts.live, "gateway": where, "problem": check.problem})
        self.publisher.publish(Alert(
            severity="critical", code="gateway.account_refused",
            text=f"the gateway at {where} landed on account "
                 f"{', '.join(check.accounts) or '(none)'}: {check.problem}; it sends no order "
                 f"and refuses order commands until a session lands on the right account"))
        if was_ok:  # it was trading on this session: nothing more goes out
            queued = self.outbox.take_all()
            self.desk.requeue([what for what, _ in queued if isinstance(what, OrderCommand)])
        if self.conn.state in (S.SYNCHRONISED, S.DEGRADED):
            self.conn.move(S.CONNECTED, f"account refused, not trading: {check.problem}")
        elif self.conn.state == S.CONNECTED:
            self._hold_for_account()

    def _hold_for_account(self) -> None:
        """Connected, but the account has not passed the check: say why, and wait."""
        if self.account is None:
            if self.account_deadline is None:
                self.account_deadline = time.monotonic() + self.opts.connect_timeout
            self.conn.hold("handshake done; waiting for IB to name the account "
                           "(managedAccounts)")
        else:
            self.conn.hold(f"account refused, not trading: {self.account.problem}")

    def _on_contract_details(self, req_id: int, details) -> None:
        """A symbol's resolution (contracts), or a report's contract asked by conId to name
        its exchange (reports.names, con_ids.py)."""
        if not self.reports.names.on_details(req_id, details):
            self.contracts.on_contract_details(req_id, details)

    def _on_contract_details_end(self, req_id: int) -> None:
        if not self.reports.names.on_end(req_id):
            self.contracts.on_contract_details_end(req_id)

    def _contract_resolved(self, symbol: str) -> None:
        self.market.contract_resolved(symbol)
        self.desk.release_held()
        self._lookup_answered(symbol, "")

    def _contract_failed(self, symbol: str, text: str) -> None:
        self.market.contract_failed(symbol, text)
        self.desk.contract_failed(symbol, text)
        self._lookup_answered(symbol, text)

    # -- THE OPERATOR'S SYMBOL LOOKUPS ---------------------------------------------------------
    def _lookup(self, msg: ContractLookup):
        """Does IB know these symbols? Each is resolved at IB as a subscription would be
        (a known one from the cache); answered once every symbol has IB's answer, or after
        ``LOOKUP_TIMEOUT_S`` with those still unanswered left out."""
        self.counters["lookups"] += 1
        if not (self.conn.socket_up and self.account_ok):
            return [ContractLookupResult(
                connected=False, text=f"the gateway is {self.conn.state.value}, not trading "
                                      f"on an IB session: symbols cannot be checked now")]
        lookup = [self.orders_server.current, list(dict.fromkeys(msg.symbols)), {}, {},
                  time.monotonic() + LOOKUP_TIMEOUT_S]
        self.lookups.append(lookup)
        for symbol in lookup[1]:
            contract = self.contracts.get(symbol)
            if contract is not None:
                lookup[2][symbol] = int(contract.conId)
            else:
                self.contracts.resolve(symbol)
        if all(s in lookup[2] for s in lookup[1]):  # all known already: answered now
            self.lookups.remove(lookup)
            return [ContractLookupResult(connected=True, resolved=lookup[2])]
        return DEFER

    def _lookup_answered(self, symbol: str, error: str) -> None:
        for _, symbols, resolved, failed, _ in self.lookups:
            if symbol in symbols and symbol not in resolved and symbol not in failed:
                if error:
                    failed[symbol] = error
                else:
                    resolved[symbol] = int(self.contracts.get(symbol).conId)
        self._answer_lookups(time.monotonic())

    def _answer_lookups(self, now: float) -> None:
        for lookup in list(self.lookups):
            token, symbols, resolved, failed, deadline = lookup
            waiting = [s for s in symbols if s not in resolved and s not in failed]
            if waiting and now < deadline:
                continue
            self.lookups.remove(lookup)
            text = (f"IB did not answer for {', '.join(waiting)} within "
                    f"{LOOKUP_TIMEOUT_S:g}s" if waiting else "")
            self.orders_server.complete(token, [ContractLookupResult(
                connected=True, resolved=resolved, failed=failed, text=text)])

    def _reconcile_requested(self, reason: str) -> None:
        if self.conn.socket_up and not self.conn.link_lost:
            self._resync(reason, reconcile=True, resubscribe=False)
        # otherwise the next connection (or 1101/1102) reconciles anyway

    # -- (RE)SYNCHRONISATION -------------------------------------------------------------------
    def _resync(self, reason: str, reconcile: bool, resubscribe: bool) -> None:
        """Back to ``connected``: restore subscriptions, optionally reconcile; synchronised
        follows when everything queued here has gone out and the run (if any) is complete."""
        if self.conn.state != S.CONNECTED:
            self.conn.move(S.CONNECTED, reason)
        if not self.account_ok:  # verified first; a refused account is never reconciled
            self.resync_due = True
            self._hold_for_account()
            return
        for symbol in sorted(self.market.symbols() | self.desk.held_symbols()
                             | set(self.contracts.configured_symbols())):
            self.contracts.resolve(symbol)
        self.contracts.republish()  # the fleet's reference data, again after a reconnect
        self.outbox.submit("clock", lambda c: c.reqCurrentTime())  # IB's clock: its offset
        self.market.restore(resubscribe)
        self.restore_barrier_passed = False
        generation = self.conn.generation
        self.outbox.submit("restore_barrier", lambda c: self._barrier(generation))
        if reconcile:
            self.reports.start_run(reason, self.conn.server_version)

    def _barrier(self, generation: int) -> None:
        """Runs when the outbox reaches it: every restore request before it has gone out."""
        if generation == self.conn.generation:
            self.restore_barrier_passed = True
            self._maybe_synchronised()

    def _maybe_synchronised(self) -> None:
        conn = self.conn
        if conn.state != S.CONNECTED or not self.restore_barrier_passed:
            return
        if conn.link_lost or conn.farm_down or self.reports.run is not None:
            return
        if not self.account_ok:
            return
        conn.synchronised("subscriptions restored, orders/executions/positions/completed "
                          "orders reconciled")
        self.desk.release_held()

    # -- HEARTBEAT -----------------------------------------------------------------------------
    def heartbeat(self) -> None:
        c = self.counters
        self.market.heartbeat(c, time.monotonic())
        self.desk.heartbeat(c)
        c["queue_depth"] = self.events.qsize()
        c["outgoing_queue"] = len(self.outbox)
        c["reconnects"] = self.conn.reconnects
        c["state_" + self.conn.state.value] = 1
        for s in S:
            if s != self.conn.state:
                c.pop("state_" + s.value, None)
        c["order_commands_acked"] = self.orders_server.counters["processed"]
        super().heartbeat()
