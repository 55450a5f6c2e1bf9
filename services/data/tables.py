"""What an importer hands the catalog: ``Piece``s, one Arrow table per (kind, instrument),
with the stored schemas and their units.

Stored kinds and columns (``ts`` always first, int64 ns UTC, rows in time order, the file's
order kept among equal times):

- ``trades``: ts, price (float, currency), size (float, shares / contracts / base units)
- ``quotes``: ts, bid, ask (float, currency), bid_size, ask_size (float, null if unknown)
- ``bars-<size>`` (``bars-1d``, ``bars-1min``...): ts (the bar's time as the source gives
  it), open, high, low, close (float, currency), volume (float), adj_close (float, null if
  the source has none)
- ``lobster``: ts, event (int8: 1 submit, 2 partial cancel, 3 delete, 4 visible execution,
  5 hidden execution, 6 cross, 7 halt), order_id (int64), size (int64 shares), price (float
  USD), side (int8: 1 buy, -1 sell), then for each level 1..N ask_price_i, ask_size_i,
  bid_price_i, bid_size_i: the book after the event (price null, size 0 for an empty level)
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from services.data.model import Column, Instrument, Provenance

__all__ = ["Piece", "build", "columns_of", "UNITS"]

TS = pa.field("ts", pa.int64(), nullable=False)

UNITS = {"ts": "ns since epoch, UTC", "price": "currency", "bid": "currency",
         "ask": "currency", "open": "currency", "high": "currency", "low": "currency",
         "close": "currency", "adj_close": "currency", "size": "instrument units",
         "bid_size": "instrument units", "ask_size": "instrument units",
         "volume": "instrument units", "event": "LOBSTER event type", "side": "1 buy, -1 sell",
         "order_id": ""}


def unit_of(name: str) -> str:
    if name in UNITS:
        return UNITS[name]
    if "_price_" in name:
        return "currency"
    if "_size_" in name:
        return "shares"
    return ""


@dataclass
class Piece:
    """Rows of one dataset from one input file."""

    kind: str
    instrument: Instrument
    table: pa.Table
    provenance: list[Provenance]
    partitioning: str = "date"  # "date" (one partition per UTC day) or "year"

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.instrument.symbol}"


def build(columns: dict[str, list], types: dict[str, pa.DataType]) -> pa.Table:
    """A table from column lists, ``ts`` first and not null, stably sorted by ``ts``."""
    fields = [TS] + [pa.field(name, types[name]) for name in columns if name != "ts"]
    schema = pa.schema(fields)
    table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in fields},
                     schema=schema)
    if table.num_rows > 1:
        ts = table.column("ts")
        import pyarrow.compute as pc
        if not pc.all(pc.greater_equal(ts.slice(1), ts.slice(0, len(ts) - 1))).as_py():
            table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending")]))
    return table


def columns_of(schema: pa.Schema) -> list[Column]:
    return [Column(f.name, str(f.type), unit_of(f.name)) for f in schema]
