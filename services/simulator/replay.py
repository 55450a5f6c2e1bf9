"""Market replay: catalog datasets drive the simulator's market (``--market DATASET,...``).

Instead of the seeded random walk, the instruments of the datasets take their book, their
prints and their clock from the data, event by event, at ``--speed`` (a factor on the data's
event times; 0 = unpaced: as fast as the clients read, with back-pressure on the sessions'
write buffers). What the clients see is what the simulator always serves, fed by the real
book:

- depth (``reqMktDepth``): each event's book change as IB's position rows, per side, the
  minimal insert / update / delete rows (``market.depth_ops``: insert shifts the rows below
  down and on a full book the last row falls off without a delete; delete shifts up), sent
  the moment the event is replayed, for the rows the subscription asked for;
- tick-by-tick: ``Last``/``AllLast`` per execution, ``BidAsk``/``MidPoint`` per top change;
- ``reqMktData``: top of book, last, volume, high/low, sampled every ``--mktdata-ms`` as ever;
- 5-second real-time bars from the executions, at every 5 s boundary the data's clock
  crosses; historical bars from the executions replayed so far (before the data's first
  event they are synthetic, from the data's first price: there is no earlier data);
- the simulated clock is the data's (``Market.clock``): tick times, bar times, execution
  times. Instruments without data stay still (the walk is frozen). With ``--sessions on`` the
  trading hours follow it: opens, closes and GTD expiries at their time in the data's day;
  paced, the clock runs on at ``--speed`` after the last event, so the day still closes.

Orders work against the real book: marketable orders walk its levels (liquidity taken is
remembered per price while the level stays in the book, so the same shares are not taken
twice); a resting limit order joins the back of the queue at its price (the size the book
shows there when it starts resting) and fills as executions at that price eat through the
queue in front of it (cancels at that price come from behind it unless the level shrinks
below what is in front), or at once when the opposite side reaches its price (``QueueModel``).

Kinds replayed: ``lobster`` (book after every event, executions = events 4 and 5, crosses 6),
``quotes`` (a one-level book per quote) and ``trades`` (prints; with no book of their own the
book is one level each side a tick around the last print, size of the print).

Bar datasets (``bars-1d/AAPL``, ``bars-1min/6EH4`` in ``--market``) do not move the market:
they are the history ``reqHistoricalData`` gets for their instrument (``history_frames``).
Given alone, the clock stands at the end of their last bar and the instrument's book stays
at its last close (frozen).
"""
from __future__ import annotations

import asyncio
import math
import time
import zlib
from datetime import datetime, time as dtime
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .config import InstrumentSpec, SimConfig
from .contracts import Instrument
from .logs import log
from .market import Book, Bucket, Level, PriceProcess, Trade

if TYPE_CHECKING:
    from .broker import Broker

KINDS = ("lobster", "quotes", "trades")
BAR_KIND = "bars-"            # bars-<size>: served as historical bars, not replayed
BACKLOG_BYTES = 1 << 20       # unpaced replay waits while a subscriber has this much unwritten
MAX_RTB_CATCH_UP = 720        # 5 s bars emitted for one gap in the data at most (an hour)


#: Replay.print_prices, read once per (catalog, dataset)
_PRINT_PRICES: dict[tuple, np.ndarray] = {}


class ReplayError(ValueError):
    pass


@dataclass
class Source:
    """One dataset, as arrays: event times, and per kind what each event sets."""
    name: str
    kind: str
    symbol: str
    ts: np.ndarray                      # int64 ns UTC
    min_tick: float
    levels: int = 0
    # lobster: per event (n, levels) ticks (-1 = empty level) and sizes
    bid_px: np.ndarray | None = None
    bid_sz: np.ndarray | None = None
    ask_px: np.ndarray | None = None
    ask_sz: np.ndarray | None = None
    event: np.ndarray | None = None     # lobster event type
    side: np.ndarray | None = None      # lobster direction of the order the event is about
    trade_px: np.ndarray | None = None  # ticks, -1 = no print
    trade_sz: np.ndarray | None = None
    con_id: int = 0
    # bar datasets: per row open, high, low, close, volume (currency, units); the bar's size
    bars: np.ndarray | None = None
    bar_seconds: int = 0
    zone: str = "UTC"                   # the dataset's zone (a daily bar's ts is its midnight)

    def first_price(self) -> float:
        if self.bars is not None:       # a bar dataset: the price now is its last close
            return float(self.bars[-1, 3]) if len(self.bars) else 0.0
        for k in range(min(len(self.ts), 1000)):
            if self.bid_px is not None and self.bid_px[k, 0] >= 0 and self.ask_px[k, 0] >= 0:
                return float((self.bid_px[k, 0] + self.ask_px[k, 0]) / 2 * self.min_tick)
            if self.trade_px is not None and self.trade_px[k] >= 0:
                return float(self.trade_px[k]) * self.min_tick
        return 0.0


def _ticks(values, min_tick: float) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    out = np.full(arr.shape, -1, dtype=np.int64)
    ok = np.isfinite(arr)
    out[ok] = np.rint(arr[ok] / min_tick).astype(np.int64)
    return out


def _data_tick(table, limit: int = 100_000) -> float:
    """The price increment a dataset without one in its reference data is written in: the
    largest 10**-k (k = 0..8) every price of its first ``limit`` rows is a multiple of
    (HistData's EUR/USD quotes: 5 decimals, 0.00001), so replay keeps the data's prices."""
    prices = [_col(table, name)[:limit] for name in ("bid", "ask", "price", "close")
              if name in table.column_names]
    values = np.concatenate(prices) if prices else np.array([])
    values = values[np.isfinite(values)]
    for k in range(9):
        scaled = values * 10.0 ** k
        if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6):
            return 10.0 ** -k
    return 1e-8


def _col(table, name: str) -> np.ndarray:
    import pyarrow.compute as pc
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column.cast("double"), float("nan"))
    return column.to_numpy()


def load_source(catalog, name: str) -> Source:
    from services.data.errors import DataError
    try:
        resolved = catalog.resolve(name)
        meta = catalog.meta(resolved)
    except DataError as exc:
        raise ReplayError(f"--market {name}: {exc}") from None
    kind = meta.kind
    if kind not in KINDS and not kind.startswith(BAR_KIND):
        raise ReplayError(f"--market {resolved}: a {kind!r} dataset cannot drive the market "
                          f"(replayed kinds: {', '.join(KINDS)}; bars-* serve history)")
    table = catalog.read(resolved)
    tick = meta.instrument.min_tick or _data_tick(table)
    src = Source(resolved, kind, meta.instrument.symbol, table.column("ts").to_numpy(), tick)
    n = len(src.ts)
    if kind.startswith(BAR_KIND):
        from services.backtest.catalog_source import bar_seconds_of
        try:
            src.bar_seconds = bar_seconds_of(kind)
        except DataError as exc:
            raise ReplayError(f"--market {resolved}: {exc}") from None
        src.bars = np.stack([_col(table, c).astype(np.float64)
                             for c in ("open", "high", "low", "close", "volume")], 1)
        src.zone = meta.instrument.zone or "UTC"
    elif kind == "lobster":
        levels = sum(1 for c in table.column_names if c.startswith("ask_price_"))
        src.levels = levels
        src.bid_px = np.stack([_ticks(_col(table, f"bid_price_{i}"), tick) for i in range(1, levels + 1)], 1)
        src.ask_px = np.stack([_ticks(_col(table, f"ask_price_{i}"), tick) for i in range(1, levels + 1)], 1)
        src.bid_sz = np.stack([_col(table, f"bid_size_{i}").astype(np.float64) for i in range(1, levels + 1)], 1)
        src.ask_sz = np.stack([_col(table, f"ask_size_{i}").astype(np.float64) for i in range(1, levels + 1)], 1)
        src.event = _col(table, "event").astype(np.int64)
        src.side = _col(table, "side").astype(np.int64)
        printing = np.isin(src.event, (4, 5, 6))
        src.trade_px = np.where(printing, _ticks(_col(table, "price"), tick), -1)
        src.trade_sz = np.where(printing, _col(table, "size").astype(np.float64), 0.0)
    elif kind == "quotes":
        src.levels = 1
        src.bid_px = _ticks(_col(table, "bid"), tick).reshape(n, 1)
        src.ask_px = _ticks(_col(table, "ask"), tick).reshape(n, 1)
        bs = np.nan_to_num(_col(table, "bid_size").astype(np.float64), nan=1.0)
        as_ = np.nan_to_num(_col(table, "ask_size").astype(np.float64), nan=1.0)
        src.bid_sz, src.ask_sz = bs.reshape(n, 1), as_.reshape(n, 1)
    else:  # trades
        src.trade_px = _ticks(_col(table, "price"), tick)
        src.trade_sz = _col(table, "size").astype(np.float64)
    return src


def _con_id_for(symbol: str, taken: set[int]) -> int:
    con_id = 900_000_000 + zlib.crc32(symbol.encode()) % 90_000_000
    while con_id in taken:
        con_id += 1
    return con_id


class ReplayProcess(PriceProcess):
    """A price process whose book and prints are set by the replay, never by a random step."""

    def __init__(self, inst: Instrument, levels: int, step_ms: float, price_ticks: int) -> None:
        super().__init__(inst, 0, levels, step_ms)
        self.book = Book([], [])
        self.prev_book = self.book
        self.last_ticks = self.high = self.low = price_ticks
        self.mid = self.anchor = float(price_ticks)
        self.last_size = 0.0
        self.volume = 0.0
        self.trade = None

    def step(self) -> None:       # the replay moves this market, not the clock
        pass

    def _rebuild(self) -> None:
        pass

    @property
    def bid(self) -> int:
        return self.book.bids[0][0] if self.book.bids else self.last_ticks

    @property
    def ask(self) -> int:
        return self.book.asks[0][0] if self.book.asks else self.last_ticks

    def set_book(self, bids: list[Level], asks: list[Level]) -> None:
        self.prev_book = self.book
        self.book = Book(bids, asks)
        if bids and asks:
            self.mid = (bids[0][0] + asks[0][0]) / 2.0
        # liquidity our orders took stays taken while its level stays in the book
        if self.consumed:
            live = {(False, p) for p, _ in bids} | {(True, p) for p, _ in asks}
            for key in [k for k in self.consumed if k not in live]:
                del self.consumed[key]

    def print_trade(self, ticks: int, size: float, aggressor_buy: bool) -> None:
        self.trade = Trade(ticks, size, aggressor_buy)
        self.last_ticks = ticks
        self.last_size = size
        self.volume += size
        self.high = max(self.high, ticks)
        self.low = min(self.low, ticks)


@dataclass
class QueueModel:
    """Queue position of resting limit orders in the real book: an order joins the back of
    its price level; executions at its price consume the queue in front of it first."""
    #: (clientId, orderId) -> (limit in ticks, size in front of the order at that price)
    ahead: dict[tuple[int, int], tuple[int, float]] = field(default_factory=dict)

    def forget(self, key: tuple[int, int]) -> None:
        self.ahead.pop(key, None)


class Replay:
    def __init__(self, cfg: SimConfig, sources: list[Source]) -> None:
        self.cfg = cfg
        #: bar datasets by instrument: history, not events
        self.bar_sources: dict[int, list[Source]] = {}
        for s in sources:
            if s.bars is not None:
                self.bar_sources.setdefault(s.con_id, []).append(s)
        sources = [s for s in sources if s.bars is None]
        self.sources = sources
        if not sources:   # bars alone: the clock at the end of the last bar, nothing to play
            end = max(int(s.ts[-1]) + s.bar_seconds * 1_000_000_000
                      for group in self.bar_sources.values() for s in group)
            sources = [Source("", "", "", np.array([end], dtype=np.int64), 0.01)]
        ts = np.concatenate([s.ts for s in sources])
        which = np.concatenate([np.full(len(s.ts), i, dtype=np.int64) for i, s in enumerate(sources)])
        rows = np.concatenate([np.arange(len(s.ts), dtype=np.int64) for s in sources])
        order = np.argsort(ts, kind="stable")
        self.ts = ts[order]
        self.which = which[order]
        self.rows = rows[order]
        self.pos = 0                      # events applied so far
        self.now_ns = int(self.ts[0])
        self.broker: "Broker | None" = None
        self.procs: dict[int, ReplayProcess] = {}
        self.task: asyncio.Task | None = None
        self.queue = QueueModel()
        self._rtb_bucket = 0
        #: (monotonic, data time, speed) once the data is over with sessions on: the clock runs
        self._after: tuple[float, float, float] | None = None
        self.stats = {"events": 0, "depth_rows": 0, "prints": 0, "queue_fills": 0}

    # ---- set-up
    def now(self) -> float:
        if self._after is not None:       # past the data (sessions on): the clock runs on
            mono0, t0, speed = self._after
            return t0 + (time.monotonic() - mono0) * speed
        return self.now_ns / 1e9

    def attach(self, broker: "Broker") -> None:
        """Put the replayed processes in the broker's market, its clock on the data's, and
        freeze the random walk (nothing moves but what the data moves)."""
        self.broker = broker
        market = broker.market
        for src in self.sources:
            if src.con_id in self.procs:
                continue
            inst = broker.universe.by_con_id[src.con_id]
            proc = ReplayProcess(inst, self.cfg.depth_levels, self.cfg.step_ms,
                                 inst.to_ticks(inst.spec.price))
            self.procs[src.con_id] = proc
            market.processes[src.con_id] = proc
        market.start_time = self.ts[0] / 1e9
        market.clock = self.now
        broker.frozen = True
        if broker.hours is not None:      # --sessions on: the data's day, not the wall clock's
            broker.hours.reset(self.now())
        self._rtb_bucket = int(self.ts[0] // 1_000_000_000) // broker.cfg.rtb_seconds
        if not self.sources:              # bars alone: the clock only
            self.pos = len(self.ts)
            return
        self._apply(0, emit=False)        # the book as the data has it after its first event
        self.pos = 1

    def start(self) -> None:
        if not self.sources:
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    def replayed(self, con_id: int) -> list[tuple[Source, int]]:
        """Read only: each dataset of instrument ``con_id`` with how many of its rows the
        replay has reached (their ``ts`` <= the data's clock): what historical requests may
        see (historical_ticks.py), as IB serves nothing after now."""
        out = []
        for src in self.sources:
            if src.con_id == con_id:
                out.append((src, int(np.searchsorted(src.ts, self.now_ns, side="right"))))
        return out

    def print_prices(self, src: Source) -> np.ndarray | None:
        """Read only: the dataset's print prices as stored (float, currency; per row, NaN or
        any value where no print), None for a dataset without prints. The replay works in
        ticks, but a real print can fall between two (AMZN 2012-06-21: 223.795 on a 0.01
        tick), and a historical tick must be the real print."""
        if src.trade_px is None:
            return None
        key = (self.cfg.catalog, src.name)
        if key not in _PRINT_PRICES:
            from services.data.catalog import Catalog
            from services.data.cli import default_catalog
            table = Catalog(self.cfg.catalog or str(default_catalog())).read(src.name, ["price"])
            _PRINT_PRICES[key] = _col(table, "price").astype(np.float64)
        return _PRINT_PRICES[key]

    # ---- the loop
    def _subscribed(self) -> bool:
        b = self.broker
        tables = (b.depth_subs,) if self.cfg.market_wait == "depth" else \
            (b.mkt_subs, b.tbt_subs, b.depth_subs, b.rtb_subs)
        return any(table.get(con_id) for table in tables for con_id in self.procs)

    def _backlog(self) -> bool:
        b = self.broker
        for con_id in self.procs:
            for table in (b.depth_subs, b.tbt_subs, b.mkt_subs):
                for sub in table.get(con_id, ()):
                    try:
                        if sub.session.writer.transport.get_write_buffer_size() > BACKLOG_BYTES:
                            return True
                    except Exception:
                        pass
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.cfg.market_wait != "now":
            log("replay_waiting", for_=self.cfg.market_wait)
            while not self._subscribed():
                await asyncio.sleep(0.02)
        n = len(self.ts)
        speed = self.cfg.speed
        log("replay_start", datasets=[s.name for s in self.sources], of=n, speed=speed,
            first=int(self.ts[0]), last=int(self.ts[-1]))
        wall0, t0 = loop.time(), int(self.ts[self.pos - 1])
        started = time.monotonic()
        next_report = n // 10 or 1
        try:
            while self.pos < n:
                if speed > 0:
                    await self._wait_until(int(self.ts[self.pos]), wall0, t0, speed)
                while self._backlog():
                    await asyncio.sleep(0.005)
                self._apply(self.pos, emit=True)
                self.pos += 1
                if self.pos >= next_report:
                    next_report += n // 10 or 1
                    log("replay_progress", at=self.pos, of=n, **self.stats)
                if speed == 0 or self.pos % 16 == 0:
                    await asyncio.sleep(0)   # let the sessions write what this event sent
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log("internal_error", where="replay", at=self.pos, error=repr(exc))
            raise
        log("replay_done", at=self.pos, seconds=round(time.monotonic() - started, 3), **self.stats)
        b = self.broker
        if b is not None and b.hours is not None and speed > 0 and self.sources:
            # --sessions on: the day goes on after its last event (the close, the end of the
            # extended hours, the next sessions), the clock at --speed; nothing else moves
            self._after = (time.monotonic(), self.now_ns / 1e9, speed)
            while True:
                await asyncio.sleep(self.cfg.step_ms / 1000.0)
                try:
                    self._hours_step()
                except Exception as exc:   # a bug in one step must not stop the clock
                    log("internal_error", where="replay_hours", error=repr(exc))

    def _hours_step(self) -> None:
        """--sessions on: every open, close and GTD expiry the data's clock has passed, handled
        at its own time (TradingHours.advance), then the engine's step."""
        b = self.broker
        b.hours.advance(self.now())
        b.engine.on_step()

    async def _wait_until(self, ts: int, wall0: float, t0: int, speed: float) -> None:
        """Paced: sleep until the event at `ts` (ns) is due. With sessions on, a boundary of the
        trading hours between two events is handled when the data's clock reaches it, not at
        the next event (the clock stands at the boundary meanwhile)."""
        loop = asyncio.get_running_loop()
        hours = self.broker.hours if self.broker is not None else None
        while True:
            due_s = hours._due if hours is not None else math.inf
            boundary = due_s * 1e9 < ts
            stop = due_s * 1e9 if boundary else ts
            delay = wall0 + (stop - t0) / 1e9 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(min(delay, 0.25))   # an order may bring a GTD time forward
                continue
            if not boundary:
                return
            self.now_ns = max(self.now_ns, math.ceil(due_s * 1e9))
            b = self.broker
            b.hours.advance(max(self.now(), due_s))
            b.engine.on_step()

    # ---- one event
    def _apply(self, k: int, emit: bool) -> None:
        src = self.sources[int(self.which[k])]
        row = int(self.rows[k])
        self.now_ns = int(self.ts[k])
        proc = self.procs[src.con_id]
        if emit and self.broker is not None and self.broker.hours is not None:
            # --sessions on: an open or close crossed since the last event happens before this
            # one, against the book as it was then
            self.broker.hours.advance(self.now())
        proc.trade = None
        for key in [key for key in proc.consumed if key[0] == "print"]:
            del proc.consumed[key]
        if src.bid_px is not None:
            bids = [(int(p), float(s)) for p, s in zip(src.bid_px[row], src.bid_sz[row]) if p >= 0]
            asks = [(int(p), float(s)) for p, s in zip(src.ask_px[row], src.ask_sz[row]) if p >= 0]
            proc.set_book(bids, asks)
        printed = src.trade_px is not None and src.trade_px[row] >= 0 and src.trade_sz[row] > 0
        if printed:
            ticks, size = int(src.trade_px[row]), float(src.trade_sz[row])
            # LOBSTER's direction is the resting order's: a sell order executed = a buyer
            buy = bool(src.side[row] == -1) if src.side is not None else ticks >= proc.ask
            proc.print_trade(ticks, size, buy)
            if src.bid_px is None:   # prints only: a book one tick around the last print
                proc.set_book([(ticks - 1, size)], [(ticks + 1, size)])
            self._bucket(src.con_id, ticks, size)
            self.stats["prints"] += 1
        self.stats["events"] += 1
        b = self.broker
        if b is None:
            return
        if emit and not (b.data_stopped or b.hung):
            now = int(self.now())
            for d in b.depth_subs.get(src.con_id, ()):
                out = getattr(d.session, "_out", ())
                before = len(out)
                d.emit(proc)
                self.stats["depth_rows"] += len(out) - before
            for t in b.tbt_subs.get(src.con_id, ()):
                t.emit(proc, now)
        if emit:
            self._queue_fills(src, row, proc)
            b.engine.on_step()
            self._rtb()

    def _bucket(self, con_id: int, ticks: int, size: float) -> None:
        hist = self.broker.market.history.setdefault(con_id, {}) if self.broker else None
        if hist is None:
            return
        second = int(self.now())
        bucket = hist.get(second)
        if bucket is None:
            hist[second] = Bucket(ticks, ticks, ticks, ticks, size, 1)
        else:
            bucket.high = max(bucket.high, ticks)
            bucket.low = min(bucket.low, ticks)
            bucket.close = ticks
            bucket.volume += size
            bucket.count += 1

    def _rtb(self) -> None:
        b = self.broker
        span = b.cfg.rtb_seconds
        bucket = int(self.now()) // span
        if bucket <= self._rtb_bucket:
            return
        first = max(self._rtb_bucket + 1, bucket - MAX_RTB_CATCH_UP + 1)
        self._rtb_bucket = bucket
        if b.data_stopped or b.hung:
            return
        for boundary in range(first, bucket + 1):
            b._emit_rtb(boundary * span)

    # ---- resting limit orders: queue position in the real book
    def _queue_fills(self, src: Source, row: int, proc: ReplayProcess) -> None:
        """Passive fills of resting limit orders, price-time: an order at price P that was
        not marketable joined the back of P's queue; an execution at P on its side eats the
        queue in front of it first, then the order. The engine's own passive rule (a print at
        the limit fills) is switched off for replayed instruments: ``proc.trade`` is hidden
        from it while it matches."""
        engine = self.broker.engine
        working = [o for o in engine.orders.values()
                   if o.live and o.transmitted and not o.why_held and o.inst.con_id == src.con_id
                   and o.req.order_type in ("LMT", "STP LMT")
                   and (o.req.order_type == "LMT" or o.triggered)
                   and (engine.hours is None or engine.hours.working(o))]
        t = proc.trade
        for order in working:
            key = (order.client_id, order.order_id)
            limit = order.inst.to_ticks(order.req.lmt_price)
            levels = proc.book.bids if order.buy else proc.book.asks
            known = self.queue.ahead.get(key)
            if known is None or known[0] != limit:
                # new, or modified to another price: joins the back of its level, behind
                # what the book shows there now
                self.queue.ahead[key] = (limit, sum(s for p, s in levels if p == limit))
                continue
            shown = sum(s for p, s in levels if p == limit)
            if t is None or t.ticks != limit or t.aggressor_buy == order.buy:
                # the level shrank below what was in front: cancels in front of us
                self.queue.ahead[key] = (limit, min(known[1], shown))
                continue
            ahead = known[1]
            reach = t.size - ahead
            self.queue.ahead[key] = (limit, min(max(0.0, ahead - t.size), shown))
            if reach <= 0 or order.remaining <= 0:
                continue
            qty = min(order.remaining, reach)
            engine._execute(order, proc, limit, qty, liquidity=1)
            self.stats["queue_fills"] += 1
            if order.remaining <= 0:
                self.queue.forget(key)
        # the engine matches what is marketable against the book; its passive print rule
        # must not fill the queue a second time
        proc.trade = None


def prepare(cfg: SimConfig, catalog_root: str | None = None) -> tuple[SimConfig, Replay]:
    """Read the datasets, give each symbol its instrument (the universe's, or a new one
    from the dataset's reference data) and return the config to build the broker with."""
    from services.data.catalog import Catalog
    from .sessions import CME_EXCHANGES
    root = catalog_root or cfg.catalog
    if root is None:
        from services.data.cli import default_catalog
        root = str(default_catalog())
    catalog = Catalog(root)
    items = [cfg.market] if isinstance(cfg.market, str) else list(cfg.market)
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise ReplayError("--market names no dataset")
    sources = [load_source(catalog, name) for name in names]
    specs = list(cfg.instruments)
    taken = {s.con_id for s in specs}
    for src in sources:
        if not len(src.ts):
            raise ReplayError(f"--market {src.name}: no rows")
        price = src.first_price() or 1.0
        # the universe's instrument: a stock by its symbol, any other (EUR.USD) by IB's
        # local symbol, so clients asking for EUR CASH get the replayed market
        index = next((i for i, s in enumerate(specs) if (s.symbol == src.symbol
                      and s.sec_type in ("STK", "")) or s.local_symbol == src.symbol), None)
        if index is None:
            meta = catalog.meta(src.name).instrument
            con_id = _con_id_for(src.symbol, taken)
            taken.add(con_id)
            spec = InstrumentSpec(src.symbol, meta.sec_type or "STK", con_id,
                                  "SMART" if (meta.sec_type or "STK") == "STK" else meta.exchange,
                                  meta.currency or "USD", src.min_tick, round(price, 6),
                                  primary_exchange=meta.exchange,
                                  multiplier="" if meta.multiplier == 1.0 else str(meta.multiplier),
                                  valid_exchanges=f"SMART,{meta.exchange}" if meta.exchange else "",
                                  # IB's timeZoneId for CME's contracts: bar times are in it
                                  **({"time_zone": "US/Central"}
                                     if (meta.exchange or "").upper() in CME_EXCHANGES else {}))
            specs.append(spec)
            index = len(specs) - 1
        else:
            spec = specs[index]
            if abs(spec.min_tick - src.min_tick) > 1e-12 and spec.sec_type == "CASH":
                # quotes finer than IB's half-pip (HistData's 0.00001): replayed as they
                # were, the instrument's tick follows the data
                spec = specs[index] = replace(spec, min_tick=src.min_tick)
            elif abs(spec.min_tick - src.min_tick) > 1e-12:
                raise ReplayError(f"--market {src.name}: tick {src.min_tick} but {spec.symbol}'s "
                                  f"instrument has {spec.min_tick}")
            if src.bars is None:      # the price is the replayed book's, not a bar's close
                specs[index] = replace(spec, price=round(price, 6))
        src.con_id = specs[index].con_id
    symbols = {}
    for src in sources:
        if src.kind in ("lobster", "quotes"):
            if symbols.get(src.con_id):
                raise ReplayError(f"--market: two books for {src.symbol} ({symbols[src.con_id]}, {src.name})")
            symbols[src.con_id] = src.name
    return replace(cfg, instruments=tuple(specs)), Replay(cfg, sources)


# ====================================================================== bars as history
DURATION_SECONDS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}
SERVED_WHAT = ("", "TRADES")  # the datasets hold trade bars: other series are not theirs


def replay_of(session) -> "Replay | None":
    """The market replay of the session's broker, if any (its clock is the market's)."""
    owner = getattr(session.broker.market.clock, "__self__", None)
    return owner if isinstance(owner, Replay) else None


def history_frames(session, req_id: int, inst, end: float, bar_seconds: int, n: int, unit: str,
                   rth: bool, what: str, format_date: int) -> list[bytes] | None:
    """reqHistoricalData answered from a replayed bar dataset of the instrument, or None
    (not served: no replay, no bar dataset whose size fits ``bar_seconds``, whatToShow other
    than TRADES, weekly or monthly bars, or no dataset bar in the request: the simulator's
    own answer then).

    The window is the simulator's (``sessions.windows``: the sessions the duration covers,
    RTH or all hours with ``useRTH``, clipped to ``end`` <= the data's clock) with sessions
    on, else the duration before ``end``. Dataset bars of ``S`` seconds starting in it and
    complete by ``end`` (``ts + S <= end``; a daily bar: its session closed) are served: as
    they are when ``bar_seconds == S``, else aggregated on the exchange's local grid (as IB's
    bars: an hourly bar starts on the hour, the first at the session's open; a daily bar is
    one session). IB's shape: intraday bar times ``yyyymmdd hh:mm:ss ZONE`` in the
    exchange's zone, daily ones ``yyyymmdd`` (the session's day), epoch seconds with
    formatDate=2; WAP the volume-weighted (O+H+L+C)/4 of the dataset rows (they carry no
    VWAP), bar count -1 (nor a count)."""
    from . import sessions as S
    from .encoders import ib_time, qty
    replay = replay_of(session)
    if replay is None or what.strip().upper() not in SERVED_WHAT or bar_seconds > 86400:
        return None
    fits = [s for s in replay.bar_sources.get(inst.con_id, ())
            if (s.bar_seconds == bar_seconds) or (bar_seconds < 86400 and s.bar_seconds < 86400
                                                  and bar_seconds % s.bar_seconds == 0)
            or (bar_seconds == 86400 and s.bar_seconds < 86400 and 86400 % s.bar_seconds == 0)]
    if not fits:
        return None
    src = max(fits, key=lambda s: s.bar_seconds)
    zone = S.zone_info(inst.spec.time_zone)
    daily = bar_seconds >= 86400
    if session.broker.cfg.sessions == "on":
        spans = [(s.day, a, b, s.close) for s, a, b in
                 S.windows(S.calendar_for(inst), end, n, unit, rth, zone)]
    else:
        a = end - n * DURATION_SECONDS[unit]
        spans = [(None, a, end, end)]
    rows = _bar_rows(src, spans, bar_seconds, end, zone)
    if not rows:
        return None
    out = []
    for day, t0, o, h, l, c, v, wap in rows:
        if format_date == 2:
            date_text = str(int(t0))
        elif daily:
            date_text = (day or datetime.fromtimestamp(t0, zone).date()).strftime("%Y%m%d")
        else:
            date_text = ib_time(t0, inst.spec.time_zone)
        out.append((date_text, _px(o), _px(h), _px(l), _px(c), qty(v), _px(wap), -1))
    zone_name = inst.spec.time_zone
    return session.enc.historical_data(req_id, ib_time(rows[0][1], zone_name),
                                       ib_time(end, zone_name), out)


def _px(x: float) -> str:
    """A dataset price as written: its shortest decimal (130.31, 1.10785), no binary noise."""
    return repr(round(float(x), 10))


def _bar_rows(src: Source, spans, bar_seconds: int, end: float, zone) -> list[tuple]:
    """(session day, start s, o, h, l, c, volume, wap) per served bar, in time order."""
    size = src.bar_seconds
    t = src.ts / 1e9
    bars = src.bars
    out: list[tuple] = []
    for day, a, b, close in spans:
        if size >= 86400:   # a daily dataset: its row of the session's day, once it closed
            if close > end:
                continue
            lo = np.searchsorted(t, a - 2 * 86400, side="left")
            hi = np.searchsorted(t, b + 86400, side="right")
            for k in range(lo, hi):
                row_day = datetime.fromtimestamp(t[k], _zone_of(src)).date()
                if (day is not None and row_day == day) or (day is None and a <= t[k] < b):
                    out.append(_bar(day or row_day, float(t[k]), bars[k:k + 1]))
            continue
        lo = int(np.searchsorted(t, a, side="left"))
        hi = int(np.searchsorted(t, b, side="left"))
        ks = [k for k in range(lo, hi) if t[k] + size <= end]
        if not ks:
            continue
        if bar_seconds >= 86400:
            out.append(_bar(day, a, bars[ks[0]:ks[-1] + 1]))
            continue
        midnight = datetime.combine(datetime.fromtimestamp(a, zone).date(), dtime(0),
                                    zone).timestamp()
        groups: dict[float, list[int]] = {}
        for k in ks:   # on the local grid, the first bar from the session's open
            g = midnight + math.floor((t[k] - midnight) / bar_seconds) * bar_seconds
            groups.setdefault(max(g, a), []).append(k)
        for start, members in groups.items():
            out.append(_bar(day, start, bars[members]))
    return out


def _zone_of(src: Source):
    from .sessions import zone_info
    return zone_info(src.zone)


def _bar(day, start: float, rows: np.ndarray) -> tuple:
    o, h, l, c = rows[0, 0], rows[:, 1].max(), rows[:, 2].min(), rows[-1, 3]
    v = float(rows[:, 4].sum())
    typical = rows[:, :4].mean(axis=1)
    wap = float((typical * rows[:, 4]).sum() / v) if v > 0 else float(typical.mean())
    return (day, start, float(o), float(h), float(l), float(c), v, wap)
