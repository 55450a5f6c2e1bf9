"""SUB side of the bus: strict decoding, gap detection, bad frames counted and survived."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Iterator

import zmq

from proto import codec
from proto.schema import Message
from services.bus import sockets
from services.bus.gaps import GapDetector

log = logging.getLogger("bus.subscriber")


class Subscriber:
    """A SUB socket on the bus's ``bus-out``.

    ``topics`` are prefixes, as ZeroMQ matches them: ``md.tick.`` is every quote. ``exact``
    topics match only themselves: ZeroMQ would hand ``md.tick.MSFT`` to a subscription to
    ``md.tick.MS`` and ``ord.update.mr1`` to one to ``ord.update.mr``, so a keyed topic (one
    symbol, one strategy) is subscribed exactly, and a frame whose topic only extends it is
    dropped here, before it is decoded or counted by the gap detector (``foreign`` counts them).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, topics: Iterable[str] = ("",),
                 hwm: int = sockets.MARKET_DATA_HWM, exact: Iterable[str] = ()) -> None:
        self.socket = ctx.socket(zmq.SUB)
        self.socket.rcvhwm = hwm
        self.socket.linger = 0
        self._prefixes: Counter[bytes] = Counter()
        self._exact: Counter[bytes] = Counter()
        for topic in topics:
            self.subscribe(topic)
        for topic in exact:
            self.subscribe(topic, exact=True)
        sockets.connect(self.socket, endpoint)
        self.gaps = GapDetector()
        self.errors: Counter[str] = Counter()
        self.received = 0
        self.foreign = 0  # frames on a topic that only extends an exact subscription

    def subscribe(self, topic: str, exact: bool = False) -> None:
        """Subscribe to a prefix, or (``exact``) to this one topic only."""
        raw = topic.encode()
        (self._exact if exact else self._prefixes)[raw] += 1
        self.socket.subscribe(raw)

    def unsubscribe(self, topic: str, exact: bool = False) -> None:
        raw = topic.encode()
        held = self._exact if exact else self._prefixes
        if held[raw] > 0:
            held[raw] -= 1
            if not held[raw]:
                del held[raw]
        self.socket.unsubscribe(raw)

    def wanted(self, topic: bytes) -> bool:
        """Whether a frame on ``topic`` is one this subscriber asked for (see the class)."""
        if not self._exact or topic in self._exact:
            return True
        return any(topic.startswith(p) for p in self._prefixes)

    def recv(self, timeout_ms: int | None = None) -> tuple[str, list[Message]] | None:
        """One frame's messages, or None on timeout. Bad frames are counted, logged, skipped."""
        while True:
            if timeout_ms is not None and not self.socket.poll(timeout_ms):
                return None
            result = self.recv_ready()
            if result is not None:
                return result

    def drain(self, max_frames: int = 1000) -> Iterator[Message]:
        """Every message already waiting, up to ``max_frames`` frames (so one busy feed cannot
        starve a service's other sockets), without blocking."""
        for _ in range(max_frames):
            got = self.recv(0)
            if got is None:
                return
            yield from got[1]

    def recv_ready(self) -> tuple[str, list[Message]] | None:
        """Decode one frame that is ready (the socket polled readable)."""
        parts = self.socket.recv_multipart(copy=True)
        return self.decode_parts(parts)

    def decode_parts(self, parts: list[bytes]) -> tuple[str, list[Message]] | None:
        if len(parts) != 2:
            self.errors["wrong_parts"] += 1
            log.error("bad bus frame", extra={"kind": "wrong_parts", "parts": len(parts)})
            return None
        if not self.wanted(parts[0]):
            self.foreign += 1
            return None
        topic = parts[0].decode("utf-8", "replace")
        try:
            messages = codec.decode(parts[1])
        except codec.FrameError as exc:
            self.errors[exc.kind] += 1
            log.error("bad bus frame", extra={"kind": exc.kind, "topic": topic,
                                              "detail": str(exc)})
            return None
        check = self.gaps.check
        fresh = [m for m in messages if check(m, topic)]
        self.received += len(fresh)
        return topic, fresh

    def close(self) -> None:
        self.socket.close()
