"""Order identity across a SIGKILL of the gateway, and pacing under a burst."""
from __future__ import annotations

import signal

import zmq

from proto.schema import GatewayError, OrderStatus
from services.bus.reliable import ReliableClient
from tests.support.processes import wait_for


def test_sigkill_never_reuses_an_id_nor_duplicates_a_resent_place(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    place_a = dict(command="place", client_order_id="keep-1", symbol="AAPL", side="BUY",
                   quantity=1, order_type="LMT", limit_price=50.0, tif="GTC")
    replies = fleet.wait_acked(fleet.command(**place_a))
    a_id = [r for r in replies if isinstance(r, OrderStatus)][0].ib_order_id
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == a_id and m.status == "Submitted")

    fleet.procs.kill(fleet.gateway, signal.SIGKILL)
    fleet.gateway.wait(30)
    mark = fleet.bus.mark()
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised", since=mark)

    # execution restarted too: a new client incarnation resends the same place
    fresh = ReliableClient(zmq.Context.instance(), fleet.cfg.bus.endpoint("gateway"),
                           "execution.test")
    try:
        from proto.schema import OrderCommand
        fresh.send(OrderCommand(**place_a))
        fresh.send(OrderCommand(command="place", client_order_id="new-1", symbol="AAPL",
                                side="BUY", quantity=1, order_type="LMT", limit_price=51.0,
                                tif="GTC"))
        got: list = []
        wait_for(lambda: got.extend(fresh.poll(50)) or not fresh.pending, 30, what="acks")
    finally:
        fresh.close()
    statuses = {r.client_order_id: r for r in got if isinstance(r, OrderStatus)}
    assert statuses["keep-1"].ib_order_id == a_id      # the existing mapping, not a new order
    b_id = statuses["new-1"].ib_order_id
    assert b_id > a_id                                  # never an id from before the kill
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == b_id and m.status == "Submitted")
    orders = fleet.sim.orders()
    assert sorted((o["order_id"], o["order_ref"]) for o in orders) == [(a_id, "keep-1"),
                                                                       (b_id, "new-1")]
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 103)


def test_a_burst_of_1000_requests_stays_under_ibs_rate(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    seqs = [fleet.command(command="place", client_order_id=f"burst-{i}", symbol="MSFT",
                          side="BUY", quantity=1, order_type="LMT", limit_price=100.0,
                          tif="DAY") for i in range(1000)]
    wait_for(lambda: fleet.poll_replies() is not None and not fleet.execution.pending, 60,
             what="1000 acks")
    assert len(seqs) == 1000
    submitted = lambda: {m.client_order_id for m in fleet.bus.of(  # noqa: E731
        OrderStatus, lambda m: m.status == "Submitted")}
    wait_for(lambda: len(submitted()) == 1000, 120, interval=0.5, what="1000 orders at IB")
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 100)
    assert fleet.sim.status()["stats"]["pacing_violations"] == 0
    assert len(fleet.sim.orders()) == 1000


# ---------------------------------------------------------------- the durable files themselves
# Real files (and a real SIGKILL'd process); no gateway needed.
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import msgspec  # noqa: E402
import pytest  # noqa: E402

from proto.schema import OrderCommand as _Cmd  # noqa: E402
from services.gateway.orders import OrderIdSequence, OrderMap  # noqa: E402
from services.gateway.reconcile import ExecutionLedger  # noqa: E402
from services.runtime.journal import JournalError, RecordJournal  # noqa: E402
from tests.support.processes import REPO  # noqa: E402

DAY = 86_400 * 10**9


def _place(coid: str) -> _Cmd:
    return _Cmd(command="place", client_order_id=coid, symbol="AAPL", side="BUY", quantity=2,
                order_type="LMT", limit_price=10.0, tif="GTC")


def test_order_map_keeps_a_mapping_appended_after_a_torn_record(tmp_path):
    """The old JSON-lines journal lost this: the torn line had no newline, so the next record
    was glued to it and both were skipped on reload; a resent place was then not recognised."""
    m = OrderMap(tmp_path)
    m.add(_place("a"), 1)
    path = m.journal.path
    before = path.stat().st_size
    m.add(_place("b"), 2)
    after = path.stat().st_size
    m.close()
    data = path.read_bytes()
    path.write_bytes(data + data[before:before + (after - before) // 2])  # a crash mid-write
    again = OrderMap(tmp_path)
    again.add(_place("c"), 3)
    again.close()
    last = OrderMap(tmp_path)
    assert [last.get(c).ib_order_id for c in "abc"] == [1, 2, 3]
    last.close()


def test_sigkill_while_adding_orders_loses_no_acknowledged_mapping(tmp_path):
    report = tmp_path / "reported"
    start = 0
    for delay in (0.05, 0.2, 0.4):
        with open(report, "wb") as out:
            child = subprocess.Popen([sys.executable, "-m", "tests.runtime.journal_child",
                                      "ordermap", str(tmp_path / "gw"), str(start)],
                                     cwd=REPO, stdout=out, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not report.stat().st_size and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        added = [int(n) for n in report.read_text().split()]
        assert added and added[0] == start
        m = OrderMap(tmp_path / "gw")
        for i in added:  # every add that returned is there
            assert m.get(f"k-{i}").ib_order_id == 1000 + i
        start = max(m.by_ib) - 1000 + 1
        assert sorted(m.by_ib) == list(range(1000, 1000 + start))  # nothing else, no gap
        m.close()


def test_an_existing_jsonl_state_directory_is_migrated_once(tmp_path):
    cmd = json.dumps({"command": "place", "client_order_id": "u", "symbol": "AAPL",
                      "side": "BUY", "quantity": 1.0, "order_type": "MKT"})
    (tmp_path / "orders.jsonl").write_text(
        '{"coid":"a","ib":5,"symbol":"AAPL","side":"BUY","qty":1,"parent":0,"cmd":{}}\n'
        '{"sent":5}\n'
        '{"coid":"b","ib":6,"symbol":"AAP'                           # torn by a crash...
        '{"coid":"c","ib":7,"symbol":"MSFT","side":"SELL","qty":3}\n'  # ...and glued to
        f'{{"coid":"u","ib":8,"symbol":"AAPL","side":"BUY","qty":1,"cmd":{cmd}}}\n')
    (tmp_path / "executions.jsonl").write_text('{"k":"e","id":"e1","t":100}\n'
                                               '{"k":"c","id":"e1"}\n{"k":"e","id":"e2","t":50}\n'
                                               '{"k":"e","id":"e3"')
    (tmp_path / "order_ids.json").write_text('{"reserved_through": 100}')
    for first_id in (101, 201):  # the second open reads the new journals only
        m, led, seq = OrderMap(tmp_path), ExecutionLedger(tmp_path), OrderIdSequence(tmp_path)
        assert m.get("a").ib_order_id == 5 and m.get("c").ib_order_id == 7
        assert m.get("b") is None and m.by_ib_id(7).side == "SELL"
        unsent = [r["ib"] for r in m.journal.records() if "cmd" in r
                  and not any(s.get("sent") == r["ib"] for s in m.journal.records())]
        assert unsent == [8] and list(m.unsent_places()) == [8]  # resent after a restart
        assert m.unsent_places()[8]["client_order_id"] == "u"
        assert not led.is_new_exec("e1") and not led.is_new_exec("e2")
        assert not led.is_new_commission("e1") and led.is_new_exec("e3")
        assert led.last_exec_ns == 100 and seq.allocate() == first_id
        m.close()
        led.close()
        assert not (tmp_path / "orders.jsonl").exists()
        assert (tmp_path / "orders.jsonl.migrated").exists()
        assert (tmp_path / "executions.jsonl.migrated").exists()
        assert not (tmp_path / "orders.jsonl.migrated.1").exists()


def test_order_map_compaction_keeps_what_a_restart_needs(tmp_path):
    now = time.time_ns()
    rj = RecordJournal(tmp_path / "orders.journal")
    old, young = now - 30 * DAY, now - DAY

    def place(coid, ib, w, sent, cmd=True):
        rec = {"coid": coid, "ib": ib, "symbol": "AAPL", "side": "BUY", "qty": 1, "w": w}
        if cmd:
            rec["cmd"] = {"command": "place", "client_order_id": coid, "symbol": "AAPL",
                          "side": "BUY", "quantity": 1.0, "order_type": "MKT"}
        rj.append(rec, sync=False)
        if sent:
            rj.append({"sent": ib}, sync=False)

    for i in range(600):                       # old, sent, ended: dropped
        place(f"done-{i}", i, old, sent=True)
    rj.append({"final": list(range(600)), "w": old}, sync=False)
    place("old-working", 700, old, sent=True)  # old but not known to have ended: kept
    place("old-unsent", 701, old, sent=False)  # journalled, never sent: kept, with its command
    place("young-done", 702, young, sent=True)  # ended, but recent: a resend is still known
    rj.append({"final": [702], "w": young}, sync=False)
    rj.close()
    m = OrderMap(tmp_path, compact_min_records=100)
    assert m.journal.journal.compactions == 1 and m.journal.journal.file_records == 3
    assert m.get("done-5") is None
    assert [m.get(c).ib_order_id for c in ("old-working", "old-unsent", "young-done")] == \
        [700, 701, 702]
    assert [r["ib"] for r in m.journal.records() if "cmd" in r] == [701]
    assert list(m.unsent_places()) == [701]
    m.mark_sent(701)
    assert m.unsent_places() == {} and {"sent": 701} in list(m.journal.records())
    m.by_ib_id(700).final = True  # IB reported it ended during this run
    m.close()
    again = OrderMap(tmp_path, compact_min_records=0)
    # 5 records (3 orders, a sent marker, the end journalled at close) for 2 to keep
    assert again.journal.journal.compactions == 1 and again.get("old-working") is None
    assert [again.get(c).ib_order_id for c in ("old-unsent", "young-done")] == [701, 702]
    assert again.unsent_places() == {}  # sent: no longer resent, its command not kept
    assert again.journal.journal.file_records == 2
    again.close()


def test_execution_ledger_compaction_keeps_the_replay_window_and_the_last_time(tmp_path):
    now = time.time_ns()
    rj = RecordJournal(tmp_path / "executions.journal")
    for i in range(500):
        t = now - 20 * DAY + i
        rj.append({"k": "e", "id": f"old-{i}", "t": t, "w": t}, sync=False)
        rj.append({"k": "c", "id": f"old-{i}", "w": t}, sync=False)
    recent = now - 6 * DAY
    rj.append({"k": "e", "id": "recent", "t": recent, "w": recent}, sync=False)
    rj.append({"k": "c", "id": "recent", "w": recent}, sync=False)
    latest_t = now + DAY  # IB's clock ahead: the latest exec time, journalled long ago
    rj.append({"k": "e", "id": "latest", "t": latest_t, "w": now - 30 * DAY}, sync=False)
    rj.close()
    led = ExecutionLedger(tmp_path, compact_min_records=100)
    assert led.journal.journal.compactions == 1 and led.journal.journal.file_records == 3
    led.close()
    again = ExecutionLedger(tmp_path)
    assert not again.is_new_exec("recent") and not again.is_new_commission("recent")
    assert again.last_exec_ns == latest_t and not again.is_new_exec("latest")
    assert again.is_new_exec("old-3")
    again.close()


def test_a_failed_block_reservation_changes_nothing(tmp_path, monkeypatch):
    """Simulated write failure: the id block must not count as reserved if not on disk."""
    import services.gateway.orders as orders_mod
    seq = OrderIdSequence(tmp_path, block=10)
    assert seq.allocate() == 1

    def full(path, value):
        raise JournalError(28, "No space left on device")

    for _ in range(9):
        seq.allocate()
    monkeypatch.setattr(orders_mod, "write_json", full)
    with pytest.raises(JournalError):
        seq.allocate()
    assert seq.reserved_through == 10 and seq.next_id == 11
    monkeypatch.undo()
    assert seq.allocate() == 11 and OrderIdSequence(tmp_path).next_id == 21


def test_a_failed_journal_append_leaves_the_maps_unchanged(tmp_path, monkeypatch):
    m = OrderMap(tmp_path)
    led = ExecutionLedger(tmp_path)

    def full(record, sync=True):
        raise JournalError(28, "No space left on device")

    monkeypatch.setattr(m.journal, "append", full)
    monkeypatch.setattr(led.journal, "append", full)
    with pytest.raises(JournalError):
        m.add(_place("x"), 9)
    with pytest.raises(JournalError):
        led.record_exec("e9", 5)
    assert m.get("x") is None and m.by_ib_id(9) is None and led.is_new_exec("e9")
    monkeypatch.undo()
    m.close()
    led.close()


def test_a_place_sent_but_never_mentioned_by_ib_is_resent_after_a_restart(tmp_path):
    """A gateway killed with unread input resets its socket: a place it had just written may
    never reach IB though it was marked sent. Until IB mentions it, it is *unconfirmed*: the
    next run sends it again (same id: IB refuses an id it has with 103), compaction keeps its
    command, and an entry of an older build (no ``ack``) is never resent."""
    def cmd(coid):
        return _Cmd(command="place", client_order_id=coid, symbol="AAPL", side="BUY",
                    quantity=1, limit_price=1.0)
    m = OrderMap(tmp_path)
    m.add(cmd("lost"), 11)
    m.mark_sent(11)
    m.add(cmd("seen"), 12)
    m.mark_sent(12)
    m.mark_acked(12)
    m.journal.append({"coid": "legacy", "ib": 13, "symbol": "AAPL", "side": "BUY", "qty": 1,
                      "cmd": {"command": "place", "client_order_id": "legacy"}, "w": 1})
    m.journal.append({"sent": 13})
    m.journal.close()  # SIGKILL: nothing written at close
    again = OrderMap(tmp_path)
    assert list(again.unconfirmed_places()) == [11] and again.unsent_places() == {}
    assert msgspec.convert(again.unconfirmed_places()[11], _Cmd).client_order_id == "lost"
    again.journal.compact(again._snapshot(time.time_ns()))
    again.journal.close()
    third = OrderMap(tmp_path)
    assert list(third.unconfirmed_places()) == [11]  # compaction kept its command
    third.mark_acked(11)  # the resend reached IB and IB answered
    third.journal.close()
    assert OrderMap(tmp_path).unconfirmed_places() == {}
