"""Timers for strategies: by interval, by time of day in a zone, and at the market's open and
close (a trading calendar). Driven by the host's clock: the wall clock live, the recording's
time in a backtest, so the same timers fire at the same moments of the data in both.

The calendar is NYSE's regular session, 09:30-16:00 America/New_York, Monday to Friday,
without the exchange's holidays list unless one is given (``TradingCalendar(holidays=...)``)
and without early closes.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

NS = 1_000_000_000
EXCHANGE_ZONE = "America/New_York"


def parse_time_of_day(text: str | time) -> time:
    """``"15:55"`` or ``"15:55:30"`` (24-hour) or a ``datetime.time``; ``ValueError`` else."""
    if isinstance(text, time):
        return text
    parts = str(text).strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"time of day {text!r} must be HH:MM or HH:MM:SS (24-hour)")
    h, m, s = (int(p) for p in parts + ["0"] * (3 - len(parts)))
    return time(h, m, s)


@dataclass
class TradingCalendar:
    """A market's regular session in its zone: ``open``-``close`` local time, Monday to
    Friday, less ``holidays`` (dates)."""

    zone: str = EXCHANGE_ZONE
    open: time = time(9, 30)
    close: time = time(16, 0)
    holidays: frozenset[date] = frozenset()

    def is_trading_day(self, day: date) -> bool:
        """Monday to Friday, not one of ``holidays``."""
        return day.weekday() < 5 and day not in self.holidays

    def is_open(self, t_ns: int) -> bool:
        """Is the regular session open at ``t_ns`` (ns since the epoch)?"""
        local = datetime.fromtimestamp(t_ns / NS, ZoneInfo(self.zone))
        return self.is_trading_day(local.date()) and self.open <= local.time() < self.close

    def next_event(self, after_ns: int) -> tuple[int, str]:
        """The next open or close strictly after ``after_ns``: (t_ns, "open" | "close")."""
        zone = ZoneInfo(self.zone)
        day = datetime.fromtimestamp(after_ns / NS, zone).date()
        for _ in range(30):
            if self.is_trading_day(day):
                for when, kind in ((self.open, "open"), (self.close, "close")):
                    t = _ns(datetime.combine(day, when, zone))
                    if t > after_ns:
                        return t, kind
            day += timedelta(days=1)
        raise ValueError("no trading day within 30 days")


def _ns(dt: datetime) -> int:
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


@dataclass(order=True)
class _Entry:
    due_ns: int
    seq: int
    timer: "Timer" = field(compare=False)


class Timer:
    """A timer ``Strategy.every`` or ``Strategy.at`` made; ``cancel()`` stops it."""

    def __init__(self, fn: Callable, interval_ns: int = 0, at: time | None = None,
                 zone: str = EXCHANGE_ZONE, trading_days: TradingCalendar | None = None,
                 name: str = "") -> None:
        self.fn = fn
        self.interval_ns = interval_ns
        self.at = at
        self.zone = zone
        self.calendar = trading_days
        self.name = name or getattr(fn, "__name__", "timer")
        self.cancelled = False
        self.fired = 0

    def cancel(self) -> None:
        """It will not fire again (a no-op on a cancelled timer)."""
        self.cancelled = True

    def next_due(self, after_ns: int) -> int:
        """When it fires next after ``after_ns``."""
        if self.interval_ns:
            return after_ns + self.interval_ns
        zone = ZoneInfo(self.zone)
        day = datetime.fromtimestamp(after_ns / NS, zone).date()
        for _ in range(400):
            if self.calendar is None or self.calendar.is_trading_day(day):
                t = _ns(datetime.combine(day, self.at, zone))
                if t > after_ns:
                    return t
            day += timedelta(days=1)
        raise ValueError(f"timer {self.name}: no due time within 400 days")

    def __repr__(self) -> str:
        what = f"every {self.interval_ns / NS:g}s" if self.interval_ns else \
            f"at {self.at.isoformat()} {self.zone}"
        return f"Timer({self.name}, {what}{', cancelled' if self.cancelled else ''})"


class TimerQueue:
    """Timers in due order; the host calls ``run(now_ns)`` at ``next_due()`` or later."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()

    def add(self, timer: Timer, due_ns: int) -> None:
        heapq.heappush(self._heap, _Entry(due_ns, next(self._seq), timer))

    def next_due(self) -> int | None:
        while self._heap and self._heap[0].timer.cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].due_ns if self._heap else None

    def due(self, now_ns: int) -> Iterable[tuple[int, Timer]]:
        """Pop the timers due at ``now_ns`` (each re-armed before it is yielded)."""
        while self._heap and self._heap[0].due_ns <= now_ns:
            entry = heapq.heappop(self._heap)
            timer = entry.timer
            if timer.cancelled:
                continue
            if timer.interval_ns or timer.at is not None:  # else a one-shot
                # interval timers keep their phase; a host that was late fires once
                nxt = timer.next_due(entry.due_ns if timer.interval_ns else now_ns)
                if timer.interval_ns and nxt <= now_ns:
                    nxt = now_ns + timer.interval_ns
                self.add(timer, nxt)
            timer.fired += 1
            yield entry.due_ns, timer

    def __len__(self) -> int:
        return sum(1 for e in self._heap if not e.timer.cancelled)

