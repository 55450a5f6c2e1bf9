"""Child processes for the journal tests (run as ``python -m tests.runtime.journal_child``).

append PATH START FSYNC BATCH   append records START, START+1... forever; print each number
                                once it is durable (after its fsync, or its batch's sync)
compact PATH GEN N              forever: compact to N records of generation GEN+1, GEN+2...,
                                print the generation once compact returned, append 3 tails
fsize PATH                      run the disk-full scenario under RLIMIT_FSIZE, print a report
ordermap DIR START              OrderMap.add in a loop, print each client order id once added
"""
from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sys
from pathlib import Path

from proto.schema import OrderCommand, OrderStatus
from services.runtime import journal as journal_mod
from services.runtime.journal import Journal, JournalError


def _say(text: str) -> None:
    os.write(1, (text + "\n").encode())


def entry(i: int):
    """Record i: every third a bus message, the others plain records of varying size."""
    if i % 3 == 0:
        return OrderStatus(ib_order_id=i, client_order_id=f"c{i}", status="Submitted",
                           filled=0, remaining=i)
    return {"i": i, "pad": "x" * (i * 37 % 300)}


def number(e) -> int:
    return e.ib_order_id if isinstance(e, OrderStatus) else e["i"]


def _add(j: Journal, e) -> None:
    if isinstance(e, dict):
        j.append_record(e)
    else:
        j.append(e)


def run_append(path: str, start: int, fsync: bool, batch: int) -> None:
    j = Journal(Path(path), fsync=fsync)
    i, pending = start, []
    while True:
        _add(j, entry(i))
        pending.append(i)
        if fsync or len(pending) >= batch:
            j.sync()
            for n in pending:
                _say(str(n))
            pending = []
        i += 1


def run_compact(path: str, gen: int, n: int) -> None:
    j = Journal(Path(path), fsync=False)
    while True:
        gen += 1
        j.compact({"gen": gen, "k": k, "pad": "y" * 40} for k in range(n))
        _say(str(gen))
        for t in range(3):
            j.append_record({"gen": gen, "tail": t})
            j.sync()


def run_fsize(path: str) -> None:
    """Disk full, for real: RLIMIT_FSIZE makes the kernel refuse to grow the file (a short
    write up to the limit, then EFBIG), exactly like a full disk (short write, then ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us at the limit
    writes: list[object] = []
    real_write = os.write

    def watched_write(fd, data):  # observes, does not alter: what the kernel returned
        try:
            n = real_write(fd, data)
        except OSError as exc:
            writes.append(f"errno {exc.errno}")
            raise
        writes.append([len(data), n])
        return n

    journal_mod.os.write = watched_write  # type: ignore[attr-defined]
    report: dict = {}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    j = Journal(Path(path), fsync=True)
    for i in range(10):
        j.append_record({"i": i, "pad": "g" * 50})
    good = os.path.getsize(path)
    report["good"] = good
    resource.setrlimit(resource.RLIMIT_FSIZE, (good + 30, hard))  # room for 30 bytes
    writes.clear()
    try:
        j.append_record({"i": "doomed", "pad": "d" * 100})
        report["raised"] = None
    except JournalError as exc:
        report["raised"] = exc.errno
        report["message"] = str(exc)
    report["writes"] = list(writes)
    report["size_after_failure"] = os.path.getsize(path)
    try:  # still full: refused again, the file still ends at the last good record
        j.append_record({"i": "doomed-2", "pad": "d" * 100})
    except JournalError as exc:
        report["raised_again"] = exc.errno
    report["size_after_second"] = os.path.getsize(path)
    # group commit: one record in, the next refused, then a sync: the first is kept
    j.fsync = False
    resource.setrlimit(resource.RLIMIT_FSIZE, (good + 90, hard))
    j.append_record({"i": "kept"})
    kept_end = os.path.getsize(path)
    try:
        j.append_record({"i": "doomed-3", "pad": "d" * 100})
    except JournalError as exc:
        report["raised_batch"] = exc.errno
    report["batch_cut_to_kept"] = os.path.getsize(path) == kept_end
    j.sync()
    # a compaction that does not fit: refused, the journal unchanged and still usable
    try:
        j.compact([{"i": k, "pad": "c" * 50} for k in range(100)])
        report["compact_raised"] = None
    except JournalError as exc:
        report["compact_raised"] = exc.errno
    report["compact_tmp_left"] = os.path.exists(path + journal_mod.COMPACT_SUFFIX)
    # an atomic document that does not fit: the old one stays
    doc = os.path.join(os.path.dirname(path), "doc.json")
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    journal_mod.write_json(doc, {"v": 1})
    resource.setrlimit(resource.RLIMIT_FSIZE, (20, hard))
    try:
        journal_mod.write_json(doc, {"v": 2, "pad": "z" * 100})
    except JournalError as exc:
        report["doc_raised"] = exc.errno
    # space freed: appends work again, on a clean boundary
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    j.fsync = True
    j.append_record({"i": "after"})
    report["stats"] = j.stats()
    j.close()
    report["errnos"] = {"EFBIG": errno.EFBIG, "ENOSPC": errno.ENOSPC}
    _say(json.dumps(report))


def run_ordermap(state_dir: str, start: int) -> None:
    from services.gateway.orders import OrderMap
    m = OrderMap(Path(state_dir))
    i = start
    while True:
        cmd = OrderCommand(command="place", client_order_id=f"k-{i}", symbol="AAPL",
                           side="BUY", quantity=1, order_type="LMT", limit_price=10.0)
        m.add(cmd, 1000 + i)
        _say(str(i))
        i += 1


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "append":
        run_append(args[0], int(args[1]), args[2] == "1", int(args[3]))
    elif mode == "compact":
        run_compact(args[0], int(args[1]), int(args[2]))
    elif mode == "fsize":
        run_fsize(args[0])
    elif mode == "ordermap":
        run_ordermap(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
