"""The backtest's latency model: a fixed base plus a seeded jitter, in each direction.

Directions (``LatencyModel``, all in nanoseconds):

- ``order``: strategy -> venue. An order command (place, cancel, modify) reaches the
  simulated exchange this long after execution sent it.
- ``report``: venue -> strategy for the exchange's reports (order states, fills,
  commissions): they reach execution (then risk and the strategy) this long after the
  exchange produced them.
- ``data``: venue -> strategy for market data. The venue matches on the market at the data's
  own time; the strategy (and risk's marks) see that message this long later. So a marketable
  order sent on a quote reaches the book ``data + order`` after the quote was true, and fills
  against the book as it is then.

Each delay is ``base + jitter``, the jitter drawn uniformly from ``[0, jitter_ns]`` (integer
ns) by ``random.Random`` seeded with ``(seed, direction)``: the same seed gives the same
draws, in the order the events are scheduled, so two runs with one seed are byte-identical
and another seed differs. Jitter never reorders one direction: a message is due no earlier
than the one sent before it in the same direction (TCP to and from IB keeps order; so does
the market data line), i.e. ``due = max(now + base + jitter, last due)``.

Config: ``ibfleet backtest ... --latency-ms 5 --report-latency-ms 5 --data-latency-ms 0
--jitter-ms 0 --latency-seed 0``, or the ``[backtest.latency]`` table of ``--run-config``
(keys ``order_ms``, ``report_ms``, ``data_ms``, ``jitter_ms``, ``seed``; flags given on the
command line win). docs/backtest.md, "Latency".
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

DIRECTIONS = ("order", "report", "data")
KEYS = ("order_ms", "report_ms", "data_ms", "jitter_ms", "seed")


@dataclass(frozen=True)
class LatencyModel:
    order_ns: int = 5_000_000
    report_ns: int = 5_000_000
    data_ns: int = 0
    jitter_ns: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.order_ns, self.report_ns, self.data_ns, self.jitter_ns) < 0:
            raise ValueError("latencies and the jitter cannot be negative")

    @classmethod
    def from_ms(cls, order_ms: float = 5.0, report_ms: float | None = None,
                data_ms: float = 0.0, jitter_ms: float = 0.0, seed: int = 0) -> "LatencyModel":
        """From milliseconds; ``report_ms`` None: the same as ``order_ms``."""
        def ns(ms: float) -> int:
            return int(round(ms * 1e6))
        return cls(ns(order_ms), ns(order_ms if report_ms is None else report_ms), ns(data_ms),
                   ns(jitter_ms), int(seed))

    @property
    def delays_data(self) -> bool:
        """Market data goes through the delay (else it reaches the strategy at once)."""
        return self.data_ns > 0 or self.jitter_ns > 0

    def clock(self) -> "LatencyClock":
        return LatencyClock(self)

    def describe(self) -> dict[str, float | int]:
        return {"order_ms": self.order_ns / 1e6, "report_ms": self.report_ns / 1e6,
                "data_ms": self.data_ns / 1e6, "jitter_ms": self.jitter_ns / 1e6,
                "seed": self.seed, "jitter": "uniform [0, jitter_ms], FIFO per direction"}


@dataclass
class LatencyClock:
    """The due times of one run: one seeded stream and one FIFO floor per direction."""
    model: LatencyModel
    _rngs: dict[str, random.Random] = field(default_factory=dict)
    _last: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, direction in enumerate(DIRECTIONS):
            # a fixed integer seed per direction: random.Random(int) is stable across runs
            # and Python versions (a tuple or str seed would depend on hashing)
            self._rngs[direction] = random.Random(self.model.seed * len(DIRECTIONS) + i)
            self._last[direction] = 0

    def due(self, direction: str, now_ns: int) -> int:
        """When a message sent now in ``direction`` arrives (ns)."""
        base = getattr(self.model, f"{direction}_ns")
        jitter = self._rngs[direction].randint(0, self.model.jitter_ns) \
            if self.model.jitter_ns else 0
        at = max(now_ns + base + jitter, self._last[direction])
        self._last[direction] = at
        return at


def from_table(table: dict, source: str) -> dict[str, float]:
    """``[backtest.latency]`` as keyword values for ``LatencyModel.from_ms`` (ValueError
    naming the file and the key for an unknown key or a wrong type)."""
    out: dict[str, float] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ValueError(f"{source}: [backtest.latency] has no key {key!r} (keys: "
                             f"{', '.join(KEYS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: [backtest.latency] {key} must be a number")
        if key == "seed" and not isinstance(value, int):
            raise ValueError(f"{source}: [backtest.latency] seed must be an integer")
        out[key] = value
    return out
