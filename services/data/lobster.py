"""LOBSTER message + orderbook file pairs, any level count.

Message file, no header: time (seconds after midnight, local exchange time, up to 9
decimals), event type (1..7), order id, size (shares), price (USD x 10000), direction (1 buy,
-1 sell). Orderbook file, no header: for each level 1..N ask price, ask size, bid price, bid
size (4N columns); row k is the book after message k. Empty levels hold the dummy prices
+-9999999999 with size 0: stored as a null price, size 0.

The day comes from the file name (``AAPL_2012-06-21_34200000_57600000_message_10.csv``) or
``date``; the zone defaults to America/New_York (NASDAQ), the symbol to the file name's.
"""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from services.data.errors import DataError
from services.data.model import Instrument, check_symbol
from services.data.source import Source, integer
from services.data.tables import Piece, build
from services.data.times import LocalClock, NS_PER_SECOND, zone, zone_name

__all__ = ["NAME", "pair_paths", "read_lobster"]

NAME = re.compile(r"^(?P<symbol>[^_]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
                  r"(?P<which>message|orderbook)_(?P<levels>\d+)\.csv(?:\.gz)?$")
MESSAGE_COLUMNS = ("time", "event", "order_id", "size", "price", "direction")
PRICE_SCALE = 10_000
DUMMY = 9_999_999_999
DEFAULTS = {"sec_type": "STK", "exchange": "NASDAQ", "currency": "USD", "min_tick": 0.01,
            "multiplier": 1.0}


def pair_paths(paths: list[str]) -> list[tuple[str, str]]:
    """(message, orderbook) pairs from any mix of the two files; a missing partner is looked
    for next to the one given."""
    pairs: dict[str, dict[str, str]] = {}
    for path in paths:
        match = NAME.match(Path(path).name)
        if match is None:
            raise DataError("not a LOBSTER file name (SYMBOL_DATE_START_END_message|orderbook"
                            "_LEVELS.csv)", file=path)
        key = str(Path(path).parent / Path(path).name.replace(match["which"], "@", 1))
        pairs.setdefault(key, {})[match["which"]] = path
    result = []
    for key, found in pairs.items():
        for which, other in (("message", "orderbook"), ("orderbook", "message")):
            if which not in found:
                given = Path(found[other])
                partner = given.parent / given.name.replace(other, which, 1)
                if not partner.is_file():
                    raise DataError(f"no {which} file next to it (looked for {partner.name})",
                                    file=found[other])
                found[which] = str(partner)
        result.append((found["message"], found["orderbook"]))
    return result


def _seconds_ns(text: str) -> int:
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"not seconds after midnight: {text!r}")
    return int(whole) * NS_PER_SECOND + (int(frac.ljust(9, "0")) if frac else 0)


def read_lobster(message_path: str, orderbook_path: str, *, symbol: str | None = None,
                 date: str | None = None, zone_text: str | None = None,
                 instrument: dict | None = None, licence: str = "") -> Piece:
    messages, book = Source(message_path), Source(orderbook_path)
    match = NAME.match(messages.path.name)
    symbol = symbol or (match["symbol"] if match else None)
    date = date or (match["date"] if match else None)
    if not symbol or not date:
        raise DataError("give --symbol and --date: the file name does not say them",
                        file=messages.name)
    try:
        check_symbol(symbol)
        year, month, day = (int(x) for x in date.split("-"))
        tz = zone(zone_text or "America/New_York")
        clock = LocalClock(tz)
        clock.day(year, month, day)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    named_levels = int(match["levels"]) if match else None

    ts, event, order_id, size, price, side = [], [], [], [], [], []
    for line, fields in messages.rows():
        messages.check_width(fields, MESSAGE_COLUMNS, line)
        column = "time"
        try:
            ns = _seconds_ns(fields[0])
            seconds, nanos = divmod(ns, NS_PER_SECOND)
            hour, rest = divmod(seconds, 3600)
            if hour >= 24:
                raise ValueError(f"more than a day after midnight: {fields[0]!r}")
            ts_value = clock.to_ns(year, month, day, hour, rest // 60, rest % 60, nanos)
            column = "event"
            kind = integer(fields[1])
            if not 1 <= kind <= 7:
                raise ValueError(f"event type must be 1..7, not {kind}")
            column = "order_id"
            oid = integer(fields[2])
            column = "size"
            qty = integer(fields[3])
            if qty < 0:
                raise ValueError(f"must not be negative: {fields[3]!r}")
            column = "price"
            px = integer(fields[4])
            column = "direction"
            direction = integer(fields[5])
            if direction not in (1, -1):
                raise ValueError(f"direction must be 1 or -1, not {direction}")
        except ValueError as exc:
            raise DataError(str(exc), file=messages.name, row=line, column=column) from None
        ts.append(ts_value)
        event.append(kind)
        order_id.append(oid)
        size.append(qty)
        price.append(px / PRICE_SCALE)
        side.append(direction)

    levels = None
    book_columns: list[list] = []
    count = 0
    for line, fields in book.rows():
        if levels is None:
            if len(fields) % 4 or not fields:
                raise DataError(f"{len(fields)} fields: an orderbook row has 4 per level",
                                file=book.name, row=line)
            levels = len(fields) // 4
            if named_levels is not None and levels != named_levels:
                raise DataError(f"{levels} levels, but the file name says {named_levels}",
                                file=book.name, row=line)
            book_columns = [[] for _ in range(4 * levels)]
        if len(fields) != 4 * levels:
            column = _book_column(len(fields)) if len(fields) < 4 * levels else 4 * levels + 1
            raise DataError(f"expected {4 * levels} fields, found {len(fields)}",
                            file=book.name, row=line, column=column)
        if count >= len(ts):
            raise DataError(f"more orderbook rows than the {len(ts)} messages",
                            file=book.name, row=line)
        for i, cell in enumerate(fields):
            try:
                value = int(cell)
            except ValueError:
                raise DataError(f"not an integer: {cell!r}", file=book.name, row=line,
                                column=_book_column(i)) from None
            if i % 2 == 0:  # a price
                book_columns[i].append(None if abs(value) == DUMMY else value / PRICE_SCALE)
            else:
                if value < 0:
                    raise DataError(f"must not be negative: {cell!r}", file=book.name,
                                    row=line, column=_book_column(i))
                book_columns[i].append(value)
        count += 1
    if count != len(ts):
        raise DataError(f"{count} orderbook rows for {len(ts)} messages: row k of the "
                        f"orderbook is the book after message k", file=book.name,
                        row=count + 1)
    if not ts:
        raise DataError("no data rows", file=messages.name)

    columns: dict[str, list] = {"ts": ts, "event": event, "order_id": order_id, "size": size,
                                "price": price, "side": side}
    types = {"event": pa.int8(), "order_id": pa.int64(), "size": pa.int64(),
             "price": pa.float64(), "side": pa.int8()}
    for i, values in enumerate(book_columns):
        name = _book_column(i)
        columns[name] = values
        types[name] = pa.float64() if i % 2 == 0 else pa.int64()
    table = build(columns, types)
    ref = Instrument(**{**DEFAULTS, **(instrument or {}), "symbol": symbol,
                        "zone": zone_name(tz)})
    options = {"zone": zone_name(tz), "date": date, "levels": str(levels),
               "orderbook": str(book.path)}
    prov = messages.provenance(rows=table.num_rows, importer="lobster", licence=licence,
                               options=options)
    book_prov = book.provenance(rows=table.num_rows, importer="lobster", licence=licence,
                                options={**options, "role": "orderbook"})
    return Piece("lobster", ref, table, [prov, book_prov])


def _book_column(i: int) -> str:
    level, which = divmod(i, 4)
    return f"{('ask_price', 'ask_size', 'bid_price', 'bid_size')[which]}_{level + 1}"
