"""What every ibfleet process shares: a poll loop, timers, heartbeat, clean SIGTERM.

A service registers sockets with handlers and periodic callbacks, then ``run()``s. SIGTERM or
SIGINT ends the loop at the next poll; ``on_stop`` runs and sockets close. SIGKILL at any moment
must be survivable too, which is each service's own design (journals, acks), not this loop's.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import signal
import time
from collections import Counter
from typing import Callable

import zmq

from proto.schema import Alert, Heartbeat
from services.bus import keys
from services.bus.publisher import Publisher
from services.runtime import logging as jsonlog
from services.runtime.config import FleetConfig, ensure_private_dir


class Service:
    """Base of every bus service. Subclasses override ``on_start`` / ``on_stop``."""

    # seconds the publisher waits at start for the broker's subscriptions (see Publisher)
    PUBLISHER_READY_TIMEOUT = 5.0

    def __init__(self, name: str, config: FleetConfig, instance: str = "1") -> None:
        self.name = name
        self.source = f"{name}.{instance}"
        self.config = config
        self.log = jsonlog.setup(self.source)
        ensure_private_dir(config.bus.run_dir)
        self.ctx = zmq.Context()
        self.authenticator = None
        self.role = keys.service_role(name, instance)
        self.auth = keys.for_process(self.ctx, config, self.role)  # bus.auth: role keys
        if self.auth is not None:
            self.authenticator = keys.start_authenticator(self.ctx, self.auth)
        elif config.bus.curve_dir is not None:  # listening beyond loopback: CURVE + ZAP
            from services.bus.sockets import start_authenticator
            self.authenticator = start_authenticator(self.ctx, config.bus.curve_dir)
        self.publisher = Publisher(self.ctx, config.bus.endpoint("bus-in"), self.source,
                                   ready_timeout=self.PUBLISHER_READY_TIMEOUT)
        self.poller = zmq.Poller()
        self.handlers: dict[zmq.Socket, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, float, Callable[[], None]]] = []
        self._tie = itertools.count()
        self.counters: Counter[str] = Counter()
        self.subscribers: list = []  # bus subscribers whose gaps the heartbeat reports
        self.stopping = False
        self.state = "starting"
        self._connection_alerted: dict[str, float] = {}
        self.every(config.bus.heartbeat_ms / 1000.0, self.heartbeat)
        if self.auth is not None:
            self.every(0.5, self._report_refused_peers)

    # -- wiring -------------------------------------------------------------------------------
    def on_socket(self, sock: zmq.Socket, handler: Callable[[], None]) -> None:
        self.poller.register(sock, zmq.POLLIN)
        self.handlers[sock] = handler

    def every(self, seconds: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + seconds, next(self._tie), seconds, fn))

    # -- lifecycle ----------------------------------------------------------------------------
    def on_start(self) -> None:
        pass

    def on_stop(self) -> None:
        pass

    def track(self, subscriber):
        """Report this bus subscriber's sequence gaps and bad frames in the heartbeat."""
        self.subscribers.append(subscriber)
        return subscriber

    def heartbeat(self) -> None:
        if self.subscribers:
            self.counters["gaps"] = sum(s.gaps.counters.gaps for s in self.subscribers)
            self.counters["missing"] = sum(s.gaps.counters.missing for s in self.subscribers)
            self.counters["bad_frames"] = sum(sum(s.errors.values()) for s in self.subscribers)
        self.publisher.publish(Heartbeat(interval_ms=self.config.bus.heartbeat_ms,
                                         state=self.state, counters=dict(self.counters)))

    def refuse_peer(self, text: str, **extra) -> None:
        """A peer refused for who it is (its key's role): logged, counted and alerted, never
        a crash. The caller then refuses the request (``Refused``) or drops the frame."""
        self.counters["peer_refused"] += 1
        self.log.error("peer refused", extra={"text": text, **extra})
        try:
            self.publisher.publish(Alert(severity="critical", code="peer_refused", text=text))
        except zmq.ZMQError as exc:
            self.log.error("alert not published", extra={"detail": str(exc)})

    REFUSED_CONNECTION_ALERT_S = 5.0  # a refused client reconnects: one alert per 5 s

    def _refused_connection(self, kind: str, text: str) -> None:
        """A connection refused at the handshake: counted each time, logged and alerted at
        most every REFUSED_CONNECTION_ALERT_S per kind (the client retries every 100 ms)."""
        self.counters[kind] += 1
        now = time.monotonic()
        if now - self._connection_alerted.get(kind, -1e9) >= self.REFUSED_CONNECTION_ALERT_S:
            self._connection_alerted[kind] = now
            self.refuse_peer(f"{text} ({self.counters[kind]} so far)")

    def _report_refused_peers(self) -> None:
        """Connections the ZAP handler refused (unknown key), from its thread to the loop."""
        refused = self.authenticator.refused if self.authenticator is not None else ()
        while refused:
            self._refused_connection("refused_unknown_key", refused.popleft())

    def _watch_handshakes(self) -> None:
        """Refused CURVE handshakes on our server sockets (a client with no key, or a bad
        one, never reaches the ZAP handler): counted and alerted like a refused key."""
        from zmq.utils.monitor import recv_monitor_message

        events = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        for sock, endpoint in self.auth.bound if self.auth is not None else ():
            monitor = sock.get_monitor_socket(events)

            def on_event(monitor=monitor, endpoint=endpoint) -> None:
                while monitor.poll(0):
                    recv_monitor_message(monitor)
                    self._refused_connection(
                        "refused_handshake", f"a connection without a valid CURVE key was "
                                             f"refused at {endpoint}")
            self.on_socket(monitor, on_event)

    def request_stop(self, signum: int = 0, _frame=None) -> None:
        self.stopping = True
        self.log.info("stop requested", extra={"signal": signum})

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self._watch_handshakes()  # before on_start: no other thread uses the sockets yet
        self.on_start()
        self.state = "running"
        self.log.info("started")
        self.heartbeat()
        try:
            while not self.stopping:
                self._run_timers()
                timeout = 200.0
                if self._timers:
                    timeout = max(0.0, min(timeout, (self._timers[0][0] - time.monotonic()) * 1000))
                # pyzmq truncates a float timeout to whole ms: a timer due in 0.7 ms became
                # poll(0) and the loop spun until it was due (about 9 % of a core idle in the
                # gateway with its 10 ms timer); rounded up, it sleeps until due or woken
                timeout = math.ceil(timeout)
                try:
                    events = self.poller.poll(timeout)
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.EINTR:  # a signal arrived
                        continue
                    raise
                for sock, _ in events:
                    self.handlers[sock]()
        finally:
            self.state = "stopping"
            try:
                self.on_stop()
            finally:
                self.log.info("stopped", extra={"counters": dict(self.counters)})
                if self.authenticator is not None:
                    self.authenticator.stop()
                self.ctx.destroy(linger=1000)
        return 0

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, period, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                self.counters["timer_errors"] += 1
                logging.getLogger(self.source).exception("timer failed")
            heapq.heappush(self._timers, (now + period, next(self._tie), period, fn))
