"""What a fleet keeps from one `ibfleet up` to the next, and what it keeps apart.

Found by a newcomer's walkthrough: a removed strategy came back on the next `up` and a file
`strategy new` wrote went live unasked (up started every strategies/*.toml); a market replay
traded the random walk's paper position at replayed prices; every session's recording went
into one folder, so a backtest over it jumped between markets; a warm-up longer than the
recording gave a report of zeros and exit 0."""
from __future__ import annotations

import os

import psutil

import subprocess
import sys

from services.backtest.synthetic import random_walk, write_recording
from tests.fleet.test_fleet import PROBE, FleetCli, _tree
from tests.support.processes import REPO, wait_for


def _up(cli: FleetCli, *args: str) -> None:
    result = cli.run("up", "--detach", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: (cli.run_dir / "supervisord.pid").exists(), what="supervisord's pid file")
    cli.supervisord_pid = int((cli.run_dir / "supervisord.pid").read_text())


def _down(cli: FleetCli) -> None:
    pids = _tree(cli.supervisord_pid) if cli.supervisord_pid else set()
    cli.run("down")
    for pid in pids:  # whatever happened, nothing of this fleet is left
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    cli.supervisord_pid = 0


def _ibfleet(*args: str) -> subprocess.CompletedProcess:
    """A command that takes no fleet config (backtest)."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _strategies(cli: FleetCli) -> set[str]:
    return {n.removeprefix("strategy-") for n in cli.processes() if n.startswith("strategy-")}


def test_up_starts_the_strategies_the_fleet_had_and_each_session_records_apart(tmp_path):
    cli = FleetCli(tmp_path)
    keep = cli.strategy_file("keep", PROBE, {"mode": "echo"})
    gone = cli.strategy_file("gone", PROBE, {"mode": "echo"})
    try:
        _up(cli, "--strategies", keep, gone)
        assert _strategies(cli) == {"keep", "gone"}
        removed = cli.run("strategy", "remove", "gone")  # it never traded: nothing to hand over
        assert removed.returncode == 0, removed.stdout + removed.stderr
        _down(cli)

        _up(cli)  # no --strategies: what the fleet had, not the examples, not "gone"
        assert _strategies(cli) == {"keep"}
        added = cli.run("strategy", "add", gone)
        assert added.returncode == 0, added.stdout + added.stderr
        _down(cli)

        _up(cli)
        assert _strategies(cli) == {"keep", "gone"}
        _down(cli)
        # three `up`s, three recording folders; the backtest refuses the root, naming them
        sessions = sorted(p for p in (tmp_path / "state" / "recordings").iterdir())
        assert len(sessions) == 3, sessions
        result = _ibfleet("backtest", keep, str(tmp_path / "state" / "recordings"),
                          "--out", str(tmp_path / "bt"))
        assert result.returncode == 2 and "3 recording session(s)" in result.stderr, \
            result.stdout + result.stderr
        assert sessions[-1].name in result.stderr
    finally:
        if cli.supervisord_pid and psutil.pid_exists(cli.supervisord_pid):
            _down(cli)


def test_a_market_replay_trades_on_a_paper_account_of_its_own(tmp_path):
    cli = FleetCli(tmp_path)
    hold = cli.strategy_file("hold", PROBE, {"mode": "target", "target": 10})
    catalog = tmp_path / "catalog"
    imported = _ibfleet("data", "import-sample", "--catalog", str(catalog))
    assert imported.returncode == 0, imported.stderr
    try:
        _up(cli, "--strategies", hold)  # the random walk: hold buys 10 AAPL there
        wait_for(lambda: cli.status()["positions"].get("hold", {}).get("AAPL") == 10,
                 deadline=120, what="hold to hold 10 AAPL on the random walk")
        _down(cli)
        result = subprocess.run(  # the simulator finds the catalog as the README's does
            [sys.executable, "-m", "services.cli", "up", "--detach", "--market", "lobster/AAPL",
             "--speed", "0", "--config", str(cli.config)], cwd=REPO, capture_output=True,
            text=True, timeout=120, env=dict(os.environ, IBFLEET_CATALOG=str(catalog)))
        assert result.returncode == 0, result.stdout + result.stderr
        cli.supervisord_pid = int((cli.run_dir / "supervisord.pid").read_text())
        # the replay's account starts flat: the fleet sees a reset account and adopts it,
        # so the strategy buys its 10 again at replayed prices, and no one trades the random
        # walk's position there
        wait_for(lambda: cli.status()["gateway"].get("state") == "synchronised",
                 deadline=120, what="the gateway synchronised on the replay")
        # the broker (the replay's account) holds nothing of the random walk's: the fleet
        # adopts that (AAPL 10 -> 0) instead of trading a 2026 position at 2012 prices
        wait_for(lambda: any(a["code"] == "broker_positions_adopted" and "AAPL 10 -> 0"
                             in a["text"] for a in cli.status()["alerts"]),
                 deadline=120, what="the fleet to adopt the replay account's flat AAPL")
        replay_state = tmp_path / "state" / "simulator-replay"
        assert replay_state.is_dir() and any(replay_state.iterdir())
        assert any(p.name.endswith("replay-lobster_AAPL")
                   for p in (tmp_path / "state" / "recordings").iterdir())
    finally:
        if cli.supervisord_pid and psutil.pid_exists(cli.supervisord_pid):
            _down(cli)


def test_a_warm_up_longer_than_the_recording_is_refused(tmp_path):
    rec = tmp_path / "rec"
    write_recording(rec, random_walk(seed=3, steps=600))  # 60 s of market
    cli = FleetCli(tmp_path)
    toml = cli.strategy_file("w", PROBE, {"mode": "echo"})
    result = _ibfleet("backtest", toml, str(rec), "--warmup", "3600", "--out",
                      str(tmp_path / "bt"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "warm-up (3600 s) is not shorter than the recording" in result.stderr
    assert not (tmp_path / "bt" / "report.json").exists()
