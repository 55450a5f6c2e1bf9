"""The reliable path: request/acknowledge over DEALER/ROUTER, for orders.

Neither socket may drop: high-water marks are off and the ROUTER is ``ROUTER_MANDATORY``, so a
reply to a vanished peer raises instead of disappearing. On top of that the client keeps every
request until its ``Ack`` arrives and resends the unacknowledged ones after a timeout (a server
that restarted, a dropped connection); the server acknowledges a resend without processing it
twice (de-duplicated per client incarnation). Delivery is at-least-once across a server
restart, so what a request *does* must be idempotent by its business key (the client order id).
"""
from __future__ import annotations

import contextlib

import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import zmq

from proto import codec
from proto.schema import Ack, Message
from services.bus import keys, sockets
from services.bus.publisher import Stamper

log = logging.getLogger("bus.reliable")

Handler = Callable[[Message, str], "Sequence[Message] | object"]

#: a handler returns DEFER to acknowledge later, with ``ReliableServer.complete(token, ...)``:
#: e.g. risk acknowledges an intent only once execution has acknowledged it in turn.
DEFER = object()


class Refused(Exception):
    """Raised by a handler to refuse a request on purpose (not a bug): nacked, no traceback."""


@dataclass(frozen=True)
class Token:
    identity: bytes
    src: str
    seq: int


class _Seen:
    """Which sequence numbers one client incarnation has had processed: a watermark plus the
    few that arrived above it (resends arrive out of order)."""

    __slots__ = ("watermark", "above")

    def __init__(self) -> None:
        self.watermark = 0
        self.above: set[int] = set()

    def add(self, seq: int) -> bool:
        """True if ``seq`` is new."""
        if seq <= self.watermark or seq in self.above:
            return False
        self.above.add(seq)
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)
        return True


class ReliableServer:
    """Binds a ROUTER; calls ``handler(message, peer_source)`` once per request, acks each."""

    def __init__(self, ctx: zmq.Context, endpoint: str, source: str, handler: Handler,
                 curve_dir=None) -> None:
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.router_mandatory = 1
        self.socket.sndhwm = sockets.UNLIMITED
        self.socket.rcvhwm = sockets.UNLIMITED
        self.socket.linger = 2000
        sockets.bind(self.socket, endpoint, curve_dir)
        self.handler = handler
        self.stamper = Stamper(source)
        self.seen: dict[bytes, _Seen] = {}
        self.inflight: set[Token] = set()
        self.current: Token | None = None  # the request being handled, for DEFER
        #: the role of the connection the request being handled came on: the ZAP handler's
        #: User-Id (its CURVE key's role), None without role keys (see ``role_of``)
        self.peer_role: str | None = None
        # only a keyed socket has a User-Id to read; without keys, plain bytes are cheaper
        self._keyed = keys.of(ctx) is not None
        self.on_commit: Callable[[], None] | None = None
        self._outgoing: list[tuple[bytes, list[Message]]] | None = None
        self.counters: Counter[str] = Counter()

    def process_ready(self, budget: int = 1000) -> int:
        """Handle up to ``budget`` requests that are waiting; returns how many frames.

        Acknowledgements go out after the whole batch, once ``on_commit`` (if set) has run:
        a service that journals what it accepted makes one fsync for the batch (group
        commit), and no acknowledgement ever precedes the durability it promises."""
        done = 0
        self._outgoing = []
        while done < budget:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=not self._keyed)
            except zmq.Again:
                break
            done += 1
            if not self._keyed:
                self._handle(frames)
                continue
            self.peer_role = keys.peer_role(frames[-1])
            try:
                self._handle([f.bytes for f in frames])
            finally:
                self.peer_role = None
        outgoing, self._outgoing = self._outgoing, None
        if outgoing and self.on_commit is not None:
            try:
                self.on_commit()
            except Refused as exc:  # nothing of the batch was made durable: refuse it all
                self.counters["commit_refused"] += 1
                log.error("batch refused: its commit failed", extra={"reason": str(exc)})
                outgoing = [(identity, _refused(messages, str(exc)))
                            for identity, messages in outgoing]
        self._send_grouped(outgoing)
        return done

    @contextlib.contextmanager
    def batched(self):
        """Replies made inside (``complete`` of deferred requests) go out together, one
        frame per client, when the block ends: fewer sends when many complete at once."""
        if self._outgoing is not None:  # already inside a batch
            yield
            return
        self._outgoing = []
        try:
            yield
        finally:
            outgoing, self._outgoing = self._outgoing, None
            self._send_grouped(outgoing)

    def _send_grouped(self, outgoing: list[tuple[bytes, list[Message]]]) -> None:
        """One frame per client, its replies in the order they were made."""
        if len(outgoing) == 1:
            self._send(*outgoing[0])
            return
        by_client: dict[bytes, list[Message]] = {}
        for identity, messages in outgoing:
            by_client.setdefault(identity, []).extend(messages)
        for identity, messages in by_client.items():
            self._send(identity, messages)

    def _handle(self, parts: list[bytes]) -> None:
        if len(parts) != 2:
            self.counters["bad_frame"] += 1
            log.error("bad request frame", extra={"parts": len(parts)})
            return
        identity, payload = parts
        try:
            requests = codec.decode(payload)
        except codec.FrameError as exc:
            self.counters["bad_frame"] += 1
            log.error("bad request frame", extra={"kind": exc.kind, "detail": str(exc)})
            self._reply(identity, [Ack(ref_src="", ref_seq=0, ok=False,
                                       error=f"{exc.kind}: {exc}")])
            return
        seen = self.seen.setdefault(identity, _Seen())
        out: list[Message] = []
        for request in requests:
            token = Token(identity, request.src, request.seq)
            if not seen.add(request.seq):
                self.counters["duplicates"] += 1
                if token not in self.inflight:  # still in flight: its ack comes later
                    out.append(Ack(ref_src=request.src, ref_seq=request.seq, duplicate=True))
                continue
            self.current = token
            try:
                replies = self.handler(request, request.src)
            except Refused as exc:
                self.counters["refused"] += 1
                log.error("request refused", extra={"peer": request.src, "reason": str(exc)})
                out.append(Ack(ref_src=request.src, ref_seq=request.seq, ok=False,
                               error=f"refused: {exc}"))
                continue
            except Exception as exc:  # a handler bug must not take the order path down
                self.counters["handler_errors"] += 1
                log.exception("request handler failed", extra={"type": type(request).__name__})
                out.append(Ack(ref_src=request.src, ref_seq=request.seq, ok=False,
                               error=f"{type(exc).__name__}: {exc}"))
                continue
            finally:
                self.current = None
            self.counters["processed"] += 1
            if replies is DEFER:
                self.inflight.add(token)
                continue
            out.append(Ack(ref_src=request.src, ref_seq=request.seq))
            out.extend(replies)
        if out:
            self._reply(identity, out)

    def role_of(self, src: str) -> str:
        """Who sent the request being handled: the role of its connection's key; without
        role keys (unit tests), the role its source claims (``keys.role_from_source``)."""
        return self.peer_role if self.peer_role is not None else keys.role_from_source(src)

    @property
    def authenticated(self) -> bool:
        return self.peer_role is not None

    def complete(self, token: Token, replies: Sequence[Message] = (), ok: bool = True,
                 error: str = "") -> None:
        """Acknowledge a deferred request."""
        self.inflight.discard(token)
        self._reply(token.identity, [Ack(ref_src=token.src, ref_seq=token.seq, ok=ok,
                                         error=error), *replies])

    def _reply(self, identity: bytes, messages: list[Message]) -> None:
        if self._outgoing is not None:  # inside a batch: sent after the commit
            self._outgoing.append((identity, messages))
            return
        self._send(identity, messages)

    def _send(self, identity: bytes, messages: list[Message]) -> None:
        for msg in messages:
            msg.src = self.stamper.source
            self.stamper.stamp(msg, msg.topic())
        try:
            self.socket.send_multipart((identity, codec.encode(messages)))
        except zmq.ZMQError as exc:  # peer gone (EHOSTUNREACH): it will resend, we dedupe
            self.counters["unroutable"] += 1
            log.warning("reply to a vanished client", extra={"error": str(exc)})

    def close(self) -> None:
        self.socket.close()


def _refused(messages: list[Message], reason: str) -> list[Message]:
    """A batch's replies once its commit failed: every positive ack becomes a refusal (the
    other replies described what was not kept, and are dropped)."""
    out: list[Message] = []
    for msg in messages:
        if isinstance(msg, Ack):
            if msg.ok and not msg.duplicate:
                msg = Ack(ref_src=msg.ref_src, ref_seq=msg.ref_seq, ok=False,
                          error=f"refused: {reason}")
            out.append(msg)
    return out


@dataclass
class _Pending:
    msg: Message
    frame: bytes | None  # None: sent in a corked frame; encoded again only if resent
    sent_at: float


class ReliableClient:
    """Connects a DEALER; ``send`` returns the request's seq; ``poll`` collects acks/replies."""

    def __init__(self, ctx: zmq.Context, endpoint: str, source: str,
                 resend_after: float = 2.0, curve_dir=None) -> None:
        self.socket = ctx.socket(zmq.DEALER)
        # one identity per incarnation: the server dedupes resends, a restart starts afresh
        self.socket.identity = f"{source}/{os.getpid()}/{uuid.uuid4().hex[:8]}".encode()
        self.socket.sndhwm = sockets.UNLIMITED
        self.socket.rcvhwm = sockets.UNLIMITED
        self.socket.linger = 2000
        sockets.connect(self.socket, endpoint, curve_dir)
        self.stamper = Stamper(source)
        self.pending: dict[int, _Pending] = {}
        self.resend_after = resend_after
        self.counters: Counter[str] = Counter()
        #: requests the server refused, with its Ack: the caller decides what that means
        self.nacked: list[tuple[Message, Ack]] = []
        self._corked: list[Message] | None = None

    def send(self, msg: Message) -> int:
        msg.src = self.stamper.source
        self.stamper.stamp(msg, msg.topic())
        if self._corked is not None:
            self._corked.append(msg)
            self.pending[msg.seq] = _Pending(msg, None, time.monotonic())
        else:
            frame = codec.encode((msg,))
            self.pending[msg.seq] = _Pending(msg, frame, time.monotonic())
            self.socket.send(frame)
        self.counters["sent"] += 1
        return msg.seq

    @contextlib.contextmanager
    def corked(self):
        """Requests sent inside go out as one frame when the block ends (the server handles
        a frame's requests in order and acknowledges each): one send for a batch."""
        if self._corked is not None:
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            msgs, self._corked = self._corked, None
            if msgs:
                self.socket.send(codec.encode(msgs))

    def poll(self, timeout_ms: int = 0) -> list[Message]:
        """Receive what has arrived: acks clear pending requests; every message is returned."""
        out: list[Message] = []
        if timeout_ms and not self.socket.poll(timeout_ms):
            self.resend_stale()
            return out
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                messages = codec.decode(frame)
            except codec.FrameError as exc:
                self.counters["bad_frame"] += 1
                log.error("bad reply frame", extra={"kind": exc.kind, "detail": str(exc)})
                continue
            for msg in messages:
                if isinstance(msg, Ack) and msg.ref_src == self.stamper.source:
                    done = self.pending.pop(msg.ref_seq, None)
                    if done is not None:
                        self.counters["acked" if msg.ok else "nacked"] += 1
                        if not msg.ok:
                            self.nacked.append((done.msg, msg))
                out.append(msg)
        self.resend_stale()
        return out

    def resend_stale(self) -> int:
        """Resend every request unacknowledged for ``resend_after`` seconds (same seq).

        ``pending`` is kept in order of last sending (a resend moves to the end), so this
        looks only at the stale head: cheap even with thousands in flight."""
        if not self.pending:
            return 0
        cutoff = time.monotonic() - self.resend_after
        stale = []
        for seq, pending in self.pending.items():
            if pending.sent_at >= cutoff:
                break
            stale.append(seq)
        now = time.monotonic()
        for seq in stale:
            pending = self.pending.pop(seq)
            if pending.frame is None:
                pending.frame = codec.encode((pending.msg,))
            self.socket.send(pending.frame)
            pending.sent_at = now
            self.pending[seq] = pending
        if stale:
            self.counters["resent"] += len(stale)
            log.warning("resent unacknowledged requests", extra={"count": len(stale)})
        return len(stale)

    def close(self) -> None:
        self.socket.close()
