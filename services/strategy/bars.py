"""Bars of any size from 1 second to 1 day, made from IB's 5-second bars or from trades.

IB streams one bar size only (``reqRealTimeBars``: 5 seconds); every other size is built
here, identically live and in a backtest. A size that is a multiple of 5 seconds is
aggregated from the 5-second bars (open of the first, high/low over all, close of the last,
volume and count summed, WAP volume-weighted); 1, 2 and 3 second bars are built from the
trade prints (``TradeTick``). Windows are aligned on the clock of the exchange's zone
(``America/New_York`` by default): a 1-minute bar starts on the minute, a 1-hour bar on the
hour, a 1-day bar at local midnight. Only complete windows are delivered: the window that was
joined midway (the first one after a subscription) is dropped, and a bar is emitted when its
last 5-second bar (or, from trades, the first print of a later window) arrives.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from proto.schema import Bar

NS = 1_000_000_000
IB_BAR = 5  # seconds: the only size IB streams (reqRealTimeBars)
EXCHANGE_ZONE = "America/New_York"

#: IB's barSizeSetting strings from 1 second to 1 day, in seconds
BAR_SIZES: dict[str, int] = {
    "1 secs": 1, "2 secs": 2, "3 secs": 3, "5 secs": 5, "10 secs": 10, "15 secs": 15,
    "30 secs": 30, "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10800, "4 hours": 14400, "8 hours": 28800, "1 day": 86400}
_NAMES = {v: k for k, v in BAR_SIZES.items()}
_ALIASES = {"sec": "secs", "second": "secs", "seconds": "secs", "s": "secs", "mins": "min",
            "minute": "min", "minutes": "min", "m": "min", "hours": "hour", "h": "hour",
            "days": "day", "d": "day"}


class BarSizeError(ValueError):
    """A bar size that is not one of ``BAR_SIZES``."""


def bar_seconds(bar_size: str | int) -> int:
    """The length in seconds of a bar size given as IB writes it ("1 secs", "5 secs",
    "1 min", "15 mins", "1 hour", "1 day"), a lenient spelling of it ("1 sec", "1 minute",
    "2 hours"), or as a number of seconds. Raises ``BarSizeError`` for anything else."""
    if isinstance(bar_size, int) and not isinstance(bar_size, bool):
        if bar_size in _NAMES:
            return bar_size
        raise BarSizeError(f"bar size {bar_size!r} s is not one of IB's: {', '.join(BAR_SIZES)}")
    text = " ".join(str(bar_size).lower().split())
    if text in BAR_SIZES:
        return BAR_SIZES[text]
    count, _, unit = text.partition(" ")
    unit = _ALIASES.get(unit, unit)
    if unit == "min" and count != "1":
        unit = "mins"
    if unit == "hour" and count != "1":
        unit = "hours"
    if unit == "secs" and count == "1":
        unit = "secs"
    key = f"{count} {unit}"
    if key in BAR_SIZES:
        return BAR_SIZES[key]
    raise BarSizeError(f"bar size {bar_size!r} is not one of IB's: {', '.join(BAR_SIZES)}")


def bar_size_name(seconds: int) -> str:
    """IB's string for a size in seconds (60 -> "1 min")."""
    return _NAMES[bar_seconds(seconds)]


class WindowClock:
    """Window starts aligned on the exchange zone's wall clock (offsets cached per hour)."""

    def __init__(self, seconds: int, zone: str = EXCHANGE_ZONE) -> None:
        self.seconds = seconds
        self.zone = ZoneInfo(zone)
        self._hour = -1
        self._offset = 0

    def _utc_offset(self, t_s: int) -> int:
        hour = t_s // 3600
        if hour != self._hour:
            dt = datetime.fromtimestamp(t_s, timezone.utc).astimezone(self.zone)
            self._offset = int(dt.utcoffset().total_seconds())
            self._hour = hour
        return self._offset

    def start(self, t_ns: int) -> int:
        """The start (ns) of the window holding ``t_ns``."""
        t_s = t_ns // NS
        local = t_s + self._utc_offset(t_s)
        return (t_s - local % self.seconds) * NS


class _Building:
    __slots__ = ("start_ns", "open", "high", "low", "close", "volume", "wap_sum", "count",
                 "complete_from_start")

    def __init__(self, start_ns: int, open_: float, from_start: bool) -> None:
        self.start_ns = start_ns
        self.open = self.high = self.low = self.close = open_
        self.volume = 0.0
        self.wap_sum = 0.0
        self.count = 0
        self.complete_from_start = from_start


class BarAggregator:
    """Bars of ``seconds`` for one symbol from 5-second bars (``add_bar``) or trade prints
    (``add_trade``); each call returns the bars it completed (usually none or one)."""

    def __init__(self, symbol: str, seconds: int, zone: str = EXCHANGE_ZONE,
                 keep_partial_first: bool = False) -> None:
        self.symbol = symbol
        self.seconds = bar_seconds(seconds)
        self.clock = WindowClock(self.seconds, zone)
        self.keep_partial_first = keep_partial_first
        self.current: _Building | None = None
        self.emitted = 0

    def _close(self) -> list[Bar]:
        b = self.current
        self.current = None
        if b is None or not (b.complete_from_start or self.keep_partial_first):
            return []
        self.emitted += 1
        wap = b.wap_sum / b.volume if b.volume > 0 else (b.high + b.low + b.close) / 3.0
        return [Bar(symbol=self.symbol, start_ns=b.start_ns, seconds=self.seconds,
                    open=b.open, high=b.high, low=b.low, close=b.close, volume=b.volume,
                    wap=wap, count=b.count)]

    def _window(self, t_ns: int, first_sub_ns: int, price: float) -> list[Bar]:
        """Close the window in progress if ``t_ns`` is past it; open the one holding t_ns."""
        out: list[Bar] = []
        start = self.clock.start(t_ns)
        b = self.current
        if b is not None and start != b.start_ns:
            out = self._close()
        if self.current is None:
            self.current = _Building(start, price, first_sub_ns <= start)
        return out

    def add_bar(self, bar: Bar) -> list[Bar]:
        """One of IB's 5-second bars (or any bar whose size divides ``seconds``)."""
        if not (math.isfinite(bar.open) and math.isfinite(bar.close)):
            return []
        out = self._window(bar.start_ns, bar.start_ns, bar.open)
        b = self.current
        b.high = max(b.high, bar.high)
        b.low = min(b.low, bar.low)
        b.close = bar.close
        b.volume += bar.volume
        wap = bar.wap if math.isfinite(bar.wap) else bar.close
        b.wap_sum += wap * bar.volume
        b.count += bar.count
        sub = max(1, bar.seconds or IB_BAR)
        if bar.start_ns + sub * NS >= b.start_ns + self.seconds * NS:
            out += self._close()  # its last sub-bar: the window is complete
        return out

    def add_trade(self, t_ns: int, price: float, size: float) -> list[Bar]:
        """One trade print at ``t_ns``: closes the previous window when it starts a new one."""
        if not (math.isfinite(price) and price > 0):
            return []
        if self.current is None and self._first_trade_ns is None:
            self._first_trade_ns = t_ns
        out = self._window(t_ns, self._first_trade_ns if self.emitted == 0 else 0, price)
        b = self.current
        b.high = max(b.high, price)
        b.low = min(b.low, price)
        b.close = price
        b.volume += size
        b.wap_sum += price * size
        b.count += 1
        return out

    _first_trade_ns: int | None = None

    def flush(self, now_ns: int) -> list[Bar]:
        """The window in progress, if ``now_ns`` is past its end (no print came after it)."""
        b = self.current
        if b is not None and now_ns >= b.start_ns + self.seconds * NS:
            return self._close()
        return []


def aggregate(bars: list[Bar], seconds: int, zone: str = EXCHANGE_ZONE,
              until_ns: int | None = None) -> list[Bar]:
    """``bars`` (oldest first, each of a size dividing ``seconds``) as bars of ``seconds``;
    complete windows only (a window cut by the first bar or by ``until_ns`` is left out)."""
    if not bars:
        return []
    agg = BarAggregator(bars[0].symbol, seconds, zone)
    out: list[Bar] = []
    for bar in bars:
        out += agg.add_bar(bar)
    if until_ns is not None:
        out += agg.flush(until_ns)
    return out
