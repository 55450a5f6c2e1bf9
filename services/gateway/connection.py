"""The connection: its state machine, the policies that drive it, and ``Connection``, its owner.

``ConnState``, ``TRANSITIONS``, ``StateMachine``, ``Backoff`` and ``HangProbe`` are pure logic,
no sockets and no clocks of their own (callers pass ``now``), unit-tested directly.
``Connection`` owns the one TWS socket's life with them: a ``Session`` per attempt, the
handshake deadline, the hang probe, reconnects, and IB's own link state (1100 /
1101 / 1102, market data farms) as reported through errors. Every state change goes out as a
``GatewayState``. What a connect or a loss means for orders and data is not decided here: the
gateway is told (``on_up``, ``on_down``) and tells each concern.

Reconnects follow the gateway, not a backoff table: while it is gone a ``PortProbe`` tries a
plain TCP connect to its port every ``PORT_PROBE_S`` (cheap: no thread, no session, nothing
published), and the full handshake starts as soon as a connection is accepted and not dropped
at once. The backoff applies only to what a probe cannot see: a handshake that failed on an
accepting port (closed during the handshake, no nextValidId or account in time) and 326
(client id in use); after its delay the probe runs again.
"""
from __future__ import annotations

import enum
import errno
import logging
import random
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from ibapi.const import MAX_MSG_LEN

from proto.schema import Alert, GatewayError, GatewayState
from services.gateway import ib_time
from services.gateway.client import Session
from services.gateway.options import GatewayOptions
from services.gateway.outbox import Outbox
from services.gateway.wrapper import EventQueue


class ConnState(str, enum.Enum):
    DISCONNECTED = "disconnected"  # no socket; a reconnect is scheduled
    CONNECTING = "connecting"      # socket/handshake in progress on the connector thread
    CONNECTED = "connected"        # handshake done and nextValidId received; not yet trusted
    SYNCHRONISED = "synchronised"  # subscriptions restored and orders/executions reconciled
    DEGRADED = "degraded"          # socket up, but IB is unreachable (1100) or a farm is down


S = ConnState

#: Every legal transition. Anything else is a bug and raises, so it shows up in tests.
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING}),
    S.CONNECTING: frozenset({S.CONNECTED, S.DISCONNECTED}),
    # connected -> degraded: 1100 or a farm drop while reconciliation is still running
    S.CONNECTED: frozenset({S.SYNCHRONISED, S.DEGRADED, S.DISCONNECTED}),
    # synchronised -> connected: a re-reconciliation (1102, a reconcile command, farm restored)
    S.SYNCHRONISED: frozenset({S.DEGRADED, S.CONNECTED, S.DISCONNECTED}),
    # degraded -> connected: IB is back (1101/1102, 2104) and we re-synchronise
    S.DEGRADED: frozenset({S.CONNECTED, S.DISCONNECTED}),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass
class StateMachine:
    state: ConnState = S.DISCONNECTED
    reason: str = "starting"
    history: list[tuple[ConnState, ConnState, str]] = field(default_factory=list)

    def can(self, to: ConnState) -> bool:
        return to in TRANSITIONS[self.state]

    def move(self, to: ConnState, reason: str) -> bool:
        """Go to ``to``; False (and no change) if already there; raise if illegal."""
        if to == self.state:
            return False
        if not self.can(to):
            raise IllegalTransition(f"{self.state.value} -> {to.value} ({reason})")
        self.history.append((self.state, to, reason))
        del self.history[:-100]
        self.state, self.reason = to, reason
        return True

    @property
    def socket_up(self) -> bool:
        return self.state in (S.CONNECTED, S.SYNCHRONISED, S.DEGRADED)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; ``reset()`` after a good session.

    Full jitter (a uniform draw in [base*2^n / 2, base*2^n]) keeps a fleet of bridges from
    reconnecting in lock-step after a gateway restart, and never waits longer than the cap.
    """

    base: float = 1.0
    cap: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class HangProbe:
    """A silent hang (socket open, nothing moves) is only visible by asking: every ``interval``
    of inbound silence we send reqCurrentTime; no answer (or any other traffic) within
    ``timeout`` means the session is dead."""

    interval: float = 10.0
    timeout: float = 5.0
    last_inbound: float = 0.0
    sent_at: float | None = None

    def reset(self, now: float) -> None:
        self.last_inbound = now
        self.sent_at = None

    def inbound(self, now: float) -> None:
        self.last_inbound = now
        self.sent_at = None

    def should_probe(self, now: float) -> bool:
        return self.sent_at is None and now - self.last_inbound >= self.interval

    def probed(self, now: float) -> None:
        self.sent_at = now

    def timed_out(self, now: float) -> bool:
        return self.sent_at is not None and now - self.sent_at >= self.timeout


#: while the gateway is gone: one TCP connect to its port this often
PORT_PROBE_S = 0.15
#: a probe's connection must stay up this long before the handshake starts: a restarting
#: gateway behind a socket proxy accepts and drops at once (TWS itself never writes first)
PORT_PROBE_SETTLE_S = 0.05
#: a probe connect still pending after this long is abandoned (and tried again)
PORT_PROBE_TIMEOUT_S = 1.0


def _ready(sock: socket.socket, events: int) -> bool:
    """Is ``sock`` ready for ``events`` (or closed, or in error) right now? (``poll``, not
    ``select``: any descriptor number.)"""
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(0))


#: IB's currentTime has a one-second resolution: offsets under 2 s are no offset
CLOCK_SKEW_NS = 2_000_000_000


class PortProbe:
    """Is anything accepting on host:port? One non-blocking TCP connect at a time, advanced by
    ``poll(now)`` from the service's timer: it never waits. ``poll`` is True once a connection
    was accepted and stayed up ``settle`` seconds (then it is closed: the handshake opens its
    own); a refused, failed, dropped or slow connect is closed and tried again ``interval``
    later. No thread, no session, nothing published: cheap enough to run every 150 ms for as
    long as an outage lasts."""

    def __init__(self, host: str, port: int, interval: float = PORT_PROBE_S,
                 settle: float = PORT_PROBE_SETTLE_S,
                 timeout: float = PORT_PROBE_TIMEOUT_S) -> None:
        self.host, self.port = host, port
        self.interval, self.settle, self.timeout = interval, settle, timeout
        self.sock: socket.socket | None = None
        self.next_at = 0.0
        self.opened_at = 0.0
        self.connected_at: float | None = None
        self.attempts = 0   # connects tried since the last reset
        self.last_error = ""

    def reset(self, at: float) -> None:
        """Start probing at ``at`` (monotonic)."""
        self.close()
        self.next_at = at
        self.attempts = 0

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.connected_at = None

    def _failed(self, now: float, why: str) -> bool:
        self.last_error = why
        self.close()
        self.next_at = now + self.interval
        return False

    def poll(self, now: float) -> bool:
        if self.sock is None:
            if now < self.next_at:
                return False
            self.attempts += 1
            try:  # loopback only (the config's rule): resolving never waits on a network
                family, _, _, _, address = socket.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM)[0]
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                return self._failed(now, f"socket: {exc}")
            sock.setblocking(False)
            try:
                err = sock.connect_ex(address)
            except OSError as exc:  # e.g. a host name that does not resolve
                sock.close()
                return self._failed(now, str(exc))
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                sock.close()
                return self._failed(now, errno.errorcode.get(err, str(err)))
            self.sock, self.opened_at = sock, now
            self.connected_at = now if err == 0 else None
            return False
        sock = self.sock
        if self.connected_at is None:
            if not _ready(sock, select.POLLOUT):
                if now - self.opened_at > self.timeout:
                    return self._failed(now, "connect timed out")
                return False
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self._failed(now, errno.errorcode.get(err, str(err)))
            self.connected_at = now
        if now - self.connected_at < self.settle:
            return False
        if _ready(sock, select.POLLIN):  # TWS waits for the client's handshake: anything
            # here is a close or a reset
            try:
                data = sock.recv(1)
            except OSError:
                data = b""
            if not data:
                return self._failed(now, "accepted, then dropped")
        self.close()
        self.last_error = ""
        return True


#: a client id lock-out (IB's 326 on every attempt; docs/gateway.md, "Reconnect"): a warning
#: alert at the first 326, one critical alert once it has lasted this many refusals or seconds
LOCKOUT_CRITICAL_ATTEMPTS = 10
LOCKOUT_CRITICAL_S = 60.0
#: the repeated 326 goes on the bus at most once per this many seconds, with its count
LOCKOUT_SUMMARY_S = 30.0


@dataclass
class Lockout:
    """One client id lock-out: IB's 326 on consecutive attempts, until a handshake passes."""

    since: float
    refusals: int = 0
    published_at: float = 0.0
    unpublished: int = 0      # 326s since the last one on the bus
    critical: bool = False


class Connection:
    """The one TWS socket: connect, handshake, probe, reconnect; IB's link and farm state."""

    def __init__(self, opts: GatewayOptions, events: EventQueue, outbox: Outbox,
                 publisher: Any, counters: Counter, log: logging.Logger,
                 on_up: Callable[[], None], on_down: Callable[[], None]) -> None:
        self.opts = opts
        self.events = events
        self.outbox = outbox
        self.publisher = publisher
        self.counters = counters
        self.log = log
        self.on_up = on_up        # handshake done: the gateway re-synchronises
        self.on_down = on_down    # session gone: the gateway tells every concern
        self.sm = StateMachine()
        self.backoff = Backoff(opts.backoff_base, opts.backoff_cap)
        self.probe = HangProbe(opts.probe_interval, opts.probe_timeout)
        self.session: Session | None = None
        #: connection attempt number; events from an older attempt are stale
        self.generation = 0
        self.server_version = 0
        self.reconnects = 0
        self.clock_offset_ns = 0  # IB's clock minus ours (on_current_time)
        #: when the next attempt may start: the first at once (a full handshake, so a
        #: gateway with nothing listening says so), later ones through the port probe
        self.reconnect_at: float | None = time.monotonic()
        self.port_probe = PortProbe(opts.host, opts.port)
        self.probing = False       # the next attempt waits for the probe
        self.trusted = False       # this session has been synchronised at least once
        self.connect_deadline: float | None = None
        self.link_lost = False     # 1100 seen, not yet 1101/1102
        self.farm_down = False     # 2103 seen, not yet 2104
        self.close_reason = ""     # why IB is about to close us (326), added to the loss reason
        self.lockout: Lockout | None = None  # 326 on every attempt since then (None: not now)
        self.last_connection_error = ""  # a long outage repeats one error: published once
        #: ibapi reported 502 for this attempt: the TCP connection itself failed (nothing
        #: listening, or refused), not a session IB closed
        self.connect_failed = False

    # -- QUERIES ---------------------------------------------------------------------------
    @property
    def state(self) -> ConnState:
        return self.sm.state

    @property
    def socket_up(self) -> bool:
        return self.sm.socket_up

    @property
    def can_send_orders(self) -> bool:
        """Synchronised, or degraded by a market data farm only (orders still work)."""
        return self.sm.state == S.SYNCHRONISED or (self.sm.state == S.DEGRADED
                                                   and not self.link_lost)

    @property
    def client(self) -> Any:
        """The ibapi client of the live session, or None."""
        if self.session is None or not self.sm.socket_up:
            return None
        return self.session.client

    # -- STATE -----------------------------------------------------------------------------
    def move(self, to: ConnState, reason: str) -> None:
        if self.sm.move(to, reason):
            self.log.info("state", extra={"state": to.value, "reason": reason})
            self.publish_state()

    def publish_state(self) -> None:
        self.publisher.publish(GatewayState(state=self.sm.state.value, reason=self.sm.reason,
                                            server_version=self.server_version,
                                            client_id=self.opts.client_id,
                                            reconnects=self.reconnects,
                                            clock_offset_ns=self.clock_offset_ns))

    def hold(self, reason: str) -> None:
        """Stay in the current state for a new reason (e.g. ``connected`` while the account
        IB landed us on is refused): logged and published like a change."""
        if reason != self.sm.reason:
            self.sm.reason = reason
            self.log.info("state", extra={"state": self.sm.state.value, "reason": reason})
            self.publish_state()

    def synchronised(self, reason: str) -> None:
        """Trusted again: the backoff starts over and a new outage's errors are news."""
        self.backoff.reset()
        self.trusted = True
        self.last_connection_error = ""
        self.move(S.SYNCHRONISED, reason)

    # -- TIMERS ----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Reconnect when the backoff has elapsed, give up on a slow handshake, probe a
        silent socket and drop it if the probe goes unanswered."""
        state = self.sm.state
        if state == S.DISCONNECTED and self.reconnect_at is not None and now >= self.reconnect_at:
            if not self.probing:
                self._connect()
            elif self.port_probe.poll(now):
                self.counters["port_probes"] += self.port_probe.attempts
                self.log.info("the gateway's port accepts again: handshake", extra={
                    "probes": self.port_probe.attempts, "host": self.opts.host,
                    "port": self.opts.port})
                self._connect()
        elif state == S.CONNECTING and self.connect_deadline is not None \
                and now > self.connect_deadline:
            self.lost(f"no handshake/nextValidId within {self.opts.connect_timeout:g}s")
        elif self.sm.socket_up:
            if self.probe.timed_out(now):
                self.lost(f"no answer to the liveness probe within {self.probe.timeout:g}s "
                          f"(silent hang)")
            elif self.probe.should_probe(now):
                self.probe.probed(now)
                self.outbox.submit("probe", lambda c: c.reqCurrentTime(), urgent=True)

    def inbound(self, now: float) -> None:
        """Anything from IB proves the socket alive (the probe's answer included)."""
        self.probe.inbound(now)

    # -- SESSIONS --------------------------------------------------------------------------
    def _connect(self) -> None:
        self.reconnect_at = None
        self.generation += 1
        self.connect_failed = False
        self.trusted = False
        self.move(S.CONNECTING, f"attempt {self.backoff.attempts + 1} to "
                                f"{self.opts.host}:{self.opts.port} as client "
                                f"{self.opts.client_id}")
        self.connect_deadline = time.monotonic() + self.opts.connect_timeout
        self.session = Session(self.events, self.generation, self.opts.host, self.opts.port,
                               self.opts.client_id)
        self.session.start()

    def lost(self, reason: str, backoff: bool | None = None) -> None:
        """The session is gone (or we gave up on it): clean up, schedule the next attempt.

        ``backoff`` (None: decided here): a session that failed on a port that accepted
        before it was ever trusted (``connecting`` with the TCP connect done, or
        ``connected`` and not yet synchronised: a gateway that takes the handshake and
        drops us must not be hammered), and 326, wait the backoff's next step before
        probing again; any other loss (nothing listening, a synchronised session IB closed
        or we dropped) probes the port at once and handshakes as soon as it accepts."""
        if backoff is None:
            backoff = bool(self.close_reason) or (
                self.sm.state == S.CONNECTED and not self.trusted) or (
                self.sm.state == S.CONNECTING and not self.connect_failed)
        refused = self.connect_failed and self.sm.state == S.CONNECTING
        if self.session is not None:
            self.session.abort()
            self.session = None
        self.generation += 1  # every event still queued from that session is now stale
        was_up = self.sm.socket_up
        if self.close_reason:
            reason = f"{reason}; {self.close_reason}"
            self.close_reason = ""
        self.on_down()
        self.link_lost = self.farm_down = False
        self.connect_deadline = None
        now = time.monotonic()
        self.probing = True
        if backoff:
            delay = self.backoff.next_delay()
            self.counters["handshake_backoffs"] += 1
            then = f"retry in {delay:.2f}s (backoff), then as soon as the port accepts"
        else:
            # refused: the port was just tried, probe from the next interval; a session that
            # was up (or failed after connecting): probe at once
            delay = self.port_probe.interval if refused else 0.0
            then = (f"probing {self.opts.host}:{self.opts.port} every "
                    f"{self.port_probe.interval:g}s, handshake as soon as it accepts")
        self.reconnect_at = now + delay
        self.port_probe.reset(self.reconnect_at)
        if was_up:
            self.reconnects += 1
        self.counters["disconnects"] += 1
        self.move(S.DISCONNECTED, f"{reason}; {then}")

    def abort(self) -> None:
        """The service is stopping."""
        self.port_probe.close()
        if self.session is not None:
            self.session.abort()

    # -- CALLBACKS (ibapi, and the session thread's own two) -------------------------------
    def on_connect_ack(self) -> None:
        if self.session is not None:
            self.server_version = self.session.server_version

    def on_current_time(self, epoch_s: int) -> None:
        """IB's clock (currentTime, whole seconds: asked at each connect, and the hang probe's
        answer): the offset from ours, 0 unless it is beyond the second's resolution (and
        the round trip) by CLOCK_SKEW_NS; published with the state when it changes."""
        offset = int(epoch_s) * 1_000_000_000 - time.time_ns()
        offset = 0 if abs(offset) < CLOCK_SKEW_NS else offset
        if abs(offset - self.clock_offset_ns) >= CLOCK_SKEW_NS or (offset == 0) != (
                self.clock_offset_ns == 0):
            self.clock_offset_ns = offset
            self.log.info("ib clock", extra={"offset_s": round(offset / 1e9, 3)})
            self.publish_state()

    def on_next_valid_id(self, order_id: int) -> None:
        """The handshake's last step (also sent again later, e.g. after reqIds)."""
        if self.sm.state != S.CONNECTING:
            return
        self.connect_deadline = None
        self.probe.reset(time.monotonic())
        if self.session is not None:
            self.server_version = self.session.server_version
            # zone-less IB times are in the gateway's zone, which only the connection time tells
            ib_time.default.set_connection_time(self.session.connection_time)
        self._lockout_over()
        self.move(S.CONNECTED, f"handshake done (server version {self.server_version}, zone "
                               f"{ib_time.default.connection_zone_name or '?'}), "
                               f"nextValidId {order_id}")
        self.on_up()

    def on_connection_closed(self) -> None:
        if self.sm.state == S.DISCONNECTED:
            return
        if self.connect_failed and self.sm.state == S.CONNECTING:
            self.lost(f"could not connect to {self.opts.host}:{self.opts.port}: nothing is "
                      f"listening there, or it refused the connection (is TWS / IB Gateway "
                      f"running, with its API enabled on that port?)")
        else:
            self.lost("connection closed by IB")

    def on_connect_failed(self) -> None:
        """IB's 502 (ibapi: "Couldn't connect to TWS"): the socket never connected."""
        if self.sm.state == S.CONNECTING:
            self.connect_failed = True

    def on_session_ended(self, detail: str) -> None:
        if self.sm.state != S.DISCONNECTED:
            self.lost(f"session ended: {detail}")

    def on_bad_frame(self, detail: str) -> None:
        """An undecodable frame costs that frame, not the session."""
        self.counters["bad_frames"] += 1
        self.log.warning("undecodable frame from IB", extra={"detail": detail})
        self.publisher.publish(GatewayError(code=0, text=f"undecodable frame from IB: {detail}",
                                            scope="connection"))

    def on_bad_frame_length(self, size: int) -> None:
        """A length prefix of 0 or above ibapi's MAX_MSG_LEN: the framing is lost for good, so
        the reader has closed the socket. The session is dropped now, not when the hang probe
        fires, and the normal reconnect (backoff, resynchronisation) follows."""
        self.counters["bad_frame_length"] += 1
        text = f"bad frame length {size} from IB (allowed 1..{MAX_MSG_LEN}): framing lost"
        self.log.error("bad frame length from IB, dropping the connection",
                       extra={"size": size, "max_msg_len": MAX_MSG_LEN})
        self.publisher.publish(GatewayError(code=0, text=text, scope="connection"))
        if self.sm.state != S.DISCONNECTED:
            self.lost(text)

    # -- IB'S LINK (its errors, routed here by the error router) ---------------------------
    def ib_link_lost(self, reason: str) -> None:
        """1100: TWS lost IB; our socket is up but nothing reaches the market."""
        self.link_lost = True
        if self.sm.state in (S.CONNECTED, S.SYNCHRONISED):
            self.move(S.DEGRADED, reason)

    def ib_link_restored(self) -> None:
        """1101 / 1102: IB reports the link and its farms back together."""
        self.link_lost = False
        self.farm_down = False

    def ib_farm_down(self, reason: str) -> None:
        self.farm_down = True
        if self.sm.state in (S.CONNECTED, S.SYNCHRONISED):
            self.move(S.DEGRADED, reason)

    def ib_farm_up(self) -> bool:
        """2104; True if a farm was down (IB also sends 2104 as plain news)."""
        was_down, self.farm_down = self.farm_down, False
        return was_down

    def client_id_in_use(self, text: str = "") -> str | None:
        """326: IB closes the socket next; the loss reason says why. A lock-out repeats it on
        every attempt: one warning alert at the first, one critical alert once it has lasted
        ``LOCKOUT_CRITICAL_ATTEMPTS`` refusals or ``LOCKOUT_CRITICAL_S``; the error itself goes
        on the bus the first time and then at most every ``LOCKOUT_SUMMARY_S`` with the count.
        Returns the text to publish as the GatewayError, None when it is held back."""
        cid = self.opts.client_id
        self.close_reason = f"client id {cid} in use (326)"
        self.counters["client_id_in_use"] += 1
        now = time.monotonic()
        first = self.lockout is None
        lock = self.lockout = self.lockout or Lockout(since=now)
        lock.refusals += 1
        lasted = now - lock.since
        if first:
            self.log.warning("client id in use (326)", extra={"client_id": cid, "text": text})
            self.publisher.publish(Alert(
                severity="warning", code="gateway.client_id_in_use",
                text=f"IB refuses client id {cid}: already in use (326); another session (a "
                     f"second gateway, TWS, a script) holds it. Retrying with backoff, never "
                     f"under another id"))
        elif not lock.critical and (lock.refusals >= LOCKOUT_CRITICAL_ATTEMPTS
                                    or lasted >= LOCKOUT_CRITICAL_S):
            lock.critical = True
            self.counters["client_id_lockouts_critical"] += 1
            self.log.error("client id locked out (326 lasting)",
                           extra={"client_id": cid, "refusals": lock.refusals,
                                  "seconds": round(lasted, 1)})
            self.publisher.publish(Alert(
                severity="critical", code="gateway.client_id_locked_out",
                text=f"IB has refused client id {cid} (326) {lock.refusals} times over "
                     f"{lasted:.0f}s: the fleet is cut off from IB until the session holding "
                     f"it goes (close it, or give this gateway another gateway.client_id)"))
        if first or now - lock.published_at >= LOCKOUT_SUMMARY_S:
            lock.published_at, held, lock.unpublished = now, lock.unpublished, 0
            if first:
                return text
            return (f"{text} (refused {lock.refusals} times over {lasted:.0f}s; {held} "
                    f"repeats not published)")
        lock.unpublished += 1
        self.counters["client_id_in_use_suppressed"] += 1
        return None

    def _lockout_over(self) -> None:
        """A handshake passed: a lock-out is over (said once, if one was alerted)."""
        lock, self.lockout = self.lockout, None
        if lock is None:
            return
        lasted = time.monotonic() - lock.since
        self.log.info("client id accepted again", extra={
            "client_id": self.opts.client_id, "refusals": lock.refusals,
            "seconds": round(lasted, 1)})
        self.publisher.publish(Alert(
            severity="info", code="gateway.client_id_accepted",
            text=f"IB accepts client id {self.opts.client_id} again after {lock.refusals} "
                 f"refusals (326) over {lasted:.0f}s"))

    def connection_error_is_news(self, text: str) -> bool:
        """A long outage repeats one socket error every attempt: publish it once."""
        if text == self.last_connection_error:
            return False
        self.last_connection_error = text
        return True
