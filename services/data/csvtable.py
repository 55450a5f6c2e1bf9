"""Trades, quotes and OHLCV bars from CSV files with a header, by a column mapping.

A mapping names, for each field of the kind, the file's column that holds it:
``{"Time": "ts", "Price": "price", "Volume": "size"}`` (``--mapping Time=ts,Price=price,
Volume=size``). Columns the mapping leaves out are matched by their header name against
common aliases (case-insensitive: ``Time``/``timestamp``/``timestamp_utc`` to ts,
``Volume``/``qty`` to size...), so most files need no mapping. Other columns are ignored.

Times are local wall-clock times in the given zone (``--zone``; an explicit offset or ``Z``
in a value wins); ``YYYY-MM-DD`` alone is midnight. Prices are divided by ``price_scale``
(LOBSTER-derived files: 10000). A ``symbol`` column (``Ticker``) splits one file into one
dataset per symbol; without one, ``--symbol`` names it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from services.data.errors import DataError
from services.data.model import Instrument, check_symbol
from services.data.source import Source, number
from services.data.tables import Piece, build
from services.data.times import LocalClock, zone, zone_name

__all__ = ["FIELDS", "Spec", "SPECS", "parse_mapping", "read_csv_table", "bar_size_name"]

F64 = pa.float64()


@dataclass(frozen=True)
class Spec:
    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    prices: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)


_COMMON = {"time": "ts", "timestamp": "ts", "timestamp_utc": "ts", "datetime": "ts",
           "ts": "ts", "date": "ts", "symbol": "symbol", "ticker": "symbol"}

SPECS = {
    "trades": Spec("trades", ("ts", "price", "size"), ("symbol",), ("price",),
                   {**_COMMON, "price": "price", "px": "price", "last": "price",
                    "size": "size", "volume": "size", "qty": "size", "quantity": "size"}),
    "quotes": Spec("quotes", ("ts", "bid", "ask"), ("bid_size", "ask_size", "symbol"),
                   ("bid", "ask"),
                   {**_COMMON, "bid": "bid", "ask": "ask", "bid_size": "bid_size",
                    "bidsize": "bid_size", "ask_size": "ask_size", "asksize": "ask_size"}),
    "bars": Spec("bars", ("ts", "open", "high", "low", "close"),
                 ("volume", "adj_close", "symbol"),
                 ("open", "high", "low", "close", "adj_close"),
                 {**_COMMON, "open": "open", "high": "high", "low": "low", "close": "close",
                  "volume": "volume", "adj close": "adj_close", "adj_close": "adj_close",
                  "adjclose": "adj_close"}),
}
FIELDS = {kind: spec.required + spec.optional for kind, spec in SPECS.items()}


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"Time=ts,Price=price"`` to ``{"Time": "ts", "Price": "price"}``."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        column, sep, name = item.partition("=")
        if not sep or not column.strip() or not name.strip():
            raise DataError(f"--mapping: {item!r} is not COLUMN=FIELD")
        mapping[column.strip()] = name.strip()
    return mapping


def bar_size_name(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


def _resolve(spec: Spec, header: list[str], mapping: dict[str, str], name: str) -> dict[str, int]:
    """field -> column index."""
    index = {column: i for i, column in enumerate(header)}
    found: dict[str, int] = {}
    for column, fld in mapping.items():
        if fld not in spec.required + spec.optional:
            raise DataError(f"--mapping {column}={fld}: no field {fld!r} in {spec.kind}; "
                            f"fields: {', '.join(spec.required + spec.optional)}", file=name)
        if column not in index:
            raise DataError(f"missing column {column!r} (named in --mapping); the header has "
                            f"{', '.join(header)}", file=name, row=1)
        found[fld] = index[column]
    for i, column in enumerate(header):
        fld = spec.aliases.get(column.strip().lower())
        if fld is not None and fld not in found and column not in mapping:
            found[fld] = i
    for fld in spec.required:
        if fld not in found:
            raise DataError(f"missing column for field {fld!r}; the header has "
                            f"{', '.join(header)}; name it with --mapping COLUMN={fld}",
                            file=name, row=1)
    return found


def read_csv_table(kind: str, path: str, *, symbol: str | None, zone_text: str,
                   mapping: dict[str, str], price_scale: float = 1.0,
                   bar_size: str | None = None, instrument: dict | None = None,
                   licence: str = "") -> list[Piece]:
    spec = SPECS[kind]
    source = Source(path)
    try:
        tz = zone(zone_text)
    except ValueError as exc:
        raise DataError(f"--zone: {exc}") from None
    clock = LocalClock(tz)
    rows = source.rows()
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError("empty file", file=source.name) from None
    found = _resolve(spec, header, mapping, source.name)
    if "symbol" not in found:
        if not symbol:
            raise DataError("no symbol column: give --symbol", file=source.name)
        try:
            check_symbol(symbol)
        except ValueError as exc:
            raise DataError(f"--symbol: {exc}") from None
    numeric = [f for f in spec.required + spec.optional if f in found and f not in
               ("ts", "symbol")]
    i_ts, i_sym = found["ts"], found.get("symbol")
    plan = [(f, found[f], header[found[f]], f in spec.prices) for f in numeric]
    groups: dict[str, dict[str, list]] = defaultdict(lambda: {f: [] for f in ["ts", *numeric]})
    any_time = False
    for line, fields in rows:
        source.check_width(fields, header, line)
        column = header[i_ts]
        try:
            text = fields[i_ts]
            ts = clock.parse(text)
            if len(text.strip()) > 10:
                any_time = True
            values = []
            for fld, i, column, is_price in plan:
                cell = fields[i]
                if cell == "" and fld in spec.optional:
                    values.append(None)
                    continue
                value = number(cell)
                if is_price:
                    value /= price_scale
                    if value <= 0:
                        raise ValueError(f"price must be positive: {cell!r}")
                elif value < 0:
                    raise ValueError(f"must not be negative: {cell!r}")
                values.append(value)
            if i_sym is not None:
                column = header[i_sym]
                sym = check_symbol(fields[i_sym].strip())
            else:
                sym = symbol
        except ValueError as exc:
            raise DataError(str(exc), file=source.name, row=line, column=column) from None
        group = groups[sym]
        group["ts"].append(ts)
        for (fld, *_), value in zip(plan, values):
            group[fld].append(value)
        if kind == "bars":
            _check_bar(dict(zip(numeric, values)), source.name, line,
                       {f: header[i] for f, i in found.items()})
        elif kind == "quotes":
            bid, ask = values[0], values[1]
            if bid > ask:
                raise DataError(f"bid {bid} above ask {ask}", file=source.name, row=line,
                                column=header[found["bid"]])
    if not groups:
        raise DataError("no data rows", file=source.name)
    used = sorted(found.items(), key=lambda item: item[1])
    options = {"zone": zone_name(tz), "mapping": ",".join(f"{header[i]}={f}" for f, i in used),
               "price_scale": repr(price_scale)}
    pieces = []
    for sym, columns in groups.items():
        table = build(columns, {f: F64 for f in numeric})
        stored_kind, partitioning = kind, "date"
        if kind == "bars":
            size = bar_size or _infer_bar_size(columns["ts"], any_time)
            stored_kind = f"bars-{size}"
            partitioning = "year" if size.endswith("d") else "date"
            options["bar_size"] = size
        ref = Instrument(**{**(instrument or {}), "symbol": sym, "zone": zone_name(tz)})
        prov = source.provenance(rows=table.num_rows, importer=kind, licence=licence,
                                 options=dict(options))
        pieces.append(Piece(stored_kind, ref, table, [prov], partitioning))
    return pieces


def _check_bar(bar: dict[str, float | None], name: str, line: int,
               names: dict[str, str]) -> None:
    high, low = bar["high"], bar["low"]
    for fld in ("open", "close", "low"):
        if bar[fld] > high:
            raise DataError(f"{fld} {bar[fld]} above high {high}", file=name, row=line,
                            column=names["high"])
    for fld in ("open", "close"):
        if bar[fld] < low:
            raise DataError(f"{fld} {bar[fld]} below low {low}", file=name, row=line,
                            column=names["low"])


def _infer_bar_size(ts: list[int], any_time: bool) -> str:
    if not any_time:
        return "1d"
    ordered = sorted(set(ts))
    gaps = [b - a for a, b in zip(ordered, ordered[1:])]
    if not gaps:
        raise DataError("one bar only: give --bar-size")
    return bar_size_name(min(gaps) // 1_000_000_000)
