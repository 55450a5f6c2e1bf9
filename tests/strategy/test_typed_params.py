"""A strategy's ``[params]`` decoded into the typed ``Params`` it declares (issue 15, finding 9
and build item 4): a misspelt key or a wrong type is a ConfigError naming the file and the
key; a strategy that declares nothing still gets its table as a dict."""
from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from services.runtime.config import ConfigError
from services.strategy import config as strategy_config
from services.strategy.base import Strategy
from services.strategy.examples.imbalance import ImbalanceMomentum
from services.strategy.examples.mean_reversion import MeanReversion

REPO = Path(__file__).resolve().parents[2]


class Typed(Strategy):
    class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        window: int = 20
        entry_z: float = 2.0
        passive: bool = False


class Untyped(Strategy):
    pass


def _config(tmp_path, params: str) -> strategy_config.StrategyConfig:
    path = tmp_path / "s1.toml"
    path.write_text(f'name = "s1"\nclass = "x:Y"\nsymbols = ["AAPL"]\n[params]\n{params}\n')
    return strategy_config.load(path)


def test_declared_params_are_typed(tmp_path):
    params = _config(tmp_path, "window = 5\nentry_z = 1").params_for(Typed)
    assert params == Typed.Params(window=5, entry_z=1.0)
    assert params.passive is False  # a default


@pytest.mark.parametrize("text, key, hint", [
    ("windw = 5", "windw", "did you mean window"),
    ('window = "5"', "params.window", "without quotes"),
    ("window = 5.5", "params.window", ""),
    ('passive = "yes"', "params.passive", ""),
])
def test_a_typo_or_a_wrong_type_is_refused_naming_the_file_and_the_key(tmp_path, text, key,
                                                                       hint):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, text).params_for(Typed)
    assert "s1.toml" in str(err.value) and key in str(err.value) and hint in str(err.value)


def test_a_strategy_without_params_gets_a_dict(tmp_path):
    assert _config(tmp_path, "anything = 1").params_for(Untyped) == {"anything": 1}


def test_params_that_are_not_a_struct_are_refused(tmp_path):
    class Odd(Strategy):
        Params = dict

    with pytest.raises(ConfigError, match="msgspec.Struct"):
        _config(tmp_path, "window = 1").params_for(Odd)


@pytest.mark.parametrize("toml, cls", [("mean_reversion.toml", MeanReversion),
                                       ("imbalance.toml", ImbalanceMomentum)])
def test_the_examples_declare_their_params_and_their_tomls_fit(toml, cls):
    cfg = strategy_config.load(REPO / "strategies" / toml)
    assert cfg.load_class() is cls
    params = cfg.params_for(cls)
    assert isinstance(params, cls.Params)
    assert msgspec.structs.asdict(params).keys() >= cfg.params.keys()


def test_an_examples_params_typo_is_refused(tmp_path):
    text = (REPO / "strategies" / "mean_reversion.toml").read_text()
    path = tmp_path / "mr.toml"
    path.write_text(text.replace("entry_z", "entry_zz"))
    with pytest.raises(ConfigError, match="entry_zz"):
        strategy_config.load(path).params_for(MeanReversion)
