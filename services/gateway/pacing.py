"""Outgoing pacing: IB allows 50 messages/s per client; historical data has its own rules.

``RateLimiter`` is a token bucket in front of every client call: it queues, never drops, and
lets cancels jump the queue (a cancel must not wait behind a burst of new requests).
``HistoricalPacer`` says how long a historical request must wait so IB does not answer it
with a pacing violation (162). Both take ``now`` from the caller: deterministic in tests.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Hashable

Call = Callable[[], Any]


class RateLimiter:
    """At most ``rate`` sends per second, with bursts up to ``burst``."""

    def __init__(self, rate: float = 45.0, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        # IB counts per second; a bucket admits burst + rate in any one-second window, so the
        # default burst keeps that under 50 (45/s + 4 = 49)
        self.burst = burst if burst is not None else max(1.0, min(5.0, 49.0 - rate))
        self.tokens = self.burst
        self.updated: float | None = None
        self.urgent: deque[tuple[str, Call]] = deque()
        self.normal: deque[tuple[str, Call]] = deque()
        self.sent = 0

    def __len__(self) -> int:
        return len(self.urgent) + len(self.normal)

    def submit(self, what: str, call: Call, urgent: bool = False) -> None:
        (self.urgent if urgent else self.normal).append((what, call))

    def _refill(self, now: float) -> None:
        if self.updated is None:
            self.updated = now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def ready(self, now: float) -> list[tuple[str, Call]]:
        """Pop every call that may be sent now, urgent ones first, in submission order."""
        self._refill(now)
        out = []
        while self.tokens >= 1.0 and (self.urgent or self.normal):
            out.append((self.urgent or self.normal).popleft())
            self.tokens -= 1.0
        self.sent += len(out)
        return out

    def wait_time(self, now: float) -> float:
        """Seconds until the next queued call may go (0 if one may go now, inf if none)."""
        if not len(self):
            return float("inf")
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def clear(self, keep: Callable[[str], bool] = lambda what: False) -> int:
        """Forget queued calls (their socket died), keeping those ``keep`` approves."""
        dropped = 0
        for q in (self.urgent, self.normal):
            kept = [item for item in q if keep(item[0])]
            dropped += len(q) - len(kept)
            q.clear()
            q.extend(kept)
        return dropped


class HistoricalPacer:
    """IB's historical-data pacing, applied before sending.

    - no identical request within ``identical_s`` (15 s),
    - at most ``burst_count - 1`` requests for one contract/tick type in ``burst_s`` (6 in 2 s
      is a violation, so 5 may go),
    - at most ``total_count`` requests in ``total_s`` (60 in 10 min).

    IB times requests when they arrive, not when we send them: an early request delayed on the
    way and a later one that is not arrive closer together than they left. Each window is
    therefore widened by ``margin_s`` (source: IB's "Historical Data Limitations" page).

    IB counts per account, not per connection: the log outlives reconnects (one pacer per
    gateway) and, with ``path``, a restart of the gateway process too (every request sent is
    written there, with its wall-clock time, before it goes out; a missing or unreadable file
    is an empty log). Keys must be tuples of JSON scalars (or of such tuples).
    """

    def __init__(self, identical_s: float = 15.0, burst_count: int = 6, burst_s: float = 2.0,
                 total_count: int = 60, total_s: float = 600.0, margin_s: float = 0.5,
                 path: Path | None = None) -> None:
        self.burst_count, self.total_count = burst_count, total_count
        self.identical_s = identical_s + margin_s
        self.burst_s = burst_s + margin_s
        self.total_s = total_s + margin_s
        self.log: deque[tuple[float, Hashable, Hashable]] = deque()
        self.path = path
        self.write_errors = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        """The requests a previous process sent, on this process's monotonic clock."""
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        mono, wall = time.monotonic(), time.time()
        for entry in entries if isinstance(entries, list) else ():
            try:
                at, ck, rk = entry
                self.log.append((mono - (wall - float(at)), _key(ck), _key(rk)))
            except (TypeError, ValueError):
                continue
        self._forget(mono)

    def _save(self, now: float) -> None:
        if self.path is None:
            return
        offset = time.time() - time.monotonic()  # monotonic -> wall clock
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps([[t + offset, ck, rk] for t, ck, rk in self.log]))
            os.replace(tmp, self.path)
        except OSError:
            self.write_errors += 1  # pacing in memory still holds for this process

    def _forget(self, now: float) -> None:
        horizon = max(self.identical_s, self.burst_s, self.total_s)
        while self.log and now - self.log[0][0] >= horizon:
            self.log.popleft()

    def delay(self, now: float, contract_key: Hashable, request_key: Hashable) -> float:
        """Seconds to wait before this request may be sent (0: now)."""
        return self.decide(now, contract_key, request_key)[0]

    def decide(self, now: float, contract_key: Hashable,
               request_key: Hashable) -> tuple[float, str]:
        """(seconds to wait, the rule that makes it wait: "identical", "burst", "total" or
        "" when it may go now)."""
        self._forget(now)
        wait, rule = 0.0, ""
        for t, _, rk in self.log:
            if rk == request_key and t + self.identical_s - now > wait:
                wait, rule = t + self.identical_s - now, "identical"
        same = [t for t, ck, _ in self.log if ck == contract_key and now - t < self.burst_s]
        if len(same) + 1 >= self.burst_count:
            # wait until enough of the window has expired
            oldest_needed = sorted(same)[len(same) + 1 - self.burst_count]
            if oldest_needed + self.burst_s - now > wait:
                wait, rule = oldest_needed + self.burst_s - now, "burst"
        total = [t for t, _, _ in self.log if now - t < self.total_s]
        if len(total) + 1 > self.total_count:
            oldest_needed = sorted(total)[len(total) - self.total_count]
            if oldest_needed + self.total_s - now > wait:
                wait, rule = oldest_needed + self.total_s - now, "total"
        return (wait, rule) if wait > 0 else (0.0, "")

    def record(self, now: float, contract_key: Hashable, request_key: Hashable) -> None:
        self.log.append((now, contract_key, request_key))
        self._forget(now)
        self._save(now)


def _key(value: Any) -> Hashable:
    """A key read back from JSON: its lists as the tuples they were."""
    return tuple(_key(v) for v in value) if isinstance(value, list) else value
