"""Who is alive: the last heartbeat of every source, and which have gone quiet."""
from __future__ import annotations

import time
from dataclasses import dataclass

from proto.schema import Heartbeat


@dataclass
class Beat:
    received_at: float
    interval_s: float
    state: str
    counters: dict[str, int]


class HeartbeatMonitor:
    """A source is missing once ``misses`` intervals pass without a heartbeat from it."""

    def __init__(self, misses: float = 3.0) -> None:
        self.misses = misses
        self.beats: dict[str, Beat] = {}

    def observe(self, hb: Heartbeat, now: float | None = None) -> None:
        self.beats[hb.src] = Beat(now if now is not None else time.monotonic(),
                                  hb.interval_ms / 1000.0, hb.state, dict(hb.counters))

    def age(self, source: str, now: float | None = None) -> float | None:
        beat = self.beats.get(source)
        if beat is None:
            return None
        return (now if now is not None else time.monotonic()) - beat.received_at

    def missing(self, now: float | None = None) -> list[str]:
        now = now if now is not None else time.monotonic()
        return sorted(src for src, beat in self.beats.items()
                      if now - beat.received_at > self.misses * beat.interval_s)
