"""The end-of-run audit: every view of the fleet equals execution's, and execution equals the
broker (the simulator's ledger).

Views compared, per strategy and symbol:
- the simulator's ledger (positions per symbol, orders working there: counted, and each of
  an audited strategy's open orders, by client order id, must be working there);
- execution's snapshot (``StrategyPosition``, open ``OrderUpdate``s, digests);
- risk's mirror (its ``risk-snap`` snapshot: positions and working orders);
- each strategy's mirror (its heartbeat counters ``pos.SYMBOL`` and ``open_orders``);
- ``ibfleet status --json``'s data (``services.fleet.status.collect``, what the command prints).
Also: realized PnL net of commissions equal in risk and execution, and each execId booked
once (execution's fills per strategy add up to the simulator's distinct executions).
"""
from __future__ import annotations

import json
import subprocess
import sys

from proto.schema import Heartbeat, OrderUpdate, StrategyDigest, StrategyPosition
from services.bus import snapshot
from services.bus.subscriber import Subscriber
from services.fleet.status import collect
from services.fleet.supervisor import FleetPaths
from tests.support.fleet import Fleet, live_orders, sim_positions
from tests.support.processes import REPO

EPS = 1e-6


def _snap(fleet: Fleet, endpoint: str, prefix: str = "") -> list:
    sub = Subscriber(fleet.ctx, fleet.config.bus.endpoint("bus-out"), ["none"])
    try:
        state, _ = snapshot.join(fleet.ctx, sub, fleet.config.bus.endpoint(endpoint), prefix,
                                 timeout=20)
    finally:
        sub.close()
    return state


def _nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if abs(v) > EPS}


def views(fleet: Fleet, strategies: list[str], status_json: dict | None = None) -> dict:
    """Every view, as {view: {"positions": {strategy: {symbol: qty}}, "open": {strategy: n}}}."""
    out: dict[str, dict] = {}
    ex_pos: dict[str, dict[str, float]] = {}
    ex_open: dict[str, int] = {}
    ex_realized: dict[str, float] = {}
    ex_fills = 0
    ex_ids: dict[str, set[str]] = {}
    for _, msg in _snap(fleet, "execution-snap"):
        if isinstance(msg, StrategyPosition):
            ex_pos.setdefault(msg.strategy, {})[msg.symbol] = msg.quantity
            ex_realized[msg.strategy] = ex_realized.get(msg.strategy, 0.0) + msg.realized
        elif isinstance(msg, OrderUpdate):
            ex_open[msg.strategy] = ex_open.get(msg.strategy, 0) + 1
            ex_ids.setdefault(msg.strategy, set()).add(msg.client_order_id)
        elif isinstance(msg, StrategyDigest):
            ex_fills += msg.fills
    out["execution"] = {"positions": {s: _nonzero(p) for s, p in ex_pos.items()},
                        "open": ex_open, "realized": ex_realized, "fills": ex_fills,
                        "ids": ex_ids}
    risk_pos: dict[str, dict[str, float]] = {}
    risk_realized: dict[str, float] = {}
    risk_open: dict[str, int] = {}
    risk_ids: dict[str, set[str]] = {}
    for _, msg in _snap(fleet, "risk-snap"):
        if isinstance(msg, StrategyPosition):
            risk_pos.setdefault(msg.strategy, {})[msg.symbol] = msg.quantity
            risk_realized[msg.strategy] = risk_realized.get(msg.strategy, 0.0) + msg.realized
        elif isinstance(msg, OrderUpdate):
            risk_open[msg.strategy] = risk_open.get(msg.strategy, 0) + 1
            risk_ids.setdefault(msg.strategy, set()).add(msg.client_order_id)
    out["risk"] = {"positions": {s: _nonzero(p) for s, p in risk_pos.items()},
                   "realized": risk_realized, "open": risk_open, "ids": risk_ids}
    beats = {m.src: m for _, m in _snap(fleet, "bus-snap", "hb.") if isinstance(m, Heartbeat)}
    strat_pos, strat_open = {}, {}
    for name in strategies:
        hb = beats.get(f"strategy.{name}")
        if hb is None:
            continue
        strat_pos[name] = _nonzero({k[4:]: float(v) for k, v in hb.counters.items()
                                    if k.startswith("pos.")})
        strat_open[name] = hb.counters.get("open_orders", 0)
    out["strategies"] = {"positions": strat_pos, "open": strat_open}
    status = status_json if status_json is not None else \
        json.loads(json.dumps(collect(fleet.config, FleetPaths(fleet.config)).as_dict()))
    st_open: dict[str, int] = {}
    for o in status["open_orders"]:
        st_open[o["strategy"]] = st_open.get(o["strategy"], 0) + 1
    out["status"] = {"positions": {s: _nonzero(p) for s, p in status["positions"].items()},
                     "open": st_open}
    return out


def status_json_from_cli(fleet: Fleet) -> dict:
    """``ibfleet status --json`` itself (needs the fleet under supervisord)."""
    result = subprocess.run([sys.executable, "-m", "services.cli", "status", "--json",
                             "--config", str(fleet.config_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mismatches(fleet: Fleet, strategies: list[str], status_json: dict | None = None,
               check_fills: bool = True) -> list:
    """What disagrees now (empty when the audit holds)."""
    v = views(fleet, strategies, status_json)
    problems = []
    ex = v["execution"]
    truth = sim_positions(fleet)
    net: dict[str, float] = {}
    for positions in ex["positions"].values():
        for symbol, q in positions.items():
            net[symbol] = net.get(symbol, 0.0) + q
    if _nonzero(net) != _nonzero(truth):
        problems.append(f"execution's net positions {_nonzero(net)} != the simulator's {truth}")
    live = live_orders(fleet)
    if sum(ex["open"].values()) != len(live):  # all of them, other clients' (adopted) too
        problems.append(f"execution has {sum(ex['open'].values())} open orders, the simulator "
                        f"{len(live)} working")
    # and order by order for the strategies audited: the same client order ids open in
    # execution and in risk, each working at the simulator (its order ref)
    working = {o["order_ref"] for o in live if o["order_ref"]}
    for name in strategies:
        mine, risks = ex["ids"].get(name, set()), v["risk"]["ids"].get(name, set())
        if mine - working:
            problems.append(f"{name}: open in execution, not working at the simulator: "
                            f"{sorted(mine - working)}")
        if risks != mine:
            problems.append(f"{name}: risk's working orders {sorted(risks)} != execution's "
                            f"{sorted(mine)}")
    for name in strategies:
        mine = ex["positions"].get(name, {})
        for view in ("risk", "strategies", "status"):
            theirs = v[view]["positions"].get(name, {})
            if view == "strategies" and name not in v[view]["positions"]:
                problems.append(f"no heartbeat from strategy {name}")
            elif theirs != mine:
                problems.append(f"{view} holds {theirs} for {name}, execution {mine}")
        for view in ("risk", "strategies", "status"):
            if v[view]["open"].get(name, 0) != ex["open"].get(name, 0):
                problems.append(f"{view} shows {v[view]['open'].get(name, 0)} open orders for "
                                f"{name}, execution {ex['open'].get(name, 0)}")
        r_ex, r_risk = ex["realized"].get(name, 0.0), v["risk"]["realized"].get(name, 0.0)
        if abs(r_ex - r_risk) > 0.005:
            problems.append(f"realized PnL of {name}: execution {r_ex:.2f}, risk {r_risk:.2f}")
    sim_execs = {f["exec_id"] for f in fleet.sim.fills()}
    if check_fills and ex["fills"] != len(sim_execs):
        problems.append(f"execution booked {ex['fills']} fills, the simulator made "
                        f"{len(sim_execs)} distinct executions")
    return problems


def assert_audit(fleet: Fleet, strategies: list[str], deadline: float = 60.0,
                 status_json=None, check_fills: bool = True) -> None:
    """Wait (generously) for every view to converge; fail naming what still disagrees."""
    last: list = []

    def holds() -> bool:
        nonlocal last
        last = mismatches(fleet, strategies, status_json() if callable(status_json) else None,
                          check_fills)
        return not last
    try:
        fleet.wait(holds, deadline=deadline, what="the audit to hold")
    except TimeoutError:
        raise AssertionError("audit failed:\n  " + "\n  ".join(last)) from None
