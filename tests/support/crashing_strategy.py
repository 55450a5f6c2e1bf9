"""A strategy that dies a few seconds after every start: past supervisord's startsecs, so
supervisord alone would restart it forever. The fleet's crash-loop detection must stop it."""
from __future__ import annotations

import os
import time

from services.strategy.base import Strategy


class CrashAfterStart(Strategy):
    def on_start(self) -> None:
        self.started = time.monotonic()

    def on_timer(self, now_ns: int) -> None:
        if time.monotonic() - self.started > float(self.params.get("after_s", 3.0)):
            os._exit(3)  # a hard crash, no cleanup: as a segfault would look
