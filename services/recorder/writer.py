"""A recording directory being written: numbered segments, rotation by size and by time.

Segments are ``seg-NNNNNN.ibrec`` with their index ``seg-NNNNNN.ibidx``. A writer never
reopens a segment: a restarted recorder (or one recovering from a write error) starts the next
number, so a torn tail stays where it was and is only ever at the end of a segment.

Durability policy (the caller drives it): ``flush()`` hands buffered records to the kernel
(the recorder does this every ``flush_ms``, so a kill -9 loses at most that much), ``sync()``
also fsyncs (every ``fsync_seconds``, and on rotation and close, which bounds a power loss).
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services.recorder import format as fmt
from services.recorder.headers import summarize
from services.recorder.index import IndexWriter
from services.recorder.segment import OS_FILE_OPS, FileOps, SegmentWriter

_SEGMENT_RE = re.compile(r"^seg-(\d{6,})" + re.escape(fmt.SEGMENT_SUFFIX) + "$")


class WriteFailed(Exception):
    """A write error (ENOSPC, EIO...) closed the current segment; says what it cost."""

    def __init__(self, cause: OSError, lost_frames: int, lost_messages: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.lost_frames = lost_frames
        self.lost_messages = lost_messages


@dataclass(frozen=True)
class WriterPolicy:
    rotate_bytes: int = 256 * 1024 * 1024
    rotate_seconds: float = 3600.0
    buffer_bytes: int = 1 << 20
    index_every_bytes: int = 256 * 1024


def segment_numbers(directory: Path) -> list[int]:
    """Numbers of the segment files in ``directory``, ascending."""
    numbers = []
    for path in Path(directory).iterdir():
        match = _SEGMENT_RE.match(path.name)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


class RecordingWriter:
    """Appends frames to the current segment, rotating as the policy says.

    A write error in any method closes the current segment as it is (its tail may be torn,
    which readers handle) and raises ``WriteFailed`` with the frames that never reached the
    kernel; a later ``open_segment()`` (or ``append``) starts a new segment. ``frames``,
    ``messages`` and ``bytes`` count what was handed to the kernel or is still buffered.
    """

    def __init__(self, directory: Path, policy: WriterPolicy = WriterPolicy(),
                 ops: FileOps = OS_FILE_OPS, clock: Callable[[], int] = time.time_ns) -> None:
        self.directory = Path(directory)
        self.policy = policy
        self.ops = ops
        self.clock = clock
        self.segment: SegmentWriter | None = None
        self.index: IndexWriter | None = None
        self.last_recv_ns = 0
        self.frames = 0
        self.messages = 0
        self.bytes = 0
        self.segments = 0
        self._rotate_ns = int(policy.rotate_seconds * 1e9)

    @property
    def is_open(self) -> bool:
        return self.segment is not None

    @contextmanager
    def _failing(self, unbuffered_frames: int = 0, unbuffered_messages: int = 0):
        try:
            yield
        except OSError as exc:
            lost_frames, lost_messages = self.abandon()
            self.frames -= lost_frames
            self.messages -= lost_messages
            raise WriteFailed(exc, lost_frames + unbuffered_frames,
                              lost_messages + unbuffered_messages) from exc

    def open_segment(self) -> None:
        with self._failing():
            self._open_segment()

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = segment_numbers(self.directory)
        number = (existing[-1] + 1) if existing else 1
        created = self.clock()
        self.segment = SegmentWriter(self.directory / fmt.segment_name(number), number, created,
                                     self.ops, self.policy.buffer_bytes)
        self.index = IndexWriter(self.directory / fmt.index_name(number), number, self.ops,
                                 self.policy.index_every_bytes)
        self.segments += 1
        self._flush()  # the header reaches the disk now: a full disk shows up at once

    def append(self, recv_ns: int, topic: bytes, payload: bytes) -> fmt.FrameSummary:
        """Record one frame as received. ``recv_ns`` is clamped to be non-decreasing."""
        if recv_ns < self.last_recv_ns:  # the wall clock stepped back; keep the order usable
            recv_ns = self.last_recv_ns
        self.last_recv_ns = recv_ns
        summary = summarize(payload)
        with self._failing(1, summary.count):
            if self.segment is None:
                self._open_segment()
            elif self._should_rotate(recv_ns, len(topic) + len(payload)):
                self._close()
                self._open_segment()
        segment, index = self.segment, self.index
        assert segment is not None and index is not None
        self.frames += 1
        self.messages += summary.count
        with self._failing():
            offset = segment.append(recv_ns, topic, payload, summary)
            index.note(recv_ns, offset, segment.records - 1)
        self.bytes += segment.size - offset
        return summary

    def _should_rotate(self, recv_ns: int, size: int) -> bool:
        segment = self.segment
        assert segment is not None
        if not segment.records:
            return False
        if segment.size + size + fmt.RECORD_OVERHEAD > self.policy.rotate_bytes:
            return True
        first = segment.first_recv_ns
        return first is not None and recv_ns - first >= self._rotate_ns

    def rotate(self) -> None:
        with self._failing():
            self._close()
            self._open_segment()

    def flush(self) -> None:
        with self._failing():
            self._flush()

    def _flush(self) -> None:
        """Segment first, then its index, so the index never points past flushed data."""
        if self.segment is not None:
            self.segment.file.flush()
            self.index.file.flush()

    def sync(self) -> None:
        with self._failing():
            if self.segment is not None:
                self.segment.file.sync()
                self.index.file.sync()

    def close(self) -> None:
        with self._failing():
            self._close()

    def _close(self) -> None:
        if self.segment is None:
            return
        self.segment.file.close(sync=True)
        self.index.file.close(sync=True)
        self.segment = self.index = None

    def abandon(self) -> tuple[int, int]:
        """Drop the current segment after a write error; (frames, messages) that were lost."""
        lost = (0, 0)
        if self.segment is not None:
            lost = self.segment.file.abandon()
            self.index.file.abandon()
        self.segment = self.index = None
        return lost
