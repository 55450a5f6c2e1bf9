"""Both example strategies trade in a backtest of a seeded synthetic market."""
from __future__ import annotations

import pytest

from services.backtest import synthetic
from services.backtest.engine import BacktestEngine, Settings
from services.recorder.reader import Recording
from services.strategy.config import StrategyConfig

EXAMPLES = {
    "mean_reversion": "services.strategy.examples.mean_reversion:MeanReversion",
    "imbalance": "services.strategy.examples.imbalance:ImbalanceMomentum",
}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("walk") / "rec"
    return Recording(synthetic.write_recording(path, synthetic.random_walk(seed=7, steps=2000)))


@pytest.mark.parametrize("queue_model", ["none", "proportional"])
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_strategy_trades(recording, example, queue_model):
    cfg = StrategyConfig(name="ex1", class_path=EXAMPLES[example], symbols=["AAPL"],
                         risk={"max_position": 1000})
    engine = BacktestEngine(cfg, Settings(queue_model=queue_model))
    result = engine.run((r.recv_ns, m) for r, m in recording.messages())
    assert result.callback_errors == 0
    assert len(result.fills) >= 1
    assert {f.side for f in result.fills} == {"BUY", "SELL"}
    # the strategy's mirror and risk's hold execution's positions (one Portfolio)
    held = result.portfolio.quantity("ex1", "AAPL")
    assert engine.strategy.position("AAPL") == held
    assert engine.risk.book("ex1").held("AAPL") == held
    assert engine.strategy.mirror.agrees(engine.execution.digest("ex1"))
    if example == "mean_reversion":  # its exits are bracket children
        assert any(f.parent_id for f in result.fills)
