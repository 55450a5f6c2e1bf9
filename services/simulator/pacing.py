"""IB's pacing rules: the 50 messages/second request cap and the historical-data limits."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class MessageRate:
    """Counts requests per wall-clock second. Over the limit, requests are refused with error 100;
    `strikes` consecutive violating seconds mean the client is disconnected, as TWS does."""
    limit: int
    strikes_to_disconnect: int
    window_start: float = 0.0
    count: int = 0
    violating: bool = False
    strikes: int = 0
    last_violation_window: float = -10.0

    def admit(self, now: float) -> tuple[bool, bool, bool]:
        """(accepted, report_error_now, disconnect)."""
        if now - self.window_start >= 1.0:
            if self.violating:
                self.last_violation_window = self.window_start
            elif now - self.last_violation_window > 2.0:
                self.strikes = 0
            self.window_start = now
            self.count = 0
            self.violating = False
        self.count += 1
        if self.count <= self.limit:
            return True, False, False
        first = not self.violating
        if first:
            self.violating = True
            self.strikes += 1
        return False, first, self.strikes >= self.strikes_to_disconnect


@dataclass
class HistoricalPacing:
    identical_seconds: float
    burst_count: int
    burst_seconds: float
    total_count: int
    total_seconds: float
    _log: deque = field(default_factory=deque)   # (time, contract key, full request key)

    def check(self, now: float, contract_key: tuple, request_key: tuple) -> str | None:
        """None if allowed (and recorded), else the reason it is a pacing violation."""
        horizon = max(self.total_seconds, self.identical_seconds, self.burst_seconds)
        while self._log and now - self._log[0][0] > horizon:
            self._log.popleft()
        for t, _, rk in self._log:
            if rk == request_key and now - t < self.identical_seconds:
                return "identical request within %gs" % self.identical_seconds
        same = sum(1 for t, ck, _ in self._log if ck == contract_key and now - t < self.burst_seconds)
        if same + 1 >= self.burst_count:
            return "%d requests for one contract within %gs" % (self.burst_count, self.burst_seconds)
        total = sum(1 for t, _, _ in self._log if now - t < self.total_seconds)
        if total + 1 > self.total_count:
            return "more than %d requests within %gs" % (self.total_count, self.total_seconds)
        self._log.append((now, contract_key, request_key))
        return None
