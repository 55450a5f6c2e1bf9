"""Trading path benchmark: intent -> risk -> execution -> gateway latency, and risk's checks/s.

Run: .venv/bin/python bench/bench_trading.py [--quick]

Latency: real broker, risk and execution processes. The bench process plays the strategy (a
ReliableClient to risk) and the gateway's order socket (a ReliableServer bound at the gateway
endpoint, so it stamps the moment each OrderCommand arrives). One intent at a time: the time
from sending the intent to the command reaching the gateway includes risk's checks, risk's
forward, execution's journal append with fsync, and execution's send. A stand-in replaces the
gateway here only: the bridge's own cost is measured in bench_gateway.py.
Throughput: RiskEngine.check in-process (the checks themselves), and risk the process (intents
pipelined from one client, all approved, acknowledged once execution has them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.schema import GatewayState, OrderCommand, OrderIntent, OrderStatus, Tick  # noqa: E402
from services.bus import keys  # noqa: E402
from services.bus.loadgen import wait_until_routed  # noqa: E402
from services.bus.publisher import Publisher  # noqa: E402
from services.bus.reliable import ReliableClient, ReliableServer  # noqa: E402
from services.risk.engine import RiskEngine  # noqa: E402
from services.risk.limits import LimitBook, Limits  # noqa: E402
from services.runtime import config as fleet_config  # noqa: E402
from services.runtime.instruments import Instruments  # noqa: E402
from tests.support.processes import ProcessGroup, wait_for  # noqa: E402


def engine_checks_per_second(n: int) -> float:
    engine = RiskEngine(LimitBook(Limits(order_rate=0, max_open_orders=0)), Instruments())
    engine.gateway_state = "synchronised"
    engine.on_mark("AAPL", 99.99, 100.01)
    intents = [OrderIntent(strategy="s", client_order_id=f"c{i}", action="new", symbol="AAPL",
                           side="BUY", quantity=10, limit_price=100.0) for i in range(n)]
    t0 = time.perf_counter()
    for intent in intents:
        engine.check(intent)
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--auth", action="store_true",
                        help="CURVE keys per role on every socket (as under `ibfleet up`)")
    args = parser.parse_args()
    n_latency = 300 if args.quick else 2000
    n_burst = 2000 if args.quick else 10_000
    tmp = Path(tempfile.mkdtemp(prefix="ibf-bt-"))
    run_dir = Path(tempfile.mkdtemp(prefix="ibf-"))
    cfg_path = tmp / "fleet.toml"
    cfg_path.write_text(tomli_w.dumps({
        "bus": {"run_dir": str(run_dir), "auth": args.auth}, "fleet": {"state_dir": os.environ.get("BENCH_STATE_DIR", str(tmp / "state"))},
        "risk": {"order_rate": 0, "max_open_orders": 0, "max_position": 0,
                 "max_gross_exposure": 0, "stale_after_s": 0}}))
    cfg = fleet_config.load(cfg_path)
    procs = ProcessGroup(tmp / "logs")
    if args.auth:
        keys.ensure_keys(cfg.state_dir, [*keys.FIXED_ROLES, "strategy.bench"])
    # the bench plays the gateway (its order socket and its market data) and the strategy:
    # one context per role, each with that role's key when keys are on
    ctx = zmq.Context()
    strategy_ctx = zmq.Context()
    keys.for_process(ctx, cfg, "gateway")
    keys.for_process(strategy_ctx, cfg, "strategy.bench")
    arrivals: dict[str, float] = {}

    def on_command(msg, peer):
        if isinstance(msg, OrderCommand) and msg.command == "place":
            arrivals[msg.client_order_id] = time.perf_counter()
            return [OrderStatus(ib_order_id=len(arrivals), client_order_id=msg.client_order_id,
                                status="PendingSubmit", filled=0, remaining=msg.quantity)]
        return []

    try:
        gateway = ReliableServer(ctx, cfg.bus.endpoint("gateway"), "gateway.bench", on_command)
        for name in ("bus", "execution", "risk"):
            procs.start(name, [sys.executable, "-m", "services.cli", name, "--config",
                               str(cfg_path)])
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "gateway.1")
        assert wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60)
        strategy = ReliableClient(strategy_ctx, cfg.bus.endpoint("risk"), "strategy.bench", 30)

        def feed():  # the gateway is synchronised and AAPL has a fresh mark
            pub.publish(GatewayState(state="synchronised"))
            pub.publish(Tick(symbol="AAPL", bid=99.99, ask=100.01, bid_size=100, ask_size=100))
            gateway.process_ready()

        # until risk has a fresh mark and sees the gateway synchronised, intents are refused:
        # keep probing with new ids until one reaches the gateway
        probes = iter(range(10**6))

        def probe_through() -> bool:
            feed()
            strategy.send(OrderIntent(strategy="bench", client_order_id=f"probe-{next(probes)}",
                                      action="new", symbol="AAPL", side="BUY", quantity=1,
                                      limit_price=100.0))
            strategy.poll(100)
            gateway.process_ready()
            return any(k.startswith("probe-") for k in arrivals)

        wait_for(probe_through, deadline=60, what="a first intent to reach the gateway")
        while strategy.pending:
            gateway.process_ready()
            strategy.poll(5)

        samples = []
        for i in range(n_latency):
            coid = f"lat-{i}"
            t0 = time.perf_counter()
            strategy.send(OrderIntent(strategy="bench", client_order_id=coid, action="new",
                                      symbol="AAPL", side="BUY", quantity=1, limit_price=100.0))
            while coid not in arrivals:
                if gateway.socket.poll(5):
                    gateway.process_ready()
                strategy.poll(0)
            samples.append((arrivals[coid] - t0) * 1e6)
            if i % 200 == 0:
                feed()
        while strategy.pending:
            gateway.process_ready()
            strategy.poll(5)

        feed()
        t0 = time.perf_counter()
        for i in range(n_burst):
            strategy.send(OrderIntent(strategy="bench", client_order_id=f"burst-{i}",
                                      action="new", symbol="AAPL", side="BUY", quantity=1,
                                      limit_price=100.0))
        while strategy.pending:
            if gateway.socket.poll(1):
                gateway.process_ready()
            strategy.poll(0)
        burst_rate = n_burst / (time.perf_counter() - t0)
    finally:
        ctx.destroy(linger=0)
        strategy_ctx.destroy(linger=0)
        procs.stop_all()
    q = statistics.quantiles(samples, n=100)
    print("| measurement | figure |")
    print("|---|---|")
    print(f"| intent -> gateway, through risk and execution (p50) | {statistics.median(samples):,.0f} µs |")
    print(f"| intent -> gateway (p99) | {q[98]:,.0f} µs |")
    print(f"| risk + execution processes, pipelined intents acknowledged (journal group commit) | {burst_rate:,.0f} intents/s |")
    print(f"| RiskEngine.check in-process | {engine_checks_per_second(50_000 if args.quick else 200_000):,.0f} checks/s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
