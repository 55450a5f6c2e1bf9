"""``--from`` / ``--to`` values: absolute or relative to the start of the recording."""
from __future__ import annotations

from datetime import datetime, timezone


def parse_time(text: str, recording_start_ns: int | None) -> int:
    """Nanoseconds since the epoch from one of:

    - an integer: nanoseconds since the epoch;
    - ``+SECONDS``: that long after the recording's first frame (e.g. ``+2.5``);
    - an ISO 8601 date-time (``2024-05-01T14:30:00``, UTC unless it names an offset).
    """
    text = text.strip()
    if text.startswith("+"):
        if recording_start_ns is None:
            raise ValueError("a relative time needs a recording with at least one frame")
        return recording_start_ns + int(float(text[1:]) * 1e9)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch nanoseconds, +SECONDS nor an ISO 8601 "
                         f"date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000) * 1000
