"""``KIND PATH...`` to ``Piece``s: the one entry point over the four file formats.

Kinds: ``lobster`` (message + orderbook pairs), ``trades`` and ``quotes`` (CSV with a header,
a column mapping and a zone), ``bars`` (OHLCV CSV, daily or intraday), ``histdata``
(HistData.com tick quotes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from services.data.csvtable import parse_mapping, read_csv_table
from services.data.errors import DataError
from services.data.histdata import read_histdata
from services.data.lobster import pair_paths, read_lobster
from services.data.tables import Piece

__all__ = ["KINDS", "Options", "read"]

KINDS = {
    "lobster": "LOBSTER message + orderbook pairs (any level count); zone America/New_York",
    "trades": "trades CSV with a header: ts, price, size (--mapping, --zone)",
    "quotes": "quotes CSV with a header: ts, bid, ask[, bid_size, ask_size]",
    "bars": "OHLCV bars CSV with a header: ts or date, open, high, low, close[, volume, "
            "adj_close, symbol]",
    "histdata": "HistData.com ticks: YYYYMMDD HHMMSSmmm,bid,ask,0 in EST (UTC-5, no DST)",
}


@dataclass
class Options:
    symbol: str | None = None
    zone: str | None = None
    mapping: str | None = None
    price_scale: float = 1.0
    bar_size: str | None = None
    date: str | None = None
    licence: str = ""
    #: instrument reference data given on the command line (sec_type, exchange, ...)
    instrument: dict = field(default_factory=dict)


def read(kind: str, paths: list[str], options: Options) -> list[Piece]:
    if kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    if not paths:
        raise DataError("no files given")
    if not options.price_scale > 0:
        raise DataError("--price-scale must be positive")
    pieces: list[Piece] = []
    if kind == "lobster":
        for message, book in pair_paths(paths):
            pieces.append(read_lobster(message, book, symbol=options.symbol, date=options.date,
                                       zone_text=options.zone, instrument=options.instrument,
                                       licence=options.licence))
    elif kind == "histdata":
        for path in paths:
            pieces.append(read_histdata(path, symbol=options.symbol, zone_text=options.zone,
                                        instrument=options.instrument, licence=options.licence))
    else:
        mapping = parse_mapping(options.mapping)
        for path in paths:
            pieces.extend(read_csv_table(kind, path, symbol=options.symbol,
                                         zone_text=options.zone or "UTC", mapping=mapping,
                                         price_scale=options.price_scale,
                                         bar_size=options.bar_size,
                                         instrument=options.instrument,
                                         licence=options.licence))
    return pieces
