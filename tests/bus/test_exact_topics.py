"""A keyed topic is subscribed exactly: ZeroMQ matches prefixes, so without this a strategy on
``MS`` received every ``MSFT`` quote, and a strategy named ``mr`` strategy ``mr1``'s orders
(issue 13, item 7: "subscriptions match by prefix")."""
from __future__ import annotations

import zmq

from proto.schema import OrderUpdate, Tick
from services.bus.loadgen import wait_until_routed
from services.bus.publisher import Publisher
from services.bus.subscriber import Subscriber
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import wait_for


def _tick(symbol: str, bid: float) -> Tick:
    return Tick(symbol=symbol, bid=bid, ask=bid + 0.01, bid_size=100, ask_size=100)


def test_an_exact_subscription_to_ms_receives_no_msft_and_counts_no_gap(procs):
    _, cfg = start_broker(procs, short_run_dir())
    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "feed.1")
        assert wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60)
        ms = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["gw."], exact=["md.tick.MS"])
        everything = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["md.tick."])
        got_ms, got_all = [], []

        def pump() -> bool:
            for sub, into in ((ms, got_ms), (everything, got_all)):
                while (frame := sub.recv(0)) is not None:
                    into.extend(frame[1])
            pub.publish(_tick("MSFT", 300.0))
            pub.publish(_tick("MS", 90.0))
            return len([t for t in got_ms if t.symbol == "MS"]) >= 20

        wait_for(pump, deadline=60, what="MS quotes at the exact subscriber")
        assert {t.symbol for t in got_ms} == {"MS"}
        assert {t.symbol for t in got_all} == {"MS", "MSFT"}
        assert ms.foreign > 0  # MSFT frames arrived (prefix) and were dropped
        assert ms.gaps.counters.gaps == 0 and everything.gaps.counters.gaps == 0
    finally:
        ctx.destroy(linger=0)


def test_a_prefix_subscription_still_receives_its_whole_family(procs):
    _, cfg = start_broker(procs, short_run_dir())
    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "exec.1")
        assert wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60)
        both = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["ord.update."],
                          exact=["ord.update.mr"])
        seen: set[str] = set()

        def pump() -> bool:
            while (frame := both.recv(0)) is not None:
                seen.update(m.strategy for m in frame[1])
            for name in ("mr", "mr1"):
                pub.publish(OrderUpdate(strategy=name, client_order_id=f"{name}-1",
                                        state="new", symbol="AAPL", side="BUY",
                                        quantity=1.0))
            return seen == {"mr", "mr1"}

        wait_for(pump, deadline=60, what="both strategies' updates through the prefix")
        assert both.foreign == 0
    finally:
        ctx.destroy(linger=0)
