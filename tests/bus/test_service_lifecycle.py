"""Every service: heartbeats at a fixed interval, clean exit on SIGTERM, silence is detected."""
from __future__ import annotations

import signal
import time

import zmq

from proto.schema import Heartbeat
from services.bus.heartbeat import HeartbeatMonitor
from services.bus.subscriber import Subscriber
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import wait_for


def test_broker_heartbeats_and_exits_cleanly_on_sigterm(procs):
    run_dir = short_run_dir()
    broker, cfg = start_broker(procs, run_dir)
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["hb."])
        beats: list[Heartbeat] = []
        wait_for(lambda: beats.extend(m for _, ms in [sub.recv(100) or ("", [])] for m in ms)
                 or len(beats) >= 3, what="three heartbeats")
        assert {b.src for b in beats} == {"bus.1"}
        assert [b.tseq for b in beats] == sorted(b.tseq for b in beats)
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(30) == 0
        assert '"event": "stopped"' in procs.log("bus")
    finally:
        ctx.destroy(linger=0)


def test_a_killed_service_is_reported_missing_by_the_heartbeat_monitor(procs):
    run_dir = short_run_dir()
    broker, cfg = start_broker(procs, run_dir)
    ctx = zmq.Context()
    try:
        sub = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["hb."])
        monitor = HeartbeatMonitor(misses=3)

        def observe():
            got = sub.recv(100)
            for msg in got[1] if got else []:
                monitor.observe(msg)
            return "bus.1" in monitor.beats

        wait_for(observe, what="a heartbeat")
        assert monitor.missing() == []
        procs.kill(broker, signal.SIGKILL)
        broker.wait(30)
        seen_at = monitor.beats["bus.1"].received_at
        # missing exactly when three intervals have passed with nothing heard
        assert monitor.missing(now=seen_at + 2.9) == []
        assert monitor.missing(now=seen_at + 3.1) == ["bus.1"]
        wait_for(lambda: observe() and monitor.missing() == ["bus.1"], deadline=30,
                 what="the monitor to report the dead broker")
        assert time.monotonic() - seen_at > 3.0
    finally:
        ctx.destroy(linger=0)
