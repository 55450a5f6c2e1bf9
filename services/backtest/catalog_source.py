"""Catalog datasets as the bus messages a live strategy gets, in time order.

``CatalogSource`` reads a time range of one or more datasets of the data catalog
(``services/data``, docs/data.md) with pyarrow and yields ``(receive_ns, message)`` pairs for
``BacktestEngine.run``, merged by time (ties: the order the datasets were given, then the
file's order). The instruments' reference data (min tick, multiplier, currency, sec type)
come from each dataset's ``_dataset.json``, so risk checks, execution's ``Portfolio`` and
the strategy price and size a future as its contract (6E: 125,000 EUR a point).

What each kind becomes (the simulated venue matches on the quotes; the strategy gets what
it subscribed to):

- ``bars-<size>`` (daily, minute...): for a bar of ``S`` seconds starting at ``t`` (the
  dataset's ``ts``, taken as the bar's start as IB stamps bars): one-level quotes (bid = ask =
  price, size = the bar's volume) at ``t`` (open), ``t + S/3`` and ``t + 2S/3`` (the low then
  the high for a rising bar, the high then the low for a falling one) and ``t + S`` (close);
  then the ``Bar`` itself at ``t + S`` (when it is complete, as IB's bars arrive), then an
  empty book until the next bar's open. So a strategy decides on a bar's close and its market
  order fills at the next bar's open (after the latency); stops and limits resting inside a
  bar trigger / fill on the path O -> L/H -> H/L -> C. Quotes carry no trade prints, so no
  5-second bars are made from them: the strategy's bars are the dataset's (``bar_size`` = the
  dataset's size, delivered as they are; larger sizes aggregated from them).
- ``trades``: a one-level quote at the trade price, then the ``TradeTick``.
- ``quotes``: ``QuoteTick`` (sizes the dataset lacks are taken as ``UNKNOWN_SIZE``).
- ``lobster``: the book after each event as IB depth updates (``DepthUpdate`` rows: inserts,
  updates, deletes of the changed positions), and a ``TradeTick`` per visible execution.

Warm-up: rows before ``start_ns`` (from ``warmup_start_ns``) are yielded too; the engine's
``Settings.warmup_ns`` (``start_ns - first_ns``) makes them history (``Strategy.history``)
and market state, not callbacks.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from proto.schema import Bar, DepthUpdate, Message, QuoteTick, TradeTick
from services.data.catalog import PART, Catalog
from services.data.errors import DataError
from services.data.model import DatasetMeta
from services.runtime.instruments import Instruments

NS = 1_000_000_000
UNKNOWN_SIZE = 1e9  # a quote without sizes: deep enough for any backtest order
BAR_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}
DEFAULT_TICK = {"STK": 0.01, "FUT": 0.01, "CASH": 0.00005}
ASK, BID = 0, 1


def _keyed(index: int, stream: Iterator[tuple[int, Message]]):
    for n, (t, msg) in enumerate(stream):
        yield t, index, n, msg


def bar_seconds_of(kind: str) -> int | None:
    """``bars-1d`` -> 86400, ``bars-1min`` -> 60; None for other kinds."""
    if not kind.startswith("bars-"):
        return None
    size = kind[5:]
    digits = "".join(ch for ch in size if ch.isdigit())
    unit = size[len(digits):]
    if not digits or unit not in BAR_UNITS:
        raise DataError(f"unknown bar size {size!r} in dataset kind {kind!r}")
    return int(digits) * BAR_UNITS[unit]


@dataclass
class PricePath:
    """What the run saw of one symbol's price: (t, low, high, close) per data row, for the
    report (buy-and-hold, MAE/MFE, the price chart)."""
    t: list[int] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)

    def add(self, t: int, low: float, high: float, close: float) -> None:
        if math.isfinite(close) and close > 0:
            self.t.append(t)
            self.low.append(low)
            self.high.append(high)
            self.close.append(close)


class CatalogSource:
    def __init__(self, catalog: Catalog, datasets: list[str], start_ns: int | None = None,
                 end_ns: int | None = None, warmup_start_ns: int | None = None) -> None:
        if not datasets:
            raise DataError("no dataset given (--data KIND/SYMBOL)")
        self.catalog = catalog
        self.names = [catalog.resolve(name) for name in datasets]
        self.metas: list[DatasetMeta] = [catalog.meta(name) for name in self.names]
        symbols = [m.instrument.symbol for m in self.metas]
        if len(set(symbols)) != len(symbols):
            raise DataError(f"several datasets for one symbol: {', '.join(self.names)}")
        first = min(m.first_ts for m in self.metas)
        self.start_ns = first if start_ns is None else start_ns
        self.end_ns = max(m.last_ts for m in self.metas) if end_ns is None else end_ns
        self.read_from = first if warmup_start_ns is None else min(warmup_start_ns,
                                                                   self.start_ns)
        self.read_from = max(self.read_from, first)
        if self.end_ns < self.start_ns:
            raise DataError("--to is before --from")
        self.paths: dict[str, PricePath] = {s: PricePath() for s in symbols}

    @property
    def symbols(self) -> list[str]:
        return [m.instrument.symbol for m in self.metas]

    def sec_types(self) -> dict[str, str]:
        return {m.instrument.symbol: m.instrument.sec_type for m in self.metas}

    def bar_sizes(self) -> dict[str, int]:
        return {m.instrument.symbol: bar_seconds_of(m.kind) for m in self.metas
                if m.kind.startswith("bars-")}

    def instruments(self) -> Instruments:
        """The datasets' reference data (their metadata)."""
        overrides = {}
        for meta in self.metas:
            ins = meta.instrument
            tick = ins.min_tick or DEFAULT_TICK.get(ins.sec_type, 0.01)
            values = {"min_tick": tick, "multiplier": ins.multiplier, "currency": ins.currency}
            if ins.sec_type == "CASH":
                values["lot_size"] = 1.0
            overrides[ins.symbol] = values
        return Instruments(overrides)

    def first_ns(self) -> int | None:
        """The receive time of the first message ``messages`` yields (None: no rows)."""
        firsts = []
        for meta in self.metas:
            table = self._table(meta, ["ts"])
            if table.num_rows:
                firsts.append(table["ts"][0].as_py())
        return min(firsts) if firsts else None

    def messages(self) -> Iterator[tuple[int, Message]]:
        """Every dataset's messages merged by time, ties in dataset order then row order."""
        streams = [_keyed(i, self._stream(meta)) for i, meta in enumerate(self.metas)]
        for t, _i, _n, msg in heapq.merge(*streams):
            yield t, msg

    # -- reading ------------------------------------------------------------------------------
    def _table(self, meta: DatasetMeta, columns: list[str] | None = None) -> pa.Table:
        """The dataset's rows in [read_from, end_ns] (bars: those that start by end_ns)."""
        root = self.catalog.root / meta.name
        parts = [p for p in meta.partitions
                 if p.last_ts >= self.read_from and p.first_ts <= self.end_ns]
        if not parts:
            names = [c.name for c in meta.columns] if columns is None else columns
            return pa.table({n: pa.array([], pa.int64() if n == "ts" else pa.float64())
                             for n in names})
        table = pa.concat_tables([pq.read_table(root / p.key / PART, columns=columns)
                                  for p in parts])
        ts = table["ts"]
        mask = pc.and_(pc.greater_equal(ts, self.read_from), pc.less_equal(ts, self.end_ns))
        return table.filter(mask)

    def _stream(self, meta: DatasetMeta) -> Iterator[tuple[int, Message]]:
        kind = meta.kind
        if kind.startswith("bars-"):
            return self._bars(meta, bar_seconds_of(kind))
        if kind == "trades":
            return self._trades(meta)
        if kind == "quotes":
            return self._quotes(meta)
        if kind == "lobster":
            return self._lobster(meta)
        raise DataError(f"{meta.name}: no backtest source for kind {kind!r}")

    def _bars(self, meta: DatasetMeta, seconds: int) -> Iterator[tuple[int, Message]]:
        symbol = meta.instrument.symbol
        table = self._table(meta, ["ts", "open", "high", "low", "close", "volume"])
        cols = [table[c].to_pylist() for c in ("ts", "open", "high", "low", "close", "volume")]
        path = self.paths[symbol]
        span = seconds * NS
        for t, o, h, lo, c, v in zip(*cols):
            if not all(x is not None and math.isfinite(x) for x in (o, h, lo, c)):
                continue
            size = v if v is not None and v > 0 else UNKNOWN_SIZE
            first, second = (lo, h) if c >= o else (h, lo)
            for at, price in ((t, o), (t + span // 3, first), (t + 2 * span // 3, second),
                              (t + span, c)):
                yield at, QuoteTick(symbol=symbol, bid=price, ask=price, bid_size=size,
                                    ask_size=size, exch_ts=at, ts=at)
            end = t + span
            path.add(end, lo, h, c)
            yield end, Bar(symbol=symbol, start_ns=t, seconds=seconds, open=o, high=h, low=lo,
                           close=c, volume=v or 0.0, ts=end)
            yield end, QuoteTick(symbol=symbol, bid=math.nan, ask=math.nan, bid_size=0.0,
                                 ask_size=0.0, exch_ts=end, ts=end)  # closed until the open

    def _trades(self, meta: DatasetMeta) -> Iterator[tuple[int, Message]]:
        symbol = meta.instrument.symbol
        table = self._table(meta, ["ts", "price", "size"])
        path = self.paths[symbol]
        for t, price, size in zip(*(table[c].to_pylist() for c in ("ts", "price", "size"))):
            if price is None or not math.isfinite(price) or not size:
                continue
            path.add(t, price, price, price)
            yield t, QuoteTick(symbol=symbol, bid=price, ask=price, bid_size=size,
                               ask_size=size, exch_ts=t, ts=t)
            yield t, TradeTick(symbol=symbol, price=price, size=size, exch_ts=t, ts=t)

    def _quotes(self, meta: DatasetMeta) -> Iterator[tuple[int, Message]]:
        symbol = meta.instrument.symbol
        names = [c.name for c in meta.columns]
        wanted = ["ts", "bid", "ask"] + [c for c in ("bid_size", "ask_size") if c in names]
        table = self._table(meta, wanted)
        n = table.num_rows
        ts, bid, ask = (table[c].to_pylist() for c in ("ts", "bid", "ask"))
        bsz = table["bid_size"].to_pylist() if "bid_size" in wanted else [None] * n
        asz = table["ask_size"].to_pylist() if "ask_size" in wanted else [None] * n
        path = self.paths[symbol]
        for t, b, a, bs, as_ in zip(ts, bid, ask, bsz, asz):
            b = math.nan if b is None else b
            a = math.nan if a is None else a
            if math.isfinite(b) and math.isfinite(a):
                mid = (a + b) / 2.0
                path.add(t, mid, mid, mid)
            yield t, QuoteTick(symbol=symbol, bid=b, ask=a,
                               bid_size=UNKNOWN_SIZE if bs is None else bs,
                               ask_size=UNKNOWN_SIZE if as_ is None else as_, exch_ts=t, ts=t)

    def _lobster(self, meta: DatasetMeta) -> Iterator[tuple[int, Message]]:
        symbol = meta.instrument.symbol
        names = [c.name for c in meta.columns]
        levels = sum(1 for c in names if c.startswith("ask_price_"))
        book_cols = [f"{side}_{what}_{i}" for i in range(1, levels + 1)
                     for side in ("ask", "bid") for what in ("price", "size")]
        table = self._table(meta, ["ts", "event", "size", "price"] + book_cols)
        ts, event, size, price = (table[c].to_pylist() for c in ("ts", "event", "size", "price"))
        books = {c: table[c].to_pylist() for c in book_cols}
        shown: dict[int, list[tuple[float, float]]] = {BID: [], ASK: []}
        path = self.paths[symbol]
        for row, t in enumerate(ts):
            for side, name in ((BID, "bid"), (ASK, "ask")):
                rows = []
                for i in range(1, levels + 1):
                    p, q = books[f"{name}_price_{i}"][row], books[f"{name}_size_{i}"][row]
                    if p is None or not q:
                        break
                    rows.append((float(p), float(q)))
                old = shown[side]
                for i, level in enumerate(rows):
                    if i < len(old) and old[i] == level:
                        continue
                    op = 1 if i < len(old) else 0
                    yield t, DepthUpdate(symbol=symbol, position=i, operation=op, side=side,
                                         price=level[0], size=level[1], ts=t)
                for i in range(len(old) - 1, len(rows) - 1, -1):
                    yield t, DepthUpdate(symbol=symbol, position=i, operation=2, side=side,
                                         price=old[i][0], size=0.0, ts=t)
                shown[side] = rows
            if shown[BID] and shown[ASK]:
                mid = (shown[BID][0][0] + shown[ASK][0][0]) / 2.0
                path.add(t, mid, mid, mid)
            if event[row] == 4 and price[row] is not None and size[row]:
                yield t, TradeTick(symbol=symbol, price=float(price[row]),
                                   size=float(size[row]), exch_ts=t, ts=t)
