"""The time index of a segment: sparse (recv_ns, offset) entries, for seeking by time.

Written alongside the segment (``seg-NNNNNN.ibidx``) and always behind it: the index is
flushed after the segment data it points to. Every entry has its own CRC; a reader uses the
valid prefix and scans forward from the last entry before the wanted time, so a torn or stale
index only costs a longer scan. A missing or damaged index is rebuilt from the segment.
"""
from __future__ import annotations

import bisect
import zlib
from pathlib import Path
from typing import NamedTuple

from services.recorder import format as fmt
from services.recorder.segment import OS_FILE_OPS, BufferedAppender, FileOps


class IndexEntry(NamedTuple):
    recv_ns: int
    offset: int
    record_no: int


class IndexWriter:
    """Adds an entry for the first record and then every ``every_bytes`` of segment."""

    def __init__(self, path: Path, segment_no: int, ops: FileOps = OS_FILE_OPS,
                 every_bytes: int = 256 * 1024) -> None:
        self.every_bytes = every_bytes
        self.file = BufferedAppender(path, ops, buffer_bytes=1 << 30)  # flushed by the owner
        self.file.append(fmt.pack_index_header(segment_no), frames=0)
        self._next_offset = 0
        self.entries = 0

    def note(self, recv_ns: int, offset: int, record_no: int) -> None:
        if offset >= self._next_offset:
            self.file.append(fmt.pack_index_entry(recv_ns, offset, record_no), frames=0)
            self._next_offset = offset + self.every_bytes
            self.entries += 1


def read_index(path: Path, segment_no: int) -> list[IndexEntry] | None:
    """The valid entries of an index file (up to the first damaged one); None if unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    size = fmt.INDEX_HEADER.size
    if len(data) < size:
        return None
    magic, version, _, number, crc = fmt.INDEX_HEADER.unpack_from(data)
    if (magic != fmt.INDEX_MAGIC or zlib.crc32(data[:size - 4]) != crc or number != segment_no
            or version > fmt.FORMAT_VERSION):
        return None
    entries: list[IndexEntry] = []
    step = fmt.INDEX_ENTRY.size
    for pos in range(size, len(data) - step + 1, step):
        recv_ns, offset, record_no, crc = fmt.INDEX_ENTRY.unpack_from(data, pos)
        if zlib.crc32(data[pos:pos + step - 4]) != crc:
            break
        if entries and (offset <= entries[-1].offset or recv_ns < entries[-1].recv_ns):
            break
        entries.append(IndexEntry(recv_ns, offset, record_no))
    return entries


def seek_offset(entries: list[IndexEntry], start_ns: int) -> IndexEntry | None:
    """The last entry at or before ``start_ns``: scanning from it finds every later record."""
    times = [e.recv_ns for e in entries]
    # records with recv_ns == start_ns may begin before an entry with that same time
    i = bisect.bisect_left(times, start_ns) - 1
    return entries[i] if i >= 0 else None


def rebuild_index(segment_path: Path, every_bytes: int = 256 * 1024) -> Path:
    """Write a fresh index for a segment from its records (replaces any existing one)."""
    from services.recorder.reader import scan_segment  # the reader depends on this module

    segment_path = Path(segment_path)
    info, records = scan_segment(segment_path)
    path = segment_path.with_suffix(fmt.INDEX_SUFFIX)
    tmp = path.with_suffix(fmt.INDEX_SUFFIX + ".tmp")
    tmp.unlink(missing_ok=True)
    writer = IndexWriter(tmp, info.segment_no, every_bytes=every_bytes)
    for record_no, record in enumerate(records):
        writer.note(record.recv_ns, record.offset, record_no)
    writer.file.close(sync=True)
    tmp.replace(path)
    return path
