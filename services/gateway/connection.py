"""The connection's state machine and the policies that drive it: backoff and the hang probe.

Pure logic, no sockets and no clocks of its own (callers pass ``now``), so it is unit-tested
directly. The service owns the transitions; this module only says which ones are legal.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class ConnState(str, enum.Enum):
    DISCONNECTED = "disconnected"  # no socket; a reconnect is scheduled
    CONNECTING = "connecting"      # socket/handshake in progress on the connector thread
    CONNECTED = "connected"        # handshake done and nextValidId received; not yet trusted
    SYNCHRONISED = "synchronised"  # subscriptions restored and orders/executions reconciled
    DEGRADED = "degraded"          # socket up, but IB is unreachable (1100) or a farm is down


S = ConnState

#: Every legal transition. Anything else is a bug and raises, so it shows up in tests.
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING}),
    S.CONNECTING: frozenset({S.CONNECTED, S.DISCONNECTED}),
    # connected -> degraded: 1100 or a farm drop while reconciliation is still running
    S.CONNECTED: frozenset({S.SYNCHRONISED, S.DEGRADED, S.DISCONNECTED}),
    # synchronised -> connected: a re-reconciliation (1102, a reconcile command, farm restored)
    S.SYNCHRONISED: frozenset({S.DEGRADED, S.CONNECTED, S.DISCONNECTED}),
    # degraded -> connected: IB is back (1101/1102, 2104) and we re-synchronise
    S.DEGRADED: frozenset({S.CONNECTED, S.DISCONNECTED}),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass
class StateMachine:
    state: ConnState = S.DISCONNECTED
    reason: str = "starting"
    history: list[tuple[ConnState, ConnState, str]] = field(default_factory=list)

    def can(self, to: ConnState) -> bool:
        return to in TRANSITIONS[self.state]

    def move(self, to: ConnState, reason: str) -> bool:
        """Go to ``to``; False (and no change) if already there; raise if illegal."""
        if to == self.state:
            return False
        if not self.can(to):
            raise IllegalTransition(f"{self.state.value} -> {to.value} ({reason})")
        self.history.append((self.state, to, reason))
        del self.history[:-100]
        self.state, self.reason = to, reason
        return True

    @property
    def socket_up(self) -> bool:
        return self.state in (S.CONNECTED, S.SYNCHRONISED, S.DEGRADED)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; ``reset()`` after a good session.

    Full jitter (a uniform draw in [base*2^n / 2, base*2^n]) keeps a fleet of bridges from
    reconnecting in lock-step after a gateway restart, and never waits longer than the cap.
    """

    base: float = 1.0
    cap: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class HangProbe:
    """A silent hang (socket open, nothing moves) is only visible by asking: every ``interval``
    of inbound silence we send reqCurrentTime; no answer (or any other traffic) within
    ``timeout`` means the session is dead."""

    interval: float = 10.0
    timeout: float = 5.0
    last_inbound: float = 0.0
    sent_at: float | None = None

    def reset(self, now: float) -> None:
        self.last_inbound = now
        self.sent_at = None

    def inbound(self, now: float) -> None:
        self.last_inbound = now
        self.sent_at = None

    def should_probe(self, now: float) -> bool:
        return self.sent_at is None and now - self.last_inbound >= self.interval

    def probed(self, now: float) -> None:
        self.sent_at = now

    def timed_out(self, now: float) -> bool:
        return self.sent_at is not None and now - self.sent_at >= self.timeout
