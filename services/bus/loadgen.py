"""Publish synthetic market data onto the bus: for load tests, benchmarks and demos.

It first proves the path is up (its own heartbeat comes back through the broker), so nothing
is sent into the void before subscriptions have propagated. ``--drop-at N`` skips sequence
number N without sending it: a forced loss, to show that subscribers see the gap.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from proto import codec
from proto.schema import DepthUpdate, Heartbeat, Tick
from services.bus.publisher import Publisher
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from services.runtime import logging as jsonlog


def wait_until_routed(ctx: zmq.Context, pub: Publisher, bus_out: str, timeout: float) -> bool:
    """Publish heartbeats until one comes back through the broker."""
    echo = Subscriber(ctx, bus_out, [f"hb.{pub.source}"])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pub.publish(Heartbeat(interval_ms=100, state="warming"))
            if echo.recv(100):
                return True
        return False
    finally:
        echo.close()


def make_batch(kind: str, symbol: str, start: int, n: int) -> list:
    if kind == "depth":
        return [DepthUpdate(symbol=symbol, position=i % 10, operation=1, side=i & 1,
                            price=100.0 + (i % 10) * 0.01, size=float(100 + i % 7))
                for i in range(start, start + n)]
    return [Tick(symbol=symbol, bid=100.0 + i * 1e-4, ask=100.01 + i * 1e-4, bid_size=100.0,
                 ask_size=200.0) for i in range(start, start + n)]


def prebuilt_frames(pub: Publisher, kind: str, symbol: str, count: int,
                    batch: int) -> list[bytes]:
    """Every frame of the run, stamped by ``pub`` (so subscribers check real sequence numbers)
    and encoded, ready to send: ``count`` messages, ``batch`` per frame."""
    topic = f"md.{kind}.{symbol}"
    frames = []
    for start in range(0, count, batch):
        msgs = make_batch(kind, symbol, start, min(batch, count - start))
        for msg in msgs:
            msg.src = pub.source
            pub.stamper.stamp(msg, topic)
        frames.append(codec.encode(msgs))
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1, help="messages per frame")
    parser.add_argument("--kind", choices=["tick", "depth"], default="tick")
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--drop-at", type=int, default=0, help="skip this topic sequence number")
    parser.add_argument("--source", default="loadgen.1")
    parser.add_argument("--config")
    parser.add_argument("--run-dir")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--prebuild", action="store_true",
                        help="stamp and encode every frame before sending (benchmarks: time "
                             "the bus and its subscribers, not this generator)")
    args = parser.parse_args(argv)
    jsonlog.setup(args.source)
    try:
        cfg = fleet_config.load(args.config, args.run_dir)
    except fleet_config.ConfigError as exc:
        parser.exit(2, f"ibfleet loadgen: {exc}\n")
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), args.source)
    if not wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), args.timeout):
        print(json.dumps({"error": "bus not reachable"}), flush=True)
        return 1
    topic = f"md.{args.kind}.{args.symbol}"
    sent = 0
    if args.prebuild:
        frames = prebuilt_frames(pub, args.kind, args.symbol, args.count, args.batch)
        started = time.perf_counter()
        send = pub.socket.send_multipart
        wire_topic = topic.encode()
        for frame in frames:
            send((wire_topic, frame), copy=False)
        pub.sent = args.count
        sent = args.count
    else:
        started = time.perf_counter()
    while sent < args.count:
        n = min(args.batch, args.count - sent)
        batch = make_batch(args.kind, args.symbol, sent, n)
        next_tseq = pub.stamper.topic_seq.get(topic, 0) + 1
        pub.publish_batch(batch, topic, lose=args.drop_at - next_tseq if args.drop_at else -1)
        sent += n
    elapsed = time.perf_counter() - started
    print(json.dumps({"sent": pub.sent, "seconds": elapsed, "topic": topic}), flush=True)
    ctx.destroy(linger=5000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
