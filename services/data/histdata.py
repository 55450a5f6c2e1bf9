"""HistData.com tick files: ``YYYYMMDD HHMMSSmmm,bid,ask,volume`` without a header.

Times are Eastern Standard Time all year, without daylight saving (HistData's convention):
the fixed offset UTC-5, whatever the date. Stored as ``quotes`` (no sizes: HistData's
volume column is always 0). The symbol comes from the file name's six-letter pair
(``EURUSD`` gives ``EUR.USD``, IB's local symbol for the pair) or ``--symbol``.
"""
from __future__ import annotations

import re

import pyarrow as pa

from services.data.errors import DataError
from services.data.model import Instrument, check_symbol
from services.data.source import Source, number
from services.data.tables import Piece, build
from services.data.times import LocalClock, zone, zone_name

__all__ = ["read_histdata"]

PAIR = re.compile(r"(?<![A-Z])([A-Z]{3})([A-Z]{3})(?![A-Z])")
TIME = re.compile(r"^(\d{4})(\d{2})(\d{2}) (\d{2})(\d{2})(\d{2})(\d{3})$")
COLUMNS = ("time", "bid", "ask", "volume")


def read_histdata(path: str, *, symbol: str | None = None, zone_text: str | None = None,
                  instrument: dict | None = None, licence: str = "") -> Piece:
    source = Source(path)
    pair = PAIR.search(source.path.name)
    if symbol is None:
        if pair is None:
            raise DataError("no currency pair in the file name: give --symbol", file=source.name)
        symbol = f"{pair[1]}.{pair[2]}"
    try:
        check_symbol(symbol)
        tz = zone(zone_text or "EST")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    clock = LocalClock(tz)
    ts, bid, ask = [], [], []
    for line, fields in source.rows():
        source.check_width(fields, COLUMNS, line)
        column = "time"
        try:
            match = TIME.match(fields[0])
            if match is None:
                raise ValueError(f"not a HistData time (YYYYMMDD HHMMSSmmm): {fields[0]!r}")
            y, mo, d, h, mi, s, ms = (int(x) for x in match.groups())
            value = clock.to_ns(y, mo, d, h, mi, s, ms * 1_000_000)
            column = "bid"
            b = number(fields[1])
            column = "ask"
            a = number(fields[2])
            if b <= 0 or a <= 0:
                raise ValueError(f"price must be positive: {fields[1 if b <= 0 else 2]!r}")
            if b > a:
                raise ValueError(f"bid {b} above ask {a}")
        except ValueError as exc:
            raise DataError(str(exc), file=source.name, row=line, column=column) from None
        ts.append(value)
        bid.append(b)
        ask.append(a)
    if not ts:
        raise DataError("no data rows", file=source.name)
    n = len(ts)
    table = build({"ts": ts, "bid": bid, "ask": ask, "bid_size": [None] * n,
                   "ask_size": [None] * n},
                  {"bid": pa.float64(), "ask": pa.float64(), "bid_size": pa.float64(),
                   "ask_size": pa.float64()})
    defaults = {"sec_type": "CASH", "exchange": "IDEALPRO",
                "currency": pair[2] if pair else "USD"}
    ref = Instrument(**{**defaults, **(instrument or {}), "symbol": symbol,
                        "zone": zone_name(tz)})
    prov = source.provenance(rows=n, importer="histdata", licence=licence,
                             options={"zone": zone_name(tz)})
    return Piece("quotes", ref, table, [prov])
