"""A subscriber process for the bus benchmark: counts decoded messages until it has N.

Prints one JSON line: messages, seconds from the first to the last, gaps and missing.
"""
from __future__ import annotations

import argparse
import json
import time

import zmq

from services.bus.subscriber import Subscriber


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    ctx = zmq.Context()
    sub = Subscriber(ctx, args.endpoint, ["md.", "hb."])
    open(args.ready_file, "w").close()
    first = None
    got = 0
    deadline = time.monotonic() + args.timeout
    while got < args.count and time.monotonic() < deadline:
        result = sub.recv(200)
        if not result:
            continue
        topic, msgs = result
        if not topic.startswith("md."):
            continue
        if first is None:
            first = time.perf_counter()
        got += len(msgs)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    print(json.dumps({"messages": got, "seconds": elapsed, "gaps": sub.gaps.counters.gaps,
                      "missing": sub.gaps.counters.missing}), flush=True)
    ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
