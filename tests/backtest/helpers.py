"""Hand-made markets and a scripted strategy for the backtest's scenario tests."""
from __future__ import annotations

from pathlib import Path

from proto.schema import DepthUpdate, Message, Tick, TradeTick
from services.backtest.engine import BacktestEngine, BacktestResult, Settings
from services.backtest.synthetic import START_NS, write_recording
from services.recorder.reader import Recording
from services.strategy.base import Strategy
from services.strategy.config import StrategyConfig

MS = 1_000_000
ASK, BID = 0, 1


class Tape:
    """Builds a recording frame by frame: whole books (diffed into IB position updates) and
    trades, at times in ms after START_NS."""

    def __init__(self, symbol: str = "AAPL") -> None:
        self.symbol = symbol
        self.frames: list[tuple[int, list[Message]]] = []
        self.shown: dict[int, list[tuple[float, float]]] = {BID: [], ASK: []}

    def book(self, at_ms: float, bids: list[tuple[float, float]],
             asks: list[tuple[float, float]]) -> "Tape":
        updates: list[Message] = []
        for side, rows in ((BID, bids), (ASK, asks)):
            old = self.shown[side]
            for i, row in enumerate(rows):
                if i < len(old) and old[i] == row:
                    continue
                op = 1 if i < len(old) else 0
                updates.append(DepthUpdate(symbol=self.symbol, position=i, operation=op,
                                           side=side, price=row[0], size=row[1]))
            for i in range(len(old) - 1, len(rows) - 1, -1):
                updates.append(DepthUpdate(symbol=self.symbol, position=i, operation=2,
                                           side=side, price=old[i][0], size=0.0))
            self.shown[side] = list(rows)
        # a Tick with no trade in it: wakes the script even when the book did not change
        (bid, bid_size), (ask, ask_size) = self.shown[BID][0], self.shown[ASK][0]
        updates.append(Tick(symbol=self.symbol, bid=bid, ask=ask, bid_size=bid_size,
                            ask_size=ask_size))
        self.frames.append((START_NS + int(at_ms * MS), updates))
        return self

    def wake(self, *at_ms: float) -> "Tape":
        """The same book again at these times: a Tick only, for the script's clock."""
        for at in at_ms:
            self.book(at, self.shown[BID], self.shown[ASK])
        return self

    def trade(self, at_ms: float, price: float, size: float) -> "Tape":
        self.frames.append((START_NS + int(at_ms * MS),
                            [TradeTick(symbol=self.symbol, price=price, size=size)]))
        return self

    def write(self, directory: Path) -> Recording:
        return Recording(write_recording(directory, self.frames))


class Scripted(Strategy):
    """Runs ``SCRIPT`` — (at_ms, callable(strategy)) pairs — at the first market data at or
    after each time, and keeps every order update and rejection it receives."""

    SCRIPT: list = []

    def on_start(self) -> None:
        self.pending = list(self.SCRIPT)
        self.updates = []
        self.rejected = []
        self.subscribe(self.symbols[0], "depth")
        self.subscribe(self.symbols[0], "trade")
        self.subscribe(self.symbols[0], "tick")

    def _run_due(self) -> None:
        now_ms = (self.host.now_ns() - START_NS) / MS
        while self.pending and self.pending[0][0] <= now_ms:
            self.pending.pop(0)[1](self)

    def on_depth(self, symbol, book) -> None:
        self._run_due()

    def on_trade(self, trade) -> None:
        self._run_due()

    def on_tick(self, tick) -> None:
        self._run_due()

    def on_order_update(self, update) -> None:
        self.updates.append(update)

    def on_rejected(self, decision) -> None:
        self.rejected.append(decision)


def run_engine(tmp_path: Path, tape: Tape, script: list, risk: dict | None = None,
               strategy: type[Strategy] = Scripted, **settings
               ) -> tuple[BacktestEngine, BacktestResult]:
    """Run ``script`` over ``tape``; the engine is returned too, for its execution engine,
    risk engine, venue and journal."""
    cls = type("Script", (strategy,), {"SCRIPT": script})
    cfg = StrategyConfig(name="t1", class_path="tests.backtest.helpers:Scripted",
                         symbols=[tape.symbol], risk=risk or {}, timer_s=1.0)
    engine = BacktestEngine(cfg, Settings(**settings), strategy_class=cls)
    recording = tape.write(tmp_path / "rec")
    result = engine.run((r.recv_ns, m) for r, m in recording.messages())
    return engine, result


def run_script(tmp_path: Path, tape: Tape, script: list, risk: dict | None = None,
               **settings) -> tuple[BacktestResult, Scripted]:
    engine, result = run_engine(tmp_path, tape, script, risk, **settings)
    return result, engine.strategy


def fill_times_ms(result: BacktestResult) -> list[float]:
    """When the venue filled (the executions' times), in ms after the tape's start."""
    return [(e.exec_time_ns - START_NS) / MS for e in result.executions]


def seen_times_ms(result: BacktestResult) -> list[float]:
    """When execution learned of each fill (its updates' stamps), in ms after the start."""
    return [(f.ts - START_NS) / MS for f in result.fills]
