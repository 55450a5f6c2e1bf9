"""Strategy TOML files: typed, a misspelt risk key refused by name, one bad file refusing
only its own strategy."""
from __future__ import annotations

from pathlib import Path

import pytest

from proto.schema import OrderIntent
from services.risk.engine import RiskEngine
from services.risk.limits import LimitBook, Limits, build_limits
from services.runtime.config import ConfigError
from services.runtime.instruments import Instruments
from tests.support.instruments import TEST_INSTRUMENTS
from services.strategy import config as strategy_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "strategies").glob("*.toml"))
GOOD = 'name = "{name}"\nclass = "a.b:C"\nsymbols = ["AAPL"]\n[risk]\nmax_position = 300\n'


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_example_strategies_load_with_their_budgets(path):
    cfg = strategy_config.load(path)
    cfg.load_class()
    limits = build_limits(cfg.risk, str(path), Limits())
    assert limits.max_position == cfg.risk["max_position"]
    assert isinstance(cfg.timer_s, float) and cfg.symbols


def test_a_misspelt_risk_key_refuses_the_file_naming_the_key(tmp_path):
    path = tmp_path / "mr1.toml"
    path.write_text(GOOD.format(name="mr1").replace("max_position", "max_postion"))
    with pytest.raises(ConfigError) as info:
        strategy_config.load(path)
    message = str(info.value)
    assert message.startswith(f"strategy config {path}: ")
    assert "unknown key(s) in [risk]: max_postion (did you mean max_position?)" in message


@pytest.mark.parametrize("text,words", [
    ('timer_s = "1"\n', 'timer_s must be a number, not the string "1"'),
    ("depth_rows = 10.0\n", "depth_rows must be an integer"),
    ("timer_s = 0\n", "timer_s must be greater than 0"),
    ('symbol = ["AAPL"]\n', "unknown key symbol (did you mean symbols?)"),
    ('[risk]\nflatten_on_loss = "no"\n', "risk.flatten_on_loss must be true or false"),
])
def test_wrong_types_in_a_strategy_file_are_refused(tmp_path, text, words):
    path = tmp_path / "s.toml"
    base = 'name = "s1"\nclass = "a.b:C"\nsymbols = ["AAPL"]\n'
    path.write_text(base + text)
    with pytest.raises(ConfigError) as info:
        strategy_config.load(path)
    assert words in str(info.value)


def test_a_bad_strategy_file_does_not_affect_the_others(tmp_path):
    for name in ("a1", "b2", "c3"):
        (tmp_path / f"{name}.toml").write_text(GOOD.format(name=name))
    (tmp_path / "b2.toml").write_text(GOOD.format(name="b2").replace("max_position",
                                                                       "max_postion"))
    book = LimitBook()
    refusals = book.load_strategy_budgets(tmp_path)
    assert len(refusals) == 1 and "b2.toml" in refusals[0] and "max_postion" in refusals[0]
    assert book.for_strategy("a1").max_position == 300 == book.for_strategy("c3").max_position
    assert set(book.refused) == {"b2"}
    (tmp_path / "b2.toml").write_text(GOOD.format(name="b2"))  # fixed: applies, no refusal
    assert book.load_strategy_budgets(tmp_path) == [] and book.refused == {}
    assert book.for_strategy("b2").max_position == 300


def _intent(strategy: str) -> OrderIntent:
    return OrderIntent(strategy=strategy, client_order_id=f"{strategy}-1", action="new",
                       symbol="AAPL", side="BUY", quantity=10, order_type="LMT",
                       limit_price=100.0)


def test_risk_refuses_new_orders_of_a_strategy_whose_budget_file_was_refused(tmp_path):
    (tmp_path / "good.toml").write_text(GOOD.format(name="good"))
    (tmp_path / "bad.toml").write_text(GOOD.format(name="bad").replace("300", '"300"'))
    engine = RiskEngine(LimitBook.from_config({}, tmp_path), Instruments(TEST_INSTRUMENTS))
    engine.gateway_state = "synchronised"
    engine.on_mark("AAPL", 99.99, 100.01)
    refused = engine.check(_intent("bad"))
    assert not refused.approved and refused.reason == "budget_refused"
    assert "risk.max_position must be a number" in refused.text
    assert engine.check(_intent("good")).approved
