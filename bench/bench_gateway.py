"""Gateway benchmark: time from the simulator accepting connections again after a restart to
the bridge publishing ``synchronised`` on the bus (subscriptions restored, reconciled).

Run: .venv/bin/python bench/bench_gateway.py [--restarts N] [--outage S] [--backoff-cap S]

Real processes: bus broker, simulator, gateway; a bus subscriber in this process timestamps
GatewayState on receipt. "Accepting again" is observed by polling the simulator's control
socket (``status().rejecting`` turns false) every 2 ms, so the figure includes up to ~2 ms of
observation error and the bus hop. Two AAPL streams and a resting order are live throughout, so
every cycle restores subscriptions and reconciles a non-empty order book.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.schema import GatewayState, OrderCommand, SubscribeRequest  # noqa: E402
from services.bus.publisher import Publisher  # noqa: E402
from services.bus.reliable import ReliableClient  # noqa: E402
from services.bus.subscriber import Subscriber  # noqa: E402
from services.simulator.control import SimControl  # noqa: E402
from tests.support.bus import short_run_dir, start_broker  # noqa: E402
from tests.support.processes import ProcessGroup, free_port, port_open, wait_for  # noqa: E402


class StateWatch:
    def __init__(self, endpoint: str) -> None:
        self.sub = Subscriber(zmq.Context.instance(), endpoint, [GatewayState.TOPIC])
        self.events: list[tuple[float, GatewayState]] = []
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop:
            got = self.sub.recv(20)
            if got:
                now = time.monotonic()
                with self.lock:
                    self.events += [(now, m) for m in got[1]]

    def first(self, state: str, after: float):
        with self.lock:
            for t, m in self.events:
                if t >= after and m.state == state:
                    return t, m
        return None

    def reasons(self, state: str, after: float) -> list[str]:
        with self.lock:
            return [m.reason for t, m in self.events if t >= after and m.state == state]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=7)
    ap.add_argument("--outage", type=float, default=1.0, help="seconds the simulator rejects")
    ap.add_argument("--backoff-base", type=float, default=0.1)
    ap.add_argument("--backoff-cap", type=float, default=0.5)
    args = ap.parse_args()
    procs = ProcessGroup(Path(tempfile.mkdtemp(prefix="bench-gw-")))
    try:
        run_dir = short_run_dir()
        _, cfg = start_broker(procs, run_dir)
        port, cport = free_port(), free_port()
        procs.start_python("sim", "services.simulator", "--port", str(port), "--control",
                           f"tcp://127.0.0.1:{cport}", "--step-ms", "10", "--mktdata-ms", "50")
        wait_for(lambda: port_open(port), 60, what="simulator")
        sim = SimControl(f"tcp://127.0.0.1:{cport}")
        sim.wait_ready(60)
        watch = StateWatch(cfg.bus.endpoint("bus-out"))
        procs.start_python("gateway", "services.gateway", "--run-dir", str(run_dir),
                           "--state-dir", tempfile.mkdtemp(prefix="bench-gw-state-"),
                           "--port", str(port), "--client-id", "9",
                           "--backoff-base", str(args.backoff_base),
                           "--backoff-cap", str(args.backoff_cap), "--connect-timeout", "2")
        wait_for(lambda: watch.first("synchronised", 0), 60, what="first synchronised")
        ctx = zmq.Context.instance()
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "bench")
        time.sleep(0.3)
        for kind in ("tick", "depth"):
            pub.publish(SubscribeRequest(requester="bench", symbol="AAPL", kind=kind))
        execution = ReliableClient(ctx, cfg.bus.endpoint("gateway"), "execution.bench")
        execution.send(OrderCommand(command="place", client_order_id="bench-rest", symbol="AAPL",
                                    side="BUY", quantity=1, order_type="LMT", limit_price=50.0,
                                    tif="GTC"))
        wait_for(lambda: execution.poll(20) is not None and not execution.pending, 30,
                 what="ack")
        time.sleep(1.0)
        samples, steps = [], []
        for i in range(args.restarts):
            t_fault = time.monotonic()
            sim.restart(seconds=args.outage)
            wait_for(lambda: sim.status()["rejecting"], 10, interval=0.002, what="rejecting")
            wait_for(lambda: not sim.status()["rejecting"], 30, interval=0.002,
                     what="accepting again")
            t_accept = time.monotonic()
            t_sync, _ = wait_for(lambda: watch.first("synchronised", t_fault), 60,
                                 what="synchronised again")
            with watch.lock:
                retry = [m.reason for t, m in watch.events
                         if t >= t_fault and m.state == "disconnected"]
            steps.append(retry[-1].rsplit("retry in ", 1)[-1] if retry else "?")
            samples.append(t_sync - t_accept)
            time.sleep(0.5)
        watch.stop = True
        result = {"restarts": args.restarts, "outage_s": args.outage,
                  "backoff": [args.backoff_base, args.backoff_cap],
                  "accept_to_synchronised_s": {
                      "median": round(statistics.median(samples), 3),
                      "min": round(min(samples), 3), "max": round(max(samples), 3),
                      "all": [round(s, 3) for s in samples]},
                  "last_backoff_step_per_cycle": steps}
        print(json.dumps(result, indent=2))
        sim.close()
        pub.close()
        execution.close()
        return 0
    finally:
        procs.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
