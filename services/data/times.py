"""Times into int64 nanoseconds since the Unix epoch, UTC; zones by name.

``zone("America/New_York")`` is an IANA zone (zoneinfo); ``zone("UTC")``; a fixed offset is
``"UTC-5"``, ``"UTC+05:30"`` or ``"-05:00"``; ``"EST"`` is the fixed UTC-5 offset (North
American Eastern Standard Time all year, without daylight saving: HistData's zone).

Local wall-clock times are converted with the zone's offset at that instant. A wall time that
does not exist (skipped by a spring-forward change) or exists twice (repeated by a fall-back
change) is refused with a ``ValueError`` saying so: the file does not say which instant it
meant, and guessing would shift rows by an hour without a word.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["NS_PER_DAY", "NS_PER_SECOND", "LocalClock", "format_ns", "zone", "zone_name"]

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")

#: names taken as fixed offsets, whatever the tz database says about their history
FIXED = {"EST": timezone(timedelta(hours=-5), "EST"), "UTC": timezone.utc, "Z": timezone.utc,
         "GMT": timezone.utc}


def zone(name: str) -> tzinfo:
    """The zone called ``name``; ValueError (naming it) if there is none."""
    text = (name or "").strip()
    if text.upper() in FIXED:
        return FIXED[text.upper()]
    match = _OFFSET.match(text.upper())
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"offset out of range: {name!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if sign == "-" else delta, text)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as "
                         f"America/New_York, UTC, EST (fixed UTC-5) or an offset such as "
                         f"UTC-5") from None


def zone_name(tz: tzinfo) -> str:
    """The name ``zone()`` takes back."""
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is timezone.utc:
        return "UTC"
    return tz.tzname(None) or str(tz)


def days_since_epoch(year: int, month: int, day: int) -> int:
    return date(year, month, day).toordinal() - _EPOCH_ORDINAL


class LocalClock:
    """Local wall-clock times in one zone to ns UTC; offsets cached per (day, hour, minute),
    the finest step any zone changes its offset by."""

    _ISO = re.compile(
        r"^\s*(\d{4})-?(\d{2})-?(\d{2})"
        r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
        r"\s*(Z|[+-]\d{2}:?\d{2})?\s*$")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._offsets: dict[tuple[int, int, int], int] = {}
        self._days: dict[tuple[int, int, int], int] = {}

    def offset_ns(self, year: int, month: int, day: int, hour: int, minute: int) -> int:
        """UTC offset of this local minute in ns; ValueError if it is skipped or repeated."""
        key = (year * 10000 + month * 100 + day, hour, minute)
        cached = self._offsets.get(key)
        if cached is not None:
            return cached
        wall = datetime(year, month, day, hour, minute)
        early = wall.replace(tzinfo=self.tz)
        late = wall.replace(tzinfo=self.tz, fold=1)
        off0, off1 = early.utcoffset(), late.utcoffset()
        if off0 != off1:
            back = (wall - off0).replace(tzinfo=timezone.utc).astimezone(self.tz)
            if back.replace(tzinfo=None) != wall:
                raise ValueError(f"{wall:%Y-%m-%d %H:%M} does not exist in {zone_name(self.tz)}"
                                 f" (skipped by a daylight-saving change)")
            raise ValueError(f"{wall:%Y-%m-%d %H:%M} is ambiguous in {zone_name(self.tz)} "
                             f"(repeated by a daylight-saving change); give times in UTC "
                             f"or with an offset")
        value = int(off0.total_seconds()) * NS_PER_SECOND
        self._offsets[key] = value
        return value

    def day(self, year: int, month: int, day: int) -> int:
        key = (year, month, day)
        cached = self._days.get(key)
        if cached is None:
            cached = self._days[key] = days_since_epoch(year, month, day)
        return cached

    def to_ns(self, year: int, month: int, day: int, hour: int = 0, minute: int = 0,
              second: int = 0, nanos: int = 0) -> int:
        """A local wall time to ns UTC (ValueError for a field out of range)."""
        if not (0 <= hour < 24 and 0 <= minute < 60 and 0 <= second < 60):
            raise ValueError(f"time out of range: {hour:02d}:{minute:02d}:{second:02d}")
        local = (self.day(year, month, day) * 86_400 + hour * 3600 + minute * 60
                 + second) * NS_PER_SECOND + nanos
        return local - self.offset_ns(year, month, day, hour, minute)

    def parse(self, text: str) -> int:
        """``YYYY-MM-DD[ T]HH:MM[:SS[.fraction]][Z|±HH:MM]`` or ``YYYY-MM-DD`` (midnight), also
        without the dashes; up to nine fraction digits (ns). An explicit offset wins over the
        zone."""
        match = self._ISO.match(text)
        if match is None:
            raise ValueError(f"not a time (want YYYY-MM-DD HH:MM:SS.fffffffff): {text!r}")
        y, mo, d, h, mi, s, frac, off = match.groups()
        nanos = int(frac.ljust(9, "0")) if frac else 0
        if off is None:
            return self.to_ns(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                              nanos)
        if off == "Z":
            off_min = 0
        else:
            sign = -1 if off[0] == "-" else 1
            off_min = sign * (int(off[1:3]) * 60 + int(off[-2:]))
        clock = LocalClock(timezone(timedelta(minutes=off_min)))
        return clock.to_ns(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                           nanos)


def format_ns(ns: int) -> str:
    """ns UTC as ``YYYY-MM-DDTHH:MM:SS.fffffffffZ``."""
    seconds, nanos = divmod(int(ns), NS_PER_SECOND)
    stamp = datetime(1970, 1, 1) + timedelta(seconds=seconds)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"
