"""The state directory of a persistent paper account: a snapshot plus a journal, crash-safe.

Layout of DIR (created 0700):

- ``lock``: held with ``flock`` while a simulator owns the directory (a second one is refused;
  the kernel drops the lock when the owner dies, SIGKILL included).
- ``snapshot``: the whole account at journal sequence ``seq``. Replaced atomically: written to
  ``snapshot.tmp``, fsync'd, renamed over ``snapshot``, then the directory is fsync'd.
- ``journal``: the changes after the snapshot, one record per commit. Appended and fsync'd
  before anything that depends on it leaves the process (see ``Broker.commit``).

Both files hold records framed as ``<u32 length><u32 crc32><msgpack map>``. Every journal record
carries ``seq`` (the snapshot's ``seq`` plus one, plus two...). On open, records at or below the
snapshot's ``seq`` are skipped (a crash between writing a snapshot and emptying the journal
leaves them behind) and the first record that is short, fails its checksum or breaks the
sequence ends the journal: that torn tail is cut off, so the next append starts on a clean
boundary and nothing before it is lost.

This module knows maps, not orders: ``account.py`` decides what a record says.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack

from services.runtime.journal import fsync_dir, write_all

_HEAD = struct.Struct("<II")
FORMAT = 1


class StateError(RuntimeError):
    """The state directory cannot be used; the message says why and what to do."""


def _pack(obj: dict[str, Any]) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _records(data: bytes) -> list[tuple[dict[str, Any], int]]:
    """The intact records at the start of ``data``, each with the offset just after it."""
    out: list[tuple[dict[str, Any], int]] = []
    pos = 0
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        start, end = pos + _HEAD.size, pos + _HEAD.size + length
        if end > len(data) or zlib.crc32(data[start:end]) != crc:
            break
        try:
            obj = msgpack.unpackb(data[start:end], raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData):
            break
        if not isinstance(obj, dict):
            break
        out.append((obj, end))
        pos = end
    return out


class StateStore:
    """Owns one state directory: ``load`` once, then ``append`` records and ``write_snapshot``."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.dir}: {exc}") from None
        self.snapshot_path = self.dir / "snapshot"
        self.journal_path = self.dir / "journal"
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateError(f"state directory {self.dir} is in use by another simulator") from None
            raise
        self._fd: int | None = None
        self.seq = 0                  # sequence number of the last record written or loaded
        self.journal_bytes = 0
        self.snapshot_bytes = 0
        self.torn_bytes = 0           # cut off the journal's tail at open
        self.stats = {"records": 0, "fsyncs": 0, "snapshots": 0, "bytes": 0,
                      "write_errors": 0}

    # ---- open
    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(the snapshot or None for a new account, the journal records after it, in order).
        Cuts a torn journal tail and leaves the journal open for appending."""
        snapshot: dict[str, Any] | None = None
        if self.snapshot_path.exists():
            data = self.snapshot_path.read_bytes()
            recs = _records(data)
            if len(recs) != 1 or recs[0][1] != len(data):
                raise StateError(f"{self.snapshot_path} is damaged (checksum); the account cannot "
                                 f"be restored. Move {self.dir} away to start a new account.")
            snapshot = recs[0][0]
            if snapshot.get("format") != FORMAT:
                raise StateError(f"{self.snapshot_path} has format {snapshot.get('format')!r}, "
                                 f"this simulator reads {FORMAT}")
            self.snapshot_bytes = len(data)
        base = int(snapshot["seq"]) if snapshot else 0
        data = self.journal_path.read_bytes() if self.journal_path.exists() else b""
        recs = _records(data)
        if snapshot is None and recs:
            raise StateError(f"{self.journal_path} has records but there is no snapshot; "
                             f"move {self.dir} away to start a new account")
        kept: list[dict[str, Any]] = []
        seq = base
        good = 0
        for rec, end in recs:
            rseq = rec.get("seq")
            if not isinstance(rseq, int) or (rseq > base and rseq != seq + 1):
                break                 # a gap: nothing after it can be trusted
            if rseq > base:           # at or below base: already in the snapshot
                kept.append(rec)
                seq = rseq
            good = end
        self._fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if good < len(data):
            self.torn_bytes = len(data) - good
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        self.journal_bytes = good
        self.seq = seq
        return snapshot, kept

    # ---- write
    def append(self, record: dict[str, Any]) -> int:
        """Write one record and fsync it: durable on return. Returns its sequence number."""
        assert self._fd is not None, "load() first"
        record["seq"] = self.seq + 1
        data = _pack(record)
        try:
            write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError:
            # nothing of a failed record may reach the disk later, nor stand before the next
            # one: cut back to the last whole record (the caller fails stop; see Broker.commit)
            self.stats["write_errors"] += 1
            try:
                os.ftruncate(self._fd, self.journal_bytes)
            except OSError:
                pass
            raise
        self.seq += 1
        self.journal_bytes += len(data)
        self.stats["records"] += 1
        self.stats["fsyncs"] += 1
        self.stats["bytes"] += len(data)
        return self.seq

    def write_snapshot(self, state: dict[str, Any]) -> None:
        """Replace the snapshot with ``state`` (everything up to ``self.seq``) and empty the
        journal. A crash at any point leaves either the old snapshot with the whole journal or
        the new one (with journal records it already contains, skipped on load)."""
        state = dict(state, format=FORMAT, seq=self.seq)
        data = _pack(state)
        tmp = self.dir / "snapshot.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.snapshot_path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(self.dir)
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        self.journal_bytes = 0
        self.snapshot_bytes = len(data)
        self.stats["snapshots"] += 1
        self.stats["fsyncs"] += 3

    def wants_snapshot(self, min_bytes: int = 4 << 20) -> bool:
        """Compact when the journal outgrows the snapshot (and a floor): writing is then
        linear in what was appended, and an open replays at most about a snapshot's worth."""
        return self.journal_bytes > max(min_bytes, self.snapshot_bytes)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)
