"""Durable files for every service that keeps state: one append-only journal, atomic documents.

The journal (``Journal``) is a file of records ``<u32 length><u32 crc32><payload>``
(little-endian; the CRC covers the payload). The payload's first byte says what it holds:

- ``0x01``: a codec frame of bus messages (``append(msg)`` / ``replay()``), execution's journal;
- ``0x02``: a plain record, a msgpack map (``append_record(dict)`` / ``iter_records()``), the
  gateway's order map and execution ledger (through ``RecordJournal``).

A payload that starts with a msgpack array header is a message frame written before the kind
byte existed (journals of older builds), and is read as one; the kind bytes are msgpack
integers, which never start a frame.

Guarantees (details and reasons in ``docs/durability.md``):

- Writes go straight to a raw file descriptor (``os.write``, no Python buffer), in a loop that
  detects short writes. A failed write (ENOSPC, EFBIG, EIO) raises ``JournalError`` after the
  file is cut back to the last complete record, so a failed record can never reach the disk
  later, and the next append starts on a clean boundary.
- ``fsync=True``: ``append`` returns once the record is durable. ``fsync=False``: ``sync()``
  makes everything appended durable with one fsync (group commit). A failed fsync cuts the
  file back to the last durable boundary and leaves the journal unusable until reopened
  (the page cache can no longer be trusted after a failed fsync); the next append or sync
  reopens it by itself (a fresh descriptor, the file cut to the last durable record) and
  raises again only if that fails, so a writer resumes once the disk works again.
- On open, a torn tail (a record whose length or CRC is bad and after which nothing valid
  follows) is cut and logged with its byte count. A bad record *followed by valid ones* is
  corruption, not a torn write: it is logged as an error naming the offset, the whole file is
  copied aside (``NAME.corrupt-TIMESTAMP``) for forensics, and the journal is cut at the bad
  record (everything after it is in the copy, nothing is silently dropped).
- ``compact(items)`` replaces the file atomically (temporary file, fsync, rename, directory
  fsync) with a snapshot of the caller's state and goes on appending to it: after a crash at
  any instant the journal is the old file or the new one, never neither.

``write_atomic`` / ``write_json`` / ``read_json``: a small document replaced atomically.
"""
from __future__ import annotations

import contextlib

import errno
import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import msgspec

from proto import codec
from proto.schema import Message

log = logging.getLogger("journal")

_HEAD = struct.Struct("<II")
HEAD_SIZE = _HEAD.size
KIND_MESSAGES = 0x01
KIND_RECORD = 0x02
_LEGACY_FRAME_FIRST = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}  # msgpack array headers
MAX_PAYLOAD = 64 << 20  # a length above this is garbage, not a record
COMPACT_SUFFIX = ".compact"

_record_encoder = msgspec.msgpack.Encoder()

Entry = Union[Message, dict]


class JournalError(OSError):
    """A journal (or atomic document) write or sync that failed. ``errno`` is the cause's."""

    def __init__(self, err: int | None, message: str) -> None:
        super().__init__(err if err is not None else errno.EIO, message)


# ================================================================== atomic documents
def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until everything is written; a short write is continued, and the write after
    it reports the real error (ENOSPC, EFBIG); a write of 0 bytes is an error too."""
    n = os.write(fd, data)
    if n == len(data):  # the usual case: one call, no copy
        return
    if n <= 0:
        raise OSError(errno.EIO, "write wrote nothing")
    view = memoryview(data)[n:]
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[n:]


def write_atomic(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data``: after a crash at any instant it holds the old content or
    the new, whole. Temporary file in the same directory, fsync, rename, directory fsync."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise JournalError(exc.errno, f"{path}: atomic write failed: {exc}") from exc


def write_json(path: Path | str, value: Any) -> None:
    write_atomic(path, json.dumps(value, separators=(",", ":")).encode())


def read_json(path: Path | str, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return default


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{n}")
        n += 1
    return candidate


# ================================================================== record framing
_KIND_BYTE = {kind: bytes((kind,)) for kind in range(256)}


def _frame(kind: int, body: bytes) -> bytes:
    payload = _KIND_BYTE[kind] + body
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"journal record of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def encode_entry(entry: Entry) -> bytes:
    """One framed record for a message or a plain record (a dict)."""
    if isinstance(entry, dict):
        return _frame(KIND_RECORD, _record_encoder.encode(entry))
    if isinstance(entry, msgspec.Struct):
        return _frame(KIND_MESSAGES, codec.encode_one(entry))  # type: ignore[arg-type]
    raise TypeError(f"a journal entry is a bus message or a dict, not {type(entry).__name__}")


def _record_end(data: memoryview, pos: int) -> int:
    """The end offset of a valid record starting at ``pos``, or -1."""
    if pos + HEAD_SIZE > len(data):
        return -1
    length, crc = _HEAD.unpack_from(data, pos)
    end = pos + HEAD_SIZE + length
    if length == 0 or length > MAX_PAYLOAD or end > len(data):
        return -1
    if zlib.crc32(data[pos + HEAD_SIZE:end]) != crc:
        return -1
    return end


def _records(data: memoryview) -> Iterator[tuple[int, int]]:
    """(start, end) of each valid record from offset 0, stopping at the first bad one."""
    pos = 0
    while True:
        end = _record_end(data, pos)
        if end < 0:
            return
        yield pos, end
        pos = end


def _next_valid(data: memoryview, start: int) -> int:
    """The offset of the first valid record at or after ``start``, or -1 (a torn tail)."""
    for pos in range(start, len(data) - HEAD_SIZE):
        if _record_end(data, pos) >= 0:
            return pos
    return -1


def _pread_all(fd: int, size: int) -> bytes:
    chunks, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, min(size - pos, 1 << 24), pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


# ================================================================== the journal
class Journal:
    """An append-only journal of bus messages and plain records (see the module docstring).

    Counters for a heartbeat: ``records`` (appended by this instance), ``syncs``,
    ``torn_bytes`` (cut on open), ``write_errors``, ``compactions``; ``file_records`` and
    ``file_bytes`` describe the file now; ``stats()`` returns them all.
    """

    def __init__(self, path: Path | str, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.records = 0
        self.syncs = 0
        self.torn_bytes = 0
        self.write_errors = 0
        self.compactions = 0
        self.unreadable = 0
        self.file_records = 0
        self.corrupt_offset: int | None = None  # where a bad record followed by good ones was
        self.corrupt_copy: Path | None = None  # the whole file as found, kept for forensics
        self._lock = threading.RLock()
        self._group: list[bytes] | None = None  # records of an open ``grouped`` block
        self._failed: str | None = None
        self._dirty = False       # appended since the last fsync
        self._tail_dirty = False  # a failed write may have left bytes past _end
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stale = self.path.with_name(self.path.name + COMPACT_SUFFIX)
        if stale.exists():  # a compaction killed before its rename: the journal is the old file
            log.warning("journal: unfinished compaction removed", extra={"path": str(stale)})
            _unlink_quietly(stale)
        self._fd = self._open()
        try:
            self._end = self._recover()
        except OSError as exc:
            os.close(self._fd)
            raise JournalError(exc.errno, f"journal {self.path}: recovery failed: {exc}") from exc
        self._synced_end = self._end
        self._synced_records = self.file_records
        self._base_records = 0  # what the last compaction wrote (for needs_compaction)
        self._base_bytes = 0

    # ------------------------------------------------------------ open and recovery
    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(self.path, flags)
            created = False
        try:
            if created or os.fstat(fd).st_size == 0:
                fsync_dir(self.path.parent)  # the new file's name is durable before any record
        except OSError as exc:
            os.close(fd)
            raise JournalError(exc.errno, f"journal {self.path}: directory fsync failed: "
                                          f"{exc}") from exc
        return fd

    def _recover(self) -> int:
        """Find the last good record boundary; cut whatever follows it. Returns the end."""
        size = os.fstat(self._fd).st_size
        data = memoryview(_pread_all(self._fd, size))
        good = 0
        for _, good in _records(data):
            self.file_records += 1
        if good == len(data):
            return good
        cut = len(data) - good
        nxt = _next_valid(data, good + 1)
        if nxt < 0:
            log.warning("journal torn tail cut", extra={
                "path": str(self.path), "offset": good, "bytes": cut,
                "records_kept": self.file_records})
        else:
            copy = _free_name(self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"))
            write_atomic(copy, bytes(data))
            self.corrupt_offset, self.corrupt_copy = good, copy
            log.error("journal corrupt: bad record before valid ones; cut at the bad record, "
                      "the whole file kept aside", extra={
                          "path": str(self.path), "offset": good, "next_valid_offset": nxt,
                          "bytes": cut, "records_kept": self.file_records,
                          "copy": str(copy)})
        self.torn_bytes = cut
        os.ftruncate(self._fd, good)
        os.fsync(self._fd)
        return good

    # ------------------------------------------------------------ writing
    def append(self, msg: Message) -> None:
        """Append one bus message; with ``fsync`` on, durable on return, else at ``sync()``."""
        if not isinstance(msg, msgspec.Struct):
            raise TypeError(f"append takes a bus message; use append_record for "
                            f"{type(msg).__name__}")
        self._append(_frame(KIND_MESSAGES, codec.encode_one(msg)))

    def append_record(self, record: dict) -> None:
        """Append one plain record (a dict of msgpack-able values); durability as ``append``."""
        if not isinstance(record, dict):
            raise TypeError(f"append_record takes a dict, not {type(record).__name__}")
        self._append(_frame(KIND_RECORD, _record_encoder.encode(record)))

    @property
    def dirty(self) -> bool:
        """Records were appended since the last sync (not yet durable)."""
        return self._dirty

    @contextlib.contextmanager
    def grouped(self):
        """Records appended inside are written together, with one write, when the block
        ends: all of them or (the write failing, the file cut back) none, and the error
        raised there. Nothing is held past the block. Nested blocks join the outer one."""
        if self._group is not None:
            yield
            return
        self._group = []
        try:
            yield
        except BaseException:
            self._group = None
            raise
        bufs, self._group = self._group, None
        if bufs:
            self._append(b"".join(bufs), len(bufs))

    def _append(self, buf: bytes, records: int = 1) -> None:
        if self._group is not None:
            self._group.append(buf)
            return
        with self._lock:
            if self._fd < 0 or self._failed:
                self._check_usable()
            if self._tail_dirty and not self._cut_back():
                raise JournalError(errno.EIO, f"journal {self.path}: cannot cut the file back "
                                              f"to offset {self._end} after a failed write")
            try:
                write_all(self._fd, buf)
            except OSError as exc:
                self.write_errors += 1
                self._cut_back()
                log.error("journal append failed", extra={
                    "path": str(self.path), "error": str(exc), "offset": self._end,
                    "restored": not self._tail_dirty})
                raise JournalError(exc.errno, f"journal {self.path}: append failed "
                                              f"({os.strerror(exc.errno or errno.EIO)}); the "
                                              f"record was not written, the file ends at the "
                                              f"last good record (offset {self._end})") from exc
            self._end += len(buf)
            self.records += records
            self.file_records += records
            self._dirty = True
            if self.fsync:
                self.sync()

    def _cut_back(self) -> bool:
        """Truncate to the last complete record (after a failed or short write)."""
        try:
            os.ftruncate(self._fd, self._end)
        except OSError as exc:
            self._tail_dirty = True
            log.error("journal cut back failed", extra={"path": str(self.path),
                                                        "error": str(exc)})
            return False
        self._tail_dirty = False
        return True

    def sync(self) -> None:
        """Make everything appended so far durable (one fsync however many records)."""
        with self._lock:
            self._check_usable()
            if not self._dirty:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.write_errors += 1
                self._after_failed_fsync(exc)
                raise JournalError(exc.errno, f"journal {self.path}: fsync failed ({exc}); "
                                              f"records appended since the last good sync are "
                                              f"cut, the journal must be reopened") from exc
            self._synced_end = self._end
            self._synced_records = self.file_records
            self._dirty = False
            self.syncs += 1

    def _after_failed_fsync(self, exc: OSError) -> None:
        lost = self.file_records - self._synced_records
        self._end = self._synced_end
        self.file_records = self._synced_records
        try:
            os.ftruncate(self._fd, self._end)  # what was not durable must not appear later
            os.fsync(self._fd)
        except OSError:
            pass
        self._dirty = False
        self._failed = f"fsync failed: {exc}"
        log.error("journal fsync failed; unsynced records cut, journal unusable until reopened",
                  extra={"path": str(self.path), "error": str(exc), "records_cut": lost,
                         "offset": self._end})

    def _check_usable(self) -> None:
        if self._fd < 0:
            raise JournalError(errno.EBADF, f"journal {self.path} is closed")
        if self._failed and not self._reopen():
            raise JournalError(errno.EIO, f"journal {self.path} unusable ({self._failed}); "
                                          f"reopen it")

    def _reopen(self) -> bool:
        """After a failed fsync: a fresh descriptor on the file (cut back to its last good
        record), so a journal resumes by itself once the disk works again (the next append or
        sync tries). True if the journal is usable again."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.ftruncate(fd, self._synced_end)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            return False
        old, self._fd = self._fd, fd
        try:
            os.close(old)
        except OSError:
            pass
        self._end = self._synced_end
        self.file_records = self._synced_records
        self._dirty = self._tail_dirty = False
        log.warning("journal reopened after a failed fsync", extra={
            "path": str(self.path), "offset": self._end, "was": self._failed})
        self._failed = None
        return True

    # ------------------------------------------------------------ reading
    def _snapshot(self) -> memoryview:
        with self._lock:
            if self._fd < 0:
                raise JournalError(errno.EBADF, f"journal {self.path} is closed")
            return memoryview(_pread_all(self._fd, self._end))

    def entries(self) -> Iterator[Entry]:
        """Everything in the journal, in order: messages (one per message of a frame) and
        plain records (dicts). An unreadable payload (a schema problem: it passed its CRC) is
        logged, counted in ``unreadable`` and skipped."""
        data = self._snapshot()
        for start, end in _records(data):
            payload = bytes(data[start + HEAD_SIZE:end])
            kind = payload[0]
            try:
                if kind == KIND_MESSAGES:
                    yield from codec.decode(payload[1:])
                elif kind == KIND_RECORD:
                    record = msgspec.msgpack.decode(payload[1:])
                    if not isinstance(record, dict):
                        raise msgspec.DecodeError(f"a {type(record).__name__}, not a map")
                    yield record
                elif kind in _LEGACY_FRAME_FIRST:
                    yield from codec.decode(payload)
                else:
                    raise msgspec.DecodeError(f"unknown record kind 0x{kind:02x}")
            except (codec.FrameError, msgspec.DecodeError) as exc:
                self.unreadable += 1
                log.error("journal record unreadable", extra={
                    "path": str(self.path), "offset": start, "detail": str(exc)})

    def replay(self) -> Iterator[Message]:
        """The bus messages in the journal, in order (plain records are skipped)."""
        for entry in self.entries():
            if not isinstance(entry, dict):
                yield entry

    def iter_records(self) -> Iterator[dict]:
        """The plain records in the journal, in order (messages are skipped)."""
        for entry in self.entries():
            if isinstance(entry, dict):
                yield entry

    # ------------------------------------------------------------ compaction
    def compact(self, entries: Iterable[Entry]) -> int:
        """Replace the journal with ``entries`` (the caller's state now), atomically, and go on
        appending to the new file. Returns the number of records written. Everything in the
        new file is durable on return. If it fails before the rename, the old journal is
        untouched and still usable (JournalError); after the rename, a failed directory fsync
        makes the journal unusable until reopened (the rename may not be durable)."""
        chunks = [encode_entry(e) for e in entries]
        data, count = b"".join(chunks), len(chunks)
        with self._lock:
            self._check_usable()
            tmp = self.path.with_name(self.path.name + COMPACT_SUFFIX)
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                             | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self.write_errors += 1
                raise JournalError(exc.errno, f"journal {self.path}: compaction failed: "
                                              f"{exc}") from exc
            try:
                write_all(fd, data)
                os.fsync(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                os.close(fd)
                _unlink_quietly(tmp)
                self.write_errors += 1
                raise JournalError(exc.errno, f"journal {self.path}: compaction failed, the "
                                              f"journal is unchanged: {exc}") from exc
            old, self._fd = self._fd, fd
            os.close(old)
            self._end = self._synced_end = len(data)
            self.file_records = self._synced_records = count
            self._base_records, self._base_bytes = count, len(data)
            self._dirty = self._tail_dirty = False
            self.compactions += 1
            try:
                fsync_dir(self.path.parent)
            except OSError as exc:
                self.write_errors += 1
                self._failed = f"directory fsync after compaction failed: {exc}"
                raise JournalError(exc.errno, f"journal {self.path}: {self._failed}") from exc
            log.info("journal compacted", extra={"path": str(self.path), "records": count,
                                                 "bytes": len(data)})
            return count

    @property
    def file_bytes(self) -> int:
        return self._end

    def needs_compaction(self, max_records: int | None = None,
                         max_bytes: int | None = None) -> bool:
        """True when more than ``max_records`` records (or ``max_bytes`` bytes) were appended
        on top of the last snapshot (since open, before the first compaction), and at least
        as many as the snapshot holds: a compaction then never rewrites more than was appended
        since the last one, so its cost per record stays constant however large the live state
        (many open orders) grows."""
        grown_records = self.file_records - self._base_records
        grown_bytes = self._end - self._base_bytes
        return ((max_records is not None
                 and grown_records > max(max_records, self._base_records))
                or (max_bytes is not None and grown_bytes > max(max_bytes, self._base_bytes)))

    def maybe_compact(self, snapshot: Callable[[], Iterable[Entry]],
                      max_records: int | None = None, max_bytes: int | None = None) -> bool:
        """Compact with ``snapshot()`` (called only if needed) when ``needs_compaction``."""
        if not self.needs_compaction(max_records, max_bytes):
            return False
        self.compact(snapshot())
        return True

    # ------------------------------------------------------------ the rest
    def stats(self) -> dict[str, int]:
        """Counters for a heartbeat."""
        return {"records": self.records, "syncs": self.syncs, "torn_bytes": self.torn_bytes,
                "write_errors": self.write_errors, "compactions": self.compactions,
                "unreadable": self.unreadable, "file_records": self.file_records,
                "file_bytes": self._end, "corrupt": int(self.corrupt_offset is not None)}

    def close(self) -> None:
        """Sync what was appended (raises JournalError if that fails) and close. Idempotent."""
        with self._lock:
            if self._fd < 0:
                return
            try:
                if self._dirty and not self._failed:
                    self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ================================================================== plain records
class RecordJournal:
    """A journal of plain records (dicts): the gateway's view of ``Journal``, same file
    format and implementation. ``append(record)`` is durable on return unless ``sync=False``
    (then at the next ``sync()``)."""

    def __init__(self, path: Path | str, legacy_jsonl: Path | str | None = None,
                 transform: Callable[[dict], dict] | None = None) -> None:
        self.journal = Journal(path, fsync=False)
        if legacy_jsonl is not None:
            try:
                import_jsonl(self.journal, Path(legacy_jsonl), transform)
            except BaseException:
                self.journal.close()
                raise

    @property
    def path(self) -> Path:
        return self.journal.path

    def append(self, record: dict, sync: bool = True) -> None:
        self.journal.append_record(record)
        if sync:
            self.journal.sync()

    def records(self) -> Iterator[dict]:
        return self.journal.iter_records()

    def sync(self) -> None:
        self.journal.sync()

    def compact(self, records: Iterable[dict]) -> int:
        return self.journal.compact(records)

    def stats(self) -> dict[str, int]:
        return self.journal.stats()

    def close(self) -> None:
        self.journal.close()


# ================================================================== JSON-lines migration
def read_jsonl(path: Path | str) -> list[dict]:
    """The records of an old JSON-lines journal. A torn line is dropped; a line that is a torn
    line with the next record glued to it (the old journal's bug: a torn last line without a
    newline, then the next append on the same line) gives back the glued record."""
    out: list[dict] = []
    for lineno, raw in enumerate(Path(path).read_bytes().split(b"\n"), 1):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = _salvage(line)
            if rec is None:
                log.warning("jsonl: torn line dropped", extra={"path": str(path),
                                                               "line": lineno})
                continue
            log.warning("jsonl: a record glued to a torn line recovered",
                        extra={"path": str(path), "line": lineno})
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _salvage(line: str) -> dict | None:
    pos = line.find("{", 1)
    while pos > 0:
        try:
            rec = json.loads(line[pos:])
        except ValueError:
            pos = line.find("{", pos + 1)
            continue
        return rec if isinstance(rec, dict) else None
    return None


def import_jsonl(journal: Journal, legacy: Path, transform: Callable[[dict], dict] | None
                 = None) -> int:
    """One-time migration of an old JSON-lines file into ``journal``; returns records imported.

    If the journal is empty, the old records (through ``transform``) become its content by an
    atomic compaction; then the old file is renamed aside (``NAME.migrated``). A crash between
    the two leaves a non-empty journal beside the old file: that journal already holds the old
    records, so the old file is only renamed aside then."""
    legacy = Path(legacy)
    if not legacy.exists():
        return 0
    imported = 0
    if journal.file_records == 0:
        records = read_jsonl(legacy)
        if transform is not None:
            records = [transform(r) for r in records]
        imported = journal.compact(records)
        log.info("jsonl journal migrated", extra={"from": str(legacy),
                                                  "to": str(journal.path),
                                                  "records": imported})
    else:
        log.warning("jsonl journal beside a non-empty journal: set aside unread",
                    extra={"from": str(legacy), "to": str(journal.path)})
    aside = _free_name(legacy.with_name(legacy.name + ".migrated"))
    try:
        os.replace(legacy, aside)
        fsync_dir(legacy.parent)
    except OSError as exc:
        raise JournalError(exc.errno, f"{legacy}: cannot set the migrated file aside: "
                                      f"{exc}") from exc
    return imported
