"""Test helper process: a subscriber with a tiny queue that is slow on purpose (1 ms per
frame), to show that a replay waits for it instead of dropping. Prints one JSON summary."""
from __future__ import annotations

import argparse
import json
import time

import zmq

from services.bus.subscriber import Subscriber


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--hwm", type=int, default=5)
    args = parser.parse_args()
    ctx = zmq.Context()
    sub = Subscriber(ctx, args.endpoint, [""], hwm=args.hwm)
    deadline = time.monotonic() + 120
    while sub.received < args.expect and time.monotonic() < deadline:
        if sub.recv(200) is not None:
            time.sleep(0.001)  # the slowness under test
    gaps = sub.gaps.counters
    print(json.dumps({"summary": True, "received": sub.received, "gaps": gaps.gaps,
                      "missing": gaps.missing, "duplicates": gaps.duplicates}), flush=True)
    ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
