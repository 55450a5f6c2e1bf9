"""The replay's publishing socket: an XPUB bound where the broker's ``bus-out`` would be.

An ordinary ``Subscriber`` (or ``ibfleet tap --run-dir``) connects to it unchanged.

- **Slow joiners.** ``wait_for_subscribers(n)`` returns once ``n`` peers have completed their
  handshake, at least ``n`` subscriptions have arrived (XPUB_VERBOSE shows every one) and no
  new subscription has come for ``settle`` seconds. Subscriptions travel right after the
  handshake, so the settle time only has to cover that one hop.
- **No silent loss.** ``ZMQ_XPUB_NODROP``: when a subscriber's pipe is at the high-water mark
  a send fails with EAGAIN instead of dropping, all-or-nothing across subscribers; ``send``
  then blocks (in steps of ``SEND_STEP_MS`` so a stop request is seen) until there is room.
  The replay goes at the pace of its slowest subscriber, which is what "as fast as possible"
  means for a lossless replay. A subscriber that stops reading stalls the replay; SIGTERM
  still ends it.
- **The end.** ``hold()`` keeps the socket open after the last frame until every subscriber
  has disconnected (or a time limit), because closing early loses what a slow subscriber has
  not read yet.
"""
from __future__ import annotations

import time
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from services.bus import sockets

SEND_STEP_MS = 100
DEFAULT_HWM = 10_000  # frames queued per subscriber before the replay waits


class ReplayOutlet:
    def __init__(self, ctx: zmq.Context, endpoint: str, hwm: int = DEFAULT_HWM) -> None:
        self.socket = ctx.socket(zmq.XPUB)
        self.socket.sndhwm = hwm
        self.socket.xpub_verbose = True  # every subscription, not only a topic's first
        self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.socket.sndtimeo = SEND_STEP_MS
        self.socket.linger = 0
        self._monitor = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        sockets.bind(self.socket, endpoint)
        self.peers = 0
        self.subscriptions = 0  # subscribe messages seen (minus unsubscribes)
        self.stalls = 0  # sends that had to wait for a subscriber to make room

    def poll_events(self) -> bool:
        """Take pending peer events and subscription messages; True if anything new came."""
        seen = False
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self.peers += 1 if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else -1
            seen = True
        while True:
            try:
                message = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                self.subscriptions += 1
            elif message[:1] == b"\x00":
                self.subscriptions -= 1
            seen = True
        return seen

    def wait_for_subscribers(self, count: int, timeout: float, settle: float = 0.2,
                             should_stop: Callable[[], bool] = lambda: False) -> bool:
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while not should_stop() and time.monotonic() < deadline:
            if self.poll_events():
                quiet_since = time.monotonic()
            if (self.peers >= count and self.subscriptions >= count
                    and time.monotonic() - quiet_since >= settle):
                return True
            self.socket.poll(20)  # wakes on a subscription message
            self._monitor.poll(0)
        return False

    def send(self, topic: bytes, payload: bytes,
             should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Send one frame, waiting for room if a subscriber is behind. False if stopped."""
        try:
            self.socket.send_multipart((topic, payload), zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self.stalls += 1
        while True:  # blocking sends wake as soon as the subscriber makes room
            try:
                self.socket.send_multipart((topic, payload), copy=False)
                return True
            except zmq.Again:
                self.poll_events()
                if should_stop():
                    return False

    def hold(self, seconds: float, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Stay connected until every subscriber has gone, at most ``seconds``.

        Closing as soon as the last frame is handed over would lose frames: a subscriber whose
        queue is full has stopped reading its connection, and libzmq drops what is still in
        the kernel's socket buffer when it then sees the peer hang up.
        """
        deadline = time.monotonic() + seconds
        while not should_stop() and time.monotonic() < deadline:
            self.poll_events()
            if self.peers <= 0:
                return
            self._monitor.poll(50)

    def close(self, linger_s: float = 1.0) -> None:
        """Deliver what is queued (up to ``linger_s``), then close."""
        self._monitor.close(0)
        self.socket.disable_monitor()
        self.socket.close(linger=int(linger_s * 1000))
