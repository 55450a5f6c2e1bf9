"""When to send each recorded frame: real time, N times real time, or as fast as possible.

The schedule comes from the recorded receive times: frame k is due ``(recv_ns[k] -
recv_ns[0]) / speed`` after the first one was sent. Lateness is not accumulated: a frame that
is late goes at once, and the ones after it keep their original spacing from the start.
"""
from __future__ import annotations

import time
from typing import Callable


def parse_speed(text: str) -> float | None:
    """``realtime`` -> 1.0, ``max`` -> None (no pacing), ``N`` -> N (> 0)."""
    value = text.strip().lower()
    if value in ("realtime", "real", "1x"):
        return 1.0
    if value in ("max", "fast", "asap"):
        return None
    try:
        speed = float(value.rstrip("x"))
    except ValueError:
        raise ValueError(f"speed must be 'realtime', 'max' or a number, not {text!r}") from None
    if not speed > 0:
        raise ValueError("speed must be positive")
    return speed


class Pacer:
    def __init__(self, speed: float | None, clock: Callable[[], int] = time.perf_counter_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._origin: tuple[int, int] | None = None  # (first recv_ns, clock at its send)

    def wait(self, recv_ns: int, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Return when the frame received at ``recv_ns`` is due (at once in max mode)."""
        if self.speed is None:
            return
        if self._origin is None:
            self._origin = (recv_ns, self.clock())
            return
        first_recv, first_clock = self._origin
        due = first_clock + (recv_ns - first_recv) / self.speed
        while not should_stop():
            delay = (due - self.clock()) / 1e9
            if delay <= 0:
                return
            self.sleep(min(delay, 0.1))  # short naps so a stop request is seen
