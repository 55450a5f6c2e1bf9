"""Fuzzing the bus decoders: ``codec.decode``, ``Subscriber.decode_parts`` and the reliable
path's receive loops. A bad frame is a ``FrameError`` (or a counted drop), never another
exception; a counted drop changes nothing else (no message delivered, no request handled)."""
from __future__ import annotations

import itertools

import pytest
import zmq
from hypothesis import given, strategies as st

from proto import codec
from proto.schema import Ack, Message
from services.bus.reliable import ReliableClient, ReliableServer
from services.bus.subscriber import Subscriber
from tests.fuzz.frames import ANY_FRAME
from tests.fuzz.support import Tally, long, quick

_names = itertools.count()


def _endpoint() -> str:
    return f"inproc://fuzz-bus-{next(_names)}"


# -- codec.decode ------------------------------------------------------------------------------

def check_codec(frame: bytes, tally: Tally | None = None) -> None:
    try:
        messages = codec.decode(frame)
    except codec.FrameError as exc:
        assert exc.kind and str(exc)
        if tally:
            tally.note(exc.kind)
        return
    assert isinstance(messages, list) and all(isinstance(m, Message) for m in messages)
    codec.encode(messages)  # what was accepted can be sent on again
    if tally:
        tally.note("accepted")


@quick
@given(ANY_FRAME)
def test_codec_decode_raises_only_frame_errors(frame):
    check_codec(frame)


@pytest.mark.fuzz
def test_codec_decode_long():
    tally = Tally("proto.codec.decode")

    @long
    @given(ANY_FRAME)
    def run(frame):
        if tally.go():
            check_codec(frame, tally)
    run()
    tally.report()


# -- Subscriber.decode_parts -------------------------------------------------------------------

PARTS = st.one_of(
    st.tuples(st.binary(max_size=12), ANY_FRAME).map(list),
    st.lists(st.one_of(st.binary(max_size=12), ANY_FRAME), max_size=4))


@pytest.fixture(scope="module")
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def check_subscriber(sub: Subscriber, parts: list[bytes], tally: Tally | None = None) -> None:
    errors, received = sum(sub.errors.values()), sub.received
    got = sub.decode_parts(parts)
    if got is None:
        assert sum(sub.errors.values()) == errors + 1  # counted
        assert sub.received == received  # and nothing delivered
        if tally:
            tally.note("dropped")
        return
    topic, messages = got
    assert isinstance(topic, str) and all(isinstance(m, Message) for m in messages)
    assert sub.received == received + len(messages)
    if tally:
        tally.note("delivered")


@quick
@given(parts=PARTS)
def test_subscriber_counts_and_drops_bad_frames(ctx, parts):
    sub = _subscriber(ctx)
    check_subscriber(sub, parts)


_subscribers: dict[int, Subscriber] = {}


def _subscriber(ctx) -> Subscriber:
    """One Subscriber per context, reused across examples (its gap state carries over, as a
    live one's would)."""
    sub = _subscribers.get(id(ctx))
    if sub is None:
        sub = _subscribers[id(ctx)] = Subscriber(ctx, _endpoint())
    return sub


@pytest.mark.fuzz
def test_subscriber_long(ctx):
    tally = Tally("Subscriber.decode_parts")

    @long
    @given(parts=PARTS)
    def run(parts):
        if tally.go():
            check_subscriber(_subscriber(ctx), parts, tally)
    run()
    tally.report()


# -- ReliableServer: a request frame from a peer ----------------------------------------------

class Server:
    def __init__(self, ctx) -> None:
        self.handled: list[Message] = []
        self.server = ReliableServer(ctx, _endpoint(), "fuzz.1", self._handle)

    def _handle(self, msg: Message, peer: str):
        self.handled.append(msg)
        return []


_servers: dict[int, Server] = {}


def check_server(ctx, parts: list[bytes], tally: Tally | None = None) -> None:
    s = _servers.get(id(ctx)) or _servers.setdefault(id(ctx), Server(ctx))
    bad, handled = s.server.counters["bad_frame"], len(s.handled)
    s.server._outgoing = []  # as process_ready does: replies are collected, then sent
    s.server._handle(parts)
    outgoing, s.server._outgoing = s.server._outgoing, None
    for identity, messages in outgoing:
        s.server._send(identity, messages)  # to an unknown peer: counted as unroutable
    if s.server.counters["bad_frame"] > bad:
        assert len(s.handled) == handled  # a bad frame reaches no handler
        for _, messages in outgoing:  # and is refused with a reason
            assert all(isinstance(m, Ack) and not m.ok and m.error for m in messages)
        if tally:
            tally.note("bad_frame")
    elif tally:
        tally.note("handled" if len(s.handled) > handled else "duplicate")


SERVER_PARTS = st.one_of(
    st.tuples(st.binary(min_size=1, max_size=8), ANY_FRAME).map(list),
    st.lists(st.one_of(st.binary(max_size=8), ANY_FRAME), max_size=4))


@quick
@given(parts=SERVER_PARTS)
def test_reliable_server_survives_bad_requests(ctx, parts):
    check_server(ctx, parts)


@pytest.mark.fuzz
def test_reliable_server_long(ctx):
    tally = Tally("ReliableServer._handle")

    @long
    @given(parts=SERVER_PARTS)
    def run(parts):
        if tally.go():
            check_server(ctx, parts, tally)
    run()
    tally.report()


# -- ReliableClient.poll: a reply frame from the server ---------------------------------------

class ClientPair:
    """A ReliableClient connected to a bare ROUTER the test writes raw frames with."""

    def __init__(self, ctx) -> None:
        endpoint = _endpoint()
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(endpoint)
        self.client = ReliableClient(ctx, endpoint, "fuzzc.1", resend_after=3600)
        self.client.send(Ack(ref_src="x", ref_seq=1))  # the router learns the identity
        self.identity = self.router.recv_multipart()[0]

    def deliver(self, frame: bytes) -> list[Message]:
        self.router.send_multipart([self.identity, frame])
        assert self.client.socket.poll(5000)
        return self.client.poll()


_pairs: dict[int, ClientPair] = {}


def check_client(ctx, frame: bytes, tally: Tally | None = None) -> None:
    p = _pairs.get(id(ctx)) or _pairs.setdefault(id(ctx), ClientPair(ctx))
    bad = p.client.counters["bad_frame"]
    out = p.deliver(frame)
    assert all(isinstance(m, Message) for m in out)
    if p.client.counters["bad_frame"] > bad:
        assert out == []
        if tally:
            tally.note("bad_frame")
    elif tally:
        tally.note("delivered")


@quick
@given(frame=ANY_FRAME)
def test_reliable_client_survives_bad_replies(ctx, frame):
    check_client(ctx, frame)


@pytest.mark.fuzz
def test_reliable_client_long(ctx):
    tally = Tally("ReliableClient.poll")

    @long
    @given(frame=ANY_FRAME)
    def run(frame):
        if tally.go():
            check_client(ctx, frame, tally)
    run()
    tally.report()
