"""Publisher and subscribers in separate processes over real ipc:// sockets through the broker."""
from __future__ import annotations

import sys

from tests.support.bus import json_lines, short_run_dir, start_broker
from tests.support.processes import wait_for


def _start_tap(procs, name, run_dir, *topics):
    return procs.start(name, [sys.executable, "-m", "services.bus.tap", "--quiet", "--every",
                              "0.2", "--run-dir", str(run_dir), *topics])


def _last_counts(procs, name):
    lines = [line for line in json_lines(procs.log(name)) if "received" in line]
    return lines[-1] if lines else None


def _seen_broker_heartbeat(procs, name):
    counts = _last_counts(procs, name)
    return counts and counts["by_type"].get("Heartbeat", 0) > 0


def test_two_subscriber_processes_see_every_message_and_the_forced_gap(procs):
    run_dir = short_run_dir()
    start_broker(procs, run_dir)
    taps = ["tap-a", "tap-b"]
    for name in taps:
        _start_tap(procs, name, run_dir, "md.", "hb.bus")
    for name in taps:  # subscribed, and the subscription has reached the broker
        wait_for(lambda: _seen_broker_heartbeat(procs, name), what=f"{name} to be subscribed")

    gen = procs.start("loadgen", [sys.executable, "-m", "services.bus.loadgen", "--run-dir",
                                  str(run_dir), "--count", "20000", "--batch", "50",
                                  "--drop-at", "777"])
    assert gen.wait(120) == 0, procs.log("loadgen")

    for name in taps:
        wait_for(lambda: (_last_counts(procs, name) or {}).get("by_type", {}).get("Tick", 0)
                 >= 19_999, what=f"{name} to receive the ticks")
        counts = _last_counts(procs, name)
        assert counts["by_type"]["Tick"] == 19_999  # one was dropped on purpose
        assert counts["gaps"] == 1 and counts["missing"] == 1
        assert counts["duplicates"] == 0 and counts["bad_frames"] == {}
        assert '"sequence gap"' in procs.log(name) and '"expected": 777' in procs.log(name)


def test_a_topic_filtered_subscriber_sees_no_false_gaps(procs):
    run_dir = short_run_dir()
    start_broker(procs, run_dir)
    _start_tap(procs, "tap-msft", run_dir, "md.tick.MSFT", "hb.bus")
    wait_for(lambda: _seen_broker_heartbeat(procs, "tap-msft"), what="tap to be subscribed")
    for symbol in ("AAPL", "MSFT", "AAPL", "MSFT"):
        gen = procs.start(f"gen-{symbol}", [sys.executable, "-m", "services.bus.loadgen",
                                            "--run-dir", str(run_dir), "--count", "500",
                                            "--symbol", symbol, "--source", "gen.1"])
        assert gen.wait(120) == 0
    wait_for(lambda: (_last_counts(procs, "tap-msft") or {}).get("by_type", {}).get("Tick", 0)
             >= 1000, what="MSFT ticks")
    counts = _last_counts(procs, "tap-msft")
    assert counts["by_type"]["Tick"] == 1000
    assert counts["gaps"] == 0
    assert counts["restarts"] == 1  # the second gen.1 process counted from 1 again


def test_tap_prints_every_message_as_a_json_line(procs):
    run_dir = short_run_dir()
    start_broker(procs, run_dir)
    procs.start("tap-full", [sys.executable, "-m", "services.bus.tap", "--every", "0.2",
                             "--run-dir", str(run_dir), "md.", "hb.bus"])
    wait_for(lambda: _seen_broker_heartbeat(procs, "tap-full"), what="tap to be subscribed")
    gen = procs.start("gen", [sys.executable, "-m", "services.bus.loadgen", "--run-dir",
                              str(run_dir), "--count", "5", "--symbol", "MSFT"])
    assert gen.wait(120) == 0
    wait_for(lambda: len([r for r in json_lines(procs.log("tap-full"))
                          if r.get("type") == "Tick"]) == 5, what="five printed ticks")
    ticks = [r for r in json_lines(procs.log("tap-full")) if r.get("type") == "Tick"]
    assert [t["symbol"] for t in ticks] == ["MSFT"] * 5
    assert [t["tseq"] for t in ticks] == [1, 2, 3, 4, 5]
    assert all(t["topic"] == "md.tick.MSFT" and t["src"] == "loadgen.1" for t in ticks)


def test_a_publishers_first_message_is_not_lost_to_the_slow_joiner(procs):
    """A service that publishes the moment it starts (execution closing orders IB cancelled
    while it was down) must not lose those messages to ZeroMQ's slow joiner: each of 20 new
    publishers sends one message at once, and the subscriber gets all 20."""
    import zmq

    from proto.schema import Alert
    from services.bus.publisher import Publisher
    from services.bus.subscriber import Subscriber

    run_dir = short_run_dir()
    _, cfg = start_broker(procs, run_dir)
    ctx = zmq.Context()
    sub = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["alert"])
    try:
        # the subscription has reached the broker once a marker published in a loop arrives
        marker = Publisher(ctx, cfg.bus.endpoint("bus-in"), "marker.1")
        wait_for(lambda: marker.publish(Alert(severity="info", code="marker", text="")) and sub.recv(50), deadline=60,
                 what="the subscription to reach the broker")
        marker.close()
        got: list = []
        for i in range(20):
            pub_ctx = zmq.Context()
            pub = Publisher(pub_ctx, cfg.bus.endpoint("bus-in"), f"starter.{i}")
            assert pub.ready
            pub.publish(Alert(severity="info", code="first", text=str(i)))
            pub.close()
            pub_ctx.term()  # linger: the frame is handed over before the context ends

        def collect():
            frame = sub.recv(50)
            while frame:
                got.extend(m.text for m in frame[1] if m.code == "first")
                frame = sub.recv(0)
            return len(got) >= 20
        wait_for(collect, deadline=30, what="the 20 first messages")
        assert sorted(got, key=int) == [str(i) for i in range(20)]
    finally:
        sub.close()
        ctx.destroy(0)


def test_a_message_that_cannot_be_encoded_leaves_no_gap_in_the_sequence():
    """An encoding failure raises at the publisher, and the numbers it had taken are given
    back: the next message follows the last one sent, so no subscriber sees a false loss."""
    import pytest
    import zmq

    from proto.schema import Alert, GatewayError
    from services.bus.publisher import Publisher

    ctx = zmq.Context()
    try:
        pub = Publisher(ctx, "inproc://nowhere", "gw.1", ready_timeout=0.0)
        first = pub.publish(Alert(severity="info", code="a", text=""))
        with pytest.raises(OverflowError):
            pub.publish(GatewayError(code=2**70, text="too big"), topic="alert")
        with pytest.raises(OverflowError):
            pub.publish_batch([Alert(severity="info", code="b", text=""),
                               GatewayError(code=2**70, text="too big")], "alert")
        after = pub.publish(Alert(severity="info", code="c", text=""))
        assert (after.seq, after.tseq) == (first.seq + 1, first.tseq + 1)
        pub.close()
    finally:
        ctx.destroy(0)
