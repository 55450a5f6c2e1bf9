"""The strategies' own word on a control (``ibfleet pause``, ``unpause``, ``resume``,
``kill``, ``flatten``): risk applies a control and publishes each strategy's resulting
``TradingState``; each strategy process applies it and says so in its heartbeat's ``state``
(``hb.strategy.NAME``). A control is confirmed by a strategy once a heartbeat it sent after
the control carries one of the expected states."""
from __future__ import annotations

import time

from proto.schema import Heartbeat
from services.bus.subscriber import Subscriber

STOPPED_STATES = ("paused", "halted", "errored")  # a strategy in one sends no intents
TRADING_STATES = ("active", "reducing")
#: the states a strategy's heartbeat confirms each control (risk's command) with
EXPECTED = {"pause": STOPPED_STATES, "flatten": STOPPED_STATES, "kill": STOPPED_STATES,
            "resume": TRADING_STATES, "resume_all": TRADING_STATES}


class Confirmations:
    """Subscribe before the control is sent (``mark`` just before sending), so no
    confirmation is missed; ``names``: the strategies concerned (None: every one heard)."""

    def __init__(self, ctx, config, names: list[str] | None = None) -> None:
        topics = [f"hb.strategy.{n}" for n in names] if names else ["hb.strategy."]
        self.names = set(names or ())
        self.sub = Subscriber(ctx, config.bus.endpoint("bus-out"), topics)
        self.heartbeat_s = config.bus.heartbeat_ms / 1000.0
        self.since_ns = time.time_ns()
        self.states: dict[str, str] = {}  # strategy -> its last state after ``since_ns``

    def mark(self) -> None:
        self.since_ns = time.time_ns()
        self.states.clear()

    def pump(self, timeout_ms: int = 100) -> None:
        got = self.sub.recv(timeout_ms)
        while got:
            for msg in got[1]:
                if isinstance(msg, Heartbeat) and msg.ts >= self.since_ns:
                    name = msg.src.partition(".")[2]
                    if not self.names or name in self.names:
                        self.states[name] = msg.state
            got = self.sub.recv(0)

    def confirmed(self, expected) -> list[str]:
        return sorted(n for n, s in self.states.items() if s in expected)

    def wait(self, expected, timeout: float) -> None:
        """Until every named strategy confirms; without names, until each strategy heard
        within 2.5 heartbeat intervals confirms. At most ``timeout`` seconds."""
        started = time.monotonic()
        settle = 0.0 if self.names else min(timeout, 2.5 * self.heartbeat_s)
        while time.monotonic() - started < timeout:
            self.pump(100)
            heard = self.names or set(self.states)
            if heard and heard <= set(self.confirmed(expected)) \
                    and time.monotonic() - started >= settle:
                return

    def report(self, expected, timeout: float) -> str:
        lines = []
        for name in sorted(self.names | set(self.states)):
            state = self.states.get(name)
            if state in expected:
                lines.append(f"strategy {name} confirmed: {state}")
            elif state is None:
                lines.append(f"strategy {name} did not confirm within {timeout:g}s (is it "
                             f"running? `ibfleet status`)"
                             + ("; risk refuses its orders meanwhile"
                                if expected is STOPPED_STATES else ""))
            else:
                lines.append(f"strategy {name} reports {state}")
        if not lines:
            lines.append(f"no strategy heartbeat within {timeout:g}s: no strategy confirmed")
        return "\n".join(lines)

    def close(self) -> None:
        self.sub.close()
