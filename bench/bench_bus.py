"""Bus benchmark: throughput through the broker over ipc://, and the order path's round trip.

Run: .venv/bin/python bench/bench_bus.py [--quick]

Throughput: one publisher process (the ``loadgen`` tool) -> broker -> 1 and 4 subscriber
processes; each subscriber times first-to-last message and counts gaps. Frames of 1 and of 100
messages, side by side. Round trip: a ReliableClient sends one request at a time to a
ReliableServer process and waits for its Ack; p50/p99 in microseconds.
Every figure is the median of several runs; the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.schema import OrderCommand  # noqa: E402
from services.bus.reliable import ReliableClient  # noqa: E402
from tests.support.bus import start_broker  # noqa: E402
from tests.support.processes import ProcessGroup, wait_for  # noqa: E402


def _sinks(run_dir: Path, procs: ProcessGroup, argv: list[str], subscribers: int) -> list:
    sinks = []
    for i in range(subscribers):
        ready = run_dir / f"ready-{time.monotonic_ns()}-{i}"
        sinks.append((procs.start(f"sink{i}-{time.monotonic_ns()}",
                                  [*argv, "--ready-file", str(ready)]), ready))
    for _, ready in sinks:
        wait_for(ready.exists, what="sink ready")
    return sinks


def _results(procs: ProcessGroup, sinks: list, count: int) -> dict:
    results = []
    for proc, _ in sinks:
        proc.wait(300)
        line = [ln for ln in procs.log(proc.name).splitlines()
                if ln.startswith('{"messages"')][-1]
        results.append(json.loads(line))
    rates = [r["messages"] / r["seconds"] for r in results if r["seconds"] > 0]
    return {"rate_min": min(rates) if rates else 0.0,
            "lost": sum(count - r["messages"] for r in results),
            "gaps": sum(r["gaps"] for r in results)}


def throughput(run_dir: Path, procs: ProcessGroup, subscribers: int, batch: int,
               count: int, kind: str) -> dict:
    """Publisher (frames built before the clock starts) -> broker -> ``subscribers`` processes
    that decode every message and check its sequence numbers (``bench.bus_sink``)."""
    sinks = _sinks(run_dir, procs, [sys.executable, "-m", "bench.bus_sink", "--endpoint",
                                    f"ipc://{run_dir}/bus-out", "--count", str(count)],
                   subscribers)
    time.sleep(0.5)  # let the subscriptions reach the broker (bench only; tests wait on data)
    gen = procs.start(f"gen-{time.monotonic_ns()}", [
        sys.executable, "-m", "services.bus.loadgen", "--run-dir", str(run_dir), "--count",
        str(count), "--batch", str(batch), "--kind", kind, "--prebuild"])
    gen.wait(300)
    return _results(procs, sinks, count)


def raw_throughput(run_dir: Path, procs: ProcessGroup, batch: int, count: int,
                   kind: str) -> dict:
    """The same frames over raw pyzmq PUB -> SUB: no broker, no decoding (``bench.raw_pubsub``)."""
    endpoint = f"ipc://{run_dir}/raw-{time.monotonic_ns()}"
    common = ["--endpoint", endpoint, "--count", str(count), "--batch", str(batch),
              "--kind", kind]
    gen = procs.start(f"rawpub-{time.monotonic_ns()}",
                      [sys.executable, "-m", "bench.raw_pubsub", "pub", *common])
    sinks = _sinks(run_dir, procs, [sys.executable, "-m", "bench.raw_pubsub", "sub", *common], 1)
    gen.wait(300)
    return _results(procs, sinks, count)


def round_trip(run_dir: Path, procs: ProcessGroup, n: int) -> list[float]:
    endpoint = f"ipc://{run_dir}/rt"
    ledger = run_dir / "rt-ledger"
    name = f"acksrv-{time.monotonic_ns()}"
    procs.start(name, [sys.executable, "-m", "tests.support.ack_server", "--endpoint", endpoint,
                       "--ledger", str(ledger)])
    wait_for(lambda: "ready" in procs.log(name), what="ack server")
    ctx = zmq.Context()
    client = ReliableClient(ctx, endpoint, "bench.1", resend_after=60)
    samples = []
    try:
        for i in range(n + 200):
            t0 = time.perf_counter()
            client.send(OrderCommand(command="place", client_order_id=f"b{i}", symbol="AAPL",
                                     quantity=1, limit_price=100.0))
            while client.pending:
                client.poll(1000)
            if i >= 200:  # warm-up excluded
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        ctx.destroy(linger=0)
    return samples


MODES = {  # name -> (what it measures, how)
    "raw pyzmq": "PUB -> SUB, no broker, frames received and counted, not decoded",
    "bus, md.depth": "publisher -> broker -> subscriber, every message decoded and "
                     "sequence-checked; depth is not in the broker's last-value cache",
    "bus, md.tick": "as above on md.tick, which the broker's last-value cache also decodes",
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    count = 200_000 if args.quick else 1_000_000
    run_dir = Path(tempfile.mkdtemp(prefix="ibf-bench-"))
    procs = ProcessGroup(run_dir / "logs")
    one: dict[tuple[str, int], list[dict]] = {}
    rows = []
    try:
        start_broker(procs, run_dir)
        for batch in (1, 100):  # one subscriber: raw pyzmq and the bus, interleaved
            n = count if batch > 1 else count // 5
            for _ in range(repeats):
                one.setdefault(("raw pyzmq", batch), []).append(
                    raw_throughput(run_dir, procs, batch, n, "depth"))
                one.setdefault(("bus, md.depth", batch), []).append(
                    throughput(run_dir, procs, 1, batch, n, "depth"))
                one.setdefault(("bus, md.tick", batch), []).append(
                    throughput(run_dir, procs, 1, batch, n, "tick"))
        for batch in (1, 100):  # four subscriber processes
            n = count if batch > 1 else count // 5
            runs = [throughput(run_dir, procs, 4, batch, n, "depth") for _ in range(repeats)]
            rows.append((4, batch, n, statistics.median(r["rate_min"] for r in runs),
                         sum(r["lost"] for r in runs), sum(r["gaps"] for r in runs)))
        rt = round_trip(run_dir, procs, 2000 if args.quick else 10_000)
    finally:
        procs.stop_all()
    print(f"one subscriber, median of {repeats} interleaved runs (messages/s):\n")
    print("| messages/frame | " + " | ".join(MODES) + " | bus md.depth / raw | lost | gaps |")
    print("|---|" + "---|" * (len(MODES) + 3))
    for batch in (1, 100):
        med = {m: statistics.median(r["rate_min"] for r in one[(m, batch)]) for m in MODES}
        lost = sum(r["lost"] for m in MODES for r in one[(m, batch)])
        gaps = sum(r["gaps"] for m in MODES for r in one[(m, batch)])
        print(f"| {batch} | " + " | ".join(f"{med[m]:,.0f}" for m in MODES)
              + f" | {med['bus, md.depth'] / med['raw pyzmq']:.2f} | {lost} | {gaps} |")
    for mode, how in MODES.items():
        print(f"- {mode}: {how}")
    print("\n| subscribers | messages/frame | messages per run | median msgs/s (slowest sub) "
          "| lost | gaps |")
    print("|---|---|---|---|---|---|")
    for subscribers, batch, n, rate, lost, gaps in rows:
        print(f"| {subscribers} | {batch} | {n:,} | {rate:,.0f} | {lost} | {gaps} |")
    q = statistics.quantiles(rt, n=100)
    print(f"\nrequest/ack round trip over ipc:// ({len(rt)} sequential requests): "
          f"p50 {statistics.median(rt):.0f} µs, p99 {q[98]:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
