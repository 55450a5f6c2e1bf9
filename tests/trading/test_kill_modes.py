"""Issue 15, finding 2: the kill switch left a bracket's position naked. Kill is configurable
per strategy (its TOML's ``on_kill``): ``keep_exits`` (the default) cancels entries and keeps
protective exits, ``cancel_all`` cancels everything, ``flatten`` cancels everything and
closes the position at market.

Real processes on the simulator; the kill is ``ibfleet kill`` as the operator runs it. Three
strategies, one per mode, each holding a bracket whose entry filled (its stop and target
working at the simulator); one kill; the simulator's own ledger says what survived."""
from __future__ import annotations

import subprocess
import sys

import tomli_w

from services.bus import snapshot
from services.bus.subscriber import Subscriber
from proto.schema import OrderUpdate
from tests.support.fleet import live_orders, sim_positions
from tests.support.processes import REPO

HOLDER = "tests.support.bracket_holder:BracketHolder"
#: strategy -> (symbol, on_kill; None: the key left out, i.e. the default)
STRATEGIES = {"keeper": ("AAPL", None), "canceller": ("MSFT", "cancel_all"),
              "flattener": ("SPY", "flatten")}


def cli(fleet, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                           str(fleet.config_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def add_holder(fleet, name: str, symbol: str, on_kill: str | None) -> None:
    path = fleet.add_strategy(name, HOLDER, [symbol], {"quantity": 10},
                              risk={"max_open_orders": 10}, on_kill=None)
    if on_kill is not None:  # a top-level key: written before the tables
        spec = {"name": name, "class": HOLDER, "symbols": [symbol], "timer_s": 0.5,
                "on_kill": on_kill, "params": {"quantity": 10},
                "risk": {"max_open_orders": 10}}
        path.write_text(tomli_w.dumps(spec))


def working(fleet, symbol: str) -> list[dict]:
    return [o for o in live_orders(fleet) if o["symbol"] == symbol]


def execution_open_orders(fleet) -> dict[str, list[OrderUpdate]]:
    sub = Subscriber(fleet.ctx, fleet.config.bus.endpoint("bus-out"), ["none"])
    try:
        state, _ = snapshot.join(fleet.ctx, sub, fleet.config.bus.endpoint("execution-snap"),
                                 "", timeout=20)
    finally:
        sub.close()
    out: dict[str, list[OrderUpdate]] = {}
    for _, msg in state:
        if isinstance(msg, OrderUpdate):
            out.setdefault(msg.strategy, []).append(msg)
    return out


def test_kill_keeps_protective_exits_cancels_all_or_flattens_per_strategy(fleet):
    fleet.ignore_market_data()
    fleet.start_core()
    for name, (symbol, mode) in STRATEGIES.items():
        add_holder(fleet, name, symbol, mode)
    for name in STRATEGIES:
        fleet.start_strategy(name)
    symbols = [symbol for symbol, _ in STRATEGIES.values()]
    fleet.wait(lambda: sim_positions(fleet) == {s: 10 for s in symbols}, deadline=120,
               what="each bracket's entry filled (10 of each symbol)")
    fleet.wait(lambda: all(len(working(fleet, s)) == 2 for s in symbols), deadline=60,
               what="each bracket's stop and target working at the simulator")
    exits = {o["order_id"] for o in working(fleet, "AAPL")}
    assert {o["order_type"] for o in working(fleet, "AAPL")} == {"STP", "LMT"}

    result = cli(fleet, "kill")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acknowledged by risk" in result.stdout, result.stdout
    assert "kept: 2 protective exits" in result.stdout, result.stdout
    assert "global cancel" not in result.stderr, result.stderr

    # keep_exits: the stop and the target still work; cancel_all: gone; flatten: gone and flat
    fleet.wait(lambda: not working(fleet, "MSFT") and not working(fleet, "SPY"), deadline=30,
               what="the cancel_all and flatten strategies' exits cancelled")
    fleet.wait(lambda: sim_positions(fleet) == {"AAPL": 10, "MSFT": 10}, deadline=60,
               what="the flatten strategy closed at market, the others holding")
    assert {o["order_id"] for o in working(fleet, "AAPL")} == exits
    open_orders = execution_open_orders(fleet)
    assert len(open_orders.get("keeper", [])) == 2, open_orders
    assert not open_orders.get("canceller") and not open_orders.get("flattener"), open_orders

    # after resume the protective exits are still there, the position protected
    result = cli(fleet, "resume")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "strategy keeper confirmed: active" in result.stdout, result.stdout
    steps = fleet.sim.quote(265598)["steps"]
    fleet.wait(lambda: fleet.sim.quote(265598)["steps"] >= steps + 20, deadline=60,
               what="20 market steps after the resume")
    assert {o["order_id"] for o in working(fleet, "AAPL")} == exits
    assert sim_positions(fleet) == {"AAPL": 10, "MSFT": 10}
    assert len(execution_open_orders(fleet).get("keeper", [])) == 2


def test_a_kill_with_a_kept_exit_still_cancels_another_clients_order(fleet):
    """Execution cannot cancel another API client's order (only IB's global cancel reaches
    it, and that cancels the kept exits too): the kill sends it and says so."""
    from tests.trading.test_kill_switch import rogue_order

    fleet.ignore_market_data()
    fleet.start_core()
    add_holder(fleet, "keeper", "AAPL", None)
    fleet.start_strategy("keeper")
    fleet.wait(lambda: len(working(fleet, "AAPL")) == 2 and sim_positions(fleet) == {"AAPL": 10},
               deadline=120, what="the bracket filled, its exits working")
    rogue = rogue_order(fleet)
    try:
        result = cli(fleet, "kill")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "global cancel" in result.stderr, result.stderr
        assert "orders working at the broker: 0" in result.stdout, result.stdout
        assert not live_orders(fleet), live_orders(fleet)
        rogue.wait("orderStatus", lambda e: e[1] == "Cancelled")
    finally:
        rogue.disconnect()
