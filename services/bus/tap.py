"""Watch the bus: print every message (or only counts) as JSON lines on stdout.

``ibfleet tap [TOPIC ...]`` is the operator's window onto the bus; tests use it as an
independent subscriber process. On SIGTERM it prints a final ``summary`` line with what it
received, the gaps it saw and the bad frames it skipped.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import zmq

from services.bus import keys
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from services.runtime import logging as jsonlog


def _summary(sub: Subscriber, per_type: dict[str, int]) -> dict:
    gaps = sub.gaps.counters
    return {"summary": True, "received": sub.received, "by_type": per_type, "gaps": gaps.gaps,
            "missing": gaps.missing, "duplicates": gaps.duplicates, "restarts": gaps.restarts,
            "bad_frames": dict(sub.errors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet tap", description=__doc__.split("\n\n")[0])
    parser.add_argument("topics", nargs="*", default=[""], help="topic prefixes (default: all)")
    parser.add_argument("--config")
    parser.add_argument("--run-dir")
    parser.add_argument("--quiet", action="store_true", help="print only the periodic counts")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between count lines")
    args = parser.parse_args(argv)
    jsonlog.setup("tap")
    try:
        cfg = fleet_config.load(args.config, args.run_dir)
    except fleet_config.ConfigError as exc:
        parser.exit(2, f"ibfleet tap: {exc}\n")
    ctx = zmq.Context()
    keys.for_process(ctx, cfg, "operator")  # bus.auth: the operator's key
    sub = Subscriber(ctx, cfg.bus.endpoint("bus-out"), args.topics or [""])
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    per_type: dict[str, int] = {}
    out = sys.stdout
    next_count = time.monotonic() + args.every
    while not stop:
        got = sub.recv(100)
        if got:
            topic, msgs = got
            for msg in msgs:
                name = type(msg).__name__
                per_type[name] = per_type.get(name, 0) + 1
                if not args.quiet:
                    fields = {f: getattr(msg, f) for f in msg.__struct_fields__}
                    out.write(json.dumps({"topic": topic, "type": name, **fields},
                                         default=str) + "\n")
        if time.monotonic() >= next_count:
            out.write(json.dumps({"counts": True, **_summary(sub, per_type)}) + "\n")
            out.flush()
            next_count = time.monotonic() + args.every
    out.write(json.dumps(_summary(sub, per_type)) + "\n")
    out.flush()
    ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
