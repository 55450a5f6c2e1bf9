"""The gateway service: IB events in, bus messages out; bus commands in, IB calls out.

Threads: ibapi's reader and decoder threads (one pair per connection attempt, see ``client``)
only put events on a queue. Everything else runs on the service loop: draining that queue,
the order socket, subscription requests, the pacing of outgoing calls, the reconnect timer
and the hang probe. No call on this loop waits for IB.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from typing import Callable

import msgspec
import zmq
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter
from ibapi.order_cancel import OrderCancel

from proto.schema import (AccountValue, Alert, GatewayError, GatewayState, HistoricalEnd,
                          HistoricalRequest, Message, OrderCommand, OrderStatus, PnL,
                          SubscribeRequest)
from services.bus.reliable import ReliableServer
from services.bus.subscriber import Subscriber
from services.gateway import translate
from services.gateway.client import Session
from services.gateway.connection import Backoff, ConnState, HangProbe, StateMachine
from services.gateway.contracts import ContractBook
from services.gateway.errors import Kind, classify, ORDER_FINAL_CODES, SUBSCRIPTION_DEAD_CODES
from services.gateway.orders import OrderIdSequence, OrderMap, build_order
from services.gateway.history import HistoryDesk, HistoryJob
from services.gateway.pacing import RateLimiter
from services.gateway.reconcile import ExecutionLedger, Reconciliation, filter_time
from services.gateway.subscriptions import Outcome, Subscription, SubscriptionBook
from services.gateway.wrapper import EventQueue
from services.runtime.config import LIVE_PORTS, FleetConfig
from services.runtime.service import Service

S = ConnState
FIRST_REQ_ID = 1_000_000_000  # data request ids far above order ids: error() shares the space
#: order errors after which the order is dead at IB without (always) an orderStatus
ORDER_REJECT_CODES = frozenset({103, 110, 135, 161, 200, 201, 321})
TERMINAL = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


class CommandRefused(Exception):
    """Raised from the order handler: the reliable server nacks with this text."""


@dataclasses.dataclass
class GatewayOptions:
    host: str = "127.0.0.1"
    port: int = 7497
    client_id: int = 1
    live: bool = False
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    connect_timeout: float = 10.0   # TCP + handshake + nextValidId
    probe_interval: float = 10.0    # inbound silence before a reqCurrentTime probe
    probe_timeout: float = 5.0
    rate: float = 45.0              # outgoing messages per second (IB: 50)
    depth_rows: int = 10
    mkt_data_lines: int = 100
    depth_subscriptions: int = 3
    tick_by_tick_subscriptions: int = 5
    account_updates: bool = True

    @classmethod
    def from_config(cls, cfg: FleetConfig, **overrides) -> "GatewayOptions":
        g = cfg.gateway
        base = cls(host=g.host, port=g.port, client_id=g.client_id, live=g.live)
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


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
        self.ids = OrderIdSequence(state_dir)
        self.orders = OrderMap(state_dir)
        self.execs = ExecutionLedger(state_dir)
        self.sm = StateMachine()
        self.backoff = Backoff(options.backoff_base, options.backoff_cap)
        self.probe = HangProbe(options.probe_interval, options.probe_timeout)
        self.limiter = RateLimiter(options.rate)
        self.subs = SubscriptionBook({"lines": options.mkt_data_lines,
                                      "depth": options.depth_subscriptions,
                                      "tick_by_tick": options.tick_by_tick_subscriptions})
        self.contracts = ContractBook()
        self.events = EventQueue()
        self.session: Session | None = None
        self.generation = 0
        self.server_version = 0
        self.account = ""
        self.reconnects = 0
        self.connected_once = False
        self.reconnect_at: float | None = time.monotonic()
        self.connect_deadline: float | None = None
        self.next_req_id = FIRST_REQ_ID
        self.link_lost = False     # 1100 seen, not yet restored
        self.farm_down = False     # 2103 seen, not yet 2104
        self.recon: Reconciliation | None = None
        self.restore_barrier_passed = True
        self.pending_ends = {"open_orders": 0, "positions": 0}
        self.held: deque[OrderCommand] = deque()  # order commands waiting for synchronised
        self.unsent: dict[int, OrderCommand] = {}  # journalled places not yet sent (restart)
        self.unacked: dict[int, OrderCommand] = {}  # sent places IB has not mentioned yet
        self.resent: set[int] = set()  # ids resent after a drop or a crash
        self.top: dict[int, translate.TopOfBook] = {}    # by req id
        self.depth_rows: dict[str, translate.DepthRows] = {}  # by symbol
        self.dirty_ticks: set[int] = set()
        self.known_symbols: dict[int, str] = {}  # conId -> bus symbol
        self.last_connection_error = ""
        self.close_reason = ""
        self._load_unsent()

        self.on_socket(self.events.fd, self._drain_events)  # type: ignore[arg-type]
        self.orders_server = ReliableServer(self.ctx, config.bus.endpoint("gateway"), self.source,
                                            self._on_command, config.bus.curve_dir)
        self.on_socket(self.orders_server.socket, self.orders_server.process_ready)
        self.sub_requests = self.track(Subscriber(self.ctx, config.bus.endpoint("bus-out"),
                                                  [SubscribeRequest.TOPIC,
                                                   HistoricalRequest.TOPIC]))
        self.history = HistoryDesk()
        self.depth_refreshed: dict[str, float] = {}
        self.on_socket(self.sub_requests.socket, self._on_sub_requests)
        self.every(0.01, self._tick)
        # the state also goes out with every heartbeat: a subscriber whose subscription was
        # still propagating when a change was published learns it within one interval
        self.every(config.bus.heartbeat_ms / 1000.0, self._publish_state)

    # ============================================================ lifecycle
    def on_start(self) -> None:
        self.log.info("gateway starting", extra={"host": self.opts.host, "port": self.opts.port,
                                                 "client_id": self.opts.client_id,
                                                 "next_order_id": self.ids.next_id,
                                                 "unsent_places": len(self.unsent)})
        self._publish_state()

    def on_stop(self) -> None:
        if self.session is not None:
            self.session.abort()
        self.orders.close()
        self.execs.close()
        self.events.close()

    # ============================================================ state
    def _move(self, to: ConnState, reason: str) -> None:
        if self.sm.move(to, reason):
            self.log.info("state", extra={"state": to.value, "reason": reason})
            self._publish_state()

    def _publish_state(self) -> None:
        self.publisher.publish(GatewayState(state=self.sm.state.value, reason=self.sm.reason,
                                            server_version=self.server_version,
                                            client_id=self.opts.client_id,
                                            reconnects=self.reconnects))

    def _tick(self) -> None:
        """Timers: reconnect, handshake deadline, hang probe, and the paced outgoing queue."""
        now = time.monotonic()
        state = self.sm.state
        if state == S.DISCONNECTED and self.reconnect_at is not None and now >= self.reconnect_at:
            self._connect()
        elif state == S.CONNECTING and self.connect_deadline is not None \
                and now > self.connect_deadline:
            self._lost(f"no handshake/nextValidId within {self.opts.connect_timeout:g}s")
        elif self.sm.socket_up:
            if self.probe.timed_out(now):
                self._lost(f"no answer to the liveness probe within {self.probe.timeout:g}s "
                           f"(silent hang)")
            elif self.probe.should_probe(now):
                self.probe.probed(now)
                self._submit("probe", lambda c: c.reqCurrentTime(), urgent=True)
            if state in (S.CONNECTED, S.SYNCHRONISED, S.DEGRADED):
                self._send_history(now)
        self._pump(now)

    # ---- historical data
    def _send_history(self, now: float) -> None:
        """Historical requests whose contract is known, once IB's pacing lets them go."""
        for job in self.history.due(now, lambda symbol: self.contracts.get(symbol) is not None):
            rid = self._req_id()
            self.history.sent(job, rid)
            contract, r = self.contracts.get(job.request.symbol), job.request
            self._submit("history", lambda c, rid=rid, contract=contract, r=r:
                         c.reqHistoricalData(rid, contract, r.end, r.duration, r.bar_size,
                                             r.what_to_show, int(r.use_rth), 2, False, []))

    def _ev_historicalData(self, req_id: int, bar) -> None:
        self.history.bar(req_id, bar)

    def _ev_historicalDataEnd(self, req_id: int, start: str = "", end: str = "") -> None:
        job = self.history.finish(req_id)
        if job is None:
            return
        topic = f"hist.{job.request.requester}"
        if job.bars:
            self.publisher.publish_batch(job.bars, topic)
        self._history_end(job, count=len(job.bars))

    def _history_end(self, job: HistoryJob, count: int = 0, error: str = "") -> None:
        r = job.request
        self.publisher.publish(HistoricalEnd(requester=r.requester, request=r.request,
                                             count=count, error=error))

    def _connect(self) -> None:
        self.reconnect_at = None
        self.generation += 1
        self._move(S.CONNECTING, f"attempt {self.backoff.attempts + 1} to "
                                 f"{self.opts.host}:{self.opts.port} as client "
                                 f"{self.opts.client_id}")
        self.connect_deadline = time.monotonic() + self.opts.connect_timeout
        self.session = Session(self.events, self.generation, self.opts.host, self.opts.port,
                               self.opts.client_id)
        self.session.start()

    def _lost(self, reason: str) -> None:
        """The session is gone (or we gave up on it): clean up and schedule the next attempt."""
        if self.session is not None:
            self.session.abort()
            self.session = None
        self.generation += 1  # every event still queued from that session is now stale
        was_up = self.sm.socket_up
        if self.close_reason:
            reason = f"{reason}; {self.close_reason}"
            self.close_reason = ""
        # what was queued for the dead socket: data requests are rebuilt on restore; order
        # commands go back to the holding queue, in order, never dropped
        requeue = [what for what, _ in self._drain_limiter() if isinstance(what, OrderCommand)]
        self.held.extendleft(reversed(requeue))
        self.subs.unassign_all()
        self.history.requeue_in_flight()
        self.top.clear()
        self.dirty_ticks.clear()
        self.contracts.abandon_in_flight()
        self.recon = None
        self.pending_ends = {"open_orders": 0, "positions": 0}
        self.link_lost = self.farm_down = False
        self.connect_deadline = None
        delay = self.backoff.next_delay()
        self.reconnect_at = time.monotonic() + delay
        if was_up:
            self.reconnects += 1
        self.counters["disconnects"] += 1
        self._move(S.DISCONNECTED, f"{reason}; retry in {delay:.2f}s")

    def _drain_limiter(self) -> list:
        items = list(self.limiter.urgent) + list(self.limiter.normal)
        self.limiter.clear()
        return items

    # ============================================================ outgoing calls
    def _submit(self, what, call: Callable, urgent: bool = False) -> None:
        """Queue a client call behind the rate limiter. ``what`` is a label, or the
        OrderCommand itself so an unsent order survives a dropped socket."""
        self.limiter.submit(what, call, urgent)  # type: ignore[arg-type]

    def _pump(self, now: float) -> None:
        if self.session is None or not self.sm.socket_up:
            return
        for what, call in self.limiter.ready(now):
            session = self.session
            if session is None:  # the socket died during this batch
                if isinstance(what, OrderCommand):
                    self.held.appendleft(what)
                continue
            try:
                call(session.client)
                self.counters["msgs_out"] += 1
            except Exception as exc:  # noqa: BLE001 - a send that fails means the socket died
                self.log.warning("client call failed", extra={"what": str(what)[:80],
                                                              "error": repr(exc)})
                if isinstance(what, OrderCommand):
                    self.held.appendleft(what)
                self._lost(f"send failed: {exc!r}")
                return

    def _req_id(self) -> int:
        self.next_req_id += 1
        return self.next_req_id

    # ============================================================ IB events
    def _drain_events(self) -> None:
        self.counters["drains"] += 1
        for ev in self.events.drain(5000):
            if ev.generation != self.generation:
                self.counters["stale_events"] += 1
                continue
            self.counters["msgs_in"] += 1
            self.probe.inbound(time.monotonic())
            handler = getattr(self, "_ev_" + ev.name, None)
            if handler is None:
                continue
            try:
                handler(*ev.args)
            except Exception:  # noqa: BLE001 - one bad event must not stop the bridge
                self.counters["event_errors"] += 1
                self.log.exception("event handler failed", extra={"event": ev.name})
        self._flush_ticks()
        self._pump(time.monotonic())

    def _ev_connectAck(self) -> None:
        if self.session is not None:
            self.server_version = self.session.server_version

    def _ev_nextValidId(self, order_id: int) -> None:
        self.ids.observe_next_valid_id(int(order_id))
        if self.sm.state == S.CONNECTING:
            self.connect_deadline = None
            self.probe.reset(time.monotonic())
            if self.session is not None:
                self.server_version = self.session.server_version
            self._move(S.CONNECTED, f"handshake done (server version {self.server_version}), "
                                    f"nextValidId {order_id}")
            self.connected_once = True
            self._resync("reconnected", reconcile=True, resubscribe=False)

    def _ev_managedAccounts(self, accounts: str) -> None:
        first = accounts.split(",")[0].strip()
        if first and first != self.account:
            self.account = first
        if self.opts.account_updates and self.account:
            acct = self.account
            self._submit("account_updates", lambda c: c.reqAccountUpdates(True, acct))
            rid = self._req_id()
            self._submit("pnl", lambda c: c.reqPnL(rid, acct, ""))

    def _ev_currentTime(self, t: int) -> None:
        pass  # any inbound message already answered the probe

    def _ev_connectionClosed(self) -> None:
        if self.sm.state != S.DISCONNECTED:
            self._lost("connection closed by IB")

    def _ev_session_ended(self, detail: str) -> None:
        if self.sm.state != S.DISCONNECTED:
            self._lost(f"session ended: {detail}")

    def _ev_bad_frame(self, detail: str) -> None:
        self.counters["bad_frames"] += 1
        self.log.warning("undecodable frame from IB", extra={"detail": detail})
        self.publisher.publish(GatewayError(code=0, text=f"undecodable frame from IB: {detail}",
                                            scope="connection"))

    # ---- errors
    def _ev_error(self, req_id: int, code: int, text: str, advanced: str = "") -> None:
        kind = classify(code)
        self.counters[f"ib_error_{code}"] += 1
        if kind == Kind.LINK_LOST:
            self.link_lost = True
            self._publish_error(code, text, req_id, "connection")
            if self.sm.state in (S.CONNECTED, S.SYNCHRONISED):
                self._move(S.DEGRADED, f"{code}: {text}")
        elif kind in (Kind.LINK_RESTORED_LOST, Kind.LINK_RESTORED_KEPT):
            self._publish_error(code, text, req_id, "connection")
            self.link_lost = False
            self.farm_down = False  # IB reports the link and its farms back together
            if self.sm.socket_up:
                lost = kind == Kind.LINK_RESTORED_LOST
                self._resync(f"{code}: {'data lost' if lost else 'data maintained'}",
                             reconcile=True, resubscribe=lost)
        elif kind == Kind.FARM_DOWN:
            self.farm_down = True
            self._publish_error(code, text, req_id, "info")
            if self.sm.state in (S.CONNECTED, S.SYNCHRONISED):
                self._move(S.DEGRADED, f"{code}: {text}")
        elif kind == Kind.FARM_UP:
            if self.farm_down:
                self.farm_down = False
                self._publish_error(code, text, req_id, "info")
                if self.sm.socket_up and not self.link_lost:
                    self._resync(f"{code}: market data farm back; re-requesting market data",
                                 reconcile=False, resubscribe=True)
            else:
                self.counters["info_codes"] += 1
        elif kind in (Kind.FARM_INFO, Kind.INFO):
            self.counters["info_codes"] += 1
        elif kind == Kind.CLIENT_ID_IN_USE:
            self.close_reason = f"client id {self.opts.client_id} in use (326)"
            self._publish_error(code, text, req_id, "connection")
            self.counters["client_id_in_use"] += 1
        elif kind == Kind.CONNECTION:
            if text != self.last_connection_error:  # a long outage repeats the same one
                self.last_connection_error = text
                self._publish_error(code, text, req_id, "connection")
        elif kind == Kind.PACING:
            self._publish_error(code, text, req_id, "connection")
            self.publisher.publish(Alert(severity="critical", code="gateway.pacing_violation",
                                         text=f"IB reports a pacing violation: {text}"))
        elif kind == Kind.WARNING and req_id < 0:
            self._publish_error(code, text, req_id, "info")
        else:
            self._route_request_error(req_id, code, text)

    def _publish_error(self, code: int, text: str, req_id: int, scope: str, ref: str = "") -> None:
        self.publisher.publish(GatewayError(code=int(code), text=text, req_id=int(req_id),
                                            scope=scope, ref=ref))

    def _route_request_error(self, req_id: int, code: int, text: str) -> None:
        job = self.history.finish(req_id)
        if job is not None:
            self._publish_error(code, text, req_id, "history",
                                f"{job.request.requester}/{job.request.request}")
            self._history_end(job, error=f"{code}: {text}")
            return
        sub = self.subs.owner(req_id)
        if sub is not None:
            for requester in sorted(sub.requesters):
                self._publish_error(code, text, req_id, "subscription", f"{requester}/{sub.symbol}")
            if code in SUBSCRIPTION_DEAD_CODES:
                self.subs.drop(sub)
                self.top.pop(req_id, None)
            return
        symbol = self.contracts.fail(req_id, f"{code}: {text}")
        if symbol is not None:
            self._contract_failed(symbol, f"cannot resolve {symbol!r}: {code} {text}")
            return
        rec = self.orders.by_ib_id(req_id)
        if rec is not None:
            self.unacked.pop(req_id, None)
            self._publish_error(code, text, req_id, "order", rec.client_order_id)
            if code == 103 and req_id in self.resent:
                # IB had the first send after all: the order exists; learn its state
                self.resent.discard(req_id)
                if self.sm.state == S.SYNCHRONISED:
                    self._resync("a resent order was already at IB", reconcile=True,
                                 resubscribe=False)
                return
            if code in ORDER_REJECT_CODES and rec.status not in TERMINAL:
                rec.status, rec.final = "Inactive", True
                self.publisher.publish(OrderStatus(ib_order_id=rec.ib_order_id,
                                                   client_order_id=rec.client_order_id,
                                                   status="Inactive", filled=rec.filled,
                                                   remaining=rec.remaining))
            return
        if req_id >= FIRST_REQ_ID:  # a request we retired (cancelled, restored under a new id)
            self.counters["stale_request_errors"] += 1
            return
        scope = "connection" if req_id < 0 else ("order" if code in ORDER_FINAL_CODES else "info")
        self._publish_error(code, text, req_id, scope)

    # ---- contracts
    def _ev_contractDetails(self, req_id: int, details) -> None:
        self.contracts.details(req_id, details.contract)

    def _ev_contractDetailsEnd(self, req_id: int) -> None:
        result = self.contracts.end(req_id)
        if result is None:
            return
        symbol, contract, text = result
        if contract is None:
            self._contract_failed(symbol, text)
            return
        self.known_symbols[contract.conId] = symbol
        for sub in self.subs:
            if sub.symbol == symbol and sub.req_id is None:
                self._request(sub)
        self._release_held()

    def _resolve(self, symbol: str) -> None:
        if self.contracts.get(symbol) is not None or self.contracts.in_flight(symbol):
            return
        if not self.sm.socket_up:
            return  # _resync asks again on connect
        rid = self._req_id()
        query = self.contracts.start(rid, symbol)
        self._submit("contract", lambda c: c.reqContractDetails(rid, query))

    def _contract_failed(self, symbol: str, text: str) -> None:
        for job in self.history.fail_symbol(symbol):
            self._history_end(job, error=text)
        for sub in self.subs:
            if sub.symbol == symbol:
                for requester in sorted(sub.requesters):
                    self._publish_error(200, text, -1, "subscription", f"{requester}/{symbol}")
                self.subs.drop(sub)
        keep: deque[OrderCommand] = deque()
        for cmd in self.held:
            if cmd.command == "place" and cmd.symbol == symbol:
                self._reject_place(cmd, text)
            else:
                keep.append(cmd)
        self.held = keep

    # ---- market data
    def _data(self, req_id: int) -> Subscription | None:
        sub = self.subs.owner(req_id)
        if sub is None:
            self.counters["orphan_data"] += 1  # a late tick for a retired request id
            return None
        sub.last_data = time.monotonic()
        sub.updates += 1
        return sub

    def _ev_tickPrice(self, req_id: int, tick_type: int, px, attrib) -> None:
        top = self.top.get(req_id)
        if top is not None and self._data(req_id) and top.price(tick_type, px):
            self.dirty_ticks.add(req_id)

    def _ev_tickSize(self, req_id: int, tick_type: int, sz) -> None:
        top = self.top.get(req_id)
        if top is not None and self._data(req_id) and top.size(tick_type, sz):
            self.dirty_ticks.add(req_id)

    def _flush_ticks(self) -> None:
        for req_id in self.dirty_ticks:
            top = self.top.get(req_id)
            if top is not None:
                self.publisher.publish(top.message())
        self.dirty_ticks.clear()

    def _ev_tickByTickAllLast(self, req_id, tick_type, t, px, sz, attrib, exchange, special) -> None:
        sub = self._data(req_id)
        if sub is not None:
            self.publisher.publish(translate.trade_tick(sub.symbol, t, px, sz, exchange))

    def _ev_tickByTickBidAsk(self, req_id, t, bid, ask, bid_size, ask_size, attrib) -> None:
        sub = self._data(req_id)
        if sub is not None:
            self.publisher.publish(translate.quote_tick(sub.symbol, t, bid, ask, bid_size, ask_size))

    def _ev_updateMktDepth(self, req_id, position, operation, side, px, sz) -> None:
        self._depth(req_id, position, operation, side, px, sz, "", False)

    def _ev_updateMktDepthL2(self, req_id, position, mm, operation, side, px, sz, smart) -> None:
        self._depth(req_id, position, operation, side, px, sz, mm, smart)

    def _depth(self, req_id, position, operation, side, px, sz, mm, smart) -> None:
        sub = self._data(req_id)
        if sub is None:
            return
        self.depth_rows.setdefault(sub.symbol, translate.DepthRows()).apply(operation, side)
        self.publisher.publish(translate.depth_update(sub.symbol, position, operation, side, px,
                                                      sz, mm, smart))

    def _ev_realtimeBar(self, req_id, t, o, h, low, c, volume, wap, count) -> None:
        sub = self._data(req_id)
        if sub is not None:
            self.publisher.publish(translate.bar(sub.symbol, t, o, h, low, c, volume, wap, count))

    # ---- orders
    def _symbol(self, contract: Contract) -> str:
        return translate.symbol_of(contract, self.known_symbols)

    def _ev_openOrder(self, order_id: int, contract: Contract, order, state) -> None:
        ours = int(order.clientId or 0) == self.opts.client_id
        coid = order.orderRef or ""
        if ours:
            rec = self.orders.by_ib_id(order_id) or self.orders.learn(
                coid, order_id, self._symbol(contract), translate.SIDES.get(order.action, "BUY"),
                translate.size(order.totalQuantity))
            rec.status = getattr(state, "status", rec.status) or rec.status
            rec.live_this_run = True
            self.unsent.pop(int(order_id), None)  # IB has it
            self.unacked.pop(int(order_id), None)
            if self.recon is not None:
                self.recon.open_ids.add(int(order_id))
        if self.recon is not None:
            self.recon.saw("open_orders")
        self.publisher.publish(translate.open_order(order_id, contract, order, state,
                                                    self._symbol(contract)))

    def _ev_openOrderEnd(self) -> None:
        self._ended("open_orders")

    def _ev_orderStatus(self, order_id, status, filled, remaining, avg_fill_price, perm_id,
                        parent_id, last_fill_price, client_id, why_held, mkt_cap_price) -> None:
        coid = ""
        if int(client_id or 0) == self.opts.client_id:
            rec = self.orders.by_ib_id(int(order_id))
            if rec is not None:
                coid = rec.client_order_id
                rec.status, rec.perm_id = status, int(perm_id or 0)
                rec.filled, rec.remaining = translate.size(filled), translate.size(remaining)
                rec.final = status in TERMINAL
                rec.live_this_run = True
                self.unsent.pop(int(order_id), None)
                self.unacked.pop(int(order_id), None)
        self.publisher.publish(translate.order_status(order_id, coid, status, filled, remaining,
                                                      avg_fill_price, perm_id, parent_id,
                                                      last_fill_price, why_held))

    def _ev_execDetails(self, req_id: int, contract: Contract, ex) -> None:
        if self.recon is not None and req_id == self.recon.exec_req_id:
            self.recon.saw("executions")
        if int(ex.clientId or 0) == self.opts.client_id:
            self.unsent.pop(int(ex.orderId), None)
            self.unacked.pop(int(ex.orderId), None)
            rec = self.orders.by_ib_id(int(ex.orderId))
            if rec is not None and translate.size(ex.cumQty) >= rec.filled:
                rec.filled = translate.size(ex.cumQty)  # replays too: they carry cumQty
                rec.avg_price = float(ex.avgPrice or 0.0)
                rec.live_this_run = True
        if not self.execs.is_new_exec(ex.execId):
            self.counters["duplicate_execs_suppressed"] += 1
            return
        msg = translate.execution(contract, ex, self._symbol(contract))
        self.publisher.publish(msg)
        self.execs.record_exec(ex.execId, msg.exec_time_ns)
        self.counters["executions"] += 1

    def _ev_execDetailsEnd(self, req_id: int) -> None:
        if self.recon is not None and req_id == self.recon.exec_req_id:
            self.recon.ended("executions")
            self._maybe_synchronised()

    def _ev_commissionAndFeesReport(self, report) -> None:
        if not self.execs.is_new_commission(report.execId):
            self.counters["duplicate_commissions_suppressed"] += 1
            return
        self.publisher.publish(translate.commission(report))
        self.execs.record_commission(report.execId)

    def _ev_position(self, account: str, contract: Contract, qty, avg_cost) -> None:
        if self.recon is not None:
            self.recon.saw("positions")
        self.publisher.publish(translate.position(account, contract, qty, avg_cost,
                                                  self._symbol(contract)))

    def _ev_positionEnd(self) -> None:
        self._ended("positions")

    def _ev_updateAccountValue(self, key: str, value: str, currency: str, account: str) -> None:
        self.publisher.publish(AccountValue(account=account, key=key, value=value,
                                            currency=currency or ""))

    def _ev_pnl(self, req_id: int, daily, unrealized, realized) -> None:
        self.publisher.publish(PnL(account=self.account, daily=translate.price(daily),
                                   unrealized=translate.price(unrealized),
                                   realized=translate.price(realized)))

    # ============================================================ (re)synchronisation
    def _resync(self, reason: str, reconcile: bool, resubscribe: bool) -> None:
        """Back to ``connected``: restore subscriptions, optionally reconcile; synchronised
        follows when everything queued here has gone out and every end marker is in."""
        if self.sm.state != S.CONNECTED:
            self._move(S.CONNECTED, reason)
        for symbol in sorted({s.symbol for s in self.subs} | self._held_symbols()):
            self._resolve(symbol)
        for sub in self.subs:
            if resubscribe and sub.req_id is not None:
                self._cancel_at_ib(sub)  # IB may or may not still have it: fresh id either way
                sub.req_id = None
            if sub.req_id is None and self.contracts.get(sub.symbol) is not None:
                self._request(sub)
        self.restore_barrier_passed = False
        gen = self.generation
        self._submit("restore_barrier", lambda c: self._barrier(gen))
        if reconcile:
            self._reconcile(reason)

    def _barrier(self, generation: int) -> None:
        if generation == self.generation:
            self.restore_barrier_passed = True
            self._maybe_synchronised()

    def _reconcile(self, reason: str) -> None:
        rid = self._req_id()
        self.recon = Reconciliation(reason, rid, time.monotonic())
        flt = ExecutionFilter()
        flt.clientId = self.opts.client_id
        flt.time = filter_time(self.execs.last_exec_ns)
        self.pending_ends["open_orders"] += 1
        self.pending_ends["positions"] += 1
        self._submit("reconcile", lambda c: c.reqAllOpenOrders())
        self._submit("reconcile", lambda c: c.reqExecutions(rid, flt))
        self._submit("reconcile", lambda c: c.reqPositions())

    def _ended(self, part: str) -> None:
        self.pending_ends[part] = max(0, self.pending_ends[part] - 1)
        # an end for an older run's request is not ours: wait for the last one sent
        if self.recon is not None and self.pending_ends[part] == 0:
            self.recon.ended(part)
            self._maybe_synchronised()

    def _maybe_synchronised(self) -> None:
        if self.sm.state != S.CONNECTED or not self.restore_barrier_passed:
            return
        if self.link_lost or self.farm_down:
            return
        if self.recon is not None and not self.recon.done:
            return
        if self.recon is not None:
            r = self.recon
            self.log.info("reconciled", extra={"reason": r.reason, "counts": r.counts,
                                               "seconds": round(time.monotonic() - r.started, 3)})
            self.recon = None
            self._close_vanished_orders(r)
        self.backoff.reset()
        self.last_connection_error = ""
        self._move(S.SYNCHRONISED, "subscriptions restored, orders/executions/positions "
                                   "reconciled")
        self._requeue_unsent()
        self._release_held()

    def _close_vanished_orders(self, r: Reconciliation) -> None:
        """An order we knew open that IB no longer lists ended while we could not hear it
        (the open-orders answer has live orders only). Its executions tell how: filled in
        full, or cancelled with what filled. Published so execution is not left guessing."""
        waiting = {c.ib_order_id for c in self.held} | set(self.unsent)
        for rec in list(self.orders.by_ib.values()):
            if rec.final or not rec.live_this_run or rec.ib_order_id in r.open_ids \
                    or rec.ib_order_id in waiting:
                continue
            lost = self.unacked.pop(rec.ib_order_id, None)
            if lost is not None:
                # sent, but IB never mentioned it: it died in the socket with the connection.
                # Resend with the same id: if IB did get it after all, the id is taken and IB
                # refuses the resend (103), so this can never make a second order.
                self.counters["places_resent_after_drop"] += 1
                self.log.warning("resending a place lost with the connection", extra={
                    "ib_order_id": rec.ib_order_id, "client_order_id": rec.client_order_id})
                self.held.append(lost)
                self.resent.add(rec.ib_order_id)
                continue
            status = "Filled" if rec.filled >= rec.quantity > 0 else "Cancelled"
            rec.status, rec.final = status, True
            rec.remaining = max(0.0, rec.quantity - rec.filled)
            self.counters["orders_closed_by_reconciliation"] += 1
            self._publish_error(0, f"order not open at IB after reconciliation: {status} "
                                   f"(filled {rec.filled:g} of {rec.quantity:g})",
                                rec.ib_order_id, "order", rec.client_order_id)
            self.publisher.publish(OrderStatus(ib_order_id=rec.ib_order_id,
                                               client_order_id=rec.client_order_id,
                                               status=status, filled=rec.filled,
                                               remaining=rec.remaining,
                                               avg_fill_price=rec.avg_price,
                                               perm_id=rec.perm_id, parent_id=rec.parent_id))

    # ============================================================ subscriptions
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
                    self._on_subscribe(msg)
                elif isinstance(msg, HistoricalRequest):
                    self.counters["history_requests"] += 1
                    self.history.add(msg)
                    if self.contracts.get(msg.symbol) is None:
                        self._resolve(msg.symbol)

    def _on_subscribe(self, req: SubscribeRequest) -> None:
        self.counters["sub_requests"] += 1
        ref = f"{req.requester}/{req.symbol}"
        if not req.active:
            sub = self.subs.remove(req.requester, req.symbol, req.kind)
            if sub is not None:
                self._cancel_at_ib(sub)
            return
        outcome, sub, why = self.subs.add(req.requester, req.symbol, req.kind)
        if req.refresh and req.kind == "depth" and sub is not None and sub.req_id is not None \
                and time.monotonic() - self.depth_refreshed.get(req.symbol, -1e9) > 5.0:
            # a consumer's book broke (a lost update): cancel and re-request, so IB sends the
            # whole book again as inserts after a clear; at most once per 5 s per symbol
            self.depth_refreshed[req.symbol] = time.monotonic()
            self.counters["depth_refreshes"] += 1
            self._cancel_at_ib(sub)
            sub.req_id = None
            self._request(sub)
            return
        if outcome in (Outcome.LIMIT, Outcome.BAD_KIND):
            self.counters["sub_refused"] += 1
            self._publish_error(101 if outcome == Outcome.LIMIT else 321, why, -1,
                                "subscription", ref)
            return
        if outcome == Outcome.NEW and sub is not None:
            if self.contracts.get(sub.symbol) is None:
                self._resolve(sub.symbol)
            elif self.sm.socket_up:
                self._request(sub)

    def _request(self, sub: Subscription) -> None:
        contract = self.contracts.get(sub.symbol)
        if contract is None or not self.sm.socket_up:
            return
        rid = self._req_id()
        self.subs.assign(sub, rid)
        kind = sub.kind
        if kind == "tick":
            self.top[rid] = translate.TopOfBook(sub.symbol)
            call = lambda c: c.reqMktData(rid, contract, "", False, False, [])  # noqa: E731
        elif kind == "trade":
            call = lambda c: c.reqTickByTickData(rid, contract, "AllLast", 0, False)  # noqa: E731
        elif kind == "quote":
            call = lambda c: c.reqTickByTickData(rid, contract, "BidAsk", 0, False)  # noqa: E731
        elif kind == "depth":
            rows = self.opts.depth_rows
            clear = self.depth_rows.pop(sub.symbol, translate.DepthRows()).clear_messages(sub.symbol)
            for msg in clear:  # consumers' books restart empty, then IB's inserts rebuild them
                self.publisher.publish(msg)
            call = lambda c: c.reqMktDepth(rid, contract, rows, False, [])  # noqa: E731
        else:
            call = lambda c: c.reqRealTimeBars(rid, contract, 5, "TRADES", False, [])  # noqa: E731
        self._submit(f"subscribe {sub.name}", call)

    def _cancel_at_ib(self, sub: Subscription) -> None:
        rid = sub.req_id
        if rid is None:
            return
        self.subs.by_req_id.pop(rid, None)
        self.top.pop(rid, None)
        if not self.sm.socket_up:
            return
        kind = sub.kind
        if kind == "tick":
            call = lambda c: c.cancelMktData(rid)  # noqa: E731
        elif kind in ("trade", "quote"):
            call = lambda c: c.cancelTickByTickData(rid)  # noqa: E731
        elif kind == "depth":
            call = lambda c: c.cancelMktDepth(rid, False)  # noqa: E731
        else:
            call = lambda c: c.cancelRealTimeBars(rid)  # noqa: E731
        self._submit(f"cancel {sub.name}", call, urgent=True)

    # ============================================================ order commands
    def _on_command(self, msg: Message, peer_src: str) -> list[Message]:
        if not peer_src.startswith("execution."):
            self.counters["refused_commands"] += 1
            text = (f"refused {type(msg).__name__} from {peer_src!r}: only execution.* may "
                    f"command the gateway")
            self.log.warning("command refused", extra={"src": peer_src,
                                                       "type": type(msg).__name__})
            self.publisher.publish(Alert(severity="warning", code="gateway.refused_command",
                                         text=text))
            raise CommandRefused(text)
        if not isinstance(msg, OrderCommand):
            self.counters["refused_commands"] += 1
            raise CommandRefused(f"the gateway takes OrderCommand only, not {type(msg).__name__}")
        self.counters[f"cmd_{msg.command}"] += 1
        if msg.command == "place":
            return self._place(msg)
        if msg.command == "reconcile":
            if self.sm.socket_up and not self.link_lost:
                self._resync("reconcile requested by execution", reconcile=True,
                             resubscribe=False)
            return []  # otherwise the next connection reconciles anyway
        if msg.command in ("modify", "cancel"):
            rec = self.orders.get(msg.client_order_id) if msg.client_order_id else None
            if rec is None and msg.ib_order_id:
                rec = self.orders.by_ib_id(msg.ib_order_id)
            if rec is None:
                raise CommandRefused(f"{msg.command}: unknown order (client_order_id "
                                     f"{msg.client_order_id!r}, ib_order_id {msg.ib_order_id})")
            msg.ib_order_id = rec.ib_order_id
            msg.client_order_id = rec.client_order_id
            if not msg.symbol:
                msg.symbol = rec.symbol
        self._dispatch(msg)
        return []

    def _place(self, cmd: OrderCommand) -> list[Message]:
        rec = self.orders.get(cmd.client_order_id)
        if rec is not None:  # a resend, or execution retrying after our restart
            self.counters["duplicate_places"] += 1
            return [OrderStatus(ib_order_id=rec.ib_order_id, client_order_id=rec.client_order_id,
                                status=rec.status, filled=rec.filled, remaining=rec.remaining,
                                perm_id=rec.perm_id, parent_id=rec.parent_id)]
        if not cmd.client_order_id or not cmd.symbol or not cmd.quantity > 0:
            raise CommandRefused("place needs client_order_id, symbol and a positive quantity")
        if cmd.order_type in ("LMT", "STP LMT") and math.isnan(cmd.limit_price):
            raise CommandRefused(f"{cmd.order_type} order needs a limit price")
        if cmd.order_type in ("STP", "STP LMT") and math.isnan(cmd.stop_price):
            raise CommandRefused(f"{cmd.order_type} order needs a stop price")
        ib_id = self.ids.allocate()          # the block is fsync'd before the id is used
        cmd.ib_order_id = ib_id
        self.orders.add(cmd, ib_id)          # journalled (with the command) before sending
        self._dispatch(cmd)
        return [OrderStatus(ib_order_id=ib_id, client_order_id=cmd.client_order_id,
                            status="PendingSubmit", filled=0.0, remaining=cmd.quantity,
                            parent_id=cmd.parent_ib_id)]

    def _can_send_orders(self) -> bool:
        return self.sm.state == S.SYNCHRONISED or (self.sm.state == S.DEGRADED
                                                   and not self.link_lost)

    def _dispatch(self, cmd: OrderCommand) -> None:
        """Send now (through the limiter) or hold until synchronised; never drop."""
        if self._can_send_orders() and not self.held:
            if self._send_order(cmd):
                return
        self.held.append(cmd)
        self.counters["held_commands"] += 1
        if cmd.symbol:
            self._resolve(cmd.symbol)

    def _send_order(self, cmd: OrderCommand) -> bool:
        """Queue one command behind the limiter; False if its contract is not resolved yet."""
        if cmd.command == "global_cancel":
            self._submit(cmd, lambda c: c.reqGlobalCancel(OrderCancel()), urgent=True)
            return True
        if cmd.command == "cancel":
            ib_id = cmd.ib_order_id
            self._submit(cmd, lambda c: c.cancelOrder(ib_id, OrderCancel()), urgent=True)
            return True
        contract = self.contracts.get(cmd.symbol)
        if contract is None:
            return False
        order = build_order(cmd, cmd.ib_order_id)
        ib_id = cmd.ib_order_id
        journal = self.orders.journal
        unsent = self.unsent

        def send(client, cmd=cmd) -> None:
            client.placeOrder(ib_id, contract, order)
            rec = self.orders.by_ib_id(ib_id)
            if rec is not None:
                rec.live_this_run = True
            if cmd.command == "place":
                unsent.pop(ib_id, None)
                self.unacked[ib_id] = cmd
                journal.append({"sent": ib_id})
        self._submit(cmd, send)
        return True

    def _release_held(self) -> None:
        if not self._can_send_orders():
            return
        waiting: deque[OrderCommand] = deque()
        while self.held:
            cmd = self.held.popleft()
            if waiting and cmd.symbol in {w.symbol for w in waiting}:
                waiting.append(cmd)  # keep per-symbol order behind a pending resolution
                continue
            if cmd.command == "cancel":
                rec = self.orders.by_ib_id(cmd.ib_order_id)
                if rec is not None and rec.final:
                    continue  # it ended while we held the cancel: nothing to cancel
            if not self._send_order(cmd):
                waiting.append(cmd)
                self._resolve(cmd.symbol)
        self.held = waiting

    def _held_symbols(self) -> set[str]:
        return {c.symbol for c in self.held if c.symbol}

    def _reject_place(self, cmd: OrderCommand, text: str) -> None:
        self._publish_error(200, text, cmd.ib_order_id, "order", cmd.client_order_id)
        rec = self.orders.by_ib_id(cmd.ib_order_id)
        if rec is not None:
            rec.status, rec.final = "Inactive", True
        self.publisher.publish(OrderStatus(ib_order_id=cmd.ib_order_id,
                                           client_order_id=cmd.client_order_id, status="Inactive",
                                           filled=0.0, remaining=cmd.quantity))

    # ---- places journalled by a previous run but never sent (SIGKILL while holding them)
    def _load_unsent(self) -> None:
        cmds: dict[int, OrderCommand] = {}
        for rec in self.orders.journal.records():
            if "cmd" in rec:
                try:
                    cmds[int(rec["ib"])] = msgspec.convert(rec["cmd"], OrderCommand)
                except (msgspec.ValidationError, KeyError, ValueError):
                    continue
            elif "sent" in rec:
                cmds.pop(int(rec["sent"]), None)
        self.unsent = cmds

    def _requeue_unsent(self) -> None:
        """After the first reconciliation: what IB did not report is resent (same id, same
        orderRef); IB refuses a duplicate id, so a resend can never make a second order."""
        if not self.unsent:
            return
        for ib_id, cmd in sorted(self.unsent.items()):
            self.log.warning("sending a place journalled before a crash", extra={
                "ib_order_id": ib_id, "client_order_id": cmd.client_order_id})
            self.held.append(cmd)
            self.resent.add(ib_id)
        self.unsent = {}

    # ============================================================ heartbeat
    def heartbeat(self) -> None:
        now = time.monotonic()
        c = self.counters
        for key in [k for k in c if k.startswith("tick_age_ms.")]:
            del c[key]
        for sub in self.subs:
            age = -1 if sub.last_data is None else int((now - sub.last_data) * 1000)
            c[f"tick_age_ms.{sub.symbol}.{sub.kind}"] = age
        c["queue_depth"] = self.events.qsize()
        c["outgoing_queue"] = len(self.limiter)
        c["held_commands_now"] = len(self.held)
        c["subscriptions"] = len(self.subs)
        c["reconnects"] = self.reconnects
        c["state_" + self.sm.state.value] = 1
        for s in S:
            if s != self.sm.state:
                c.pop("state_" + s.value, None)
        c["order_commands_acked"] = self.orders_server.counters["processed"]
        c["next_order_id"] = self.ids.next_id
        super().heartbeat()
