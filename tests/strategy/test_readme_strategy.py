"""The README's "Writing a strategy" (issue 15, item 8): the strategy between the markers
``<!-- readme-strategy:begin -->`` and ``<!-- readme-strategy:end -->`` (a ``python`` block and
a ``toml`` block) is at most 30 lines, is ``strategies/sma_cross.py``, trades in a backtest,
and runs unchanged in a live fleet (``ibfleet strategy add``) until it places an order at the
simulator."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import psutil
import pytest
import tomli_w

from services.backtest.engine import BacktestEngine, Settings
from services.backtest.synthetic import random_walk
from services.simulator.control import SimControl
from services.strategy import config as strategy_config
from tests.support.bus import short_run_dir
from tests.support.processes import REPO, free_port, wait_for

BEGIN, END = "<!-- readme-strategy:begin -->", "<!-- readme-strategy:end -->"
#: the README to read (a draft section can be checked before it is pasted: IBFLEET_README)
README = Path(os.environ.get("IBFLEET_README", REPO / "README.md"))
MODULE = "readme_sma_cross"  # the README's code, as the fleet imports it in the live test


def readme_strategy() -> tuple[str, dict]:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        pytest.fail(f"{README} has no strategy between {BEGIN} and {END} "
                    f"(paste docs/readme_strategy_section.md into its 'Writing a strategy')")
    region = text.split(BEGIN, 1)[1].split(END, 1)[0]
    code = re.search(r"```python\n(.*?)```", region, re.S)
    toml = re.search(r"```toml\n(.*?)```", region, re.S)
    assert code and toml, "the marked region needs a ```python and a ```toml block"
    return code.group(1), tomllib.loads(toml.group(1))


def write_strategy(directory: Path, name: str, params_override: dict | None = None) -> Path:
    """The README's code as module MODULE in ``directory``, and its TOML naming it."""
    code, toml = readme_strategy()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MODULE}.py").write_text(code)
    cls = toml["class"].split(":")[1]
    toml = dict(toml, name=name, **{"class": f"{MODULE}:{cls}"})
    toml["params"] = dict(toml.get("params", {}), **(params_override or {}))
    path = directory / f"{name}.toml"
    path.write_text(tomli_w.dumps(toml))
    return path


def test_the_readme_strategy_is_short_and_is_the_shipped_example():
    code, toml = readme_strategy()
    assert len(code.rstrip("\n").splitlines()) <= 30
    assert code == (REPO / "strategies" / "sma_cross.py").read_text()
    shipped = tomllib.loads((REPO / "strategies" / "sma_cross.toml").read_text())
    assert toml == shipped
    assert toml["params"]["bar"] == "1 min"


def test_the_readme_strategy_trades_in_a_backtest(tmp_path):
    path = write_strategy(tmp_path, "readme")
    cfg = strategy_config.load(path)
    spec = importlib.util.spec_from_file_location(MODULE, tmp_path / f"{MODULE}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, cfg.class_path.split(":")[1])
    # four hours of a synthetic market, one step a second; the first hour is the warm-up
    # that history() serves
    messages = [(t, m) for t, ms in random_walk(seed=5, steps=4 * 3600, step_ns=10**9)
                for m in ms]
    engine = BacktestEngine(cfg, Settings(warmup_ns=3600 * 10**9), strategy_class=cls)
    result = engine.run(messages)
    s = engine.strategy
    assert result.callback_errors == 0
    assert len(s.bars) == cfg.params["slow"]
    first = min(i.ts for i in result.intents)
    assert first - result.start_ns < 2 * 60 * 10**9, "warmed up: it trades from the start"
    entries = [h for h in s.handles.values() if h.order_type == "MKT" and not h.parent_id
               and h.fills]
    stops = [h for h in s.handles.values() if h.order_type == "STP"]
    assert len(entries) >= 3 and len(result.fills) >= 6
    assert stops and all(h.parent_id for h in stops)
    assert sum(h.commission for h in s.handles.values()) > 0


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.run_dir = short_run_dir()
        self.code = tmp / "strategies"
        self.code.mkdir()
        self.config = tmp / "fleet.toml"
        self.config.write_text(tomli_w.dumps({
            "bus": {"run_dir": str(self.run_dir), "heartbeat_ms": 500},
            "simulator": {"port": free_port()},
            "fleet": {"state_dir": str(tmp / "state"), "strategies_dir": str(self.code)}}))

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                               str(self.config)], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def status(self) -> dict:
        import json
        result = self.run("status", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else {}


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    result = f.run("up", "--detach", "--no-record", "--strategies", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    pidfile = f.run_dir / "supervisord.pid"
    wait_for(pidfile.exists, what="supervisord's pid file")
    pid = int(pidfile.read_text())
    try:
        yield f
    finally:
        pids = set()
        if psutil.pid_exists(pid):
            proc = psutil.Process(pid)
            pids = {pid} | {c.pid for c in proc.children(recursive=True)}
        f.run("down")
        for p in pids:  # whatever happened, leave nothing behind
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass


def test_the_readme_strategy_runs_unchanged_in_the_fleet_and_places_an_order(fleet):
    wait_for(lambda: fleet.status().get("gateway", {}).get("state") == "synchronised",
             deadline=120, what="the gateway synchronised")
    toml = write_strategy(fleet.code, "readme")
    result = fleet.run("strategy", "add", str(toml))
    assert result.returncode == 0, result.stdout + result.stderr
    sim = SimControl(f"ipc://{fleet.run_dir}/sim-control", timeout=20)
    try:
        # warmed up from the gateway's history at start, it acts on its first complete
        # 1-minute bar (built from the simulator's 5-second bars): within about 2 minutes
        wait_for(lambda: any(str(o.get("order_ref", "")).startswith("readme-")
                             for o in sim.orders()),
                 deadline=300, what="the README strategy's first order at the simulator")
        orders = [o for o in sim.orders() if str(o.get("order_ref", "")).startswith("readme-")]
    finally:
        sim.close()
    assert orders
    _, toml = readme_strategy()
    wait_for(lambda: "strategy.readme" in fleet.status().get("heartbeats", {}),
             what="the README strategy's heartbeat in status")
    def counters() -> dict:
        return fleet.status()["heartbeats"]["strategy.readme"].get("counters", {})
    assert counters().get("history_bars", 0) >= toml["params"]["slow"], counters()  # warm-up
    # the account's values (from the bus's snapshot) and IB's commission on the entry's fill
    wait_for(lambda: counters().get("account_values", 0) > 0
             and counters().get("commissions_matched", 0) > 0,
             deadline=120, what="account values and a commission in the strategy")
    assert counters().get("callback_errors", 0) == 0, counters()
