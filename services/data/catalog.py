"""The catalog: a directory of Parquet datasets with their metadata.

Layout (hive-style partitions, readable as they are by ``pyarrow.dataset``, DuckDB, Polars)::

    ROOT/<kind>/<symbol>/_dataset.json            DatasetMeta: instrument, provenance, counts
    ROOT/<kind>/<symbol>/date=YYYY-MM-DD/part.parquet   one UTC day (intraday kinds)
    ROOT/<kind>/<symbol>/year=YYYY/part.parquet         one UTC year (daily bars)
    ROOT/.tmp/                                    imports being written (never read)
    ROOT/.lock                                    imports take it (one at a time)

An import is all or nothing: every dataset is written into a fresh directory under
``ROOT/.tmp``, read back and checked (row counts, schema, first and last times, digests),
and only then renamed into place, one ``rename`` per dataset; a failure at any step removes
what it wrote and puts back what it moved, so the catalog holds the old state or the new one,
never a part. A dataset's ``_dataset.json`` moves with its directory, so data and metadata
cannot disagree.

A dataset is one unit with its provenance. Importing the same source files again (the same
sha256 digests) leaves it as it is (``unchanged``), so an import can be rerun; other data
for an existing dataset is refused unless ``replace`` (its old directory is swapped out) or
``append`` (the new rows must fall on dates the dataset does not have yet).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.data.errors import DataError
from services.data.model import DatasetMeta, Partition, decode_meta, encode_meta
from services.data.tables import Piece, columns_of
from services.data.times import NS_PER_DAY

__all__ = ["Catalog", "ImportResult", "META"]

META = "_dataset.json"
PART = "part.parquet"


@dataclass
class ImportResult:
    name: str
    status: str  # "imported", "unchanged", "replaced", "appended"
    rows: int


class Catalog:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"{meta.parent.parent.name}/{meta.parent.name}"
                      for meta in self.root.glob(f"[!.]*/[!.]*/{META}"))

    def datasets(self) -> list[DatasetMeta]:
        return [self.meta(name) for name in self.names()]

    def resolve(self, name: str) -> str:
        """``kind/symbol``, or a symbol alone when one dataset has it."""
        names = self.names()
        if name in names:
            return name
        matches = [n for n in names if n.split("/", 1)[1] == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise DataError(f"{name!r} is in several datasets: {', '.join(matches)}")
        raise DataError(f"no dataset {name!r} in {self.root}"
                        + (f"; there are: {', '.join(names)}" if names else "; it is empty"))

    def meta(self, name: str) -> DatasetMeta:
        path = self.root / self.resolve(name) / META
        try:
            return decode_meta(path.read_bytes())
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DataError(f"unreadable metadata: {exc}", file=str(path)) from exc

    def path(self, name: str) -> Path:
        return self.root / self.resolve(name)

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """The dataset's rows, in time order."""
        name = self.resolve(name)
        meta = self.meta(name)
        tables = [pq.read_table(self.root / name / p.key / PART, columns=columns)
                  for p in meta.partitions]
        return pa.concat_tables(tables)

    # -- importing -----------------------------------------------------------------------
    def add(self, pieces: list[Piece], *, replace: bool = False,
            append: bool = False) -> list[ImportResult]:
        """Import ``pieces`` all or nothing; see the module's docstring."""
        if replace and append:
            raise DataError("replace or append, not both")
        groups: dict[str, list[Piece]] = defaultdict(list)
        for piece in pieces:
            groups[piece.name].append(piece)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._clean_tmp()
            results: list[ImportResult] = []
            plans = []
            for name, group in groups.items():
                meta = self._merge_check(name, group)
                existing = self._existing(name)
                digests = sorted(p.sha256 for piece in group for p in piece.provenance)
                if existing is not None:
                    old = sorted(p.sha256 for p in existing.provenance)
                    if old == digests or (append and set(digests) <= set(old)):
                        results.append(ImportResult(name, "unchanged", existing.rows))
                        continue
                    if not (replace or append):
                        raise DataError(
                            f"dataset {name} is already in the catalog from other files "
                            f"({', '.join(Path(p.source).name for p in existing.provenance)});"
                            f" --replace replaces it, --append adds other dates to it")
                plans.append((name, group, meta, existing))
            if not plans:
                return results
            tmp = self.root / ".tmp" / f"import-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            moved: list[tuple[Path, Path]] = []
            try:
                staged = []
                for name, group, meta, existing in plans:
                    table = _concat(name, [piece.table for piece in group])
                    provenance = [p for piece in group for p in piece.provenance]
                    status = "imported"
                    if existing is not None and append:
                        table, provenance = self._appended(name, existing, table, provenance)
                        status = "appended"
                    elif existing is not None:
                        status = "replaced"
                    written = self._write(tmp / name, name, group[0], table, provenance)
                    staged.append((name, written, existing is not None, status))
                for name, written, exists, status in staged:
                    target = self.root / name
                    if exists:
                        old = tmp / ".old" / name
                        old.parent.mkdir(parents=True, exist_ok=True)
                        os.rename(target, old)
                        moved.append((old, target))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(tmp / name, target)
                    moved.append((target, tmp / name))
                    results.append(ImportResult(name, status, written.rows))
            except BaseException:
                for src, dst in reversed(moved):
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(src, dst)
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                self._prune_empty()
            return results

    def remove(self, name: str) -> None:
        name = self.resolve(name)
        with self._locked():
            trash = self.root / ".tmp" / f"remove-{uuid.uuid4().hex[:12]}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root / name, trash)
            shutil.rmtree(trash, ignore_errors=True)
            self._prune_empty()

    # -- internals -----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _clean_tmp(self) -> None:
        """Under the lock nothing else is importing: whatever is in .tmp was left by a
        process that died mid-import."""
        shutil.rmtree(self.root / ".tmp", ignore_errors=True)

    def _prune_empty(self) -> None:
        for kind in self.root.glob("[!.]*"):
            if kind.is_dir() and not any(kind.iterdir()):
                kind.rmdir()
        tmp = self.root / ".tmp"
        if tmp.is_dir() and not any(tmp.iterdir()):
            tmp.rmdir()

    def _existing(self, name: str) -> DatasetMeta | None:
        if not (self.root / name / META).is_file():
            if (self.root / name).exists():
                raise DataError(f"{self.root / name} exists without {META}: not a dataset; "
                                f"move it away")
            return None
        return self.meta(name)

    def _merge_check(self, name: str, group: list[Piece]) -> None:
        first = group[0]
        for piece in group[1:]:
            if piece.instrument != first.instrument:
                raise DataError(f"{name}: the files disagree on the instrument: "
                                f"{first.instrument} and {piece.instrument}")
            if piece.table.schema != first.table.schema:
                raise DataError(f"{name}: the files have different columns: "
                                f"{first.table.schema.names} and {piece.table.schema.names}")

    def _appended(self, name, existing, table, provenance):
        if existing.instrument.symbol and existing.kind != name.split("/")[0]:
            raise DataError(f"{name}: kind mismatch")
        old = self.read(name)
        if old.schema != table.schema:
            raise DataError(f"{name}: --append with other columns ({table.schema.names}) than "
                            f"the dataset's ({old.schema.names})")
        old_keys = {p.key for p in existing.partitions}
        new_keys = {key for key, _, _ in _partitions(table, _granularity(existing))}
        overlap = sorted(old_keys & new_keys)
        if overlap:
            raise DataError(f"{name}: --append would add rows to {', '.join(overlap[:5])}, "
                            f"which the dataset has already; --replace the whole dataset")
        merged = _concat(name, [old, table])
        return merged, list(existing.provenance) + provenance

    def _write(self, directory: Path, name: str, piece: Piece, table: pa.Table,
               provenance) -> DatasetMeta:
        partitions = []
        for key, start, length in _partitions(table, piece.partitioning):
            part = table.slice(start, length)
            path = directory / key / PART
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, path, compression="zstd")
            partitions.append(Partition(key, length, part["ts"][0].as_py(),
                                        part["ts"][-1].as_py(), _sha256(path)))
        meta = DatasetMeta(name=name, kind=piece.kind, instrument=piece.instrument,
                           columns=columns_of(table.schema), rows=table.num_rows,
                           first_ts=table["ts"][0].as_py(), last_ts=table["ts"][-1].as_py(),
                           partitions=partitions, provenance=provenance)
        (directory / META).write_bytes(encode_meta(meta))
        _validate(directory, meta, table.schema)
        return meta


def _granularity(meta: DatasetMeta) -> str:
    return "year" if meta.partitions and meta.partitions[0].key.startswith("year=") else "date"


def _concat(name: str, tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows == 0:
        raise DataError(f"{name}: no rows")
    if len(tables) > 1:
        table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending")]))
    return table.combine_chunks()


def _partitions(table: pa.Table, granularity: str) -> list[tuple[str, int, int]]:
    """(key, first row, row count) per UTC day or year; ``table`` is sorted by ts."""
    days = pc.divide(table["ts"], pa.scalar(NS_PER_DAY, pa.int64()))  # integer, truncated
    starts = pc.multiply(days, NS_PER_DAY)
    days = pc.if_else(pc.less(table["ts"], starts), pc.subtract(days, 1), days)
    if granularity == "year":
        keys = [f"year={(date(1970, 1, 1) + timedelta(days=d)).year}"
                for d in days.to_pylist()]
    else:
        keys = None
    encoded = pc.run_end_encode(days if keys is None else pa.array(keys))
    run_ends = encoded.chunks[0].run_ends.to_pylist() if isinstance(encoded, pa.ChunkedArray) \
        else encoded.run_ends.to_pylist()
    values = (encoded.chunks[0] if isinstance(encoded, pa.ChunkedArray) else encoded).values
    result, start = [], 0
    for end, value in zip(run_ends, values.to_pylist()):
        key = value if keys is not None else \
            f"date={(date(1970, 1, 1) + timedelta(days=value)).isoformat()}"
        result.append((key, start, end - start))
        start = end
    if len({k for k, _, _ in result}) != len(result):
        raise DataError("rows are not in time order")
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _validate(directory: Path, meta: DatasetMeta, schema: pa.Schema) -> None:
    """Read back what was written: the catalog only takes what it can read."""
    total = 0
    for part in meta.partitions:
        path = directory / part.key / PART
        back = pq.read_table(path)
        if back.schema.remove_metadata() != schema.remove_metadata():
            raise DataError(f"{path}: read back with another schema")
        if back.num_rows != part.rows or back["ts"][0].as_py() != part.first_ts \
                or back["ts"][-1].as_py() != part.last_ts or _sha256(path) != part.sha256:
            raise DataError(f"{path}: read back differently from what was written")
        total += back.num_rows
    if total != meta.rows:
        raise DataError(f"{directory}: {total} rows read back, {meta.rows} written")
    decode_meta((directory / META).read_bytes())
