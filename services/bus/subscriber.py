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
    def __init__(self, ctx: zmq.Context, endpoint: str, topics: Iterable[str] = ("",),
                 hwm: int = sockets.MARKET_DATA_HWM) -> None:
        self.socket = ctx.socket(zmq.SUB)
        self.socket.rcvhwm = hwm
        self.socket.linger = 0
        for topic in topics:
            self.socket.subscribe(topic.encode())
        sockets.connect(self.socket, endpoint)
        self.gaps = GapDetector()
        self.errors: Counter[str] = Counter()
        self.received = 0

    def subscribe(self, topic: str) -> None:
        self.socket.subscribe(topic.encode())

    def unsubscribe(self, topic: str) -> None:
        self.socket.unsubscribe(topic.encode())

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
