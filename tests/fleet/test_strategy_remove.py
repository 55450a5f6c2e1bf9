"""Issue 15, finding 3: ``ibfleet strategy remove`` orphaned the strategy's position and
working orders without a word, and a removed strategy still showed as active.

The fleet under a real supervisord (``ibfleet up --detach``) on the simulator: ``remove``
refuses while the strategy holds something; ``--keep`` hands its position and orders to the
``unowned`` book (execution keeps it across a restart, risk watches it and lets no strategy
trade it, status shows it; a later fill of the kept stop updates it); ``--flatten`` closes
and removes; a removed strategy is not listed."""
from __future__ import annotations

import os

import psutil
import pytest
import tomli_w
import zmq

from proto.schema import Ack, OrderIntent, RiskDecision
from services.bus import keys
from services.bus.reliable import ReliableClient
from services.fleet import supervisor as sup
from services.runtime import config as fleet_config
from services.simulator.control import SimControl
from tests.fleet.test_fleet import FleetCli, _tree
from tests.support.processes import wait_for

HOLDER = "tests.support.bracket_holder:BracketHolder"
PROBE = "tests.support.probe_strategy:Probe"
SPY = 756733


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    cli = FleetCli(tmp_path_factory.mktemp("remove"))
    files = []
    # entries 50 ticks through the ask: marketable however far the quote moves meanwhile
    held = {"quantity": 10, "cross_ticks": 50}
    for name, cls, symbol, params in (("spy", HOLDER, "SPY", held),
                                      ("msft", HOLDER, "MSFT", held),
                                      ("aapl", HOLDER, "AAPL", held),
                                      ("idle", PROBE, "AAPL", {"mode": "echo"})):
        path = cli.tmp / f"{name}.toml"
        path.write_text(tomli_w.dumps({"name": name, "class": cls, "symbols": [symbol],
                                       "timer_s": 0.5, "params": params,
                                       "risk": {"max_open_orders": 10}}))
        files.append(str(path))
    result = cli.run("up", "--detach", "--no-record", "--strategies", *files, "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    pidfile = cli.run_dir / "supervisord.pid"
    wait_for(pidfile.exists, what="supervisord's pid file")
    cli.supervisord_pid = int(pidfile.read_text())
    cli.sim = SimControl(f"ipc://{cli.run_dir}/sim-control", timeout=20)
    try:
        yield cli
    finally:
        cli.sim.close()
        if psutil.pid_exists(cli.supervisord_pid):
            pids = _tree(cli.supervisord_pid)
            cli.run("down")
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass


def sim_position(fleet, symbol: str) -> float:
    ledger = fleet.sim.ledger()
    names = {str(f["con_id"]): f["symbol"] for f in ledger["fills"]}
    return sum(p["qty"] for c, p in ledger["positions"].items() if names.get(c) == symbol)


def working(fleet, symbol: str) -> list[dict]:
    return [o for o in fleet.sim.orders() if o["symbol"] == symbol
            and o["status"] in ("PreSubmitted", "Submitted", "PendingSubmit")]


def listed(status: dict, text: str) -> set[str]:
    """The strategies status lists: risk's states, and the rows of the text."""
    rows = set()
    section = False
    for line in text.splitlines():
        if line.startswith("RISK"):
            section = True
            continue
        if section and not line.startswith("  "):
            break
        if section:
            rows.add(line.split()[0])
    return set(status["risk"]) | rows


def brackets_held(fleet, *symbols: str) -> None:
    """Wait until each symbol's bracket entry is filled (10) and its two exits work; on a
    timeout, say what the broker has (orders and positions) instead of only that it waited."""
    try:
        wait_for(lambda: all(sim_position(fleet, s) == 10 and len(working(fleet, s)) == 2
                             for s in symbols), deadline=120,
                 what=f"the brackets of {', '.join(symbols)} filled, their exits working")
    except TimeoutError as exc:
        orders = [(o["symbol"], o["action"], o["order_type"], o["status"], o.get("filled"))
                  for o in fleet.sim.orders() if o["symbol"] in symbols]
        raise AssertionError(f"{exc}; at the broker: positions "
                             f"{ {s: sim_position(fleet, s) for s in symbols} }, orders {orders}, "
                             f"status {fleet.status().get('risk')}") from None


def test_remove_refuses_keeps_into_unowned_flattens_and_forgets(fleet):
    wait_for(lambda: fleet.status()["gateway"].get("state") == "synchronised", deadline=120,
             what="the gateway synchronised")
    brackets_held(fleet, "SPY", "MSFT")
    wait_for(lambda: fleet.status()["positions"].get("spy", {}).get("SPY") == 10
             and fleet.processes()["strategy-spy"]["state"] == "RUNNING", deadline=60,
             what="execution's position of spy, its process running")

    # -- refused: a position and working orders, listed; nothing changed
    result = fleet.run("strategy", "remove", "spy")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refused" in result.stderr and "a position of SPY 10" in result.stderr, result.stderr
    assert "2 working order(s)" in result.stderr and "--keep" in result.stderr, result.stderr
    assert fleet.processes()["strategy-spy"]["state"] == "RUNNING"
    assert len(working(fleet, "SPY")) == 2

    # -- --keep: handed to the unowned book, shown by status; spy is gone
    stop = next(o for o in working(fleet, "SPY") if o["order_type"] == "STP")
    result = fleet.run("strategy", "remove", "spy", "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "handed to the unowned book" in result.stdout, result.stdout
    assert "strategy-spy" not in fleet.processes()
    status = fleet.status()
    assert status["positions"]["unowned"]["SPY"] == 10, status["positions"]
    unowned_orders = [o for o in status["open_orders"] if o["strategy"] == "unowned"]
    assert len(unowned_orders) == 2, status["open_orders"]
    assert "spy" not in status["positions"] and "spy" not in status["risk"]
    text = fleet.run("status").stdout
    assert "unowned" in text and "spy " not in text.split("RISK", 1)[1].split("OPEN")[0]
    assert len(working(fleet, "SPY")) == 2  # the orders themselves untouched at the broker

    # durable: execution restarted rebuilds the unowned book from its journal
    paths = sup.FleetPaths(fleet_config.load(fleet.run_dir / "fleet.toml"))
    server = sup.rpc(paths)
    server.supervisor.stopProcess("execution")
    server.supervisor.startProcess("execution", True)
    wait_for(lambda: fleet.status()["positions"].get("unowned", {}).get("SPY") == 10
             and len([o for o in fleet.status()["open_orders"]
                      if o["strategy"] == "unowned"]) == 2, deadline=60,
             what="the unowned book after execution's restart")

    # no strategy may trade it: risk refuses an intent for unowned, and msft's cancel of it
    cfg = fleet_config.load(fleet.run_dir / "fleet.toml")
    keys.ensure_keys(cfg.state_dir, ["strategy.unowned"])
    stop_coid = next(o["id"] for o in fleet.status()["open_orders"]
                     if o["strategy"] == "unowned" and o["type"] == "STP")
    for role, strategy in (("strategy.unowned", "unowned"), ("strategy.msft", "msft")):
        ctx = zmq.Context()
        keys.for_process(ctx, cfg, role)
        client = ReliableClient(ctx, cfg.bus.endpoint("risk"), role, resend_after=60)
        try:
            client.send(OrderIntent(strategy=strategy, client_order_id=stop_coid,
                                    action="cancel", symbol="SPY"))
            replies: list = []
            wait_for(lambda: replies.extend(client.poll(100)) or
                     any(isinstance(m, Ack) for m in replies), deadline=20,
                     what=f"risk's answer to {role}")
            decisions = [m for m in replies if isinstance(m, RiskDecision)]
            assert decisions and not decisions[0].approved, replies
            assert decisions[0].reason == ("reserved_owner" if strategy == "unowned"
                                           else "not_owner"), decisions
        finally:
            client.close()
            ctx.destroy(linger=0)
    assert any(o["order_id"] == stop["order_id"] for o in working(fleet, "SPY"))

    # the kept stop fills later: the unowned position follows, in execution and in risk
    fleet.sim.shift_price(SPY, -1500)  # 15.00 under: through the stop (2% under the mid)
    wait_for(lambda: sim_position(fleet, "SPY") == 0, deadline=60,
             what="the kept stop filled at the simulator")
    wait_for(lambda: fleet.status()["positions"]["unowned"]["SPY"] == 0
             and fleet.status()["risk_positions"].get("unowned", {}).get("SPY") == 0,
             deadline=60, what="execution's and risk's unowned SPY position flat")

    # -- --flatten: closed at market, then removed
    result = fleet.run("strategy", "remove", "msft", "--flatten", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "msft is flat" in result.stdout and "handed to" not in result.stdout, result.stdout
    assert sim_position(fleet, "MSFT") == 0 and not working(fleet, "MSFT")
    assert "strategy-msft" not in fleet.processes()

    # -- nothing held: removed at once
    result = fleet.run("strategy", "remove", "idle")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "strategy-idle" not in fleet.processes()

    # removed strategies are not listed as active, in JSON or text, even after a while
    status = fleet.status()
    text = fleet.run("status").stdout
    assert not {"spy", "msft", "idle"} & listed(status, text), text
    assert not {"spy", "msft", "idle"} & set(status["positions"]), status["positions"]

    # a name the fleet does not have, and a reserved one, are refused
    result = fleet.run("strategy", "remove", "nosuch")
    assert result.returncode == 1 and "no strategy named" in result.stderr, result.stderr
    result = fleet.run("strategy", "remove", "unowned")
    assert result.returncode == 2 and "reserved" in result.stderr, result.stderr


def test_flatten_name_closes_cancels_says_what_and_pauses(fleet):
    """``ibfleet flatten NAME``: NAME's orders cancelled, its position closed at market, the
    command waits until execution shows it flat and says what it closed; NAME stays paused
    (it does not trade again by itself)."""
    brackets_held(fleet, "AAPL")
    wait_for(lambda: fleet.status()["positions"].get("aapl", {}).get("AAPL") == 10,
             deadline=60, what="execution's position of aapl")
    result = fleet.run("flatten", "aapl", "--wait", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "closed a position of AAPL 10" in result.stdout, result.stdout
    assert "cancelled 2 working order(s)" in result.stdout, result.stdout
    assert "aapl is flat, no order working" in result.stdout, result.stdout
    assert sim_position(fleet, "AAPL") == 0 and not working(fleet, "AAPL")
    assert fleet.status()["positions"]["aapl"]["AAPL"] == 0
    assert fleet.status()["risk"]["aapl"] == "paused", fleet.status()["risk"]

    # again: nothing left, said so
    result = fleet.run("flatten", "aapl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "aapl held nothing" in result.stdout, result.stdout
