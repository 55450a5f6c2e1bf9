"""Sequence gap detection per (source, topic), as a subscriber sees the stream."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from proto.schema import Message

log = logging.getLogger("bus.gaps")


@dataclass
class GapCounters:
    gaps: int = 0  # times a gap was seen
    missing: int = 0  # messages known to be missing
    duplicates: int = 0  # seen again or out of order
    restarts: int = 0  # a source that started counting again from 1


@dataclass
class GapDetector:
    last: dict[tuple[str, str], int] = field(default_factory=dict)
    counters: GapCounters = field(default_factory=GapCounters)
    #: topics where a gap or a source restart was seen since the owner last cleared it: a
    #: mirror of that topic's state must re-join the owner's snapshot
    broken: set[str] = field(default_factory=set)

    def check(self, msg: Message, topic: str) -> bool:
        """Record ``msg``; True if it is new, False for a duplicate the caller should drop."""
        key = (msg.src, topic)
        prev = self.last.get(key)
        tseq = msg.tseq
        if prev is None or tseq == prev + 1:
            self.last[key] = tseq
            return True
        if tseq > prev + 1:
            missing = tseq - prev - 1
            self.counters.gaps += 1
            self.counters.missing += missing
            log.warning("sequence gap", extra={"source": msg.src, "topic": topic,
                                               "expected": prev + 1, "got": tseq,
                                               "missing": missing})
            self.last[key] = tseq
            self.broken.add(topic)
            return True
        if tseq == 1:  # the source restarted and counts from the start again
            self.counters.restarts += 1
            log.info("source restarted", extra={"source": msg.src, "topic": topic})
            self.last[key] = tseq
            self.broken.add(topic)
            return True
        self.counters.duplicates += 1
        return False

    def position(self, src: str, topic: str, tseq: int) -> None:
        """Start tracking (src, topic) after ``tseq``, e.g. from a snapshot."""
        key = (src, topic)
        if self.last.get(key, 0) < tseq:
            self.last[key] = tseq
