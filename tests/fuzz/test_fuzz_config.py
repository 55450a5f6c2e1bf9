"""Fuzzing the config decoders: random TOML-shaped tables and mutated real configs into
``services.runtime.config.load`` (the fleet file) and ``services.strategy.config.load`` (a
strategy's file). Whatever the file holds, the answer is a config or a ``ConfigError``."""
from __future__ import annotations

import datetime as dt
import tempfile
import tomllib
from pathlib import Path

import msgspec
import pytest
import tomli_w
from hypothesis import assume, given, strategies as st

from services.risk.limits import Limits
from services.runtime import config as fleet_config
from services.runtime.config import ConfigError
from services.runtime.settings import (BusConfig, FleetSection, GatewayConfig,
                                       InstrumentSettings, TradingSettings)
from services.strategy import config as strategy_config
from tests.config.helpers import FULL_CONFIG
from tests.fuzz.support import Tally, long, quick

REPO = Path(__file__).resolve().parents[2]

FLEET_TOML = FULL_CONFIG + '[fleet]\nstate_dir = "/tmp/ibfleet-fuzz-state"\n'
STRATEGY_TOMLS = [p.read_text() for p in sorted((REPO / "strategies").glob("*.toml"))]


def _fields(cls) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(cls)] if hasattr(
        cls, "__struct_fields__") else []


KNOWN_KEYS = sorted({"bus", "gateway", "fleet", "risk", "instruments", "trading", "strategies",
                     "ES", "AAPL", "mr1", "name", "class", "symbols", "params", "timer_s",
                     "depth_rows", "zone", "day_roll", *_fields(BusConfig),
                     *_fields(GatewayConfig), *_fields(FleetSection),
                     *_fields(InstrumentSettings), *_fields(TradingSettings),
                     *[f for f in getattr(Limits, "__dataclass_fields__", {})]})
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=10))
TIMES = st.one_of(st.times(), st.dates(), st.datetimes(),
                  st.datetimes(timezones=st.sampled_from([dt.timezone.utc,
                                                          dt.timezone(dt.timedelta(hours=-5))])))
LEAVES = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
    st.sampled_from([0, -1, 1, 65535, 65536, 7496, 7497, 4001, 4002, 0.0, -0.0, 1e308,
                     float("nan"), float("inf"), "", "127.0.0.1", "0.0.0.0", "::1", "tcp",
                     "ipc", "inproc", "17:00", "25:61", "UTC", "America/New_York",
                     "../../etc/passwd", "/", "Mars/Olympus", "a:b", ":", "x" * 300,
                     "services.strategy.examples.mean_reversion:MeanReversion"]),
    st.text(max_size=20), TIMES)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)
TABLES = st.dictionaries(KEYS, VALUES, max_size=6)


def _paths(table: dict, prefix=()) -> list[tuple]:
    out = [prefix]
    for key, value in table.items():
        if isinstance(value, dict):
            out += _paths(value, prefix + (key,))
        else:
            out.append(prefix + (key,))
    return out


@st.composite
def mutated_table(draw, bases: list[str]) -> dict:
    """A real file's table with values replaced, keys added or removed."""
    table = tomllib.loads(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(table)))
        parent = table
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            op = "add"
        if op == "replace":
            parent[path[-1]] = draw(VALUES)
        elif op == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]] if path and isinstance(parent[path[-1]], dict) else parent
            target[draw(KEYS)] = draw(VALUES)
    return table


@st.composite
def mutated_text(draw, bases: list[str]) -> str:
    """A real file's text with characters cut, inserted or replaced."""
    text = draw(st.sampled_from(bases))
    for _ in range(draw(st.integers(1, 3))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 12)))
        text = text[:a] + draw(st.one_of(st.just(""), st.text(max_size=6),
                                         st.sampled_from(['"', "=", "[", "]", "\n", "-1",
                                                          "nan", "1e999", "\\u0000"]))) + text[b:]
    return text


def _as_toml(table: dict) -> str:
    try:
        return tomli_w.dumps(table)
    except (TypeError, ValueError):  # not writable as TOML (e.g. a table inside a list's NaN)
        assume(False)
        raise


FLEET_FILES = st.one_of(TABLES.map(_as_toml), mutated_table([FLEET_TOML]).map(_as_toml),
                        mutated_text([FLEET_TOML]), st.binary(max_size=60).map(
                            lambda b: b.decode("latin-1")))
STRATEGY_FILES = st.one_of(TABLES.map(_as_toml), mutated_table(STRATEGY_TOMLS).map(_as_toml),
                           mutated_text(STRATEGY_TOMLS))

_tmp = tempfile.TemporaryDirectory(prefix="ibfleet-fuzz-config-")
FILE = Path(_tmp.name) / "fuzz.toml"


def check_fleet(text: str, tally: Tally | None = None) -> None:
    FILE.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = fleet_config.load(FILE)
    except ConfigError as exc:
        assert str(exc).startswith(f"config file {FILE}"), str(exc)
        if tally:
            tally.note("ConfigError")
        return
    assert isinstance(cfg, fleet_config.FleetConfig)
    if tally:
        tally.note("loaded")


def check_strategy(text: str, tally: Tally | None = None) -> None:
    FILE.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = strategy_config.load(FILE)
    except ConfigError as exc:
        assert str(exc).startswith("strategy config"), str(exc)
        if tally:
            tally.note("ConfigError")
        return
    assert isinstance(cfg, strategy_config.StrategyConfig)
    if tally:
        tally.note("loaded")


def test_the_real_configs_load():
    check_fleet(FLEET_TOML)
    for text in STRATEGY_TOMLS:
        check_strategy(text)


@quick
@given(FLEET_FILES)
def test_a_bad_fleet_config_is_a_config_error(text):
    check_fleet(text)


@quick
@given(STRATEGY_FILES)
def test_a_bad_strategy_config_is_a_config_error(text):
    check_strategy(text)


@pytest.mark.fuzz
def test_fleet_config_long():
    tally = Tally("services.runtime.config.load")

    @long
    @given(FLEET_FILES)
    def run(text):
        if tally.go():
            check_fleet(text, tally)
    run()
    tally.report()


@pytest.mark.fuzz
def test_strategy_config_long():
    tally = Tally("services.strategy.config.load")

    @long
    @given(STRATEGY_FILES)
    def run(text):
        if tally.go():
            check_strategy(text, tally)
    run()
    tally.report()
