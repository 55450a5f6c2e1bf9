"""The Clone pattern: a state owner answers snapshot requests; a late joiner merges.

Request: one frame, the topic prefix wanted (utf-8). Reply: frames ``[topic, batch]`` with the
state messages as last published (original headers kept), closed by ``["", SnapshotEnd]``
whose ``last_seq`` maps ``"src|topic"`` to the last topic sequence number the state reflects.

The joiner subscribes first, then asks for the snapshot, queues live messages meanwhile, and
drops queued ones at or below the snapshot's sequence numbers; from there its gap detector runs
on, so a message lost in between shows as a gap rather than vanishing.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import zmq

from proto import codec
from proto.schema import Message, SnapshotEnd
from services.bus import sockets
from services.bus.subscriber import Subscriber

log = logging.getLogger("bus.snapshot")

# (prefix) -> (iterable of (wire topic, message), {"src|topic": tseq})
StateProvider = Callable[[str], tuple[Iterable[tuple[str, Message]], dict[str, int]]]
CHUNK = 500


class SnapshotServer:
    def __init__(self, ctx: zmq.Context, endpoint: str, owner: str, provider: StateProvider,
                 curve_dir=None) -> None:
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.router_mandatory = 1
        self.socket.sndhwm = sockets.UNLIMITED
        self.socket.linger = 0
        sockets.bind(self.socket, endpoint, curve_dir)
        self.owner = owner
        self.provider = provider
        self.served = 0

    def process_ready(self) -> None:
        while True:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 2:
                log.error("bad snapshot request", extra={"parts": len(parts)})
                continue
            identity, prefix = parts[0], parts[1].decode("utf-8", "replace")
            try:
                self._serve(identity, prefix)
            except zmq.ZMQError as exc:
                log.warning("snapshot client went away", extra={"error": str(exc)})

    def _serve(self, identity: bytes, prefix: str) -> None:
        items, last_seq = self.provider(prefix)
        by_topic: dict[str, list[Message]] = {}
        count = 0
        for topic, msg in items:
            if topic.startswith(prefix):
                by_topic.setdefault(topic, []).append(msg)
                count += 1
        for topic, msgs in by_topic.items():
            for start in range(0, len(msgs), CHUNK):
                self.socket.send_multipart(
                    (identity, topic.encode(), codec.encode(msgs[start:start + CHUNK])))
        end = SnapshotEnd(owner=self.owner, count=count,
                          last_seq={k: v for k, v in last_seq.items()
                                    if k.split("|", 1)[-1].startswith(prefix)})
        end.src, end.ts = self.owner, time.time_ns()
        self.socket.send_multipart((identity, b"", codec.encode((end,))))
        self.served += 1

    def close(self) -> None:
        self.socket.close()


class SnapshotTimeout(TimeoutError):
    pass


def join(ctx: zmq.Context, subscriber: Subscriber, snapshot_endpoint: str, prefix: str = "",
         timeout: float = 10.0, exact: bool = False,
         ) -> tuple[list[tuple[str, Message]], list[tuple[str, Message]]]:
    """Late-joiner handshake. ``subscriber`` must already be subscribed to ``prefix``.
    ``exact``: the state of that one topic only (the snapshot server matches prefixes, so
    ``ord.update.mr`` would also bring strategy mr1's orders).

    Returns (state from the snapshot, live messages that arrived meanwhile and are newer).
    """
    req = ctx.socket(zmq.DEALER)
    req.linger = 0
    sockets.connect(req, snapshot_endpoint)
    try:
        req.send(prefix.encode())
        state: list[tuple[str, Message]] = []
        queued: list[tuple[str, list[Message]]] = []
        poller = zmq.Poller()
        poller.register(req, zmq.POLLIN)
        poller.register(subscriber.socket, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        end: SnapshotEnd | None = None
        while end is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SnapshotTimeout(f"no snapshot from {snapshot_endpoint} in {timeout:.0f}s")
            events = dict(poller.poll(remaining * 1000))
            if subscriber.socket in events:
                # queue raw: gap checks must wait until the snapshot positions the detector
                queued.append(subscriber.socket.recv_multipart())
            if req in events:
                topic, frame = req.recv_multipart()
                for msg in codec.decode(frame):
                    if isinstance(msg, SnapshotEnd):
                        end = msg
                    elif not exact or topic == prefix.encode():
                        state.append((topic.decode(), msg))
        for key, tseq in end.last_seq.items():
            src, topic = key.split("|", 1)
            subscriber.gaps.position(src, topic, tseq)
        live: list[tuple[str, Message]] = []
        for parts in queued:
            decoded = subscriber.decode_parts(parts)
            if decoded:
                topic, msgs = decoded
                live.extend((topic, m) for m in msgs)
        return state, live
    finally:
        req.close()
