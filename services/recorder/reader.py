"""Read a recording: records in order across segments, by time range and topic prefix.

Every record's CRC is verified. Damage never raises: a torn tail (a record cut short by a
kill or a power loss, or trailing garbage) ends that segment's iteration and is reported with
the bytes discarded; a damaged record in the middle (a flipped byte) is skipped by searching
for the next record marker whose CRC checks out, and reported. ``ReadReport`` says what was
found. Iteration order is file order, which is receive order: deterministic, so a backtest
that reads the same recording twice sees the same sequence.
"""
from __future__ import annotations

import mmap
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from proto import codec
from proto.schema import Message
from services.recorder import format as fmt
from services.recorder.index import read_index, seek_offset
from services.recorder.writer import segment_numbers

_HEAD = fmt.RECORD_HEAD
_HEAD_SIZE = _HEAD.size
_CRC_SIZE = fmt.RECORD_CRC.size


class Record:
    """One recorded frame: the bytes as received, plus what the recorder noted about it."""

    __slots__ = ("segment_no", "offset", "recv_ns", "topic_bytes", "src_bytes", "payload",
                 "first_seq", "last_seq", "first_tseq", "last_tseq", "count", "flags")

    def __init__(self, segment_no: int, offset: int, recv_ns: int, topic_bytes: bytes,
                 src_bytes: bytes, payload: bytes, first_seq: int, last_seq: int,
                 first_tseq: int, last_tseq: int, count: int, flags: int) -> None:
        self.segment_no = segment_no
        self.offset = offset
        self.recv_ns = recv_ns
        self.topic_bytes = topic_bytes
        self.src_bytes = src_bytes
        self.payload = payload
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.first_tseq = first_tseq
        self.last_tseq = last_tseq
        self.count = count
        self.flags = flags

    @property
    def topic(self) -> str:
        return self.topic_bytes.decode("utf-8", "replace")

    @property
    def src(self) -> str:
        return self.src_bytes.decode("utf-8", "replace")

    def messages(self) -> list[Message]:
        """The frame decoded by ``proto.codec`` (strict: raises ``codec.FrameError``)."""
        return codec.decode(self.payload)

    def __repr__(self) -> str:
        return (f"Record(seg={self.segment_no}, off={self.offset}, recv_ns={self.recv_ns}, "
                f"topic={self.topic!r}, src={self.src!r}, seq={self.first_seq}..{self.last_seq}, "
                f"count={self.count})")


@dataclass
class ReadReport:
    """What a read found besides good records. Nothing here stops an iteration."""

    segments: int = 0
    records: int = 0
    torn_bytes: int = 0  # bytes discarded at segment ends (cut-short records, garbage)
    torn_segments: list[tuple[str, int]] = field(default_factory=list)  # (file, bytes)
    corrupt_records: int = 0  # damaged regions skipped in the middle of a segment
    corrupt_bytes: int = 0
    corrupt_at: list[tuple[str, int, int]] = field(default_factory=list)  # (file, offset, bytes)
    bad_segments: list[tuple[str, str]] = field(default_factory=list)  # (file, why) unreadable
    undecodable: int = 0  # records whose payload proto.codec refused (messages() only)

    @property
    def clean(self) -> bool:
        return not (self.torn_bytes or self.corrupt_records or self.bad_segments)


@dataclass(frozen=True)
class SegmentInfo:
    path: Path
    segment_no: int
    created_ns: int
    size: int


def _parse_at(buf: mmap.mmap, view: memoryview, pos: int, size: int,
              segment_no: int) -> Record | None:
    """The record at ``pos`` if it is complete and its CRC checks out, else None."""
    if size - pos < _HEAD_SIZE + _CRC_SIZE:
        return None
    (marker, body, recv_ns, first_seq, last_seq, first_tseq, last_tseq, count, flags,
     topic_len, src_len) = _HEAD.unpack_from(buf, pos)
    if marker != fmt.RECORD_MARKER or body > fmt.MAX_BODY:
        return None
    end = pos + 8 + body
    if end + _CRC_SIZE > size or _HEAD_SIZE + topic_len + src_len > 8 + body:
        return None
    (crc,) = fmt.RECORD_CRC.unpack_from(buf, end)
    if zlib.crc32(view[pos:end]) != crc:
        return None
    topic_at = pos + _HEAD_SIZE
    src_at = topic_at + topic_len
    payload_at = src_at + src_len
    return Record(segment_no, pos, recv_ns, buf[topic_at:src_at], buf[src_at:payload_at],
                  buf[payload_at:end], first_seq, last_seq, first_tseq, last_tseq, count, flags)


def _resync(buf: mmap.mmap, view: memoryview, pos: int, size: int,
            segment_no: int) -> int | None:
    """Offset of the next valid record after a damaged one, or None if there is none."""
    while True:
        pos = buf.find(fmt.RECORD_MARKER, pos, size)
        if pos < 0:
            return None
        if _parse_at(buf, view, pos, size, segment_no) is not None:
            return pos
        pos += 1


def _open_segment(path: Path, report: ReadReport) -> tuple[SegmentInfo, mmap.mmap] | None:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < fmt.FILE_HEADER.size:
                # created but its header never reached the disk: an empty torn segment
                if size:
                    report.torn_bytes += size
                    report.torn_segments.append((str(path), size))
                return None
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        report.bad_segments.append((str(path), f"cannot read: {exc}"))
        return None
    try:
        segment_no, created_ns = fmt.parse_file_header(buf[:fmt.FILE_HEADER.size])
    except fmt.FormatError as exc:
        buf.close()
        report.bad_segments.append((str(path), str(exc)))
        return None
    return SegmentInfo(path, segment_no, created_ns, size), buf


def _iter_segment(info: SegmentInfo, buf: mmap.mmap, start: int,
                  report: ReadReport) -> Iterator[Record]:
    size = info.size
    view = memoryview(buf)
    name = str(info.path)
    segment_no = info.segment_no
    pos = start
    try:
        while pos < size:
            record = _parse_at(buf, view, pos, size, segment_no)
            if record is None:
                nxt = _resync(buf, view, pos + 1, size, segment_no)
                if nxt is None:
                    report.torn_bytes += size - pos
                    report.torn_segments.append((name, size - pos))
                    return
                report.corrupt_records += 1
                report.corrupt_bytes += nxt - pos
                report.corrupt_at.append((name, pos, nxt - pos))
                pos = nxt
                continue
            report.records += 1
            yield record
            pos = pos + len(record.topic_bytes) + len(record.src_bytes) + len(record.payload) \
                + fmt.RECORD_OVERHEAD
    finally:
        view.release()


def scan_segment(path: Path, report: ReadReport | None = None
                 ) -> tuple[SegmentInfo, Iterator[Record]]:
    """Every record of one segment file, in order. Raises FormatError if it is not one."""
    report = report if report is not None else ReadReport()
    opened = _open_segment(Path(path), report)
    if opened is None:
        why = report.bad_segments[-1][1] if report.bad_segments else "shorter than its header"
        raise fmt.FormatError(f"{path}: {why}")
    info, buf = opened

    def records() -> Iterator[Record]:
        try:
            yield from _iter_segment(info, buf, fmt.FILE_HEADER.size, report)
        finally:
            buf.close()
    return info, records()


class Recording:
    """A recording directory (or a single segment file), read in order.

    ``report`` describes the latest iteration (torn tails, skipped damage).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_file():
            self.segment_paths = [self.path]
        elif self.path.is_dir():
            self.segment_paths = [self.path / fmt.segment_name(n)
                                  for n in segment_numbers(self.path)]
            sessions = [] if self.segment_paths else sorted(
                d.name for d in self.path.iterdir() if d.is_dir() and segment_numbers(d))
            if sessions:  # the recordings root: sessions are read one at a time, never mixed
                shown = ", ".join(sessions[-5:]) + (" ..." if len(sessions) > 5 else "")
                raise FileNotFoundError(
                    f"{self.path} holds {len(sessions)} recording session(s), one folder per "
                    f"`ibfleet up`; read one of them: {shown}")
        else:
            raise FileNotFoundError(f"no recording at {self.path}")
        self.report = ReadReport()

    def segments(self, start_ns: int | None, report: ReadReport):
        """The segments that may hold records at or after ``start_ns``, in order, each opened
        (``(info, buf)``, counted in ``report``; a damaged one is skipped as ``_open_segment``
        reports it). The caller closes each ``buf``."""
        paths = self.segment_paths
        for i, path in enumerate(paths):
            if start_ns is not None and i + 1 < len(paths):
                nxt = _first_recv_ns(paths[i + 1])
                if nxt is not None and nxt < start_ns:  # this whole segment is earlier
                    continue
            opened = _open_segment(path, report)
            if opened is None:
                continue
            report.segments += 1
            yield opened

    def records(self, start_ns: int | None = None, end_ns: int | None = None,
                topics: Iterable[str] = ()) -> Iterator[Record]:
        """Records with ``start_ns <= recv_ns <= end_ns`` whose topic starts with a prefix."""
        report = self.report = ReadReport()
        prefixes = tuple(t.encode() for t in topics if t)
        for info, buf in self.segments(start_ns, report):
            try:
                begin = self._start_offset(info, buf, start_ns)
                for record in _iter_segment(info, buf, begin, report):
                    recv_ns = record.recv_ns
                    if start_ns is not None and recv_ns < start_ns:
                        continue
                    if end_ns is not None and recv_ns > end_ns:
                        return  # receive times never decrease within a recording
                    if prefixes and not record.topic_bytes.startswith(prefixes):
                        continue
                    yield record
            finally:
                buf.close()

    def messages(self, start_ns: int | None = None, end_ns: int | None = None,
                 topics: Iterable[str] = ()) -> Iterator[tuple[Record, Message]]:
        """Every message, decoded by proto.codec, with the record it came in.

        A record whose payload the codec refuses is counted in ``report.undecodable`` and
        skipped.
        """
        for record in self.records(start_ns, end_ns, topics):
            try:
                decoded = codec.decode(record.payload)
            except codec.FrameError:
                self.report.undecodable += 1
                continue
            for msg in decoded:
                yield record, msg

    def time_range(self) -> tuple[int, int] | None:
        """(first, last) receive time in the recording, or None if it holds no record."""
        first = last = None
        for path in self.segment_paths:
            ns = _first_recv_ns(path)
            if ns is not None and first is None:
                first = ns
        for path in reversed(self.segment_paths):
            last = _last_recv_ns(path)
            if last is not None:
                break
        if first is None or last is None:
            return None
        return first, last

    @staticmethod
    def _start_offset(info: SegmentInfo, buf: mmap.mmap, start_ns: int | None) -> int:
        begin = fmt.FILE_HEADER.size
        if start_ns is None:
            return begin
        entries = read_index(info.path.with_suffix(fmt.INDEX_SUFFIX), info.segment_no)
        entry = seek_offset(entries, start_ns) if entries else None
        if entry is None or entry.offset >= info.size:
            return begin
        view = memoryview(buf)
        try:  # trust the index only if it points at the record it says
            record = _parse_at(buf, view, entry.offset, info.size, info.segment_no)
        finally:
            view.release()
        if record is None or record.recv_ns != entry.recv_ns:
            return begin
        return entry.offset


def _first_recv_ns(path: Path) -> int | None:
    report = ReadReport()
    opened = _open_segment(path, report)
    if opened is None:
        return None
    info, buf = opened
    try:
        for record in _iter_segment(info, buf, fmt.FILE_HEADER.size, report):
            return record.recv_ns
        return None
    finally:
        buf.close()


def _last_recv_ns(path: Path) -> int | None:
    report = ReadReport()
    opened = _open_segment(path, report)
    if opened is None:
        return None
    info, buf = opened
    try:
        entries = read_index(path.with_suffix(fmt.INDEX_SUFFIX), info.segment_no) or []
        start = Recording._start_offset(info, buf, entries[-1].recv_ns + 1) if entries \
            else fmt.FILE_HEADER.size
        last = None
        for record in _iter_segment(info, buf, start, report):
            last = record.recv_ns
        return last
    finally:
        buf.close()
