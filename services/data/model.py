"""The catalog's metadata, typed (msgspec): instrument reference data, provenance, datasets.

Each dataset directory holds ``_dataset.json``, one ``DatasetMeta``. Units, everywhere:
times are int64 nanoseconds since the epoch, UTC (column ``ts``); prices are floats in the
instrument's currency (per unit of the underlying: no multiplier applied); sizes and volumes
are in the instrument's own units (shares, contracts, units of the base currency).
"""
from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

__all__ = ["Column", "DatasetMeta", "Instrument", "Partition", "Provenance", "check_symbol",
           "decode_meta", "encode_meta", "FORMAT"]

FORMAT = 1
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_symbol(symbol: str) -> str:
    """A symbol usable as a directory name; ValueError otherwise."""
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise ValueError(f"bad symbol {symbol!r}: letters, digits, '.', '_' or '-' "
                         f"(at most 64), starting with a letter or digit")
    return symbol


class Instrument(Struct, forbid_unknown_fields=True, kw_only=True):
    """Reference data: what the prices and sizes are of."""

    symbol: str
    sec_type: str = "STK"  # IB's secType: STK, FUT, CASH, ...
    exchange: str = ""  # the venue (NASDAQ, CME, IDEALPRO...)
    currency: str = "USD"  # the prices' currency
    min_tick: Annotated[float, Meta(gt=0)] | None = None  # price increment, when known
    multiplier: Annotated[float, Meta(gt=0)] = 1.0  # contract multiplier (6E: 125000)
    zone: str = "UTC"  # the zone the source's local times were in (for reading them back)


class Provenance(Struct, forbid_unknown_fields=True, kw_only=True):
    """Where one imported file came from."""

    source: str  # the file as given (absolute path)
    sha256: str  # of the file's bytes as read (compressed if it was)
    bytes: int
    rows: int  # data rows taken from it
    licence: str = ""  # the provenance / licence line the importer was given
    imported_at: str = ""  # ISO 8601 UTC
    importer: str = ""  # KIND of `ibfleet data import KIND`
    options: dict[str, str] = {}  # the options that shaped the import (zone, mapping...)


class Column(Struct, forbid_unknown_fields=True):
    name: str
    type: str
    unit: str = ""


class Partition(Struct, forbid_unknown_fields=True):
    key: str  # "date=2012-06-21" or "year=2012"
    rows: int
    first_ts: int
    last_ts: int
    sha256: str  # of part.parquet


class DatasetMeta(Struct, forbid_unknown_fields=True, kw_only=True):
    format: int = FORMAT
    name: str  # "<kind>/<symbol>"
    kind: str  # trades, quotes, lobster, bars-1d, bars-1min...
    instrument: Instrument
    columns: list[Column]
    rows: int
    first_ts: int
    last_ts: int
    partitions: list[Partition]
    provenance: list[Provenance]


_encoder = msgspec.json.Encoder()


def encode_meta(meta: DatasetMeta) -> bytes:
    return msgspec.json.format(_encoder.encode(meta), indent=2) + b"\n"


def decode_meta(data: bytes) -> DatasetMeta:
    return msgspec.json.decode(data, type=DatasetMeta)
