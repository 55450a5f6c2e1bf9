"""PUB side of the bus: stamps every message with source, sequence numbers and time.

Market data and events ride PUB/SUB, which drops at the high-water mark; the sequence numbers
make any drop visible to every subscriber. Orders never ride this socket (see ``reliable``).
"""
from __future__ import annotations

import time
from typing import Sequence

import zmq

from proto import codec
from proto.schema import Message
from services.bus import sockets


class Stamper:
    """Per-source sequence numbers: ``seq`` over everything, ``tseq`` per wire topic."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seq = 0
        self.topic_seq: dict[str, int] = {}

    def stamp(self, msg: Message, topic: str) -> Message:
        self.seq += 1
        tseq = self.topic_seq.get(topic, 0) + 1
        self.topic_seq[topic] = tseq
        msg.src = self.source
        msg.seq = self.seq
        msg.tseq = tseq
        msg.ts = time.time_ns()
        return msg

    def unstamp(self, topic: str, count: int = 1) -> None:
        """Take back the last ``count`` stamps on ``topic`` (messages that could not be
        encoded and were never sent): a number used by nothing would look like a loss."""
        self.seq -= count
        self.topic_seq[topic] -= count


class Publisher:
    """Publishes stamped messages to the bus broker's frontend.

    ZeroMQ's "slow joiner": a PUB filters by the subscriptions its peer has sent, so whatever
    it sends before they arrive is dropped unseen (ZeroMQ Guide, ch. 1 "Getting the Message
    Out"). A service that starts and publishes at once (execution closing orders IB cancelled
    while it was down) would lose those messages. So the socket is an XPUB, which *sees* the
    subscriptions arrive, and the constructor waits (up to ``ready_timeout`` seconds) for the
    first of them: the broker always subscribes to the state topics, so this takes one round
    trip. ``ready`` says whether it came.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, source: str,
                 hwm: int = sockets.MARKET_DATA_HWM, ready_timeout: float = 5.0) -> None:
        self.stamper = Stamper(source)
        self.source = source
        self.socket = ctx.socket(zmq.XPUB)
        self.socket.sndhwm = hwm
        self.socket.linger = 1000
        sockets.connect(self.socket, endpoint)
        self.sent = 0
        self.ready = self.socket.poll(int(ready_timeout * 1000), zmq.POLLIN) != 0
        self._drain_subscriptions()

    def _drain_subscriptions(self) -> None:
        """Read the subscription messages the XPUB queues for us (we only needed the first)."""
        while True:
            try:
                self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def publish(self, msg: Message, topic: str | None = None) -> Message:
        """Send one message on its own topic (or ``topic``)."""
        msg.src = self.source  # some topics name the source (heartbeats)
        wire_topic = topic if topic is not None else msg.topic()
        self.stamper.stamp(msg, wire_topic)
        try:
            frame = codec.encode((msg,))
        except Exception:  # nothing sent: the sequence numbers must not show a gap
            self.stamper.unstamp(wire_topic)
            raise
        self.socket.send_multipart((wire_topic.encode(), frame), copy=False)
        self.sent += 1
        if not self.sent & 0xFFF:
            self._drain_subscriptions()
        return msg

    def publish_batch(self, msgs: Sequence[Message], topic: str, lose: int = -1) -> None:
        """Send many messages as one frame under one topic: far fewer syscalls and frames.

        ``lose`` (tests and load generation only) stamps the message at that index but does not
        send it: a loss on purpose, which every subscriber must see as a gap.
        """
        stamp = self.stamper.stamp
        for msg in msgs:
            msg.src = self.source
            stamp(msg, topic)
        stamped = len(msgs)
        if 0 <= lose < len(msgs):
            msgs = [m for i, m in enumerate(msgs) if i != lose]
        try:
            frame = codec.encode(msgs)
        except Exception:  # nothing sent: the sequence numbers must not show a gap
            self.stamper.unstamp(topic, stamped)
            raise
        self.socket.send_multipart((topic.encode(), frame), copy=False)
        before, self.sent = self.sent, self.sent + len(msgs)
        if (before ^ self.sent) >> 12:
            self._drain_subscriptions()

    def close(self) -> None:
        self.socket.close()
