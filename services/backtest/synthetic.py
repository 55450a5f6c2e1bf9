"""Seeded synthetic recordings, written with the recorder's own writer: for tests and demos.

``write_recording`` writes any list of timed frames; ``random_walk`` makes a market whose
depth (IB position-based updates that keep a consistent book), ticks and trades come from
one seeded ``random.Random``: the same seed gives the same bytes.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Iterator

from proto import codec
from proto.schema import DepthUpdate, Message, Tick
from services.recorder.writer import RecordingWriter

START_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z: any fixed instant will do
ASK, BID = 0, 1
INSERT, UPDATE = 0, 1


def write_recording(directory: str | Path, frames: Iterable[tuple[int, list[Message]]],
                    source: str = "synthetic.1") -> Path:
    """One recorded frame per (receive_ns, messages), in the given order."""
    directory = Path(directory)
    frames = list(frames)
    created = frames[0][0] if frames else START_NS
    writer = RecordingWriter(directory, clock=lambda: created)
    seq = 0
    for recv_ns, messages in frames:
        for msg in messages:
            seq += 1
            msg.src, msg.seq, msg.tseq, msg.ts = source, seq, seq, recv_ns
        writer.append(recv_ns, messages[0].topic().encode(), codec.encode(messages))
    writer.close()
    return directory


def random_walk(seed: int, symbol: str = "AAPL", steps: int = 3000, levels: int = 5,
                start_ns: int = START_NS, step_ns: int = 100_000_000, price: float = 100.0,
                tick: float = 0.01, reversion: float = 0.02, volatility: float = 1.2,
                trade_probability: float = 0.3) -> Iterator[tuple[int, list[Message]]]:
    """A mean-reverting mid (in ticks) whose moves lean with a persistent book imbalance.

    Each step is one frame of depth updates (only rows that changed) and one frame with a
    Tick (top of book, last trade, cumulative volume).
    """
    rng = random.Random(seed)
    centre = round(price / tick)
    mid2 = centre * 2  # twice the mid, in ticks, so a one-tick spread stays on the grid
    lean = 0.0
    volume = 0.0
    last = price
    shown: dict[int, list[tuple[float, float]]] = {BID: [], ASK: []}
    for step in range(steps):
        t = start_ns + step * step_ns
        lean = 0.9 * lean + rng.gauss(0.0, 0.25)
        drift = -reversion * (mid2 / 2 - centre) + 0.8 * lean
        mid2 += 2 * round(drift + rng.gauss(0.0, volatility) / 2)
        spread = rng.choice((1, 1, 2, 3))
        best_bid = (mid2 - spread) // 2
        best_ask = best_bid + spread
        tilt = max(-0.8, min(0.8, lean))
        book = {
            BID: [((best_bid - i) * tick, 100.0 * rng.randint(1, 8) * (1 + tilt))
                  for i in range(levels)],
            ASK: [((best_ask + i) * tick, 100.0 * rng.randint(1, 8) * (1 - tilt))
                  for i in range(levels)],
        }
        updates: list[Message] = []
        for side in (BID, ASK):
            for i, (p, s) in enumerate(book[side]):
                p, s = round(p, 2), float(round(s))
                old = shown[side][i] if i < len(shown[side]) else None
                if old == (p, s):
                    continue
                updates.append(DepthUpdate(symbol=symbol, position=i,
                                           operation=INSERT if old is None else UPDATE,
                                           side=side, price=p, size=s))
                if old is None:
                    shown[side].append((p, s))
                else:
                    shown[side][i] = (p, s)
        if updates:
            yield t, updates
        bid, bid_size = shown[BID][0]
        ask, ask_size = shown[ASK][0]
        if rng.random() < trade_probability:
            last = ask if rng.random() < 0.5 + tilt / 2 else bid
            volume += 100 * rng.randint(1, 3)
        yield t + step_ns // 2, [Tick(symbol=symbol, bid=bid, ask=ask, bid_size=bid_size,
                                      ask_size=ask_size, last=last, last_size=100.0,
                                      volume=volume)]
