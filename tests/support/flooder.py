"""Publish COUNT identical real-time bars for SYMBOL on the bus as fast as possible, then exit:
a feed a test uses to fill a stopped subscriber's queues (``python -m tests.support.flooder
ENDPOINT SYMBOL COUNT``)."""
from __future__ import annotations

import sys

import zmq

from proto.schema import Bar
from services.bus.publisher import Publisher


def main(endpoint: str, symbol: str, count: int) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, endpoint, "flood.1")
    bar = Bar(symbol=symbol, start_ns=0, seconds=5, open=1, high=1, low=1, close=1, volume=0)
    for _ in range(count):
        pub.publish(bar)
    pub.socket.linger = 30_000  # hand every queued frame to the broker before exiting
    pub.close()
    ctx.term()
    print(f"flooded {count}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
