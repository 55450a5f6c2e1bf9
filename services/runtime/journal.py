"""A durable append-only journal of bus messages: one fsync per record.

Record: ``<u32 length><u32 crc32><payload>``, payload a codec frame of one message. A torn
tail (a kill or power loss mid-write) fails its length or checksum and is cut off on open,
so every record before it is kept and the next append starts on a clean boundary.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

from proto import codec
from proto.schema import Message

log = logging.getLogger("journal")
_HEAD = struct.Struct("<II")


class Journal:
    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.torn_bytes = 0
        good = self._valid_length()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(self._fd).st_size
        if good < size:
            self.torn_bytes = size - good
            log.warning("journal torn tail cut", extra={"path": str(self.path),
                                                        "bytes": self.torn_bytes})
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        self.records = 0
        self.syncs = 0
        self._dirty = False

    def _valid_length(self) -> int:
        end = 0
        for end, _ in _scan(self.path):
            pass
        return end

    def append(self, msg: Message) -> None:
        """Append a record; with ``fsync`` on, durable on return, else at the next ``sync``."""
        payload = codec.encode((msg,))
        os.write(self._fd, _HEAD.pack(len(payload), zlib.crc32(payload)) + payload)
        self.records += 1
        self._dirty = True
        if self.fsync:
            self.sync()

    def sync(self) -> None:
        """Make everything appended so far durable (one fsync however many records)."""
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
            self.syncs += 1

    def replay(self) -> Iterator[Message]:
        for _, payload in _scan(self.path):
            try:
                yield from codec.decode(payload)
            except codec.FrameError as exc:  # checksummed, so only a schema problem
                log.error("journal record unreadable", extra={"detail": str(exc)})

    def close(self) -> None:
        os.close(self._fd)


def _scan(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (offset after record, payload) for each intact record."""
    if not path.exists():
        return
    data = path.read_bytes()
    pos = 0
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        start, end = pos + _HEAD.size, pos + _HEAD.size + length
        if end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        yield end, data[start:end]
        pos = end
