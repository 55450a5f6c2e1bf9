"""Publish COUNT identical real-time bars for SYMBOL on the bus as fast as possible, then exit:
a feed a test uses to fill a stopped subscriber's queues (``python -m tests.support.flooder
ENDPOINT SYMBOL COUNT [FLEET_CONFIG]``; with the config, as the gateway's key)."""
from __future__ import annotations

import sys

import zmq

from proto.schema import Bar
from services.bus import keys
from services.bus.publisher import Publisher
from services.runtime import config as fleet_config


def main(endpoint: str, symbol: str, count: int, config: str = "") -> None:
    ctx = zmq.Context()
    if config:  # a fleet with role keys: only the gateway's key may publish market data
        keys.for_process(ctx, fleet_config.load(config), "gateway")
    pub = Publisher(ctx, endpoint, "flood.1")
    bar = Bar(symbol=symbol, start_ns=0, seconds=5, open=1, high=1, low=1, close=1, volume=0)
    for _ in range(count):
        pub.publish(bar)
    pub.socket.linger = 30_000  # hand every queued frame to the broker before exiting
    pub.close()
    ctx.term()
    print(f"flooded {count}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
