"""Order identity: the IB order-id sequence and the client-order-id -> IB-order-id map.

Both are durable in the gateway's state directory, written before the order leaves:
- ``order_ids.json`` holds the highest id *reserved*. Ids are handed out from blocks; a block
  is reserved (an atomic document, fsync'd) before its first id is used, so a restart (even
  after SIGKILL) continues above the block and never reuses an id. IB accepts gaps.
- ``orders.journal`` (a ``services.runtime.journal`` journal of plain records) maps
  execution's client order id to the IB order id. A place for a client order id already in
  the map is not placed again; the existing mapping is the answer. An ``orders.jsonl`` of an
  older build is migrated into it once, then renamed ``orders.jsonl.migrated``.

Records in ``orders.journal`` (``w`` is the wall-clock time journalled, ns):
- a place: ``{"coid", "ib", "symbol", "side", "qty", "parent", "cmd", "w", "ack"}`` before
  sending;
- ``{"sent": ib}`` once it went to IB (a place with ``cmd`` and no ``sent`` is resent after a
  restart);
- ``{"acked": ib}`` once IB first mentioned it. A place sent and never mentioned may have died
  in the socket (killed with unread input, a process's connection is reset and what the kernel
  had not delivered is dropped): after a restart it is resent too, with the same id, unless the
  first reconciliation reports it (IB refuses an id it already has with 103, so a resend never
  makes a second order). Only entries with ``"ack"`` (this build's) are tracked;
- a learned order (an older run's, found by reconciliation): ``{"coid", "ib", ..., "learned"}``;
- ``{"final": [ib, ...], "w"}``: orders that ended (written at close, from what IB reported);
- a modify or cancel, journalled before it is acknowledged: ``{"hold": n, "cmd", "w"}``, and
  ``{"held_done": n}`` once it went to IB (one not done is sent again after a restart, after
  the places of the previous run, in journal order);
- after compaction, one record per order kept: no ``cmd`` once sent and mentioned by IB,
  ``"final": true`` if it ended.

Compaction (on open, when the journal holds more than ``COMPACT_MIN_RECORDS`` and more than
twice the records kept) drops an order only if it was sent, is known to have ended, *and* was
journalled more than ``ORDER_KEEP_DAYS`` ago: a resent place (execution retrying after a crash)
is recognised for that long, and an order still working at IB is never dropped (nor would it be
lost: reconciliation relearns it from its ``orderRef``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgspec
from ibapi.order import Order

from proto.schema import OrderCommand
from services.runtime.journal import JournalError, RecordJournal, read_json, write_json

log = logging.getLogger("gateway.orders")

ORDER_KEEP_DAYS = 7
COMPACT_MIN_RECORDS = 1000
_DAY_NS = 86_400 * 10**9


class OrderIdSequence:
    def __init__(self, state_dir: Path, block: int = 100) -> None:
        self.path = Path(state_dir) / "order_ids.json"
        self.block = block
        self.reserved_through = int(read_json(self.path, {}).get("reserved_through", 0))
        self.next_id = self.reserved_through + 1  # never below anything a past run may have used

    def observe_next_valid_id(self, ib_next: int) -> None:
        """IB's nextValidId: never go below it (ids used by another session of ours, or by TWS)."""
        if ib_next > self.next_id:
            self.next_id = ib_next

    def allocate(self) -> int:
        """The next id; a new block is durable before its first id is handed out (if that
        write fails, JournalError and nothing changes)."""
        order_id = self.next_id
        if order_id > self.reserved_through:
            through = order_id + self.block - 1
            write_json(self.path, {"reserved_through": through})
            self.reserved_through = through
        self.next_id += 1
        return order_id


@dataclass
class OrderRecord:
    client_order_id: str
    ib_order_id: int
    symbol: str
    side: str
    quantity: float
    status: str = "PendingSubmit"  # last status seen (in memory; reconciliation refreshes it)
    filled: float = 0.0
    remaining: float = 0.0
    perm_id: int = 0
    parent_id: int = 0
    final: bool = False
    avg_price: float = 0.0
    live_this_run: bool = False  # sent, or reported by IB, since this process started


@dataclass
class _Entry:
    """What the journal says about one IB order id (for compaction)."""
    record: dict
    sent: bool = False
    final: bool = False
    acked: bool = False  # IB has mentioned it (see ``OrderMap.mark_acked``)


class OrderMap:
    """client_order_id <-> ib_order_id, journalled before the order is sent."""

    def __init__(self, state_dir: Path, keep_days: float = ORDER_KEEP_DAYS,
                 compact_min_records: int = COMPACT_MIN_RECORDS) -> None:
        state_dir = Path(state_dir)
        now = time.time_ns()
        self.keep_days = keep_days
        self.journal = RecordJournal(state_dir / "orders.journal",
                                     legacy_jsonl=state_dir / "orders.jsonl",
                                     transform=lambda r: r if "w" in r else {**r, "w": now})
        self.by_client: dict[str, OrderRecord] = {}
        self.by_ib: dict[int, OrderRecord] = {}
        self._entries: dict[int, _Entry] = {}
        #: modifies and cancels acknowledged but not yet sent to IB: key -> their record
        self.pending_cmds: dict[int, dict] = {}
        self._next_hold = 1
        for rec in self.journal.records():
            if "hold" in rec:
                n = int(rec["hold"])
                self.pending_cmds[n] = rec
                self._next_hold = max(self._next_hold, n + 1)
            elif "held_done" in rec:
                self.pending_cmds.pop(int(rec["held_done"]), None)
            elif "coid" in rec:
                ib = int(rec["ib"])
                self._index(OrderRecord(rec["coid"], ib, rec.get("symbol", ""),
                                        rec.get("side", ""), float(rec.get("qty", 0.0)),
                                        remaining=float(rec.get("qty", 0.0)),
                                        parent_id=int(rec.get("parent", 0))))
                self._entries[ib] = _Entry(rec, sent="cmd" not in rec,
                                           final=bool(rec.get("final")))
            elif "sent" in rec:
                entry = self._entries.get(int(rec["sent"]))
                if entry is not None:
                    entry.sent = True
            elif "acked" in rec:
                entry = self._entries.get(int(rec["acked"]))
                if entry is not None:
                    entry.acked = True
            elif "final" in rec:
                for ib in rec["final"]:
                    entry = self._entries.get(int(ib))
                    if entry is not None:
                        entry.final = True
        kept = {ib for ib, _ in self._kept(now)}
        files = self.journal.journal.file_records
        if files > compact_min_records and files > 2 * len(kept):
            self.journal.compact(self._snapshot(now))
            for ib in [ib for ib in self._entries if ib not in kept]:  # memory = disk
                rec = self.by_ib.pop(ib, None)
                del self._entries[ib]
                if rec is not None and self.by_client.get(rec.client_order_id) is rec:
                    del self.by_client[rec.client_order_id]

    def _kept(self, now: int) -> Iterator[tuple[int, _Entry]]:
        horizon = now - int(self.keep_days * _DAY_NS)
        for ib, entry in self._entries.items():
            final = entry.final or (ib in self.by_ib and self.by_ib[ib].final)
            if entry.sent and final and int(entry.record.get("w", now)) < horizon:
                continue
            yield ib, entry

    def _snapshot(self, now: int) -> Iterator[dict]:
        """One record per order kept: the command only while unsent, the end if known."""
        for ib, entry in self._kept(now):
            rec = dict(entry.record)
            unconfirmed = self._unconfirmed(entry)
            if entry.sent and not unconfirmed:
                rec.pop("cmd", None)
            if entry.final:
                rec["final"] = True
            else:
                rec.pop("final", None)
            yield rec
            if unconfirmed:
                yield {"sent": ib}
        yield from self.pending_cmds.values()

    def _index(self, rec: OrderRecord) -> None:
        self.by_client[rec.client_order_id] = rec
        self.by_ib[rec.ib_order_id] = rec

    def get(self, client_order_id: str) -> OrderRecord | None:
        return self.by_client.get(client_order_id)

    def by_ib_id(self, ib_order_id: int) -> OrderRecord | None:
        return self.by_ib.get(ib_order_id)

    def add(self, cmd: OrderCommand, ib_order_id: int) -> OrderRecord:
        """Journal (durable) then map; a JournalError leaves the map unchanged."""
        rec = OrderRecord(cmd.client_order_id, ib_order_id, cmd.symbol, cmd.side, cmd.quantity,
                          remaining=cmd.quantity, parent_id=cmd.parent_ib_id)
        # "ack": this entry's first mention by IB is journalled ("acked"), so a place sent
        # but never confirmed can be told from one IB had (entries of older builds lack it)
        record = {"coid": rec.client_order_id, "ib": ib_order_id, "symbol": cmd.symbol,
                  "side": cmd.side, "qty": cmd.quantity, "parent": cmd.parent_ib_id,
                  "cmd": msgspec.to_builtins(cmd), "w": time.time_ns(), "ack": True}
        self.journal.append(record)
        self._entries[ib_order_id] = _Entry(record)
        self._index(rec)
        return rec

    def learn(self, client_order_id: str, ib_order_id: int, symbol: str, side: str,
              quantity: float) -> OrderRecord:
        """An order we did not place in this map (an older run, or reconciliation found it)."""
        rec = self.by_ib.get(ib_order_id)
        if rec is None:
            rec = OrderRecord(client_order_id, ib_order_id, symbol, side, quantity,
                              remaining=quantity)
            if client_order_id and client_order_id not in self.by_client:
                record = {"coid": client_order_id, "ib": ib_order_id, "symbol": symbol,
                          "side": side, "qty": quantity, "learned": True, "w": time.time_ns()}
                self.journal.append(record)
                self._entries[ib_order_id] = _Entry(record, sent=True)
            self.by_ib[ib_order_id] = rec
            if client_order_id:
                self.by_client.setdefault(client_order_id, rec)
        return rec

    def mark_sent(self, ib_order_id: int) -> None:
        """Journal that a journalled place went to IB: it is not resent after a restart. The
        same record as ``journal.append({"sent": ib_order_id})``, without a sync of its own
        (it is written now and durable with the next sync, e.g. the next place's): the place
        itself was durable before it was sent, and a marker lost in a crash only makes that
        place "unsent" again, which is resent after the first reconciliation only if IB did
        not mention it, with the same IB id (IB refuses a duplicate id with 103): never a
        second order. The sync here kept the gateway's loop in ``fsync`` after every
        placeOrder, ahead of the next tick and the next command."""
        self.journal.append({"sent": ib_order_id}, sync=False)
        entry = self._entries.get(ib_order_id)
        if entry is not None:
            entry.sent = True

    def mark_acked(self, ib_order_id: int) -> None:
        """IB mentioned this place (an open order, a status, an error, an execution): journal
        it once, without a sync of its own. Lost in a crash, it only means the place is sent
        again after the restart, and IB refuses that with 103."""
        entry = self._entries.get(ib_order_id)
        if entry is None or entry.acked or not entry.record.get("ack"):
            return
        entry.acked = True
        try:
            self.journal.append({"acked": ib_order_id}, sync=False)
        except JournalError as exc:
            log.warning("order map: an acknowledged place not journalled",
                        extra={"ib_order_id": ib_order_id, "error": str(exc)})

    @staticmethod
    def _unconfirmed(entry: _Entry) -> bool:
        return entry.sent and not entry.acked and not entry.final \
            and bool(entry.record.get("ack")) and "cmd" in entry.record

    def hold(self, cmd: OrderCommand) -> int:
        """Journal (durably) a modify or cancel before it is acknowledged; returns its key.
        A JournalError leaves nothing behind."""
        n = self._next_hold
        record = {"hold": n, "cmd": msgspec.to_builtins(cmd), "w": time.time_ns()}
        self.journal.append(record)
        self._next_hold += 1
        self.pending_cmds[n] = record
        return n

    def hold_done(self, n: int) -> None:
        """Journal that a held modify/cancel went to IB: it is not sent again after a restart."""
        self.journal.append({"held_done": n})
        self.pending_cmds.pop(n, None)

    def unsent_places(self) -> dict[int, dict]:
        """The journalled command (as builtins) of every place not marked sent, by IB id."""
        return {ib: e.record["cmd"] for ib, e in self._entries.items()
                if not e.sent and "cmd" in e.record}

    def unconfirmed_places(self) -> dict[int, dict]:
        """The journalled command of every place sent by a previous run that IB never
        mentioned: it may have died in the socket (a process killed with unread input resets
        its connection, and the kernel drops what it had not delivered), by IB id."""
        return {ib: e.record["cmd"] for ib, e in self._entries.items() if self._unconfirmed(e)}

    def stats(self) -> dict[str, int]:
        """The journal's counters (records, syncs, torn_bytes, write_errors...)."""
        return self.journal.stats()

    def close(self) -> None:
        """Journal which orders ended (IB said so this run) for the next compaction; close."""
        ended = [ib for ib, rec in self.by_ib.items()
                 if rec.final and ib in self._entries and not self._entries[ib].final]
        try:
            if ended:
                self.journal.append({"final": ended, "w": time.time_ns()})
                for ib in ended:
                    self._entries[ib].final = True
        except JournalError as exc:  # only delays compaction of those orders
            log.warning("order map: ended orders not journalled", extra={"error": str(exc)})
        finally:
            self.journal.close()

