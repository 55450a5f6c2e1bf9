"""IB's time strings -> ns since the epoch: the one parser the bridge uses for every IB time.

IB writes times in several forms (see ../shared/fixtures/tws for captured ones):

- ``yyyymmdd hh:mm:ss ZONE``: execution times and completed-order times in the account's zone
  (``20260413 15:27:04 US/Eastern``, ``20250708 02:35:00 America/New_York``), historical bars
  with formatDate=1, and the connection time of the handshake, whose zone is the gateway host's,
  often a Windows name (``20260415 18:28:40 Central European Standard Time``) or a legacy
  abbreviation (``20260412 18:39:37 CET``). ZONE is an IANA name, one of the legacy names
  zoneinfo knows (US/Eastern, CET, EST5EDT...), or a Windows name (``WINDOWS_ZONES``);
- ``yyyymmdd-hh:mm:ss``: UTC (``20260410-16:00:00``);
- ``yyyymmdd hh:mm:ss`` with no zone: the gateway's own zone, learned from the connection time;
- epoch seconds (formatDate=2 bars, currentTime).

An unknown zone (or a zone-less time before the connection's zone is known) is an error,
counted in ``ib_time_errors`` and logged once per zone name: the time becomes 0 ("unknown"),
never a guess in UTC and never an exception.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, MutableMapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc

#: Windows time-zone names -> IANA, from Unicode CLDR's windowsZones.xml (the territory "001"
#: mapping, https://github.com/unicode-org/cldr/blob/main/common/supplemental/windowsZones.xml).
#: IB Gateway on Windows writes the connection time in the host's Windows zone name; the one
#: seen in captures is "Central European Standard Time" (../shared/fixtures/tws/transcripts).
#: The others are the zones of IB's main trading centres, for gateways hosted there.
WINDOWS_ZONES: dict[str, str] = {
    "UTC": "Etc/UTC",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "GTB Standard Time": "Europe/Bucharest",
    "FLE Standard Time": "Europe/Kiev",
    "Russian Standard Time": "Europe/Moscow",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Calcutta",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Taipei Standard Time": "Asia/Taipei",
    "Korea Standard Time": "Asia/Seoul",
    "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time": "America/Los_Angeles",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Eastern Standard Time": "America/New_York",
    "Canada Central Standard Time": "America/Regina",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
}

_DATETIME = re.compile(r"(\d{8})(?:-|\s+)(\d{1,2}):(\d{2}):(\d{2})(?:\s+(.*))?")
_DASH = re.compile(r"\d{8}-")


class IBTimeError(ValueError):
    """A time IB sent that cannot be read (unknown zone, bad form)."""


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo | None:
    """The zone IB means by ``name`` (IANA, legacy or Windows), None if unknown."""
    name = name.strip()
    if not name:
        return None
    for candidate in (WINDOWS_ZONES.get(name), name):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    return None


def to_ns(text: str, default_zone: ZoneInfo | None = None) -> int:
    """Parse one IB time; raise ``IBTimeError`` when it cannot be read."""
    text = (text or "").strip()
    if not text:
        raise IBTimeError("empty time")
    if text.isdigit() and len(text) != 8:
        return int(text) * 1_000_000_000          # epoch seconds
    m = _DATETIME.fullmatch(text)
    if not m:
        raise IBTimeError(f"unreadable time {text!r}")
    date, hh, mm, ss, name = m.groups()
    try:
        naive = datetime.strptime(f"{date} {int(hh):02d}:{mm}:{ss}", "%Y%m%d %H:%M:%S")
    except ValueError as exc:
        raise IBTimeError(f"unreadable time {text!r}") from exc
    if name:
        tz: Any = zone(name)
        if tz is None:
            raise IBTimeError(f"unknown time zone {name.strip()!r}", name.strip())
    elif _DASH.match(text):
        tz = UTC
    elif default_zone is not None:
        tz = default_zone
    else:
        raise IBTimeError(f"time {text!r} has no zone and the connection's zone is not known",
                          "(connection zone)")
    return int(naive.replace(tzinfo=tz).timestamp()) * 1_000_000_000


def utc_filter(ns: int) -> str:
    """The 'yyyymmdd-hh:mm:ss' (UTC) form IB reads in an ExecutionFilter."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y%m%d-%H:%M:%S")


class IBTime:
    """The bridge's reader of IB times: knows the connection's zone; counts and logs errors."""

    def __init__(self, counters: MutableMapping[str, int] | None = None,
                 log: logging.Logger | None = None) -> None:
        self.counters: MutableMapping[str, int] = counters if counters is not None else Counter()
        self.log = log or logging.getLogger("gateway.ib_time")
        self.connection_zone: ZoneInfo | None = None
        self.connection_zone_name = ""
        self._logged: set[str] = set()

    def set_connection_time(self, text: str) -> None:
        """The handshake's connection time ('yyyymmdd hh:mm:ss ZONE'): learn the gateway's zone."""
        m = _DATETIME.fullmatch((text or "").strip())
        name = (m.group(5) or "").strip() if m else ""
        tz = zone(name) if name else None
        if tz is None:
            self._error(name or "(connection time)",
                        f"connection time {text!r}: unknown zone; zone-less times unreadable")
            return
        self.connection_zone, self.connection_zone_name = tz, name

    def ns(self, text: str) -> int:
        """ns since the epoch, or 0 (unknown: empty, unreadable or unknown zone; counted)."""
        if not text or not str(text).strip():
            return 0
        try:
            return to_ns(str(text), self.connection_zone)
        except IBTimeError as exc:
            key = exc.args[1] if len(exc.args) > 1 else "(unreadable)"
            self._error(key, str(exc.args[0]))
            return 0

    def _error(self, key: str, text: str) -> None:
        self.counters["ib_time_errors"] = self.counters.get("ib_time_errors", 0) + 1
        if key not in self._logged:
            self._logged.add(key)
            self.log.error("cannot read an IB time (logged once per zone): %s", text,
                           extra={"zone": key})


#: the process's reader (one bridge per process); the gateway service gives it its counters
#: and log, and the connection's zone at each handshake
default = IBTime()


def parse_ns(text: str) -> int:
    return default.ns(text)
