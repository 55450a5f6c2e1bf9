"""Outgoing pacing: IB allows 50 messages/s per client; historical data has its own rules.

``RateLimiter`` is a token bucket in front of every client call: it queues, never drops, and
lets cancels jump the queue (a cancel must not wait behind a burst of new requests).
``HistoricalPacer`` says how long a historical request must wait so IB does not answer it
with a pacing violation (162). Both take ``now`` from the caller: deterministic in tests.
"""
from __future__ import annotations

from collections import deque
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
    """

    def __init__(self, identical_s: float = 15.0, burst_count: int = 6, burst_s: float = 2.0,
                 total_count: int = 60, total_s: float = 600.0, margin_s: float = 0.5) -> None:
        self.burst_count, self.total_count = burst_count, total_count
        self.identical_s = identical_s + margin_s
        self.burst_s = burst_s + margin_s
        self.total_s = total_s + margin_s
        self.log: deque[tuple[float, Hashable, Hashable]] = deque()

    def _forget(self, now: float) -> None:
        horizon = max(self.identical_s, self.burst_s, self.total_s)
        while self.log and now - self.log[0][0] >= horizon:
            self.log.popleft()

    def delay(self, now: float, contract_key: Hashable, request_key: Hashable) -> float:
        """Seconds to wait before this request may be sent (0: now)."""
        self._forget(now)
        wait = 0.0
        for t, _, rk in self.log:
            if rk == request_key:
                wait = max(wait, t + self.identical_s - now)
        same = [t for t, ck, _ in self.log if ck == contract_key and now - t < self.burst_s]
        if len(same) + 1 >= self.burst_count:
            # wait until enough of the window has expired
            oldest_needed = sorted(same)[len(same) + 1 - self.burst_count]
            wait = max(wait, oldest_needed + self.burst_s - now)
        total = [t for t, _, _ in self.log if now - t < self.total_s]
        if len(total) + 1 > self.total_count:
            oldest_needed = sorted(total)[len(total) - self.total_count]
            wait = max(wait, oldest_needed + self.total_s - now)
        return max(0.0, wait)

    def record(self, now: float, contract_key: Hashable, request_key: Hashable) -> None:
        self.log.append((now, contract_key, request_key))
