# SPDX-License-Identifier: GPL-3.0-or-later
"""Plain-Python reference for core.book and core.signals.

Used only by the tests (and the benchmark as a baseline) to check the compiled
code; core/ never imports it. Written the obvious way: lists, deques, and
statistics recomputed from scratch on every update.
"""
from __future__ import annotations

import math
from collections import deque

ASK, BID = 0, 1
INSERT, UPDATE, DELETE = 0, 1, 2

OK = 0
ERR_SIDE = 1
ERR_OPERATION = 2
ERR_POSITION = 3
ERR_PRICE = 4
ERR_SIZE = 5
ERR_GAP = 6
ERR_LENGTH = 7


class RefBookError(ValueError):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


def _price_ok(price: float) -> bool:
    return math.isfinite(price)


def _size_ok(size: float) -> bool:
    return math.isfinite(size) and size >= 0


class RefBook:
    """Each side is a list of [price, size] rows, best first."""

    def __init__(self, depth: int = 10) -> None:
        self.depth = depth
        self.bids: list[list[float]] = []
        self.asks: list[list[float]] = []
        self.stale = False
        self.stale_reason = OK

    # -- commands --

    def _reject(self, status: int) -> None:
        self.stale = True
        self.stale_reason = status
        raise RefBookError(status)

    def _rows(self, side: int) -> list[list[float]]:
        if side == BID:
            return self.bids
        if side == ASK:
            return self.asks
        self._reject(ERR_SIDE)

    def update_depth(self, position: int, operation: int, side: int, price: float, size: float) -> None:
        rows = self._rows(side)
        if operation not in (INSERT, UPDATE, DELETE):
            self._reject(ERR_OPERATION)
        if not 0 <= position < self.depth:
            self._reject(ERR_POSITION)
        if not _price_ok(price):
            self._reject(ERR_PRICE)
        if not _size_ok(size):
            self._reject(ERR_SIZE)
        if operation == INSERT:
            if position > len(rows):
                self._reject(ERR_GAP)
            rows.insert(position, [price, size])
            del rows[self.depth:]
        elif operation == UPDATE:
            if position >= len(rows):
                self._reject(ERR_GAP)
            rows[position] = [price, size]
        else:
            if position >= len(rows):
                self._reject(ERR_GAP)
            del rows[position]

    def update_level(self, side: int, price: float, size: float) -> None:
        rows = self._rows(side)
        if not _price_ok(price):
            self._reject(ERR_PRICE)
        if not _size_ok(size):
            self._reject(ERR_SIZE)
        i = 0
        if side == BID:
            while i < len(rows) and rows[i][0] > price:
                i += 1
        else:
            while i < len(rows) and rows[i][0] < price:
                i += 1
        if i < len(rows) and rows[i][0] == price:
            if size > 0:
                rows[i][1] = size
            else:
                del rows[i]
        elif size > 0 and i < self.depth:
            rows.insert(i, [price, size])
            del rows[self.depth:]

    def _top(self, side: int, price: float, size: float) -> None:
        rows = self._rows(side)
        rows.clear()
        if size > 0:
            rows.append([price, size])

    def update_bid(self, price: float, size: float) -> None:
        self.update_top_side(BID, price, size)

    def update_ask(self, price: float, size: float) -> None:
        self.update_top_side(ASK, price, size)

    def update_top_side(self, side: int, price: float, size: float) -> None:
        self._rows(side)
        if not _price_ok(price):
            self._reject(ERR_PRICE)
        if not _size_ok(size):
            self._reject(ERR_SIZE)
        self._top(side, price, size)

    def update_top(self, bid_price: float, bid_size: float, ask_price: float, ask_size: float) -> None:
        if not (_price_ok(bid_price) and _price_ok(ask_price)):
            self._reject(ERR_PRICE)
        if not (_size_ok(bid_size) and _size_ok(ask_size)):
            self._reject(ERR_SIZE)
        self._top(BID, bid_price, bid_size)
        self._top(ASK, ask_price, ask_size)

    def apply_snapshot(self, bids=(), asks=()) -> None:
        bids = [[float(p), float(s)] for p, s in bids]
        asks = [[float(p), float(s)] for p, s in asks]
        if len(bids) > self.depth or len(asks) > self.depth:
            self._reject(ERR_LENGTH)
        for p, s in bids + asks:
            if not _price_ok(p):
                self._reject(ERR_PRICE)
            if not _size_ok(s):
                self._reject(ERR_SIZE)
        self.bids, self.asks = bids, asks
        self.stale = False
        self.stale_reason = OK

    def apply_batch(self, records) -> int:
        for i, (p, o, s, px, sz) in enumerate(records):
            try:
                self.update_depth(p, o, s, px, sz)
            except RefBookError:
                return i
        return len(records)

    def reset(self) -> None:
        self.bids, self.asks = [], []
        self.stale = False
        self.stale_reason = OK

    # -- queries --

    def best_bid_price(self) -> float:
        return self.bids[0][0] if self.bids else math.nan

    def best_bid_size(self) -> float:
        return self.bids[0][1] if self.bids else math.nan

    def best_ask_price(self) -> float:
        return self.asks[0][0] if self.asks else math.nan

    def best_ask_size(self) -> float:
        return self.asks[0][1] if self.asks else math.nan

    def mid(self) -> float:
        if not self.bids or not self.asks:
            return math.nan
        return (self.bids[0][0] + self.asks[0][0]) * 0.5

    def spread(self) -> float:
        if not self.bids or not self.asks:
            return math.nan
        return self.asks[0][0] - self.bids[0][0]

    def microprice(self) -> float:
        if not self.bids or not self.asks:
            return math.nan
        (bp, bs), (ap, a_s) = self.bids[0], self.asks[0]
        if bs + a_s == 0:
            return math.nan
        return (bp * a_s + ap * bs) / (bs + a_s)

    def imbalance(self, levels: int = 1) -> float:
        if levels < 1:
            return math.nan
        # Explicit loops, not sum(): the order of float additions must match the C code.
        b = 0.0
        for i, (_, s) in enumerate(self.bids[:levels]):
            b += (levels - i) * s
        a = 0.0
        for i, (_, s) in enumerate(self.asks[:levels]):
            a += (levels - i) * s
        if b + a == 0:
            return math.nan
        return (b - a) / (b + a)

    def size_imbalance(self, levels: int = 5) -> float:
        if levels < 1:
            return math.nan
        b = 0.0
        for _, s in self.bids[:levels]:
            b += s
        a = 0.0
        for _, s in self.asks[:levels]:
            a += s
        if b + a == 0:
            return math.nan
        return (b - a) / (b + a)

    def avg_fill_price(self, buy: bool, quantity: float) -> float:
        if not (quantity > 0 and math.isfinite(quantity)):
            return math.nan
        left, notional = quantity, 0.0
        for price, size in self.asks if buy else self.bids:
            take = min(size, left)
            notional += take * price
            left -= take
            if left <= 0:
                return notional / quantity
        return math.nan

    def size_within_ticks(self, side: int, ticks: int, tick_size: float) -> float:
        if ticks < 0 or not (tick_size > 0 and math.isfinite(tick_size)) or side not in (BID, ASK):
            return math.nan
        rows = self.bids if side == BID else self.asks
        if not rows:
            return 0.0
        best = rows[0][0]
        total = 0.0
        if side == BID:
            limit = best - (ticks + 0.5) * tick_size
            for p, s in rows:
                if p >= limit:
                    total += s
        else:
            limit = best + (ticks + 0.5) * tick_size
            for p, s in rows:
                if p <= limit:
                    total += s
        return total

    @property
    def crossed(self) -> bool:
        return bool(self.bids and self.asks and self.bids[0][0] > self.asks[0][0])

    @property
    def locked(self) -> bool:
        return bool(self.bids and self.asks and self.bids[0][0] == self.asks[0][0])


# -- signals ------------------------------------------------------------------
# Inputs the compiled code skips (non-finite, out of domain) are skipped here too.


class RefEMA:
    def __init__(self, alpha=None, span=None, min_periods=1):
        self.alpha = alpha if alpha is not None else 2.0 / (span + 1.0)
        self.min_periods = min_periods
        self.count = 0
        self.state = math.nan
        self.value = math.nan

    def update(self, x):
        if not math.isfinite(x):
            return self.value
        self.count += 1
        self.state = x if self.count == 1 else self.state + self.alpha * (x - self.state)
        self.value = self.state if self.count >= self.min_periods else math.nan
        return self.value


class _RefWindow:
    def __init__(self, window):
        self.window = window
        self.xs = deque(maxlen=window)
        self.value = math.nan

    def full(self):
        return len(self.xs) == self.window

    def mean(self):
        return math.fsum(self.xs) / len(self.xs)

    def var(self, ddof):
        m = self.mean()
        return math.fsum((x - m) ** 2 for x in self.xs) / (len(self.xs) - ddof)


class RefRollingMean(_RefWindow):
    def update(self, x):
        if math.isfinite(x):
            self.xs.append(x)
            self.value = self.mean() if self.full() else math.nan
        return self.value


class RefRollingStd(_RefWindow):
    def __init__(self, window, ddof=1):
        super().__init__(window)
        self.ddof = ddof

    def update(self, x):
        if math.isfinite(x):
            self.xs.append(x)
            self.value = math.sqrt(self.var(self.ddof)) if self.full() else math.nan
        return self.value


class RefZScore(_RefWindow):
    def __init__(self, window, ddof=1):
        super().__init__(window)
        self.ddof = ddof

    def update(self, x):
        if math.isfinite(x):
            self.xs.append(x)
            self.value = math.nan
            if self.full():
                var = self.var(self.ddof)
                if var > 0:
                    self.value = (x - self.mean()) / math.sqrt(var)
        return self.value


class RefVWAP:
    def __init__(self, window=0):
        self.window = window
        self.trades = deque(maxlen=window)  # rolling: recomputed from these each update
        self.pv = 0.0  # session: running sums
        self.v = 0.0
        self.value = math.nan

    def update(self, price, volume):
        if not (math.isfinite(price) and math.isfinite(volume) and volume >= 0):
            return self.value
        if not self.window:
            self.pv += price * volume
            self.v += volume
            self.value = self.pv / self.v if self.v > 0 else math.nan
            return self.value
        self.trades.append((price, volume))
        v = math.fsum(q for _, q in self.trades)
        if len(self.trades) < self.window or not v > 0:
            self.value = math.nan
        else:
            self.value = math.fsum(p * q for p, q in self.trades) / v
        return self.value


class RefRealizedVolatility:
    def __init__(self, window, periods_per_year=1.0):
        self.window = window
        self.ppy = periods_per_year
        self.prices = deque(maxlen=window + 1)
        self.value = math.nan

    def update(self, price):
        if not (price > 0 and math.isfinite(price)):
            return self.value
        self.prices.append(price)
        if len(self.prices) == self.window + 1:
            ps = list(self.prices)
            r2 = [math.log(b / a) ** 2 for a, b in zip(ps, ps[1:])]
            self.value = math.sqrt(self.ppy * math.fsum(r2) / self.window)
        return self.value


class RefImbalance:
    def __init__(self):
        self.value = math.nan

    def update(self, bid_size, ask_size):
        if not (_size_ok(bid_size) and _size_ok(ask_size)):
            return self.value
        total = bid_size + ask_size
        self.value = (bid_size - ask_size) / total if total > 0 else math.nan
        return self.value


class RefMicroprice:
    def __init__(self):
        self.value = math.nan

    def update(self, bid_price, bid_size, ask_price, ask_size):
        if not (_price_ok(bid_price) and _price_ok(ask_price) and _size_ok(bid_size) and _size_ok(ask_size)):
            return self.value
        total = bid_size + ask_size
        self.value = (bid_price * ask_size + ask_price * bid_size) / total if total > 0 else math.nan
        return self.value
