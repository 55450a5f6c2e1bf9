"""Broker benchmark: frames/s through a real bus process, without keys and with CURVE per role.

Run: .venv/bin/python bench/bench_broker.py [--quick] [--repeats N]

Without role keys the broker forwards ``bus-in`` -> ``bus-out`` with libzmq's C proxy; with
them (``[bus] auth``, on under ``ibfleet up``) it cannot, because each frame's topic must be
checked against the role of the key it came with (``keys.topic_allowed``), so a Python loop
forwards instead, and every connection is CURVE-encrypted. One publisher (the gateway's key)
sends N frames of 200 bytes on ``md.tick.AAPL`` as fast as it can; one subscriber (the
recorder's key) times first to last. Runs alternate (plain, keyed, plain, ...); the medians of
each and the median of the per-pair ratios are printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import tomli_w
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.bus import keys, sockets  # noqa: E402
from services.runtime import config as fleet_config  # noqa: E402
from tests.support.bus import short_run_dir  # noqa: E402
from tests.support.processes import ProcessGroup, wait_for  # noqa: E402

TOPIC = b"md.tick.AAPL"


def frames_per_second(auth: bool, count: int, size: int = 200) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="ibf-bb-"))
    cfg_path = tmp / "fleet.toml"
    cfg_path.write_text(tomli_w.dumps({"bus": {"run_dir": str(short_run_dir()), "auth": auth},
                                       "fleet": {"state_dir": str(tmp / "state")}}))
    cfg = fleet_config.load(cfg_path)
    if auth:
        keys.ensure_keys(cfg.state_dir)
    procs = ProcessGroup(tmp / "logs")
    pub_ctx, sub_ctx = zmq.Context(), zmq.Context()
    keys.for_process(pub_ctx, cfg, "gateway")
    keys.for_process(sub_ctx, cfg, "recorder")
    try:
        procs.start("bus", [sys.executable, "-m", "services.cli", "bus", "--config",
                            str(cfg_path)])
        sub = sub_ctx.socket(zmq.SUB)
        sub.rcvhwm = 0
        sockets.connect(sub, cfg.bus.endpoint("bus-out"))
        sub.subscribe(b"md.")
        pub = pub_ctx.socket(zmq.XPUB)
        pub.sndhwm = 0
        sockets.connect(pub, cfg.bus.endpoint("bus-in"))

        def routed() -> bool:  # a probe frame made it through: the path is subscribed
            pub.send_multipart((TOPIC, b"probe"))
            return sub.poll(100) != 0
        wait_for(routed, deadline=60, what="the broker to route frames")
        while sub.poll(200):
            sub.recv_multipart()
        payload = b"x" * size

        def send() -> None:
            for _ in range(count):
                pub.send_multipart((TOPIC, payload))
        sender = threading.Thread(target=send)
        got = 0
        sender.start()
        if not sub.poll(30_000):
            raise RuntimeError("nothing arrived")
        sub.recv_multipart()
        got, t0 = 1, time.perf_counter()
        while got < count and sub.poll(10_000):
            sub.recv_multipart()
            got += 1
        elapsed = time.perf_counter() - t0
        sender.join()
        if got < count:
            raise RuntimeError(f"only {got} of {count} frames arrived")
        return (got - 1) / elapsed
    finally:
        pub_ctx.destroy(linger=0)
        sub_ctx.destroy(linger=0)
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    count = 20_000 if args.quick else 100_000
    plain, keyed = [], []
    for _ in range(args.repeats):
        plain.append(frames_per_second(False, count))
        keyed.append(frames_per_second(True, count))
    ratio = statistics.median(k / p for p, k in zip(plain, keyed))
    print(f"| broker, {count:,} frames of 200 B, {args.repeats} pairs | no keys (C proxy) | "
          f"CURVE per role (filtering loop) | ratio |")
    print("|---|---|---|---|")
    print(f"| frames/s (median) | {statistics.median(plain):,.0f} | "
          f"{statistics.median(keyed):,.0f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
