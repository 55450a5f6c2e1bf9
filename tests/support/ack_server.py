"""A reliable-path server process for tests and benchmarks: acknowledges every request and
appends each processed request's (source, seq) to a file, so a test can count what the server
really processed, independently of the acknowledgements the client saw."""
from __future__ import annotations

import argparse
import signal

import zmq

from services.bus.reliable import ReliableServer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--ledger", required=True)
    args = parser.parse_args()
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ledger = open(args.ledger, "a", buffering=1)

    def handle(msg, peer):
        ledger.write(f"{msg.src} {msg.seq} {getattr(msg, 'client_order_id', '')}\n")
        return []

    ctx = zmq.Context()
    server = ReliableServer(ctx, args.endpoint, "acksink.1", handle)
    print("ready", flush=True)
    while not stop:
        if server.socket.poll(100):
            server.process_ready()
    ledger.close()
    ctx.destroy(linger=1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
