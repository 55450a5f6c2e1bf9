"""One segment file being written: buffered appends, explicit flush and fsync.

The buffer is ours (a bytearray handed to ``os.write``), not Python's buffered file, so that on
a write error we know exactly which records reached the kernel and which were lost, and no
hidden retry writes half a buffer later. The file layer is injectable (``FileOps``) so a test
can make any call fail; the default is the plain ``os`` functions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services.recorder import format as fmt


@dataclass(frozen=True)
class FileOps:
    """The system calls a writer makes; replace one to inject a failure."""

    open: Callable[[str], int]
    write: Callable[[int, bytes | memoryview], int]
    fsync: Callable[[int], None]
    close: Callable[[int], None]


def _open_new(path: str) -> int:
    # O_EXCL: a segment is never reopened, so never overwritten or appended after a torn tail
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)


OS_FILE_OPS = FileOps(open=_open_new, write=os.write, fsync=os.fsync, close=os.close)


class BufferedAppender:
    """Append-only file with our own buffer; knows which appended items reached the kernel."""

    def __init__(self, path: Path, ops: FileOps, buffer_bytes: int) -> None:
        self.path = Path(path)
        self.ops = ops
        self.buffer_bytes = buffer_bytes
        self.fd: int | None = ops.open(str(path))
        self.size = 0  # bytes appended so far, buffered or not
        self._buf = bytearray()
        # per buffered item: (end offset in _buf, frames, messages), to count what a failure lost
        self._pending: list[tuple[int, int, int]] = []

    def append(self, data: bytes, messages: int = 0, frames: int = 1) -> int:
        """Buffer ``data``; returns its offset in the file. Flushes when the buffer is full."""
        offset = self.size
        self._buf += data
        self.size += len(data)
        self._pending.append((len(self._buf), frames, messages))
        if len(self._buf) >= self.buffer_bytes:
            self.flush()
        return offset

    def flush(self) -> None:
        """Hand the buffer to the kernel. On OSError the unwritten part stays in the buffer."""
        if not self._buf or self.fd is None:
            return
        done = 0
        try:
            with memoryview(self._buf) as view:
                while done < len(view):
                    with view[done:] as rest:  # released even if a traceback keeps it
                        done += self.ops.write(self.fd, rest)
        finally:
            if done:
                del self._buf[:done]
                self._pending = [(end - done, f, n) for end, f, n in self._pending if end > done]

    def sync(self) -> None:
        self.flush()
        if self.fd is not None:
            self.ops.fsync(self.fd)

    def close(self, sync: bool = True) -> None:
        if self.fd is None:
            return
        try:
            if sync:
                self.sync()
            else:
                self.flush()
        finally:
            fd, self.fd = self.fd, None
            self.ops.close(fd)

    def abandon(self) -> tuple[int, int]:
        """Close without writing more; returns (items, messages) that never fully reached disk."""
        lost = (sum(f for _, f, _ in self._pending), sum(n for _, _, n in self._pending))
        self._buf.clear()
        self._pending.clear()
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                self.ops.close(fd)
            except OSError:
                pass
        return lost


class SegmentWriter:
    """A segment file: header, then records; ``append`` returns the record's offset."""

    def __init__(self, path: Path, segment_no: int, created_ns: int, ops: FileOps = OS_FILE_OPS,
                 buffer_bytes: int = 1 << 20) -> None:
        self.segment_no = segment_no
        self.created_ns = created_ns
        self.file = BufferedAppender(path, ops, buffer_bytes)
        self.file.append(fmt.pack_file_header(segment_no, created_ns), frames=0)
        self.records = 0
        self.first_recv_ns: int | None = None

    @property
    def size(self) -> int:
        return self.file.size

    def append(self, recv_ns: int, topic: bytes, payload: bytes,
               summary: fmt.FrameSummary) -> int:
        if self.first_recv_ns is None:
            self.first_recv_ns = recv_ns
        offset = self.file.append(fmt.pack_record(recv_ns, topic, payload, summary),
                                  summary.count)
        self.records += 1
        return offset
