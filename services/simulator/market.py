"""Seeded price processes and order books, stepped on a simulated clock.

Every instrument owns a `random.Random` seeded from (seed, conId) and consumes a fixed number of
draws per step, so the path depends only on the seed and the step index: never on which clients
are connected, what they ask for, or wall-clock jitter.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

from .contracts import Instrument

Level = tuple[int, float]   # (price in ticks, size)


@dataclass
class Trade:
    ticks: int
    size: float
    aggressor_buy: bool


@dataclass
class Bucket:
    """One simulated second of prints, the atom historical bars are built from."""
    open: int
    high: int
    low: int
    close: int
    volume: float = 0.0
    count: int = 0


@dataclass
class Book:
    bids: list[Level] = field(default_factory=list)   # best first (descending price)
    asks: list[Level] = field(default_factory=list)   # best first (ascending price)


class PriceProcess:
    """Random-walk mid with a spread, a depth profile and occasional prints."""

    def __init__(self, inst: Instrument, seed: int, levels: int, step_ms: float,
                 mean_reversion: float = 0.0) -> None:
        self.inst = inst
        spec = inst.spec
        self.rng = random.Random((seed * 1_000_003) ^ inst.con_id)
        self.levels = levels
        self.sd = spec.volatility_ticks * math.sqrt(step_ms / 100.0)
        self.mid = float(inst.to_ticks(spec.price))
        self.anchor = self.mid
        self.mean_reversion = mean_reversion   # pull per step towards the opening price (0 = pure walk)
        self.spread = max(1, spec.spread_ticks)
        self.level_size = spec.level_size
        self.trade_probability = spec.trade_probability
        self._lot = 100 if spec.sec_type == "STK" and spec.level_size >= 200 else 1
        self._bid_sizes: dict[int, float] = {}
        self._ask_sizes: dict[int, float] = {}
        self.book = Book()
        self.prev_book = Book()
        self.last_ticks = inst.to_ticks(spec.price)
        self.last_size = 0.0
        self.volume = 0.0
        self.high = self.low = self.last_ticks
        self.trade: Trade | None = None
        self.consumed: dict[tuple[bool, int], float] = {}   # liquidity our orders took this step
        self._rebuild()
        self.prev_book = self.book

    def _size(self) -> float:
        raw = self.rng.expovariate(1.0 / self.level_size)
        lots = max(1, int(raw / self._lot + 0.5))
        return float(lots * self._lot)

    def _side(self, best: int, direction: int, sizes: dict[int, float]) -> list[Level]:
        out: list[Level] = []
        keep: dict[int, float] = {}
        for i in range(self.levels):
            p = best + direction * i
            # a fixed two draws per level keeps the RNG stream independent of the book's history
            refresh = self.rng.random() < 0.25
            fresh = self._size()
            size = sizes.get(p)
            if size is None or refresh:
                size = fresh
            keep[p] = size
            out.append((p, size))
        sizes.clear()
        sizes.update(keep)
        return out

    def _rebuild(self) -> None:
        half = self.spread / 2.0
        bid = int(math.floor(self.mid - half + 1e-9))
        ask = bid + self.spread
        self.book = Book(self._side(bid, -1, self._bid_sizes), self._side(ask, +1, self._ask_sizes))

    def step(self) -> None:
        rng = self.rng
        self.prev_book = self.book
        self.mid += self.mean_reversion * (self.anchor - self.mid) + rng.gauss(0.0, self.sd)
        self.spread = 1 if rng.random() < 0.7 else 2
        self._rebuild()
        self.consumed.clear()
        u = rng.random()
        buy = rng.random() < 0.5
        tsize = self._size()
        if u < self.trade_probability:
            level = self.book.asks[0] if buy else self.book.bids[0]
            size = min(tsize, level[1])
            self.trade = Trade(level[0], size, buy)
            self.last_ticks = level[0]
            self.last_size = size
            self.volume += size
            self.high = max(self.high, level[0])
            self.low = min(self.low, level[0])
        else:
            self.trade = None

    # ---- views used by the order engine and the data feeds
    @property
    def bid(self) -> int:
        return self.book.bids[0][0]

    @property
    def ask(self) -> int:
        return self.book.asks[0][0]

    @property
    def mid_ticks(self) -> float:
        return (self.bid + self.ask) / 2.0

    def available(self, buy_side_of_book: bool, level: Level) -> float:
        return level[1] - self.consumed.get((buy_side_of_book, level[0]), 0.0)

    def consume(self, buy_side_of_book: bool, ticks: int, qty: float) -> None:
        key = (buy_side_of_book, ticks)
        self.consumed[key] = self.consumed.get(key, 0.0) + qty


def depth_ops(old: list[Level], new: list[Level], rows: int, descending: bool) -> list[tuple[int, int, Level]]:
    """IB's position-based depth operations turning `old` into `new` (top `rows` rows).

    Returns (position, operation, level) with operation 0=insert (rows below shift down, and
    on a full book the last row falls off, as at IB: no delete is sent for it), 1=update,
    2=delete (rows below shift up). A client applying them in order to its copy of `old`,
    keeping at most `rows` rows, ends with exactly `new`.
    """
    cur = list(old[:rows])
    target = new[:rows]
    ops: list[tuple[int, int, Level]] = []

    def before(a: int, b: int) -> bool:   # does price a sort ahead of price b on this side?
        return a > b if descending else a < b

    for i, lvl in enumerate(target):
        while i < len(cur) and before(cur[i][0], lvl[0]):
            ops.append((i, 2, cur[i]))
            del cur[i]
        if i < len(cur) and cur[i][0] == lvl[0]:
            if cur[i][1] != lvl[1]:
                ops.append((i, 1, lvl))
                cur[i] = lvl
        else:
            ops.append((i, 0, lvl))
            cur.insert(i, lvl)
            if len(cur) > rows:  # the last row falls off the client's book by itself
                del cur[rows]
    while len(cur) > len(target):
        last = len(cur) - 1
        ops.append((last, 2, cur[last]))
        del cur[last]
    return ops


class Market:
    """All price processes plus the simulated clock and the per-second print history."""

    def __init__(self, instruments: list[Instrument], seed: int, levels: int, step_ms: float,
                 start_time: float, mean_reversion: float = 0.0) -> None:
        self.seed = seed
        self.step_ms = step_ms
        self.start_time = start_time
        self.steps = 0
        self.processes = {i.con_id: PriceProcess(i, seed, levels, step_ms, mean_reversion) for i in instruments}
        self.history: dict[int, dict[int, Bucket]] = {i.con_id: {} for i in instruments}
        self._synthetic: dict[tuple[int, int], list[tuple[int, int, int, int, float, int]]] = {}
        # market replay (replay.py) sets this: the simulated time is then the data's
        self.clock: "Callable[[], float] | None" = None
        # the clock control (Broker.set_clock): simulated time is `_t0` at step `_s0`, and each
        # step after it covers step_ms x `speed` of simulated time (speed 1: one step per step_ms)
        self.speed = 1.0
        self._t0 = start_time
        self._s0 = 0
        # --sessions on (sessions.TradingHours): instruments outside their trading hours; their
        # price process does not step (no trade, no quote change) until they open again
        self.closed: set[int] = set()

    def now(self) -> float:
        """Simulated time in epoch seconds."""
        if self.clock is not None:
            return self.clock()
        return self._t0 + (self.steps - self._s0) * self.step_ms / 1000.0 * self.speed

    def set_clock(self, at: float | None = None, speed: float | None = None) -> float:
        """Jump the simulated clock to `at` and/or run it `speed` times faster than the wall
        clock from now on (each step then covers step_ms x speed). Returns the new time."""
        if speed is not None and not (speed > 0 and speed != float("inf")):
            raise ValueError("speed must be a positive number")
        now = self.now()
        self._t0 = float(at) if at is not None else now
        self._s0 = self.steps
        if speed is not None:
            self.speed = float(speed)
        return self._t0

    def step(self) -> None:
        self.steps += 1
        second = int(self.now())
        closed = self.closed
        for con_id, proc in self.processes.items():
            if closed and con_id in closed:
                proc.trade = None          # out of hours: the book keeps its last values
                continue
            proc.step()
            t = proc.trade
            if t is not None:
                b = self.history[con_id].get(second)
                if b is None:
                    self.history[con_id][second] = Bucket(t.ticks, t.ticks, t.ticks, t.ticks, t.size, 1)
                else:
                    b.high = max(b.high, t.ticks)
                    b.low = min(b.low, t.ticks)
                    b.close = t.ticks
                    b.volume += t.size
                    b.count += 1

    # ---- historical bars consistent with the live path
    def _synthetic_bars(self, proc: PriceProcess, bar_seconds: int, count: int) -> list[tuple[int, int, int, int, float, int]]:
        """Bars before the simulator started: a walk backwards from the opening price, seeded per
        (seed, conId, bar size) so repeated requests agree. Index 0 is the bar ending at start."""
        key = (proc.inst.con_id, bar_seconds)
        bars = self._synthetic.get(key, [])
        if len(bars) >= count:
            return bars
        # regenerate from the anchor so a longer request extends, never changes, a shorter one
        rng = random.Random(hash((self.seed, proc.inst.con_id, bar_seconds)) & 0xFFFFFFFF)
        bars = []
        close = proc.inst.to_ticks(proc.inst.spec.price)
        sd = max(1.0, proc.inst.spec.volatility_ticks * math.sqrt(bar_seconds) * 0.5)
        while len(bars) < min(count, 200_000):
            move = int(round(rng.gauss(0, sd)))
            open_ = close - move
            hi = max(open_, close) + int(rng.random() * sd / 2)
            lo = min(open_, close) - int(rng.random() * sd / 2)
            vol = float(int(proc.level_size * (1 + rng.random() * 20) * max(1, bar_seconds / 60)))
            bars.append((open_, hi, lo, close, vol, max(1, int(vol / proc.level_size))))
            close = open_
        self._synthetic[key] = bars
        # stored as (open, high, low, close) with bars[k][0] the next older bar's close
        return bars

    def bars(self, con_id: int, end: float, bar_seconds: int, count: int) -> list[tuple[int, int, int, int, int, float, int]]:
        """`count` bars of `bar_seconds` ending at `end`: (start, o, h, l, c, volume, trades)."""
        proc = self.processes[con_id]
        hist = self.history[con_id]
        start_grid = int(self.start_time) - int(self.start_time) % bar_seconds
        last_start = int(end) - int(end) % bar_seconds
        if last_start >= end:  # the bar that starts at the end time is not in the window
            last_start -= bar_seconds
        first_start = last_start - (count - 1) * bar_seconds
        older = max(0, (start_grid - first_start) // bar_seconds + 1)
        synthetic = self._synthetic_bars(proc, bar_seconds, older + 1) if older else []
        out = []
        prev_close = proc.inst.to_ticks(proc.inst.spec.price)
        for k in range(count):
            t0 = first_start + k * bar_seconds
            if t0 < start_grid:
                idx = (start_grid - t0) // bar_seconds - 1
                if idx < len(synthetic):
                    o, h, l, c, v, n = synthetic[idx]
                    out.append((t0, o, h, l, c, v, n))
                    prev_close = c
                continue
            o = h = l = c = None
            vol, n = 0.0, 0
            for s in range(t0, t0 + bar_seconds):
                b = hist.get(s)
                if b is None:
                    continue
                if o is None:
                    o, h, l = b.open, b.high, b.low
                else:
                    h, l = max(h, b.high), min(l, b.low)
                c = b.close
                vol += b.volume
                n += b.count
            if o is None:
                o = h = l = c = prev_close
            out.append((t0, o, h, l, c, vol, n))
            prev_close = c
        return out
