"""Recovery: simulator accepting again -> the gateway publishes ``synchronised``.

Run: .venv/bin/python bench/bench_recovery.py [--outages 1,2,5,10,30] [--restarts 20] [--full]
                                             [--mode fault|process] [--tree PATH]

Real processes: a bus broker, the simulator, the gateway at its production defaults (backoff
base 1 s, cap 30 s, connect timeout 10 s; nothing made fast). Before the first restart the
gateway streams AAPL (tick + depth subscriptions) and holds one resting order, so every
recovery re-subscribes and reconciles (open orders, executions, positions, completed orders)
through the 45 msg/s pacer, as in bench_gateway.py.

Each restart takes the next outage length from ``--outages`` (cycled) and:
- ``--mode fault`` (default): the simulator's ``restart`` fault: every session dropped, and
  for the outage every connection accepted and dropped at once (a restarting gateway behind
  a socket proxy). "Accepting again" is when the control socket first reports
  ``rejecting: false`` (polled every 2 ms from 0.3 s before the end of the outage).
- ``--mode process``: the simulator process is stopped (SIGTERM; its paper account is on
  disk) and started again after the outage: the port refuses meanwhile, as when IB Gateway
  restarts. "Accepting again" is the first TCP connect of the bench's own that succeeds
  (tried every 2 ms from the restart).
The end is the first ``GatewayState`` ``synchronised`` after the fault, as received by a
bus subscriber in the bench process (monotonic clock on both ends).

``--full``: the outages 1, 2, 5, 10, 30, 60, 120 s (20 restarts, ~15 min); ``--quick``: 1 and
2 s, 4 restarts.
``--tree PATH``: run the gateway from another checkout (e.g. a copy of the tree before this
change, for a before/after on the same machine).
"""
from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.schema import OrderCommand, SubscribeRequest  # noqa: E402
from services.bus.publisher import Publisher  # noqa: E402
from services.bus.reliable import ReliableClient  # noqa: E402
from services.simulator.control import SimControl  # noqa: E402
from bench.bench_gateway import StateWatch  # noqa: E402  (the gateway's states, timed)
from tests.support.bus import short_run_dir, start_broker  # noqa: E402
from tests.support.processes import ProcessGroup, free_port, port_open, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outages", default="1,2,5,10,30", help="seconds, cycled (default 1,2,5,10,30)")
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--full", action="store_true", help="outages 1,2,5,10,30,60,120 s")
    ap.add_argument("--quick", action="store_true", help="outages 1 and 2 s, 4 restarts")
    ap.add_argument("--mode", choices=("fault", "process"), default="fault")
    ap.add_argument("--tree", default=str(REPO), help="checkout the gateway runs from")
    ap.add_argument("--gateway-args", default="", help="extra gateway options, space separated")
    args = ap.parse_args()
    # stopped with SIGTERM: the finally below still stops every process it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.outages, args.restarts = "1,2", 4
    outages = [1, 2, 5, 10, 30, 60, 120] if args.full else \
        [float(x) for x in args.outages.split(",")]
    plan = [outages[i % len(outages)] for i in range(args.restarts)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-rec-"))
    procs = ProcessGroup(tmp / "logs")
    rows = []
    try:
        run_dir = short_run_dir()
        _, cfg = start_broker(procs, run_dir)
        port, cport = free_port(), free_port()
        sim_argv = [sys.executable, "-m", "services.simulator", "--port", str(port),
                    "--control", f"tcp://127.0.0.1:{cport}", "--step-ms", "10",
                    "--mktdata-ms", "50", "--state-dir", str(tmp / "sim-state")]
        sim_proc = procs.start("sim", sim_argv)
        wait_for(lambda: port_open(port), 60, what="simulator")
        sim = SimControl(f"tcp://127.0.0.1:{cport}")
        sim.wait_ready(60)
        watch = StateWatch(cfg.bus.endpoint("bus-out"))
        # the gateway's code from --tree (first on its path)
        boot = (f"import sys, runpy; sys.path.insert(0, {args.tree!r}); "
                f"runpy.run_module('services.gateway', run_name='__main__', alter_sys=True)")
        procs.start("gateway", [sys.executable, "-c", boot, "--run-dir",
                                str(run_dir), "--state-dir", str(tmp / "gw-state"),
                                "--port", str(port), "--client-id", "9",
                                *args.gateway_args.split()])
        wait_for(lambda: watch.first("synchronised", 0), 60, what="first synchronised")
        ctx = zmq.Context.instance()
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "bench")
        time.sleep(0.3)
        for kind in ("tick", "depth"):
            pub.publish(SubscribeRequest(requester="bench", symbol="AAPL", kind=kind))
        execution = ReliableClient(ctx, cfg.bus.endpoint("gateway"), "execution.bench")
        execution.send(OrderCommand(command="place", client_order_id="bench-rest",
                                    symbol="AAPL", side="BUY", quantity=1, order_type="LMT",
                                    limit_price=50.0, tif="GTC"))
        wait_for(lambda: execution.poll(20) is not None and not execution.pending, 30,
                 what="ack")
        time.sleep(1.0)
        for i, outage in enumerate(plan):
            t_fault = time.monotonic()
            if args.mode == "fault":
                sim.restart(seconds=outage)
                time.sleep(max(0.0, outage - 0.3))
                wait_for(lambda: not sim.status()["rejecting"], outage + 30, interval=0.002,
                         what="accepting again")
                t_accept = time.monotonic()
            else:
                procs.terminate(sim_proc, timeout=20)
                sim.close()
                wait_for(lambda: watch.first("disconnected", t_fault), 30,
                         what="the gateway seeing the loss")
                time.sleep(max(0.0, outage - (time.monotonic() - t_fault)))
                sim_proc = procs.start("sim", sim_argv)
                wait_for(lambda: port_open(port), 60, interval=0.002, what="accepting again")
                t_accept = time.monotonic()
                sim = SimControl(f"tcp://127.0.0.1:{cport}")
            # the gateway repeats its state with every heartbeat: the synchronised that
            # counts is the first after the loss was published
            t_down, _ = wait_for(lambda: watch.first("disconnected", t_fault), 60,
                                 what="the loss")
            t_sync, _ = wait_for(lambda: watch.first("synchronised", t_down), 180,
                                 what="synchronised again")
            backoffs = sum("(backoff)" in r or "retry in" in r
                           for r in watch.reasons("disconnected", t_fault))
            rows.append((outage, t_sync - t_accept, backoffs))
            print(f"restart {i + 1}/{len(plan)}: outage {outage:g} s, accepting -> "
                  f"synchronised {t_sync - t_accept:.3f} s", file=sys.stderr, flush=True)
            time.sleep(1.0)
        watch.stop = True
        sim.close()
        pub.close()
        execution.close()
    finally:
        procs.stop_all()
    samples = [r[1] for r in rows]
    print(f"\nRecovery ({args.mode} mode), {len(rows)} restarts, outages "
          f"{', '.join(f'{o:g}' for o in sorted(set(plan)))} s, gateway from {args.tree}\n")
    print("| outage | restarts | accepting -> synchronised p50 | max |")
    print("|---|---:|---:|---:|")
    for o in sorted(set(plan)):
        vals = [r[1] for r in rows if r[0] == o]
        print(f"| {o:g} s | {len(vals)} | {statistics.median(vals):.3f} s | {max(vals):.3f} s |")
    print(f"| all | {len(samples)} | p50 {statistics.median(samples):.3f} s, "
          f"p99 {pct(samples, 99):.3f} s | {max(samples):.3f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
