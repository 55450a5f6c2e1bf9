"""The memory of what was already published: ``ExecutionLedger``.

It remembers every execId (and commission) the gateway has published, on disk, so a replayed
execution (reqExecutions after a reconnect, or after our own restart) is not published twice.
The last execution time seen narrows the next reqExecutions. (The reconciliation run itself
is in ``reports``; IB's time parsing in ``translate``.)

Its journal, ``executions.journal`` (``services.runtime.journal``; an ``executions.jsonl`` of an
older build is migrated once), holds ``{"k": "e", "id", "t", "w"}`` per execution and
``{"k": "c", "id", "w"}`` per commission report (``t`` IB's execution time, ``w`` the time
journalled, both ns). IB replays the executions of the current day (at most the last 7 days,
as TWS is configured), so compaction (on open, when the journal holds more than
``COMPACT_MIN_RECORDS`` and more than twice the records kept) keeps every execId and
commission journalled in the last ``EXEC_KEEP_DAYS`` (8: 7 days and one of margin for time
zones), and the execution with the latest time, so ``last_exec_ns`` survives.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from services.runtime.journal import RecordJournal

EXEC_KEEP_DAYS = 8
COMPACT_MIN_RECORDS = 1000
_DAY_NS = 86_400 * 10**9


class ExecutionLedger:
    def __init__(self, state_dir: Path, keep_days: float = EXEC_KEEP_DAYS,
                 compact_min_records: int = COMPACT_MIN_RECORDS) -> None:
        state_dir = Path(state_dir)
        now = time.time_ns()
        self.keep_days = keep_days
        self.journal = RecordJournal(state_dir / "executions.journal",
                                     legacy_jsonl=state_dir / "executions.jsonl",
                                     transform=lambda r: r if "w" in r else {**r, "w": now})
        self.execs: set[str] = set()
        self.commissions: set[str] = set()
        self.last_exec_ns = 0
        self._exec_seen: dict[str, tuple[int, int]] = {}  # execId -> (exec time, journalled)
        self._comm_seen: dict[str, int] = {}
        for rec in self.journal.records():
            if rec.get("k") == "c":
                self.commissions.add(rec["id"])
                self._comm_seen[rec["id"]] = int(rec.get("w", now))
            else:
                t = int(rec.get("t", 0))
                self.execs.add(rec["id"])
                self.last_exec_ns = max(self.last_exec_ns, t)
                self._exec_seen[rec["id"]] = (t, int(rec.get("w", t or now)))
        snapshot = list(self._snapshot(now))
        files = self.journal.journal.file_records
        if files > compact_min_records and files > 2 * len(snapshot):
            self.journal.compact(snapshot)

    def _snapshot(self, now: int) -> Iterator[dict]:
        """What compaction keeps (see the module docstring)."""
        horizon = now - int(self.keep_days * _DAY_NS)
        latest = max(self._exec_seen, key=lambda i: self._exec_seen[i][0], default=None)
        for exec_id, (t, w) in self._exec_seen.items():
            if w >= horizon or exec_id == latest:
                yield {"k": "e", "id": exec_id, "t": t, "w": w}
        for exec_id, w in self._comm_seen.items():
            if w >= horizon:
                yield {"k": "c", "id": exec_id, "w": w}

    def is_new_exec(self, exec_id: str) -> bool:
        return exec_id not in self.execs

    def record_exec(self, exec_id: str, exec_ns: int) -> None:
        """Call right after publishing. A crash between the two republishes that one fill after
        the restart (consumers dedupe on exec_id); the other order would risk losing it.
        Journalled first: a JournalError leaves the ledger as it was."""
        w = time.time_ns()
        self.journal.append({"k": "e", "id": exec_id, "t": exec_ns, "w": w})
        self.execs.add(exec_id)
        self.last_exec_ns = max(self.last_exec_ns, exec_ns)
        self._exec_seen[exec_id] = (exec_ns, w)

    def is_new_commission(self, exec_id: str) -> bool:
        return exec_id not in self.commissions

    def record_commission(self, exec_id: str) -> None:
        w = time.time_ns()
        self.journal.append({"k": "c", "id": exec_id, "w": w})
        self.commissions.add(exec_id)
        self._comm_seen[exec_id] = w

    def stats(self) -> dict[str, int]:
        """The journal's counters (records, syncs, torn_bytes, write_errors...)."""
        return self.journal.stats()

    def close(self) -> None:
        self.journal.close()
