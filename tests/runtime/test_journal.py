"""The durable journal: framing, torn tails, corruption, full disks, crashes, compaction.

Real files throughout; where a crash or a full disk matters, a real child process
(``tests/runtime/journal_child.py``): SIGKILL while appending or compacting, and RLIMIT_FSIZE for
a disk that is full (the kernel then gives a short write and EFBIG, as a full disk gives a short
write and ENOSPC). SIGKILL does not lose the page cache, so these tests show what a process
crash leaves; a power loss is covered by the same recovery on open (torn tails of every length).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib

import pytest

from proto import codec
from proto.schema import OrderStatus
from services.runtime import journal as journal_mod
from services.runtime.journal import (HEAD_SIZE, Journal, JournalError, RecordJournal,
                                      import_jsonl, read_json, read_jsonl, write_atomic,
                                      write_json)
from tests.runtime.journal_child import entry, number
from tests.support.processes import REPO


def _status(i: int) -> OrderStatus:
    return OrderStatus(ib_order_id=i, client_order_id=f"c{i}", status="Submitted", filled=0,
                       remaining=1)


def _child(*args: str, report=None) -> subprocess.Popen:
    """A child process; with ``report`` (a path), its stdout goes to that file, so it never
    blocks on a full pipe and a SIGKILL lands wherever it happens to be."""
    out = open(report, "wb") if report is not None else subprocess.PIPE
    try:
        return subprocess.Popen([sys.executable, "-m", "tests.runtime.journal_child", *args],
                                cwd=REPO, stdout=out, stderr=subprocess.PIPE)
    finally:
        if report is not None:
            out.close()


# ------------------------------------------------------------------ the basics
def test_messages_and_records_round_trip_in_order_with_counters(tmp_path):
    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    j.append(_status(1))
    j.append_record({"coid": "a", "ib": 7, "cmd": {"x": float("nan")}, "n": None})
    j.append(_status(2))
    assert (j.records, j.syncs, j.file_records) == (3, 0, 3)
    j.sync()
    j.sync()  # nothing new: no second fsync
    assert j.syncs == 1
    assert [m.ib_order_id for m in j.replay()] == [1, 2]
    assert [r["coid"] for r in j.iter_records()] == ["a"]
    j.close()
    j.close()  # idempotent
    again = Journal(path)
    kinds = [type(e).__name__ for e in again.entries()]
    assert kinds == ["OrderStatus", "dict", "OrderStatus"]
    assert again.stats() == {"records": 0, "syncs": 0, "torn_bytes": 0, "write_errors": 0,
                             "compactions": 0, "unreadable": 0, "file_records": 3,
                             "file_bytes": path.stat().st_size, "corrupt": 0}
    with pytest.raises(TypeError):
        again.append({"a": 1})  # a dict is a record: append_record
    with pytest.raises(TypeError):
        again.append_record(_status(3))
    again.close()
    with pytest.raises(JournalError):
        again.append(_status(3))


def test_fsync_per_record_and_group_commit(tmp_path):
    each = Journal(tmp_path / "each.bin", fsync=True)
    for i in range(5):
        each.append(_status(i))
    assert each.syncs == 5
    group = Journal(tmp_path / "group.bin", fsync=False)
    for i in range(100):
        group.append_record({"i": i})
    group.sync()
    assert group.syncs == 1 and group.records == 100
    each.close()
    group.close()


def test_a_journal_of_an_older_build_untagged_frames_is_read_and_extended(tmp_path):
    path = tmp_path / "journal.bin"
    old = b""
    for i in (1, 2):
        payload = codec.encode((_status(i),))
        old += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    path.write_bytes(old)
    j = Journal(path)
    assert j.torn_bytes == 0 and j.file_records == 2
    j.append(_status(3))
    j.close()
    assert [m.ib_order_id for m in Journal(path).replay()] == [1, 2, 3]


def test_an_unknown_record_kind_is_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "j.bin"
    payload = b"\x7fsomething from a newer build"
    path.write_bytes(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    j = Journal(path)
    j.append(_status(1))
    with caplog.at_level(logging.ERROR, logger="journal"):
        assert [m.ib_order_id for m in j.replay()] == [1]
    assert j.unreadable == 1 and "unreadable" in caplog.text
    j.close()


# ------------------------------------------------------------------ torn tails
def _torn_cases(tmp_path, kind):
    """A journal of three records, then the third cut at every possible length."""
    base = tmp_path / f"base-{kind}.bin"
    j = Journal(base, fsync=False)
    write = j.append if kind == "msg" else (lambda i: j.append_record({"i": i, "p": "q" * 9}))
    for i in range(3):
        write(_status(i) if kind == "msg" else i)
    j.close()
    data = base.read_bytes()
    ends = [end for _, end in journal_mod._records(memoryview(data))]
    return data, ends


@pytest.mark.parametrize("kind", ["msg", "record"])
def test_a_torn_tail_of_every_length_is_cut_and_the_next_record_survives(tmp_path, kind,
                                                                          caplog):
    data, ends = _torn_cases(tmp_path, kind)
    second_end, third_len = ends[1], ends[2] - ends[1]
    for cut in range(1, third_len):  # 1 byte of the header .. all but the last payload byte
        path = tmp_path / f"torn-{kind}-{cut}.bin"
        path.write_bytes(data[:second_end + cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="journal"):
            j = Journal(path, fsync=False)
        assert j.torn_bytes == cut and j.file_records == 2, cut
        assert "torn tail cut" in caplog.text and j.corrupt_offset is None
        assert path.stat().st_size == second_end
        if kind == "msg":
            j.append(_status(99))
        else:
            j.append_record({"i": 99})
        j.close()
        again = Journal(path)
        got = ([m.ib_order_id for m in again.replay()] if kind == "msg"
               else [r["i"] for r in again.iter_records()])
        assert got == [0, 1, 99], cut
        assert again.torn_bytes == 0
        again.close()


def test_a_record_torn_mid_crc_and_a_flipped_last_byte_are_torn_tails(tmp_path):
    data, ends = _torn_cases(tmp_path, "record")
    for name, damaged in (("mid-crc", data[:ends[1] + 6]),  # length whole, CRC half written
                          ("flipped", data[:-1] + bytes([data[-1] ^ 0x40]))):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(damaged)
        j = Journal(path)
        assert j.file_records == 2 and j.torn_bytes == len(damaged) - ends[1], name
        assert j.corrupt_offset is None
        j.append_record({"i": 5})
        j.close()
        assert [r["i"] for r in Journal(path).iter_records()] == [0, 1, 5]


def test_a_zero_filled_tail_is_torn_not_empty_records(tmp_path):
    path = tmp_path / "j.bin"
    j = Journal(path)
    j.append_record({"i": 1})
    j.close()
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)  # as a power loss can leave: size grown, data never written
    j = Journal(path)
    assert j.torn_bytes == 4096 and j.file_records == 1
    j.close()


def test_bit_rot_in_the_middle_stops_there_loudly_and_keeps_the_file(tmp_path, caplog):
    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    for i in range(5):
        j.append_record({"i": i})
    j.close()
    data = path.read_bytes()
    ends = [end for _, end in journal_mod._records(memoryview(data))]
    rotten = bytearray(data)
    rotten[ends[1] + HEAD_SIZE + 2] ^= 0x01  # a bit of record 2 (of 0..4)
    path.write_bytes(bytes(rotten))
    with caplog.at_level(logging.ERROR, logger="journal"):
        j = Journal(path)
    assert j.corrupt_offset == ends[1] and j.file_records == 2
    assert j.stats()["corrupt"] == 1 and j.torn_bytes == len(data) - ends[1]
    assert "journal corrupt" in caplog.text
    logged = [r for r in caplog.records if r.getMessage().startswith("journal corrupt")][0]
    assert logged.offset == ends[1] and logged.next_valid_offset == ends[2]
    assert j.corrupt_copy is not None and j.corrupt_copy.read_bytes() == bytes(rotten)
    assert j.corrupt_copy.name.startswith("j.bin.corrupt-")
    j.append_record({"i": 9})
    j.close()
    assert [r["i"] for r in Journal(path).iter_records()] == [0, 1, 9]


# ------------------------------------------------------------------ full disk, failed fsync
def test_a_full_disk_raises_restores_the_boundary_and_resurrects_nothing(tmp_path):
    """RLIMIT_FSIZE in a child process: the kernel really refuses to grow the file."""
    path = tmp_path / "j.bin"
    child = _child("fsize", str(path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    efbig = report["errnos"]["EFBIG"]
    assert report["raised"] == efbig, report
    # the record was offered whole, the kernel took 30 bytes (a short write), then refused
    assert report["writes"][0][1] == 30 and report["writes"][0][0] > 30
    assert report["writes"][1] == f"errno {efbig}"
    assert report["size_after_failure"] == report["good"]    # cut back to the last record
    assert report["raised_again"] == efbig and report["size_after_second"] == report["good"]
    assert report["raised_batch"] == efbig and report["batch_cut_to_kept"]
    assert report["compact_raised"] == efbig and not report["compact_tmp_left"]
    assert report["doc_raised"] == efbig
    assert report["stats"]["write_errors"] == 4
    assert read_json(tmp_path / "doc.json", None) == {"v": 1}  # the old document, whole
    j = Journal(path)
    got = [r["i"] for r in j.iter_records()]
    assert got == list(range(10)) + ["kept", "after"]  # nothing doomed came back
    assert j.torn_bytes == 0
    j.close()


def test_a_failed_fsync_cuts_what_was_not_durable_and_reopens_by_itself(tmp_path, monkeypatch):
    """Simulated (fsync cannot be made to fail for real here): os.fsync raises EIO once. The
    unsynced records are cut; the next append reopens the journal (fresh descriptor, file cut
    to the last durable record) and goes on, so a writer resumes once the disk works."""
    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    j.append_record({"i": 1})
    j.sync()
    j.append_record({"i": 2})
    j.append_record({"i": 3})
    real = os.fsync
    calls = []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(journal_mod.os, "fsync", failing)
    with pytest.raises(JournalError) as info:
        j.sync()
    assert info.value.errno == errno.EIO and "reopen" in str(info.value)
    assert path.stat().st_size == j.file_bytes and j.file_records == 1
    # while the reopen itself fails (its fsync fails too), the journal stays unusable
    monkeypatch.setattr(journal_mod.os, "fsync",
                        lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "still failing")))
    with pytest.raises(JournalError):
        j.append_record({"i": 4})
    monkeypatch.setattr(journal_mod.os, "fsync", real)
    j.append_record({"i": 5})  # reopened: goes on after the last durable record
    j.sync()
    assert [r["i"] for r in j.iter_records()] == [1, 5]
    j.close()
    again = Journal(path)
    assert [r["i"] for r in again.iter_records()] == [1, 5]
    again.close()


# ------------------------------------------------------------------ crashes
def _kill_after(child: subprocess.Popen, seconds: float, report) -> list[str]:
    deadline = time.monotonic() + 30
    while not report.stat().st_size and time.monotonic() < deadline:  # it has started
        time.sleep(0.01)
    time.sleep(seconds)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    return report.read_text().split()


def test_short_writes_are_continued_until_the_record_is_whole(tmp_path, monkeypatch):
    """os.write may write less than asked: the journal loops, the records come back whole."""
    real = os.write
    calls = []

    def short(fd, data):
        calls.append(len(data))
        return real(fd, bytes(data[:3]))

    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    monkeypatch.setattr(journal_mod.os, "write", short)
    for i in range(5):
        j.append_record({"i": i, "pad": "x" * 40})
    j.sync()
    monkeypatch.undo()
    assert len(calls) > 5 * 10  # many short writes
    j.close()
    again = Journal(path)
    assert [r["i"] for r in again.iter_records()] == list(range(5)) and again.torn_bytes == 0
    again.close()


@pytest.mark.parametrize("failure", ["enospc", "short_then_enospc", "zero"])
def test_a_failed_write_leaves_nothing_behind_and_the_journal_resumes(tmp_path, monkeypatch,
                                                                      failure):
    """ENOSPC (at once, or after a short write that put part of the record in the file), or a
    write of nothing: JournalError, the file is cut back to the last whole record (no part of
    the failed record is in the file or in any buffer to be written later), and once writes
    work again the next record follows the last good one."""
    real = os.write
    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    j.append_record({"i": 1})
    j.sync()
    good = path.stat().st_size
    state = {"calls": 0}

    def failing(fd, data):
        state["calls"] += 1
        if failure == "zero":
            return 0
        if failure == "short_then_enospc" and state["calls"] == 1:
            return real(fd, bytes(data[:7]))  # part of the record reaches the file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_mod.os, "write", failing)
    with pytest.raises(JournalError) as info:
        j.append_record({"i": "doomed"})
    assert info.value.errno == (errno.EIO if failure == "zero" else errno.ENOSPC)
    assert path.stat().st_size == good and j.file_bytes == good and j.write_errors == 1
    with pytest.raises(JournalError):  # still full: refused again, still clean
        j.append_record({"i": "doomed too"})
    assert path.stat().st_size == good
    monkeypatch.undo()  # space again
    j.append_record({"i": 2})
    j.sync()
    j.close()  # nothing buffered anywhere is written at close
    again = Journal(path)
    assert [r["i"] for r in again.iter_records()] == [1, 2] and again.torn_bytes == 0
    again.close()


@pytest.mark.parametrize("fsync,batch", [(True, 1), (False, 10)])
def test_sigkill_while_appending_keeps_every_durable_record_in_order(tmp_path, fsync, batch):
    path = tmp_path / "j.bin"
    rng = random.Random(7)
    expected_next = 0
    for _ in range(6):
        report = tmp_path / "reported"
        child = _child("append", str(path), str(expected_next), "1" if fsync else "0",
                       str(batch), report=report)
        reported = _kill_after(child, rng.uniform(0.05, 0.5), report)
        assert child.returncode == -signal.SIGKILL
        j = Journal(path, fsync=False)
        got = [number(e) for e in j.entries()]
        assert got == list(range(len(got))), "records out of order, doubled or garbage"
        assert j.unreadable == 0
        assert [int(n) for n in reported] == list(range(expected_next,
                                                         expected_next + len(reported)))
        assert expected_next + len(reported) <= len(got), "a record reported durable is lost"
        for e in j.entries():  # each record is exactly what was written
            assert e == entry(number(e))
        expected_next = len(got)
        j.close()
    assert expected_next > 0


def test_compaction_under_sigkill_leaves_the_old_file_or_the_new_never_neither(tmp_path):
    path = tmp_path / "j.bin"
    j = Journal(path)
    j.compact({"gen": 0, "k": k, "pad": "y" * 40} for k in range(2000))
    j.close()
    rng = random.Random(11)
    gen = 0
    for _ in range(12):
        report = tmp_path / "reported"
        child = _child("compact", str(path), str(gen), "2000", report=report)
        reported = _kill_after(child, rng.uniform(0.0, 0.3), report)
        last = int(reported[-1]) if reported else gen
        assert path.exists()
        j = Journal(path, fsync=False)
        records = list(j.iter_records())
        assert not path.with_name(path.name + ".compact").exists()  # removed on open
        gens = {r["gen"] for r in records}
        assert len(gens) == 1, "a mix of two snapshots"
        now = gens.pop()
        assert now in (last, last + 1)  # the old file, or the new one just renamed in
        assert [r["k"] for r in records if "k" in r] == list(range(2000))
        tails = [r["tail"] for r in records if "tail" in r]
        assert tails == list(range(len(tails)))
        gen = now
        j.close()
    assert gen > 0


# ------------------------------------------------------------------ compaction
def test_compact_replaces_the_content_and_appending_goes_on(tmp_path):
    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    for i in range(50):
        j.append(_status(i))
    assert j.compact([_status(48), {"note": "snapshot"}, _status(49)]) == 3
    assert j.file_records == 3 and j.compactions == 1 and path.stat().st_size == j.file_bytes
    j.append(_status(50))
    j.close()
    again = Journal(path)
    assert [e.ib_order_id if not isinstance(e, dict) else e["note"]
            for e in again.entries()] == [48, "snapshot", 49, 50]
    again.close()


def test_maybe_compact_when_the_journal_grew_past_n_records_or_bytes(tmp_path):
    j = Journal(tmp_path / "j.bin", fsync=False)
    state: dict[str, int] = {}
    calls = []

    def snapshot():
        calls.append(1)
        return [{"k": k, "v": v} for k, v in state.items()]

    for i in range(250):
        state[f"k{i % 5}"] = i
        j.append_record({"k": f"k{i % 5}", "v": i})
        j.maybe_compact(snapshot, max_records=100)
    # compacted at 101 records, then again when 100 more were added on top of the snapshot
    # (at i=100 and i=201), the snapshot of 5 records then 48 appends on it
    assert len(calls) == 2 and j.compactions == 2 and j.file_records == 5 + 48
    assert not j.needs_compaction(max_records=100) and j.needs_compaction(max_records=47)
    assert j.needs_compaction(max_bytes=10)
    assert j.maybe_compact(snapshot, max_bytes=1) is True and j.file_records == 5
    assert {r["k"]: r["v"] for r in j.iter_records()} == state
    assert j.maybe_compact(snapshot) is False  # no threshold: never
    j.close()


# ------------------------------------------------------------------ plain-record journal, jsonl
def test_record_journal_appends_durably_or_in_batches(tmp_path):
    rj = RecordJournal(tmp_path / "r.journal")
    rj.append({"a": 1})
    rj.append({"a": 2}, sync=False)
    rj.append({"a": 3}, sync=False)
    rj.sync()
    assert rj.stats()["syncs"] == 2 and [r["a"] for r in rj.records()] == [1, 2, 3]
    rj.close()


def test_a_torn_jsonl_line_with_the_next_record_glued_to_it_is_recovered(tmp_path):
    old = tmp_path / "orders.jsonl"
    old.write_text('{"coid":"a","ib":1}\n{"coid":"b","ib":2,"sym'  # torn by a crash
                   '{"coid":"c","ib":3,"cmd":{"x":1}}\n'          # glued by the next append
                   '{"coid":"d"\n')                               # torn again
    assert [r["coid"] for r in read_jsonl(old)] == ["a", "c"]
    j = Journal(tmp_path / "orders.journal")
    assert import_jsonl(j, old, lambda r: {**r, "w": 5}) == 2
    assert not old.exists() and (tmp_path / "orders.jsonl.migrated").exists()
    assert [(r["coid"], r["w"]) for r in j.iter_records()] == [("a", 5), ("c", 5)]
    # a crash after the journal was written but before the rename: set aside, not re-read
    old.write_text('{"coid":"a","ib":1}\n')
    assert import_jsonl(j, old) == 0
    assert (tmp_path / "orders.jsonl.migrated.1").exists() and j.file_records == 2
    j.close()


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    doc = tmp_path / "d.json"
    assert read_json(doc, {"none": True}) == {"none": True}
    write_json(doc, {"reserved_through": 100})
    write_json(doc, {"reserved_through": 200})
    assert read_json(doc, None) == {"reserved_through": 200}
    write_atomic(tmp_path / "raw", b"\x00\x01")
    assert (tmp_path / "raw").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "raw"]


def test_a_large_live_state_is_compacted_only_after_as_much_again_was_appended(tmp_path):
    # 300 live keys: each compaction writes 300 records, so the next one waits for 300 more
    # appends (not max_records=100): rewriting never costs more than what was appended
    j = Journal(tmp_path / "j.bin", fsync=False)
    state = {f"k{i}": i for i in range(300)}
    for k, v in state.items():
        j.append_record({"k": k, "v": v})
    assert j.maybe_compact(lambda: [{"k": k, "v": v} for k, v in state.items()],
                           max_records=100)
    assert j.file_records == 300
    for i in range(300):
        j.append_record({"k": "k0", "v": i})
    assert not j.needs_compaction(max_records=100)
    j.append_record({"k": "k0", "v": 300})
    assert j.needs_compaction(max_records=100)
    j.close()


def test_a_group_is_written_whole_with_one_write_or_not_at_all(tmp_path, monkeypatch):
    """``grouped``: the records land together (one write), in order, counted each; a write
    that fails leaves none of them, and an exception inside the block writes none."""
    path = tmp_path / "j.bin"
    j = Journal(path, fsync=False)
    writes = {"n": 0}
    real = os.write

    def counting(fd, data):
        writes["n"] += 1
        return real(fd, data)
    monkeypatch.setattr(journal_mod.os, "write", counting)
    with j.grouped():
        j.append_record({"i": 1})
        with j.grouped():  # nested: joins the outer group
            j.append_record({"i": 2})
        assert writes["n"] == 0 and path.stat().st_size == 0  # nothing until the block ends
    assert writes["n"] == 1 and j.file_records == 2
    good = path.stat().st_size

    with pytest.raises(RuntimeError):
        with j.grouped():
            j.append_record({"i": "abandoned"})
            raise RuntimeError("the caller failed half way")
    assert path.stat().st_size == good

    def enospc(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(journal_mod.os, "write", enospc)
    with pytest.raises(JournalError):
        with j.grouped():
            j.append_record({"i": "doomed"})
            j.append_record({"i": "doomed too"})
    assert path.stat().st_size == good and j.file_records == 2
    monkeypatch.undo()
    j.append_record({"i": 3})
    j.sync()
    j.close()
    again = Journal(path)
    assert [r["i"] for r in again.iter_records()] == [1, 2, 3]
    again.close()
