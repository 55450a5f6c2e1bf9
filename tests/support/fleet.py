"""A whole trading fleet of real processes for integration tests, without supervisord:
broker, simulator, gateway, execution, risk and strategies, each its own process, so a test
can SIGKILL and restart any one of them mid-flow."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomli_w
import zmq

from proto.schema import (Alert, GatewayState, Heartbeat, Message, OrderUpdate, RiskDecision,
                          StrategyPosition)
from services.bus import keys, snapshot
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from services.simulator.control import SimControl
from tests.support.bus import short_run_dir
from tests.support.processes import REPO, ProcessGroup, free_port, wait_for

FAST_GATEWAY = ["--backoff-base", "0.2", "--backoff-cap", "1.0", "--probe-interval", "1.0",
                "--probe-timeout", "3.0"]


class Fleet:
    def __init__(self, procs: ProcessGroup, tmp: Path, extra_config: dict | None = None) -> None:
        self.procs = procs
        self.run_dir = short_run_dir()
        self.state_dir = tmp / "state"
        self.strategies_dir = tmp / "strategies"
        self.strategies_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.sim_control = f"ipc://{self.run_dir}/sim-control"
        # role keys on (services/bus/keys.py): every integration test runs authenticated
        raw = {"bus": {"run_dir": str(self.run_dir), "heartbeat_ms": 500, "auth": True},
               "gateway": {"host": "127.0.0.1", "port": self.port, "client_id": 1},
               "fleet": {"state_dir": str(self.state_dir)}}
        for key, value in (extra_config or {}).items():
            raw[key] = {**raw.get(key, {}), **value}
        self.config_path = tmp / "fleet.toml"
        self.config_path.write_text(tomli_w.dumps(raw))
        self.config = fleet_config.load(self.config_path)
        if self.config.bus.auth:
            keys.ensure_keys(self.state_dir)
        self.ctx = zmq.Context()
        keys.for_process(self.ctx, self.config, "operator")  # the test watches as operator
        self.watch = Subscriber(self.ctx, self.config.bus.endpoint("bus-out"), [""])
        self.seen: list[tuple[str, Message]] = []
        self._sim: SimControl | None = None
        self._role_contexts: dict[str, zmq.Context] = {}

    def context_as(self, role: str) -> zmq.Context:
        """A context whose sockets authenticate with ``role``'s key (a test standing in for
        that service: ``execution``, ``gateway``, ``strategy.NAME``); ``fleet.ctx`` is the
        operator's."""
        if role not in self._role_contexts:
            ctx = zmq.Context()
            keys.for_process(ctx, self.config, role)
            self._role_contexts[role] = ctx
        return self._role_contexts[role]

    # -- processes ----------------------------------------------------------------------------
    def _svc(self, name: str, *args: str):
        return self.procs.start(name, [sys.executable, "-m", "services.cli", *args,
                                       "--config", str(self.config_path)])

    def start_simulator(self, *extra: str, state: str | Path | None = "default"):
        """``state``: the paper account's directory ("default": one per fleet, kept across
        simulator restarts as IB keeps a paper account; None: in memory)."""
        if state == "default":
            state = self.state_dir / "simulator"
        if state is not None:
            extra = ("--state-dir", str(state), *extra)
        proc = self.procs.start("simulator", [
            sys.executable, "-m", "services.simulator", "--port", str(self.port), "--seed", "7",
            "--control", self.sim_control, "--step-ms", "50", "--mktdata-ms", "100",
            "--mean-reversion", "0.05", *extra])
        self.sim.wait_ready(60)
        return proc

    @property
    def sim(self) -> SimControl:
        if self._sim is None:
            self._sim = SimControl(self.sim_control, timeout=20)
        return self._sim

    def start_broker(self):
        return self._svc("bus", "bus")

    def start_gateway(self, name: str = "gateway"):
        return self._svc(name, "gateway", *FAST_GATEWAY)

    def start_execution(self, name: str = "execution", *extra: str):
        return self._svc(name, "execution", *extra)

    def start_risk(self, name: str = "risk"):
        return self._svc(name, "risk", "--strategies-dir", str(self.strategies_dir))

    def add_strategy(self, name: str, class_path: str, symbols: list[str], params: dict,
                     risk: dict | None = None, on_kill: str | None = "cancel_all") -> Path:
        """A strategy TOML for this fleet. ``on_kill``: tests that throw the kill switch
        check that every order ends, so their strategies cancel all on a kill; None leaves
        the key out (the default, keep_exits: tests/trading/test_kill_modes.py)."""
        path = self.strategies_dir / f"{name}.toml"
        if self.config.bus.auth:
            keys.ensure_keys(self.state_dir, [f"strategy.{name}"])
        spec = {"name": name, "class": class_path, "symbols": symbols, "timer_s": 0.5}
        if on_kill is not None:  # a top-level key: before the tables
            spec["on_kill"] = on_kill
        path.write_text(tomli_w.dumps({**spec, "params": params, "risk": risk or {}}))
        return path

    def start_strategy(self, name: str, proc_name: str | None = None):
        return self._svc(proc_name or f"strategy-{name}", "strategy", "run",
                         str(self.strategies_dir / f"{name}.toml"))

    def start_core(self, execution_args: tuple[str, ...] = (), sim_args: tuple[str, ...] = ()):
        """Simulator, broker, gateway, execution, risk; returns once the gateway is
        synchronised and every service heartbeats. ``sim_args``: more simulator options
        (e.g. ``("--time-zone", "Asia/Tokyo")``)."""
        self.start_simulator(*sim_args)
        self.start_broker()
        self.start_gateway()
        self.start_execution("execution", *execution_args)
        self.start_risk()
        self.wait_heartbeats({"bus.1", "gateway.1", "execution.1", "risk.1"})
        self.wait_gateway("synchronised")

    # -- observation --------------------------------------------------------------------------
    def ignore_market_data(self) -> None:
        """Stop watching ``md.*`` (a test that floods market data must not drown in it)."""
        self.watch.unsubscribe("")
        for prefix in NOT_MARKET_DATA:
            self.watch.subscribe(prefix)

    def pump(self, timeout_ms: int = 50) -> None:
        got = self.watch.recv(timeout_ms)
        while got:
            self.seen.extend((got[0], m) for m in got[1])
            got = self.watch.recv(0)

    def messages(self, cls: type) -> list:
        return [m for _, m in self.seen if isinstance(m, cls)]

    def wait(self, predicate, deadline: float = 60.0, what: str = "condition"):
        def check():
            self.pump()
            return predicate()
        return wait_for(check, deadline=deadline, what=what)

    def wait_heartbeats(self, sources: set[str], deadline: float = 120.0) -> None:
        self.wait(lambda: sources <= {h.src for h in self.messages(Heartbeat)}, deadline,
                  what=f"heartbeats from {sorted(sources)}")

    def gateway_state(self) -> str:
        """The gateway's state as the bus's last-value cache has it (the Clone pattern: a
        state published before we subscribed is still seen)."""
        probe = Subscriber(self.ctx, self.config.bus.endpoint("bus-out"), ["gw.state"])
        try:
            state, live = snapshot.join(self.ctx, probe, self.config.bus.endpoint("bus-snap"),
                                        "gw.state", timeout=5.0)
        except snapshot.SnapshotTimeout:
            return "unknown"
        finally:
            probe.close()
        states = [m for _, m in state + live if isinstance(m, GatewayState)]
        return states[-1].state if states else "unknown"

    def wait_gateway(self, state: str, deadline: float = 60.0, after: int = 0) -> None:
        """``after``: only a state change published after this many GatewayState messages."""
        if after:
            self.wait(lambda: any(s.state == state
                                  for s in self.messages(GatewayState)[after:]),
                      deadline, what=f"gateway {state}")
        else:
            self.wait(lambda: self.gateway_state() == state, deadline,
                      what=f"gateway {state}")

    def updates(self, strategy: str | None = None) -> list[OrderUpdate]:
        return [u for u in self.messages(OrderUpdate) if strategy is None or u.strategy == strategy]

    def fills(self, strategy: str | None = None) -> dict[str, OrderUpdate]:
        """Fills seen on the bus, by execId (each counted once however often it was seen)."""
        return {u.exec_id: u for u in self.updates(strategy) if u.exec_id}

    def decisions(self, strategy: str | None = None) -> list[RiskDecision]:
        return [d for d in self.messages(RiskDecision)
                if strategy is None or d.strategy == strategy]

    def alerts(self, code: str | None = None) -> list[Alert]:
        return [a for a in self.messages(Alert) if code is None or a.code == code]

    def kill_switch(self) -> None:
        """Throw the kill switch as an operator would: ``ibfleet kill``."""
        result = subprocess.run([sys.executable, "-m", "services.cli", "kill", "--config",
                                 str(self.config_path)], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
        for ctx in self._role_contexts.values():
            ctx.destroy(linger=0)
        self.ctx.destroy(linger=0)


def sim_positions(fleet: Fleet) -> dict[str, float]:
    """The simulator's ground truth: position per symbol, zeros dropped."""
    ledger = fleet.sim.ledger()
    symbols = {str(f["con_id"]): f["symbol"] for f in ledger["fills"]}
    return {symbols.get(con_id, con_id): p["qty"] for con_id, p in ledger["positions"].items()
            if p["qty"]}


def execution_positions(fleet: Fleet) -> dict[str, float]:
    """Execution's positions per symbol (all strategies), from its snapshot."""
    sub = Subscriber(fleet.ctx, fleet.config.bus.endpoint("bus-out"), ["none"])
    try:
        state, _ = snapshot.join(fleet.ctx, sub, fleet.config.bus.endpoint("execution-snap"), "",
                                 timeout=20)
    finally:
        sub.close()
    out: dict[str, float] = {}
    for _, msg in state:
        if isinstance(msg, StrategyPosition) and msg.quantity:
            out[msg.symbol] = out.get(msg.symbol, 0.0) + msg.quantity
    return {s: q for s, q in out.items() if q}


def assert_books_match_the_simulator(fleet: Fleet, deadline: float = 60.0) -> dict[str, float]:
    """With the flow stopped: no order placed twice, every fill on the bus, and positions on
    the bus and in execution equal to the simulator's. Returns the simulator's positions."""
    fleet.wait(lambda: not live_orders(fleet), deadline=deadline, what="all orders cancelled")
    duplicates = duplicate_orders(fleet)
    assert not duplicates, f"orders placed twice at the simulator: {duplicates}"
    sim_ids = {f["exec_id"] for f in fleet.sim.fills()}
    fleet.wait(lambda: sim_ids <= set(fleet.fills()), deadline=deadline,
               what="every simulator fill on the bus")
    truth = sim_positions(fleet)
    assert positions_from_fills(fleet.fills().values()) == truth
    fleet.wait(lambda: execution_positions(fleet) == truth, deadline=deadline,
               what="execution's positions to equal the simulator's")
    return truth


def unapproved_orders(fleet: Fleet) -> list[dict]:
    """Orders at the simulator whose client order id risk never approved (by its published
    decisions): an order that went around risk. Orders without an order ref (placed by another
    client, not by the fleet) are not the fleet's and are left out."""
    approved = {d.client_order_id for d in fleet.decisions() if d.approved}
    return [o for o in fleet.sim.orders() if o["order_ref"] and o["order_ref"] not in approved]


def positions_from_fills(fills) -> dict[str, float]:
    out: dict[str, float] = {}
    for u in fills:
        out[u.symbol] = out.get(u.symbol, 0.0) + (u.last_fill_qty if u.side == "BUY"
                                                  else -u.last_fill_qty)
    return {s: q for s, q in out.items() if q}


def duplicate_orders(fleet: Fleet) -> dict[str, set[int]]:
    """Client order ids that exist at the simulator as more than one order. A place resent
    with the same IB id after a dropped connection is not a duplicate: IB (and the
    simulator) refuse it with error 103, and the ledger shows the request but no new order."""
    by_ref: dict[str, set[int]] = {}
    for order in fleet.sim.orders():
        if order["order_ref"]:
            by_ref.setdefault(order["order_ref"], set()).add(order["order_id"])
    return {ref: ids for ref, ids in by_ref.items() if len(ids) > 1}


# every topic prefix but market data (``md.``): see proto/schema.py's TOPICs
NOT_MARKET_DATA = ("acct.", "ack", "alert", "ctl", "fleet.", "gw.", "hb", "hist", "ord.",
                   "snap.", "sub.")

LIVE_STATUSES = {"PendingSubmit", "PreSubmitted", "Submitted", "ApiPending"}


def live_orders(fleet: Fleet) -> list[dict]:
    """Orders working at the simulator right now (its own view, not ours)."""
    return [o for o in fleet.sim.orders() if o["status"] in LIVE_STATUSES]
