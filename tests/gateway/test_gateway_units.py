"""The bridge's pure parts, without processes: state machine, backoff, pacing, subscriptions,
durable order identity, execution dedupe, error classes, the event queue's wake-ups."""
from __future__ import annotations

import math
import queue
import random
import threading
import time

import pytest
import zmq
from hypothesis import given, settings, strategies as st
from ibapi.const import MAX_MSG_LEN
from ibapi.reader import EReader

from proto.schema import OrderCommand
from services.gateway.client import BadFrameLength, BridgeClient, FramingReader, split_frame
from services.gateway.connection import (TRANSITIONS, Backoff, ConnState, HangProbe,
                                         IllegalTransition, StateMachine)
from services.gateway.errors import Kind, classify
from services.gateway.order_desk import build_order
from services.gateway.orders import OrderIdSequence, OrderMap
from services.gateway.pacing import HistoricalPacer, RateLimiter
from services.gateway.reconcile import ExecutionLedger
from services.gateway.translate import filter_time, parse_ib_time
from services.gateway.subscriptions import Outcome, SubscriptionBook
from services.gateway.wrapper import Event, EventQueue, QueueWrapper

S = ConnState


def test_state_machine_follows_the_table():
    sm = StateMachine()
    for to in (S.CONNECTING, S.CONNECTED, S.SYNCHRONISED, S.DEGRADED, S.CONNECTED,
               S.SYNCHRONISED, S.DISCONNECTED):
        assert sm.move(to, "test")
    assert not sm.move(S.DISCONNECTED, "again")  # no change, no event
    with pytest.raises(IllegalTransition):
        sm.move(S.SYNCHRONISED, "skipping the handshake")
    assert all(S.DISCONNECTED in TRANSITIONS[s] for s in S if s != S.DISCONNECTED)


def test_backoff_grows_with_jitter_is_capped_and_resets():
    b = Backoff(base=0.1, cap=1.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert max(delays[:2]) <= 0.2 and min(delays[6:]) >= 0.5  # grows to the cap
    b.reset()
    assert b.next_delay() <= 0.1


def prefix(size: int) -> bytes:
    return size.to_bytes(4, "big")


def test_frame_length_check():
    """A length of 0 or above ibapi's MAX_MSG_LEN is refused as soon as the prefix is in."""
    good = prefix(5) + b"49\x001\x00"
    assert split_frame(good + b"\x00\x00") == (b"49\x001\x00", b"\x00\x00")
    assert split_frame(good[:6]) == (None, good[:6])                 # waits for the rest
    assert split_frame(b"\x00\x00") == (None, b"\x00\x00")              # prefix not all in
    big = prefix(MAX_MSG_LEN) + b"x" * 10
    assert split_frame(big) == (None, big)                           # largest allowed: waits
    assert split_frame(prefix(MAX_MSG_LEN) + b"x" * MAX_MSG_LEN)[0] == b"x" * MAX_MSG_LEN
    for size in (0, MAX_MSG_LEN + 1, 0x7FFFFFFF, 0xFFFFFFFF):
        with pytest.raises(BadFrameLength) as info:
            split_frame(prefix(size) + b"49\x001\x00")
        assert info.value.size == size


class ScriptedConn:
    """Stands in for ibapi's socket connection: hands out the given chunks, then closes."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.disconnected = False

    def isConnected(self) -> bool:
        return not self.disconnected

    def recvMsg(self) -> bytes:
        if not self.chunks:
            self.disconnected = True
            return b""
        return self.chunks.pop(0)

    def disconnect(self) -> None:
        self.disconnected = True


@pytest.mark.parametrize("size", [0, MAX_MSG_LEN + 1])
def test_framing_reader_queues_the_frames_before_a_bad_length_then_closes(size):
    frame = prefix(5) + b"49\x001\x00"
    conn = ScriptedConn([frame + frame[:3], frame[3:] + prefix(size) + frame, frame])
    msgs: queue.Queue = queue.Queue()
    reader = FramingReader(conn, msgs)
    reader.run()
    got = [msgs.get_nowait() for _ in range(msgs.qsize())]
    assert got[:2] == [b"49\x001\x00"] * 2 and len(got) == 3
    assert isinstance(got[2], BadFrameLength) and got[2].size == size
    assert conn.disconnected and conn.chunks == [frame]   # nothing read past the bad prefix


def test_bridge_client_uses_the_framing_reader():
    events = EventQueue()
    try:
        client = BridgeClient(QueueWrapper(events, 1))
        assert client.reader is None
        client.reader = EReader(ScriptedConn([]), client.msg_queue)  # what EClient.connect does
        assert isinstance(client.reader, FramingReader)
        assert client.reader.msg_queue is client.msg_queue
    finally:
        events.close()


def test_hang_probe():
    p = HangProbe(interval=1.0, timeout=0.5)
    p.reset(0.0)
    assert not p.should_probe(0.9) and p.should_probe(1.0)
    p.probed(1.0)
    assert not p.should_probe(1.2) and not p.timed_out(1.4) and p.timed_out(1.5)
    p.inbound(1.3)
    assert not p.timed_out(2.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 0.05), min_size=50, max_size=400), st.floats(5, 49))
def test_rate_limiter_never_exceeds_50_in_any_second(gaps, rate):
    lim = RateLimiter(rate)
    for i in range(2000):
        lim.submit("x", lambda: None)
    now, sent = 0.0, []
    for gap in gaps:
        now += gap
        sent += [now] * len(lim.ready(now))
    j = 0
    for i, t in enumerate(sent):  # sliding one-second window over send times
        while sent[j] <= t - 1.0:
            j += 1
        assert i - j + 1 <= 50


def test_rate_limiter_queues_never_drops_and_cancels_jump():
    lim = RateLimiter(10, burst=1)
    for i in range(5):
        lim.submit(f"new{i}", lambda: None)
    lim.submit("cancel", lambda: None, urgent=True)
    order = []
    t = 0.0
    while len(lim):
        order += [w for w, _ in lim.ready(t)]
        t += 0.01
    assert order[0] == "cancel" and order[1:] == [f"new{i}" for i in range(5)]
    assert 0.4 <= t <= 0.7  # 10/s


def test_historical_pacer_rules():
    p = HistoricalPacer(margin_s=0.0)
    assert p.delay(0.0, "AAPL", ("AAPL", "1 D")) == 0.0
    p.record(0.0, "AAPL", ("AAPL", "1 D"))
    assert p.delay(1.0, "AAPL", ("AAPL", "1 D")) == pytest.approx(14.0)  # identical: 15 s
    for i in range(4):
        p.record(0.1 * i, "MSFT", ("MSFT", i))
    assert p.delay(0.5, "MSFT", ("MSFT", 9)) == 0.0       # the 5th in 2 s is fine
    p.record(0.5, "MSFT", ("MSFT", 9))
    assert p.delay(0.6, "MSFT", ("MSFT", 10)) == pytest.approx(1.4)  # the 6th waits
    q = HistoricalPacer(total_count=3, total_s=600, margin_s=0.0)
    for i in range(3):
        q.record(float(i * 10), f"C{i}", i)
    assert q.delay(40.0, "C9", 9) == pytest.approx(560.0)


def test_historical_pacer_widens_each_window_by_its_margin():
    # IB times a request on arrival: a 6th request sent exactly 2 s after the 1st may arrive
    # within 2 s of it if the 1st was delayed, so the default keeps a half-second margin
    p = HistoricalPacer()
    for i in range(5):
        p.record(0.0, "MSFT", ("MSFT", i))
    assert p.delay(0.0, "MSFT", ("MSFT", 9)) == pytest.approx(2.5)
    p.record(0.0, "AAPL", ("AAPL", "1 D"))
    assert p.delay(15.0, "AAPL", ("AAPL", "1 D")) == pytest.approx(0.5)


def test_subscriptions_ref_count_dedupe_and_limit():
    book = SubscriptionBook({"depth": 1})
    assert book.add("a", "AAPL", "tick")[0] == Outcome.NEW
    assert book.add("b", "AAPL", "tick")[0] == Outcome.JOINED
    assert book.add("b", "AAPL", "tick")[0] == Outcome.ALREADY
    assert book.add("a", "AAPL", "depth")[0] == Outcome.NEW
    outcome, _, why = book.add("a", "MSFT", "depth")
    assert outcome == Outcome.LIMIT and "1 depth" in why
    assert book.add("a", "AAPL", "nope")[0] == Outcome.BAD_KIND
    sub = book.subs[("AAPL", "tick")]
    book.assign(sub, 7)
    assert book.remove("a", "AAPL", "tick") is None       # b still wants it
    assert book.remove("b", "AAPL", "tick") is sub        # the last one: cancel at IB
    assert book.owner(7) is None


def test_order_ids_survive_a_restart_without_reuse(tmp_path):
    seq = OrderIdSequence(tmp_path, block=10)
    seq.observe_next_valid_id(5)
    used = [seq.allocate() for _ in range(12)]
    assert used == list(range(5, 17))
    again = OrderIdSequence(tmp_path, block=10)  # as after SIGKILL: the file is all we have
    assert again.allocate() > max(used)
    again.observe_next_valid_id(3)                # IB's lower id never takes us back
    assert again.allocate() > max(used)


def test_order_map_is_durable_and_orders_carry_the_client_id(tmp_path):
    m = OrderMap(tmp_path)
    cmd = OrderCommand(command="place", client_order_id="c-1", symbol="AAPL", side="SELL",
                       quantity=3, order_type="STP LMT", limit_price=99.0, stop_price=99.5)
    m.add(cmd, 42)
    m.close()
    with open(tmp_path / "orders.jsonl", "a") as f:
        f.write('{"coid": "torn')  # a crash mid-line
    again = OrderMap(tmp_path)
    assert again.get("c-1").ib_order_id == 42 and again.by_ib_id(42).side == "SELL"
    o = build_order(cmd, 42)
    assert (o.orderRef, o.lmtPrice, o.auxPrice, o.action) == ("c-1", 99.0, 99.5, "SELL")


def test_execution_ledger_dedupes_across_restarts(tmp_path):
    led = ExecutionLedger(tmp_path)
    t = parse_ib_time("20260101 12:00:05 UTC")
    assert led.is_new_exec("e1")
    led.record_exec("e1", t)
    led.record_commission("e1")
    led.close()
    again = ExecutionLedger(tmp_path)
    assert not again.is_new_exec("e1") and not again.is_new_commission("e1")
    assert again.last_exec_ns == t
    assert filter_time(t) == "20260101-11:59:05"
    assert parse_ib_time("20260101-12:00:05") == t and parse_ib_time("junk") == 0


def test_error_classes():
    assert classify(1100) == Kind.LINK_LOST and classify(1101) == Kind.LINK_RESTORED_LOST
    assert classify(1102) == Kind.LINK_RESTORED_KEPT and classify(2103) == Kind.FARM_DOWN
    assert classify(2104) == Kind.FARM_UP and classify(2106) == Kind.FARM_INFO
    assert classify(326) == Kind.CLIENT_ID_IN_USE and classify(100) == Kind.PACING
    assert classify(502) == Kind.CONNECTION and classify(201) == Kind.REQUEST


def test_event_queue_never_loses_a_wakeup():
    """Regression: clearing the flag before emptying the pipe could leave the loop asleep."""
    q = EventQueue()
    poller = zmq.Poller()
    poller.register(q.fd, zmq.POLLIN)
    total = 100_000

    def produce(k):
        for i in range(total // 4):
            q.put(Event(1, "x", (k, i)))
            if i % 500 == 0:
                time.sleep(0.0005)
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    got, end = 0, time.monotonic() + 60
    while got < total and time.monotonic() < end:
        if dict(poller.poll(1000)).get(q.fd):  # only ever woken by the pipe
            got += len(q.drain(997))
    for t in threads:
        t.join()
    assert got == total
    q.close()


def test_a_quote_that_did_not_change_makes_no_second_tick():
    """ibapi follows every tickPrice with a tickSize of the same size: only a change of the
    top of book may make a Tick (issue 16: 229 orders for 150 injected ticks)."""
    from services.gateway.translate import TopOfBook
    top = TopOfBook("AAPL")
    assert top.price(1, 189.5) and top.size(0, 300)   # bid, bid size: new
    assert not top.price(1, 189.5)                    # the same bid again
    assert not top.size(0, 300)                       # the size that follows it, unchanged
    assert top.size(0, 200) and top.price(1, 189.49)  # real changes
    assert not top.price(2, None) and top.price(2, 189.6)  # unset ask stays unset; then set
    assert top.price(67, 189.6)                       # the same ask, now delayed: a change
    assert top.message().delayed


@pytest.mark.parametrize("order_type, lmt, aux, expected", [
    ("MKT", 0.0, 0.0, (None, None)),        # IB writes 0 for a MKT order's limit (transcripts)
    ("LMT", 10.0, 0.0, (10.0, None)),       # ... and for a LMT order's aux price
    ("STP", 0.0, 13.16, (None, 13.16)),
    ("STP LMT", 12.0, 13.0, (12.0, 13.0)),
    ("MIT", 0.0, 188.0, (None, 188.0)),     # aux: the trigger
    ("LIT", 188.1, 188.0, (188.1, 188.0)),
    ("REL", 0.0, 0.02, (0.0, 0.02)),        # a type not modelled keeps what IB sent
])
def test_an_open_orders_unused_prices_are_nan_not_zero(order_type, lmt, aux, expected):
    from ibapi.contract import Contract
    from ibapi.order import Order

    from services.gateway.translate import open_order
    order = Order()
    order.orderType, order.lmtPrice, order.auxPrice, order.totalQuantity = order_type, lmt, aux, 1
    msg = open_order(7, Contract(), order, None, "AAPL")
    got = tuple(None if math.isnan(v) else v for v in (msg.limit_price, msg.stop_price))
    assert got == expected


@pytest.mark.parametrize("order_type, lmt, aux, percent, trail_stop, expected", [
    # (limit, stop, trailing amount, trailing percent): the stop is the current trailStopPrice,
    # the aux price the trailing amount (as the simulator's captured TRAIL LIMIT: F19)
    ("TRAIL", 0.0, 1.5, None, 188.5, (None, 188.5, 1.5, None)),
    ("TRAIL", 0.0, 0.0, 2.0, 186.2, (None, 186.2, None, 2.0)),
    ("TRAIL LIMIT", 2000.05, 1.0, None, 2000.0, (2000.05, 2000.0, 1.0, None)),
    ("LMT", 10.0, 0.0, None, None, (10.0, None, None, None)),
])
def test_a_trailing_stops_stop_is_its_trail_stop_price_not_its_trailing_amount(
        order_type, lmt, aux, percent, trail_stop, expected):
    from ibapi.contract import Contract
    from ibapi.order import Order

    from services.gateway.translate import open_order
    order = Order()
    order.orderType, order.lmtPrice, order.auxPrice, order.totalQuantity = order_type, lmt, aux, 1
    if percent is not None:
        order.trailingPercent = percent
    if trail_stop is not None:
        order.trailStopPrice = trail_stop
    msg = open_order(7, Contract(), order, None, "AAPL")
    got = tuple(None if math.isnan(v) else v for v in (
        msg.limit_price, msg.stop_price, msg.trailing_amount, msg.trailing_percent))
    assert got == expected
