"""Now on IB's clock: this host's clock plus the offset the gateway measured.

The gateway asks IB's ``currentTime`` at each connect (and as its hang probe) and publishes
the difference in ``GatewayState.clock_offset_ns`` (0 within IB's one-second resolution).
Against a real IB Gateway that is 0 or a host's clock error; against a market replay the
simulator runs on the data's clock, years back. Whatever depends on "today" (the trading
day of execution's day figures, risk's daily loss) reads this clock, so it agrees with the
times of the fills IB reports."""
from __future__ import annotations

import time


class BrokerClock:
    def __init__(self) -> None:
        self.offset_ns = 0

    def on_gateway_state(self, msg) -> None:
        """Take the offset of a ``proto.schema.GatewayState``."""
        self.offset_ns = int(msg.clock_offset_ns)

    def now_ns(self) -> int:
        return time.time_ns() + self.offset_ns
