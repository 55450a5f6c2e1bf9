"""``ibfleet strategy add`` reports success only for a strategy that can work (issue 15,
finding 5 and build item 4), on a real fleet under supervisord against the simulator.

The class must import in the fleet's own environment (a module only on the caller's
PYTHONPATH is refused, saying where strategy code must live, and nothing reaches
supervisord); a module in the fleet's strategies folder (``[fleet] strategies_dir``, on every
strategy program's PYTHONPATH) is accepted and trades; a symbol IB does not know is refused;
a misspelt ``[params]`` key (the class's typed ``Params``) or ``[risk]`` key is refused naming
it; ``ibfleet strategy new NAME`` writes a skeleton that ``strategy add`` takes and runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest
import tomli_w

from services.fleet import supervisor as sup
from services.runtime import config as fleet_config
from services.simulator.control import SimControl
from tests.support.bus import short_run_dir
from tests.support.processes import REPO, free_port, wait_for

# a strategy module for the tests, wherever it is written: it trades (the Probe's churn)
CHURNER = '''
from tests.support.probe_strategy import Probe


class Churner(Probe):
    """Probe's churn: crosses the spread with small orders, so fills keep coming."""
'''

# a strategy with typed params: a misspelt [params] key is refused
TYPED = '''
import msgspec

from services.strategy.base import Strategy


class Typed(Strategy):
    class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        quantity: float = 10
        window: int = 20
'''


class Cli:
    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.run_dir = short_run_dir()
        self.code = tmp / "code"  # the fleet's strategies folder ([fleet] strategies_dir)
        self.code.mkdir()
        self.elsewhere = tmp / "elsewhere"  # only on the caller's PYTHONPATH
        self.elsewhere.mkdir()
        self.config = tmp / "fleet.toml"
        self.config.write_text(tomli_w.dumps({
            "bus": {"run_dir": str(self.run_dir), "heartbeat_ms": 500},
            "simulator": {"port": free_port()},
            "fleet": {"state_dir": str(tmp / "state"), "strategies_dir": str(self.code)}}))
        self.supervisord_pid = 0

    def run(self, *args: str, env: dict | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.pop("PYTHONPATH", None)
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                               str(self.config)], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env=full_env)

    def status(self) -> dict:
        result = self.run("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def programs(self) -> set[str]:
        """Every program supervisord knows (running or not)."""
        import xmlrpc.client
        paths = sup.FleetPaths(fleet_config.load(self.config))
        try:
            return {p["name"] for p in sup.rpc(paths).supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Fault):
            return set()

    def strategy_file(self, name: str, class_path: str, symbols=("AAPL",), params=None,
                      risk=None, where=None) -> str:
        path = (where or self.tmp) / f"{name}.toml"
        path.write_text(tomli_w.dumps({"name": name, "class": class_path,
                                       "symbols": list(symbols), "timer_s": 0.5,
                                       "params": params or {}, "risk": risk or {}}))
        return str(path)

    def in_fleet(self, name: str) -> bool:
        return (self.run_dir / "strategies" / f"{name}.toml").exists() \
            or f"strategy-{name}" in self.programs()


def _tree(pid: int) -> set[int]:
    try:
        proc = psutil.Process(pid)
        return {pid} | {c.pid for c in proc.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    cli = Cli(tmp_path_factory.mktemp("add"))
    result = cli.run("up", "--detach", "--no-record", "--strategies")  # no strategy at first
    assert result.returncode == 0, result.stdout + result.stderr
    pidfile = cli.run_dir / "supervisord.pid"
    wait_for(pidfile.exists, what="supervisord's pid file")
    cli.supervisord_pid = int(pidfile.read_text())
    try:
        wait_for(lambda: cli.status()["gateway"].get("state") == "synchronised", deadline=120,
                 what="the gateway synchronised")
        yield cli
    finally:
        if psutil.pid_exists(cli.supervisord_pid):
            pids = _tree(cli.supervisord_pid)
            cli.run("down")
            for pid in pids:  # whatever the test did, leave nothing behind
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass


def test_a_module_only_on_the_callers_pythonpath_is_refused(fleet):
    (fleet.elsewhere / "outside_mod.py").write_text(CHURNER)
    toml = fleet.strategy_file("outside", "outside_mod:Churner", params={"mode": "churn"})
    mine = {"PYTHONPATH": str(fleet.elsewhere)}
    # it does import in the caller's shell...
    assert fleet.run("strategy", "check", toml, env=mine).returncode == 0
    # ...but not in the fleet's environment: refused, saying where the code must live
    result = fleet.run("strategy", "add", toml, env=mine)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "outside_mod" in result.stderr and "cannot be loaded" in result.stderr
    assert str(fleet.code) in result.stderr and "PYTHONPATH" in result.stderr
    assert "added" not in result.stdout
    assert not fleet.in_fleet("outside")  # nothing reached supervisord or risk's folder


def test_a_module_in_the_strategies_folder_is_accepted_and_trades(fleet):
    (fleet.code / "churner.py").write_text(CHURNER)
    toml = fleet.strategy_file("churner", "churner:Churner",
                               params={"mode": "churn", "quantity": 10},
                               risk={"max_position": 1000, "order_rate": 50, "order_burst": 50})
    result = fleet.run("strategy", "add", toml)  # no PYTHONPATH of the caller at all
    assert result.returncode == 0, result.stdout + result.stderr
    assert "strategy churner added" in result.stdout
    sim = SimControl(f"ipc://{fleet.run_dir}/sim-control", timeout=20)
    try:
        wait_for(lambda: any(f["order_ref"].startswith("churner-") for f in sim.fills()),
                 deadline=120, what="the added strategy's first fill at the simulator")
    finally:
        sim.close()
    # paused: it stops trading for the tests that follow (its orders are its own business)
    assert fleet.run("pause", "churner").returncode == 0


def test_an_unknown_symbol_is_refused(fleet):
    toml = fleet.strategy_file("nosuch", "tests.support.probe_strategy:Probe",
                               symbols=("AAPL", "ZZZQX"), params={"mode": "echo"})
    result = fleet.run("strategy", "add", toml)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ZZZQX" in result.stderr and "IB does not know" in result.stderr
    assert "\n  AAPL:" not in result.stderr  # the known one is not listed as unknown
    assert not fleet.in_fleet("nosuch")


def test_a_params_typo_and_a_risk_typo_are_refused_naming_the_key(fleet):
    (fleet.code / "typed.py").write_text(TYPED)
    params_typo = fleet.strategy_file("typed1", "typed:Typed", params={"quantiy": 5})
    result = fleet.run("strategy", "add", params_typo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "quantiy" in result.stderr and "params" in result.stderr
    assert "did you mean quantity" in result.stderr
    wrong_type = fleet.strategy_file("typed2", "typed:Typed", params={"window": "20"})
    result = fleet.run("strategy", "add", wrong_type)
    assert result.returncode == 2 and "params.window" in result.stderr, result.stderr
    risk_typo = fleet.strategy_file("typed3", "typed:Typed", params={"quantity": 5},
                                    risk={"max_postion": 100})
    result = fleet.run("strategy", "add", risk_typo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "max_postion" in result.stderr and "risk" in result.stderr
    for name in ("typed1", "typed2", "typed3"):
        assert not fleet.in_fleet(name)


def test_strategy_new_writes_a_skeleton_that_is_added_and_runs(fleet):
    result = fleet.run("strategy", "new", "newbie")
    assert result.returncode == 0, result.stdout + result.stderr
    code, toml = fleet.code / "newbie.py", fleet.code / "newbie.toml"
    assert code.is_file() and toml.is_file()
    assert "class Params(msgspec.Struct" in code.read_text()
    again = fleet.run("strategy", "new", "newbie")  # never overwrites
    assert again.returncode == 2 and "not overwritten" in again.stderr
    result = fleet.run("strategy", "add", str(toml))
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: "strategy.newbie" in fleet.status()["heartbeats"], deadline=120,
             what="the new strategy's heartbeat")
    wait_for(lambda: fleet.status()["processes"] and any(
        p["name"] == "strategy-newbie" and p["state"] == "RUNNING"
        for p in fleet.status()["processes"]), deadline=60,
        what="the new strategy RUNNING under supervisord")
