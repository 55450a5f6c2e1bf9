"""Crash-safe files: an atomically replaced JSON document and an fsync'd append-only journal.

Both survive SIGKILL at any instant: the document is replaced by rename after fsync, and a
journal line torn by a crash is ignored on load (it was never acknowledged to anyone).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, value: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


class Journal:
    """Append-only JSON lines; ``append`` returns only once the line is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "a")
        if self.path.stat().st_size == 0:
            _fsync_dir(self.path.parent)

    def records(self) -> Iterator[dict]:
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line torn by a crash
                    continue

    def append(self, record: dict, sync: bool = True) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
