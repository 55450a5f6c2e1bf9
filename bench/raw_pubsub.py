"""Raw pyzmq PUB -> SUB, no broker, no decoding: the ceiling ``bench_bus`` compares the bus with.

    python -m bench.raw_pubsub pub --endpoint ipc://... --count N --batch B [--kind tick]
    python -m bench.raw_pubsub sub --endpoint ipc://... --count N --batch B --ready-file F

The publisher binds an XPUB (so it sees the subscriber arrive: no slow-joiner loss), builds
the same stamped, encoded frames the bus benchmark sends (``loadgen.prebuilt_frames``), then
sends them as fast as libzmq takes them. The subscriber counts frames x ``batch`` messages,
receiving each frame as the bus's ``Subscriber`` does (``recv_multipart``, copied), and prints
one JSON line like ``bench.bus_sink``: messages, seconds from the first to the last.
"""
from __future__ import annotations

import argparse
import json
import time

import zmq

from services.bus.loadgen import prebuilt_frames
from services.bus.publisher import Stamper


class _Stamping:
    """What ``prebuilt_frames`` needs of a publisher: a source and its stamper."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.stamper = Stamper(source)


def publish(args) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.sndhwm = 0  # as the bus broker: nothing dropped at the publisher
    sock.bind(args.endpoint)
    frames = prebuilt_frames(_Stamping("raw.1"), args.kind, "AAPL", args.count, args.batch)
    if not sock.poll(60_000, zmq.POLLIN):  # the subscriber's subscription
        print(json.dumps({"error": "no subscriber"}), flush=True)
        return 1
    sock.recv()
    topic = f"md.{args.kind}.AAPL".encode()
    started = time.perf_counter()
    for frame in frames:
        sock.send_multipart((topic, frame), copy=False)
    print(json.dumps({"sent": args.count, "seconds": time.perf_counter() - started}), flush=True)
    ctx.destroy(linger=30_000)
    return 0


def subscribe(args) -> int:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.rcvhwm = 0
    sock.subscribe(b"md.")
    sock.connect(args.endpoint)
    open(args.ready_file, "w").close()
    frames_wanted = -(-args.count // args.batch)
    got = 0
    first = None
    deadline = time.monotonic() + args.timeout
    while got < frames_wanted and time.monotonic() < deadline:
        if not sock.poll(200):
            continue
        sock.recv_multipart(copy=True)
        if first is None:
            first = time.perf_counter()
        got += 1
    elapsed = time.perf_counter() - (first or time.perf_counter())
    print(json.dumps({"messages": min(got * args.batch, args.count), "seconds": elapsed,
                      "gaps": 0, "missing": 0}), flush=True)
    ctx.destroy(linger=0)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--kind", choices=["tick", "depth"], default="tick")
    parser.add_argument("--ready-file")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    return publish(args) if args.role == "pub" else subscribe(args)


if __name__ == "__main__":
    raise SystemExit(main())
