"""Reconciliation after every (re)connect, and the memory of what was already published.

``Reconciliation`` tracks one run: open orders, executions and positions are requested, and the
run is complete only when all three end markers have arrived. An empty answer is therefore
never mistaken for "no orders": silence is "not yet", and a dropped socket abandons the run.

``ExecutionLedger`` remembers every execId (and commission) the gateway has published, on disk,
so a replayed execution (reqExecutions after a reconnect, or after our own restart) is not
published twice. The last execution time seen narrows the next reqExecutions.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from services.gateway.durable import Journal

PARTS = ("open_orders", "executions", "positions")


class Reconciliation:
    def __init__(self, reason: str, exec_req_id: int, started: float) -> None:
        self.reason = reason
        self.exec_req_id = exec_req_id
        self.started = started
        self.waiting: set[str] = set(PARTS)
        self.counts: dict[str, int] = {p: 0 for p in PARTS}
        self.open_ids: set[int] = set()  # our orders IB reported open in this run

    def saw(self, part: str) -> None:
        self.counts[part] += 1

    def ended(self, part: str) -> None:
        self.waiting.discard(part)

    @property
    def done(self) -> bool:
        return not self.waiting


def parse_ib_time(text: str) -> int:
    """IB's execution time ('yyyymmdd hh:mm:ss [zone]' or 'yyyymmdd-hh:mm:ss') -> ns since epoch.

    Zones other than UTC/GMT are read as UTC: the result is used for ordering and filtering
    only, with a margin, never for accounting. Unparseable -> 0.
    """
    text = text.strip()
    parts = text.replace("-", " ", 1).split()
    if len(parts) < 2:
        return 0
    try:
        dt = datetime.strptime(parts[0] + " " + parts[1], "%Y%m%d %H:%M:%S")
    except ValueError:
        return 0
    return int(dt.replace(tzinfo=timezone.utc).timestamp() * 1e9)


def filter_time(exec_time_ns: int, margin_s: float = 60.0) -> str:
    """The reqExecutions filter 'yyyymmdd-hh:mm:ss' (UTC) a margin before the last seen fill."""
    if exec_time_ns <= 0:
        return ""
    t = exec_time_ns / 1e9 - margin_s
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t))


class ExecutionLedger:
    def __init__(self, state_dir: Path) -> None:
        self.journal = Journal(Path(state_dir) / "executions.jsonl")
        self.execs: set[str] = set()
        self.commissions: set[str] = set()
        self.last_exec_ns = 0
        for rec in self.journal.records():
            if rec.get("k") == "c":
                self.commissions.add(rec["id"])
            else:
                self.execs.add(rec["id"])
                self.last_exec_ns = max(self.last_exec_ns, int(rec.get("t", 0)))

    def is_new_exec(self, exec_id: str) -> bool:
        return exec_id not in self.execs

    def record_exec(self, exec_id: str, exec_ns: int) -> None:
        """Call right after publishing. A crash between the two republishes that one fill after
        the restart (consumers dedupe on exec_id); the other order would risk losing it."""
        self.execs.add(exec_id)
        self.last_exec_ns = max(self.last_exec_ns, exec_ns)
        self.journal.append({"k": "e", "id": exec_id, "t": exec_ns})

    def is_new_commission(self, exec_id: str) -> bool:
        return exec_id not in self.commissions

    def record_commission(self, exec_id: str) -> None:
        self.commissions.add(exec_id)
        self.journal.append({"k": "c", "id": exec_id})

    def close(self) -> None:
        self.journal.close()
