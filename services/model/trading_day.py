"""The trading day: daily figures (realized PnL, the daily loss limit) roll at one configured
time in the exchange's zone, not at midnight UTC and not never.

Configured once for the fleet under ``[trading]``::

    [trading]
    day_roll = "17:00"            # local time in ``zone`` when a new trading day begins
    zone = "America/New_York"     # an IANA zone (zoneinfo); DST handled by the zone rules

With the defaults, a fill at 16:59 New York time belongs to that calendar day and one at
17:00 to the next one, as IB's own daily PnL resets around the US close.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.runtime.config import ConfigError


@dataclass(frozen=True)
class TradingDay:
    day_roll: time = time(17, 0)
    zone: ZoneInfo = ZoneInfo("America/New_York")

    def of(self, t_ns: int) -> date:
        """The trading day a moment (ns since the epoch, UTC) belongs to."""
        local = datetime.fromtimestamp(t_ns / 1e9, tz=timezone.utc).astimezone(self.zone)
        day = local.date()
        if local.time() >= self.day_roll:
            day += timedelta(days=1)
        return day

    @classmethod
    def from_config(cls, raw: dict) -> "TradingDay":
        section = raw.get("trading", {}) if isinstance(raw, dict) else {}
        if not isinstance(section, dict):
            raise ConfigError("[trading] must be a table")
        unknown = set(section) - {"day_roll", "zone"}
        if unknown:
            raise ConfigError(f"unknown key(s) in [trading]: {', '.join(sorted(unknown))}; "
                              f"known: day_roll, zone")
        roll_text = section.get("day_roll", "17:00")
        try:
            roll = time.fromisoformat(str(roll_text))
        except ValueError:
            raise ConfigError(f"[trading] day_roll {roll_text!r} is not a time like "
                              f"\"17:00\"") from None
        zone_name = section.get("zone", "America/New_York")
        try:
            zone = ZoneInfo(str(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"[trading] zone {zone_name!r} is not a known IANA time zone "
                              f"(e.g. \"America/New_York\")") from None
        return cls(roll, zone)
