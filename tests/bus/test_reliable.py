"""The order path: every request acknowledged, none lost, none processed twice per incarnation."""
from __future__ import annotations

import sys
import time

import zmq

from proto.schema import Ack, OrderCommand
from services.bus.reliable import ReliableClient
from tests.support.bus import short_run_dir
from tests.support.processes import wait_for


def _start_server(procs, name, endpoint, ledger):
    proc = procs.start(name, [sys.executable, "-m", "tests.support.ack_server", "--endpoint",
                              endpoint, "--ledger", str(ledger)])
    wait_for(lambda: "ready" in procs.log(name), what=f"{name} to bind")
    return proc


def _order(i: int) -> OrderCommand:
    return OrderCommand(command="place", client_order_id=f"c{i}", symbol="AAPL", quantity=1,
                        limit_price=100.0)


def _ledger_rows(path):
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_burst_of_10000_orders_is_acknowledged_with_none_lost(procs, tmp_path):
    endpoint = f"ipc://{short_run_dir()}/orders"
    ledger = tmp_path / "ledger.txt"
    _start_server(procs, "server", endpoint, ledger)
    ctx = zmq.Context()
    try:
        client = ReliableClient(ctx, endpoint, "execution.1", resend_after=30.0)
        for i in range(10_000):
            client.send(_order(i))
        acks = []
        wait_for(lambda: acks.extend(m for m in client.poll(100) if isinstance(m, Ack))
                 or not client.pending, deadline=120, what="all 10,000 acknowledgements")
        assert len({a.ref_seq for a in acks}) == 10_000
        assert all(a.ok and not a.duplicate for a in acks)
        assert client.counters["resent"] == 0
        wait_for(lambda: len(_ledger_rows(ledger)) >= 10_000, what="server ledger")
        rows = _ledger_rows(ledger)
        assert sorted(int(seq) for _, seq, _ in rows) == list(range(1, 10_001))
    finally:
        ctx.destroy(linger=0)


def test_orders_sent_while_the_server_is_down_are_resent_and_acknowledged(procs, tmp_path):
    endpoint = f"ipc://{short_run_dir()}/orders"
    ledger = tmp_path / "ledger.txt"
    server = _start_server(procs, "server1", endpoint, ledger)
    ctx = zmq.Context()
    try:
        client = ReliableClient(ctx, endpoint, "execution.1", resend_after=0.5)
        for i in range(100):
            client.send(_order(i))
        wait_for(lambda: client.poll(100) is not None and not client.pending,
                 what="first acks")
        procs.kill(server)  # SIGKILL: no goodbye
        server.wait(30)
        for i in range(100, 300):  # into the void: nobody is listening
            client.send(_order(i))
        client.poll(50)
        assert client.pending, "with the server dead, nothing can have been acknowledged"
        _start_server(procs, "server2", endpoint, ledger)
        wait_for(lambda: client.poll(100) is not None and not client.pending, deadline=120,
                 what="resent orders to be acknowledged by the restarted server")
        processed = {row[2] for row in _ledger_rows(ledger)}
        assert processed == {f"c{i}" for i in range(300)}  # nothing lost
    finally:
        ctx.destroy(linger=0)


def test_a_resend_is_acknowledged_as_duplicate_and_not_processed_twice(procs, tmp_path):
    endpoint = f"ipc://{short_run_dir()}/orders"
    ledger = tmp_path / "ledger.txt"
    _start_server(procs, "server", endpoint, ledger)
    ctx = zmq.Context()
    try:
        client = ReliableClient(ctx, endpoint, "execution.1", resend_after=3600)
        client.send(_order(1))
        pending = next(iter(client.pending.values()))
        client.socket.send(pending.frame)  # the same request again, as a resend would
        acks = []
        wait_for(lambda: acks.extend(m for m in client.poll(100) if isinstance(m, Ack))
                 or len(acks) >= 2, what="two acknowledgements")
        assert sorted(a.duplicate for a in acks) == [False, True]
        time.sleep(0)  # the ledger is line-buffered; the ack came after the write
        assert len(_ledger_rows(ledger)) == 1
    finally:
        ctx.destroy(linger=0)


def test_garbage_on_the_order_socket_gets_a_clear_nack_and_the_server_keeps_going(procs,
                                                                                 tmp_path):
    endpoint = f"ipc://{short_run_dir()}/orders"
    ledger = tmp_path / "ledger.txt"
    server = _start_server(procs, "server", endpoint, ledger)
    ctx = zmq.Context()
    try:
        client = ReliableClient(ctx, endpoint, "execution.1", resend_after=3600)
        client.socket.send(b"\x93garbage")
        client.send(_order(7))
        acks = []
        wait_for(lambda: acks.extend(m for m in client.poll(100) if isinstance(m, Ack))
                 or len(acks) >= 2, what="nack and ack")
        nack = [a for a in acks if not a.ok]
        assert len(nack) == 1 and "malformed" in nack[0].error
        assert not client.pending
        assert server.poll() is None
    finally:
        ctx.destroy(linger=0)


def test_unacknowledged_requests_are_resent_after_the_timeout(tmp_path):
    endpoint = f"ipc://{short_run_dir()}/nobody-here"
    ctx = zmq.Context()
    try:
        client = ReliableClient(ctx, endpoint, "execution.1", resend_after=0.05)
        client.send(_order(1))
        wait_for(lambda: client.poll(20) is not None and client.counters["resent"] >= 2,
                 what="two resends")
        assert list(client.pending) == [1]
    finally:
        ctx.destroy(linger=0)


def test_a_batch_whose_commit_fails_is_refused_not_acknowledged(tmp_path):
    """``on_commit`` raising ``Refused`` (a journal that could not sync): every positive ack
    of the batch becomes a refusal with the reason; the handler's other replies are dropped."""
    from proto.schema import OrderStatus
    from services.bus.reliable import Refused, ReliableServer
    endpoint = f"ipc://{short_run_dir()}/orders"
    ctx = zmq.Context()
    try:
        server = ReliableServer(ctx, endpoint, "execution.1",
                                lambda msg, peer: [OrderStatus(ib_order_id=1, status="x", filled=0,
                                                               remaining=1, client_order_id="c")])
        fail = {"on": True}

        def commit():
            if fail["on"]:
                raise Refused("journal cannot write: ENOSPC")
        server.on_commit = commit
        client = ReliableClient(ctx, endpoint, "risk.1", resend_after=30.0)
        for i in range(3):
            client.send(_order(i))
        got: list = []
        wait_for(lambda: server.process_ready() >= 0 and (got.extend(client.poll(50)) or
                                                          len(got) >= 3),
                 what="three replies")
        assert [type(m).__name__ for m in got] == ["Ack"] * 3
        assert all(not a.ok and "journal cannot write: ENOSPC" in a.error for a in got)
        assert server.counters["commit_refused"] >= 1
        fail["on"] = False  # the disk works again: the next request is acknowledged
        client.send(_order(9))
        more: list = []
        wait_for(lambda: server.process_ready() >= 0 and (more.extend(client.poll(50)) or
                                                          any(isinstance(m, Ack) for m in more)),
                 what="the next reply")
        assert [m.ok for m in more if isinstance(m, Ack)] == [True]
    finally:
        ctx.destroy(linger=0)


def test_corked_requests_travel_as_one_frame_and_deferred_replies_as_one_per_client(tmp_path):
    """``corked``: a batch of requests is one frame (each still acknowledged on its own, and
    resent on its own if unacknowledged); ``batched``: deferred completions made together go
    back as one frame per client, in the order they were made."""
    from services.bus.reliable import DEFER, ReliableServer
    endpoint = f"ipc://{short_run_dir()}/orders"
    ctx = zmq.Context()
    try:
        frames_in: list[int] = []
        tokens = []

        def handler(msg, peer):
            tokens.append(server.current)
            return DEFER

        server = ReliableServer(ctx, endpoint, "risk.1", handler)
        client = ReliableClient(ctx, endpoint, "execution.1", resend_after=30.0)
        with client.corked():
            seqs = [client.send(_order(i)) for i in range(5)]
        wait_for(lambda: frames_in.append(server.process_ready()) or len(tokens) == 5,
                 what="five requests handled")
        assert sum(frames_in) == 1  # process_ready counts frames: one carried all five
        with server.batched():
            for token in reversed(tokens):
                server.complete(token)
        frames_out: list = []
        wait_for(lambda: client.socket.poll(50) and frames_out.append(client.socket.recv())
                 is None, what="the replies")
        from proto import codec
        acks = codec.decode(frames_out[0])
        assert [a.ref_seq for a in acks] == list(reversed(seqs))  # one frame, in order made
        for a in acks:  # read by hand above, so cleared by hand
            client.pending.pop(a.ref_seq, None)
        assert not client.pending

        # a corked request never acknowledged is resent on its own frame
        with client.corked():
            lost = client.send(_order(9))
        client.resend_after = 0.0
        assert client.resend_stale() == 1
        assert client.pending[lost].frame is not None
    finally:
        ctx.destroy(linger=0)
