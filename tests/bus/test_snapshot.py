"""A late joiner gets the current state from a snapshot, then the live stream without a gap."""
from __future__ import annotations

import zmq

from proto.schema import GatewayState, Heartbeat, Tick
from services.bus import snapshot
from services.bus.loadgen import wait_until_routed
from services.bus.publisher import Publisher
from services.bus.subscriber import Subscriber
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import wait_for


def _tick(symbol: str, bid: float) -> Tick:
    return Tick(symbol=symbol, bid=bid, ask=bid + 0.01, bid_size=100, ask_size=100)


def test_late_joiner_receives_snapshot_then_live_updates_without_gap(procs):
    run_dir = short_run_dir()
    _, cfg = start_broker(procs, run_dir)
    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "feed.1")
        assert wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60)
        for i in range(100):
            pub.publish(_tick("AAPL", 100 + i))
            pub.publish(_tick("MSFT", 200 + i))
        pub.publish(GatewayState(state="synchronised", reason="test"))

        def cached_state():  # the broker's cache has taken in everything published so far
            probe = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["md.tick."])
            try:
                state, _ = snapshot.join(ctx, probe, cfg.bus.endpoint("bus-snap"), "md.tick.")
            finally:
                probe.close()
            return {m.symbol: m.bid for _, m in state} == {"AAPL": 199.0, "MSFT": 299.0}

        wait_for(cached_state, what="the broker to cache the published state")

        late = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["md.tick.", "gw."])
        state, live = snapshot.join(ctx, late, cfg.bus.endpoint("bus-snap"), "md.tick.")
        last = {m.symbol: m.bid for _, m in state if isinstance(m, Tick)}
        assert last == {"AAPL": 199.0, "MSFT": 299.0}
        assert all(t.startswith("md.tick.") for t, _ in state)

        # the late subscriber's subscription must reach the publisher before it counts
        late.subscribe("hb.feed.1")
        wait_for(lambda: pub.publish(Heartbeat(interval_ms=100)) and any(
            isinstance(m, Heartbeat) for _, ms in [late.recv(50) or ("", [])] for m in ms),
            what="the late subscriber's subscription to propagate")
        for i in range(100, 150):
            pub.publish(_tick("AAPL", 100 + i))
        got = [m for _, m in live]
        wait_for(lambda: (got.extend(m for _, ms in [late.recv(50) or ("", [])] for m in ms
                                     if isinstance(m, Tick) and m.symbol == "AAPL")
                          or len([m for m in got if m.symbol == "AAPL"]) >= 50),
                 what="live updates after the snapshot")
        aapl = [m.bid for m in got if isinstance(m, Tick) and m.symbol == "AAPL"]
        assert aapl == [100.0 + i for i in range(100, 150)]
        assert late.gaps.counters.gaps == 0 and late.gaps.counters.duplicates == 0
    finally:
        ctx.destroy(linger=0)


def test_a_burst_of_quotes_leaves_the_last_in_the_snapshot_and_no_false_gap(procs):
    """The broker's cache conflates quotes (only the latest md.tick frame waiting is
    decoded): after a burst the snapshot still holds each symbol's last quote with its
    sequence number, and the frames it skipped are not reported as a sequence gap."""
    run_dir = short_run_dir()
    _, cfg = start_broker(procs, run_dir)
    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "feed.1")
        assert wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60)
        for i in range(20_000):
            pub.publish(_tick("AAPL" if i % 2 else "MSFT", 100 + i))
        expected = {"MSFT": 100.0 + 19_998, "AAPL": 100.0 + 19_999}

        def cached():
            probe = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["md.tick."])
            try:
                state, _ = snapshot.join(ctx, probe, cfg.bus.endpoint("bus-snap"), "md.tick.")
            finally:
                probe.close()
            return {m.symbol: (m.bid, m.tseq) for _, m in state} == {
                s: (bid, 10_000) for s, bid in expected.items()}

        wait_for(cached, what="the broker to cache each symbol's last quote")
        assert "sequence gap" not in procs.log("bus")
    finally:
        ctx.destroy(linger=0)
