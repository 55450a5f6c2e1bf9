"""The fast path for depth updates (``services/backtest/fast_depth.py``, ``core/replay.pyx``)
gives byte-identical output to the general path, on recordings that mix depth, ticks,
trades, other symbols, other topics, frames the scanner does not take, refused updates,
damaged records and a strategy that trades (and sometimes fails)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.book import OrderBook
from proto import codec
from proto.schema import AccountValue, DepthUpdate, Tick, TradeTick
from services.backtest import __main__ as bt
from services.backtest import fast_depth
from services.backtest.engine import BacktestEngine, Settings
from services.backtest.synthetic import random_walk, write_recording
from services.recorder import format as fmt
from services.recorder.reader import Recording
from services.strategy.config import StrategyConfig
from services.strategy.examples.imbalance import ImbalanceMomentum

OUTPUTS = ("report.txt", "report.json", "intents.bin", "fills.bin")


class Flaky(ImbalanceMomentum):
    """Trades on depth (the example), watches ticks, and fails on every 97th update."""

    def on_start(self) -> None:
        super().on_start()
        self.seen = 0
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")

    def on_depth(self, symbol: str, book: OrderBook) -> None:
        self.seen += 1
        if self.seen % 97 == 0:
            raise RuntimeError("a strategy bug")
        super().on_depth(symbol, book)


def _rebuild(book: OrderBook) -> list[DepthUpdate]:
    """The whole book as inserts, best first: rebuilds a book that was reset."""
    return [DepthUpdate(symbol="AAPL", position=i, operation=0, side=side, price=p, size=q)
            for side, rows in ((1, book.bids()), (0, book.asks()))
            for i, (p, q) in enumerate(rows)]


def _frames(seed: int, steps: int):
    frames = list(random_walk(seed=seed, steps=steps, levels=5))
    out = []
    shown = OrderBook(10)
    for i, (t, msgs) in enumerate(frames):
        out.append((t, msgs))
        for m in msgs:
            if isinstance(m, DepthUpdate):
                shown.update_depth(m.position, m.operation, m.side, m.price, m.size)
        if i % 50 == 7:  # another symbol's depth: skipped, uncounted
            out.append((t, [DepthUpdate(symbol="MSFT", position=0, operation=0, side=1,
                                        price=50.0, size=10.0)]))
        if i % 60 == 11:  # a trade print
            out.append((t, [TradeTick(symbol="AAPL", price=msgs[0].price if
                                      isinstance(msgs[0], DepthUpdate) else 100.0, size=100.0)]))
        if i % 70 == 13 and isinstance(msgs[0], DepthUpdate):  # depth and a tick in one frame
            top = DepthUpdate(symbol="AAPL", position=0, operation=1, side=1,
                              price=shown.best_bid_price(), size=shown.best_bid_size())
            out.append((t, [top, Tick(symbol="AAPL", bid=99.0, ask=101.0, bid_size=1.0,
                                          ask_size=1.0)]))
        if i % 90 == 17:  # refused by both books (a gap), then the book is rebuilt
            out.append((t, [DepthUpdate(symbol="AAPL", position=8, operation=1, side=0,
                                        price=100.0, size=1.0)]))
            out.append((t, _rebuild(shown)))
        if i % 110 == 19:  # not market data
            out.append((t, [AccountValue(account="X", key="k", value="1", currency="USD")]))
    return out


def _write(directory: Path, frames, damage: bool = False) -> Recording:
    write_recording(directory, frames)
    if damage:  # flip a byte in the middle of a record: the reader skips it and says so
        seg = directory / fmt.segment_name(1)
        data = bytearray(seg.read_bytes())
        pos = data.index(fmt.RECORD_MARKER, len(data) // 2)
        data[pos + 70] ^= 0xFF
        seg.write_bytes(bytes(data))
    return Recording(directory)


def _run(tmp_path: Path, name: str, recording: Recording, fast: bool, settings: Settings,
         class_path: str, start_ns=None, end_ns=None):
    cfg = StrategyConfig(name="flaky", class_path=class_path, symbols=["AAPL"],
                         params={"cooldown_s": 0.2, "threshold": 0.1}, timer_s=0.5)
    result = bt.run(cfg, recording, settings, start_ns, end_ns, fast=fast)
    out = tmp_path / name
    bt.write_outputs(result, out, plot=False)
    report = recording.report
    return result, {f: (out / f).read_bytes() for f in OUTPUTS}, report


CASES = {
    "plain": (Settings(), False, None),
    "damaged": (Settings(), True, None),
    "warmup_and_latency_0": (Settings(report_latency_ns=0, warmup_ns=3_000_000_000,
                                      queue_model="none"), False, None),
    "window": (Settings(latency_ns=1_000_000), False, (20_000_000_000, 150_000_000_000)),
    # ends just before a depth-only frame: the scanner meets the first record past the end
    "window_ends_on_depth": (Settings(), False, (0, "before_depth")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_output_is_byte_identical(tmp_path, case):
    settings, damage, window = CASES[case]
    recording = _write(tmp_path / "rec", _frames(seed=11, steps=1500), damage)
    start, end = window if window else (None, None)
    if window:
        first = recording.time_range()[0]
        if end == "before_depth":
            times = [r.recv_ns for r in recording.records()
                     if r.topic_bytes.startswith(b"md.depth")]
            end = times[len(times) // 2] - 1 - first
            assert end > 0
        start, end = first + start, first + end
    path = f"{__name__}:Flaky"
    fast, fast_out, fast_report = _run(tmp_path, "fast", recording, True, settings, path,
                                       start, end)
    slow, slow_out, slow_report = _run(tmp_path, "general", recording, False, settings, path,
                                       start, end)
    assert fast_out == slow_out
    assert fast.messages == slow.messages > 1000
    assert fast.callback_errors == slow.callback_errors > 0
    assert len(fast.intents) == len(slow.intents) > 0
    assert len(fast.fills) == len(slow.fills) > 0
    assert [(s.t_ns, s.equity, s.positions) for s in fast.samples] == \
        [(s.t_ns, s.equity, s.positions) for s in slow.samples]
    assert fast_report == slow_report
    if damage:
        assert not fast_report.clean


def test_the_fast_path_is_taken_and_counts_what_it_read(tmp_path, monkeypatch):
    recording = _write(tmp_path / "rec", _frames(seed=5, steps=400))
    cfg = StrategyConfig(name="flaky", class_path=f"{__name__}:Flaky", symbols=["AAPL"])
    engine = BacktestEngine(cfg, Settings())
    assert fast_depth.usable(engine)
    ran = []
    original = fast_depth.DepthLoop.run

    class Counting(fast_depth.DepthLoop):
        def run(self, batch, start=0):
            ran.append(batch.n - start)
            return original(self, batch, start)

    monkeypatch.setattr(fast_depth, "DepthLoop", Counting)
    result = engine.run(fast_depth.messages(engine, recording))
    depth = sum(1 for r, m in Recording(tmp_path / "rec").messages(topics=("md.",))
                if isinstance(m, DepthUpdate) and m.symbol == "AAPL")
    assert 0 < sum(ran) < depth <= result.messages  # mixed frames went the general way
    assert recording.report.records > 0 and recording.report.clean


def test_an_overridden_depth_handler_takes_the_general_path():
    class Own(ImbalanceMomentum):
        def handle_depth(self, msg):
            return super().handle_depth(msg)

    cfg = StrategyConfig(name="own", class_path="x:y", symbols=["AAPL"])
    assert not fast_depth.usable(BacktestEngine(cfg, Settings(), strategy_class=Own))


def test_scan_reads_frames_as_the_codec_does(tmp_path):
    from core.replay import SCAN_END, DepthBatch, scan
    frames = [(10 + i, [DepthUpdate(symbol="AAPL", position=i % 3, operation=i % 3,
                                    side=i % 2, price=100.0 + i / 8, size=float(i),
                                    market_maker="mm" if i % 4 else "")
                        for _ in range(1 + i % 20)]) for i in range(300)]
    frames.append((400, [DepthUpdate(symbol="AAPL", position=1, operation=1, side=1,
                                     price=7, size=3)]))  # integers in float fields
    write_recording(tmp_path / "r", frames)
    seg = tmp_path / "r" / fmt.segment_name(1)
    data = seg.read_bytes()
    batch = DepthBatch(1 << 14)
    status, pos = scan(data, fmt.FILE_HEADER.size, len(data), (b"AAPL",), batch,
                       -(1 << 63), (1 << 63) - 1, 1)
    assert (status, pos) == (SCAN_END, len(data))
    want = [(r.recv_ns, 0, m.position, m.operation, m.side, m.price, m.size)
            for r, m in Recording(tmp_path / "r").messages()]
    assert [batch.row(i) for i in range(batch.n)] == want
    assert all(not math.isnan(row[5]) for row in want)
    assert codec.decode(codec.encode(frames[-1][1]))[0].price == 7.0
