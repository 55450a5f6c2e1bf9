"""A journal for the ``ExecutionEngine`` of a backtest: the interface of
``services.runtime.journal.Journal`` that execution uses, in memory, never touching the disk.

Live, execution journals every intent, state change, fill and commission and fsyncs before it
acknowledges anything; a backtest has nothing to survive, so appends are counted (``records``)
and, with ``keep=True``, kept in order so that ``replay()`` gives them back as the file would
(a second ``ExecutionEngine`` over the same journal restores the same orders and positions).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Union

from proto.schema import Message

Entry = Union[Message, dict]  # a bus message, or a plain record (execution's held intents)


class MemoryJournal:
    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.kept: list[Entry] = []
        self.records = 0  # appended by this instance
        self.syncs = 0
        self.torn_bytes = 0  # nothing is ever torn in memory
        self.closed = False

    def append(self, msg: Message) -> None:
        self._append(msg)

    def append_record(self, record: dict) -> None:
        self._append(record)

    def _append(self, entry: Entry) -> None:
        if self.closed:
            raise ValueError("append to a closed journal")
        self.records += 1
        if self.keep:
            self.kept.append(entry)

    def sync(self) -> None:
        self.syncs += 1

    def grouped(self) -> contextlib.nullcontext:
        """As ``Journal.grouped``: in memory every append already lands whole."""
        return contextlib.nullcontext()

    def entries(self) -> Iterator[Entry]:
        """What was appended, messages and records, in order (nothing unless ``keep``)."""
        return iter(list(self.kept))

    def replay(self) -> Iterator[Message]:
        """The bus messages appended, in order (nothing unless ``keep``)."""
        return iter([e for e in self.kept if not isinstance(e, dict)])

    def stats(self) -> dict[str, int]:
        return {"records": self.records, "syncs": self.syncs, "torn_bytes": self.torn_bytes}

    def close(self) -> None:
        self.closed = True
