"""Several strategies on one account over the catalog (one RiskEngine, one ExecutionEngine
and Portfolio, one venue, as live): the account's report adds up the strategies' own, the
trades carry their strategy, each strategy sees the account's values, and the same run twice
gives the same bytes. Real data: the daily AAPL and MSFT bars the project ships."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest

from services.backtest import catalog_run
from services.backtest.__main__ import main
from services.backtest.engine import Settings
from services.backtest.matching import IBCommissions
from services.data.catalog import Catalog
from services.data.sample import import_sample
from services.strategy import config as strategy_config

SMA = """name = "{name}"
class = "tests.backtest.sma_plotted:SmaPlotted"
symbols = ["{symbol}"]
timer_s = 60.0

[params]
bar = "1 day"
fast = {fast}
slow = 20
risk = 2000.0
stop_ranges = 2.0
max_qty = 500

[risk]
max_position = 1000
max_order_quantity = 1000
"""
STRATEGIES = (("smaa", "AAPL", 5), ("smab", "AAPL", 8), ("smam", "MSFT", 5))
FILES = ("trades.csv", "report.json", "report.txt", "intents.bin", "fills.bin")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("shared") / "catalog")
    import_sample(cat)
    return cat


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cfg")
    paths = []
    for name, symbol, fast in STRATEGIES:
        path = base / f"{name}.toml"
        path.write_text(SMA.format(name=name, symbol=symbol, fast=fast))
        paths.append(str(path))
    return paths


def _run(catalog, configs, out):
    assert main([*configs, "--data", "bars-1d/AAPL", "--data", "bars-1d/MSFT", "--catalog",
                 str(catalog.root), "--from", "2011-01-01", "--out", str(out)]) == 0
    return out


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_the_account_adds_up_its_strategies(tmp_path, catalog, configs):
    out = _run(catalog, configs, tmp_path / "run")
    account = json.loads((out / "report.json").read_text())
    parts = {name: json.loads((out / name / "report.json").read_text())
             for name, _, _ in STRATEGIES}
    assert account["strategy"] == "account"
    assert account["strategies"] == [name for name, _, _ in STRATEGIES]
    for key in ("total", "commissions", "realized", "realized_gross"):
        assert account["pnl"][key] == pytest.approx(sum(p["pnl"][key] for p in parts.values()),
                                                    abs=1e-5), key
    assert account["trading"]["fills"] == sum(p["trading"]["fills"] for p in parts.values())
    assert account["final_positions"]["AAPL"] == (parts["smaa"]["final_positions"]["AAPL"]
                                                  + parts["smab"]["final_positions"]["AAPL"])
    # every strategy traded: the test means something
    assert all(p["trading"]["fills"] > 0 for p in parts.values())
    # trades.csv: the account's rows are the strategies' rows, each with its strategy
    rows = _rows(out / "trades.csv")
    assert rows and list(rows[0])[0] == "strategy"
    mine = Counter()
    for name, _, _ in STRATEGIES:
        theirs = _rows(out / name / "trades.csv")
        assert theirs and {r["strategy"] for r in theirs} == {name}
        mine.update(tuple(r.values()) for r in theirs)
    assert Counter(tuple(r.values()) for r in rows) == mine
    assert [r["entry_time"] for r in rows] == sorted(r["entry_time"] for r in rows)
    # the combined equity: cash + every strategy's PnL (open positions at the last close)
    total_net = sum(float(r["pnl_net"]) for r in rows)
    assert account["pnl"]["total"] == pytest.approx(total_net, abs=0.05)
    ret = account["statistics"]["total_return_pct"]
    assert ret == pytest.approx(total_net / 1_000_000 * 100, abs=1e-5)
    # the HTML shows the account and each strategy
    page = (out / "report.html").read_text()
    for name in ("account", "smaa", "smab", "smam"):
        assert f'id="stats-{name}"' in page


def test_one_account_is_what_every_strategy_sees(catalog, configs):
    cfgs = [strategy_config.load(p) for p in configs]
    settings = Settings(commission=IBCommissions(sec_types={"AAPL": "STK", "MSFT": "STK"}))
    start = 1293840000 * 10**9  # 2011-01-01
    _source, runs = catalog_run.run_all(cfgs, catalog, ["bars-1d/AAPL", "bars-1d/MSFT"],
                                        start, None, None, settings)
    assert [run.name for _, run in runs] == ["smaa", "smab", "smam", "account"]
    account_result = runs[-1][0]
    # the strategies' intents interleave in one sequence: one risk engine, one execution
    assert [i.seq for i in account_result.intents] == list(range(1, len(account_result.intents)
                                                               + 1))
    assert {i.strategy for i in account_result.intents} == {"smaa", "smab", "smam"}
    # one execution engine: client order ids and IB ids unique over the run
    ids = [e.ib_order_id for e in account_result.executions]
    assert len({e.exec_id for e in account_result.executions}) == len(ids)


def test_the_same_run_twice_is_byte_identical(tmp_path, catalog, configs):
    a = _run(catalog, configs, tmp_path / "a")
    b = _run(catalog, configs, tmp_path / "b")
    for where in ("", "smaa", "smab", "smam"):
        for name in FILES:
            assert (a / where / name).read_bytes() == (b / where / name).read_bytes(), \
                (where, name)


def test_the_accounts_limits_are_the_base_of_each_budget(tmp_path, catalog, configs):
    """``--run-config``'s ``[risk]`` (the fleet config's): a strategy without its own limit
    gets the account's, one with its own keeps it."""
    bare = tmp_path / "bare.toml"
    bare.write_text(SMA.format(name="bare", symbol="AAPL", fast=5).split("[risk]")[0])
    run = tmp_path / "run.toml"
    run.write_text("[risk]\nmax_order_quantity = 50\n")
    out = tmp_path / "limits"
    assert main([str(bare), configs[0], "--data", "bars-1d/AAPL", "--catalog",
                 str(catalog.root), "--from", "2011-01-01", "--run-config", str(run),
                 "--out", str(out), "--no-plot"]) == 0
    bare_report = json.loads((out / "bare" / "report.json").read_text())
    own = json.loads((out / "smaa" / "report.json").read_text())
    assert bare_report["intents"]["new"] > 0
    assert bare_report["rejected"] == {"total": bare_report["intents"]["new"],
                                       "by_reason": {"max_order_quantity":
                                                     bare_report["intents"]["new"]}}
    assert own["rejected"]["total"] == 0 and own["trading"]["fills"] > 0
