"""Reading one input file: text lines (plain or ``.gz``), its digest, its fields as numbers.

Rows are numbered as the file's lines (1-based, a header is line 1), the numbers a text
editor shows, so ``row 7`` in a ``DataError`` is line 7 of the file.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from services.data.errors import DataError
from services.data.model import Provenance

__all__ = ["Source", "integer", "number"]


def number(text: str) -> float:
    """A finite decimal number; ValueError naming the text otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


class Source:
    """One input file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.name = str(path)
        if not self.path.is_file():
            raise DataError("no such file", file=self.name)

    def open(self) -> io.TextIOBase:
        try:
            if self.path.suffix == ".gz":
                return io.TextIOWrapper(gzip.open(self.path, "rb"), encoding="utf-8",
                                        newline="")
            return open(self.path, encoding="utf-8", newline="")
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror or exc}", file=self.name) from exc

    def rows(self, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
        """(line number, fields) for each non-blank line; unreadable bytes become a DataError
        naming the line."""
        with self.open() as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            line = 0
            try:
                for fields in reader:
                    line = reader.line_num
                    if not fields or (len(fields) == 1 and not fields[0].strip()):
                        continue
                    yield line, fields
            except (UnicodeDecodeError, csv.Error, EOFError, gzip.BadGzipFile) as exc:
                raise DataError(f"unreadable: {exc}", file=self.name, row=line + 1) from exc

    def check_width(self, fields: list[str], columns, line: int) -> None:
        """A row must have one field per column (``columns``: their names, in order); else a
        DataError naming the first missing column, or the first extra one by number."""
        width = len(columns)
        if len(fields) != width:
            column = columns[len(fields)] if len(fields) < width else str(width + 1)
            raise DataError(f"expected {width} fields, found {len(fields)}", file=self.name,
                            row=line, column=column)

    def provenance(self, *, rows: int, importer: str, licence: str,
                   options: dict[str, str]) -> Provenance:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return Provenance(source=str(self.path), sha256=digest.hexdigest(),
                          bytes=self.path.stat().st_size, rows=rows, licence=licence,
                          imported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          importer=importer, options=options)
