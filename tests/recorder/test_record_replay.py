"""A real session (broker, load generators, recorder), read back, then replayed to subscriber
processes as fast as possible and at N times real time: nothing missing, nothing reordered."""
from __future__ import annotations

import signal
import sys
from collections import Counter

import pytest

from services.recorder.check import check_recording
from services.recorder.reader import Recording
from tests.recorder.helpers import (loadgen, run_publisher, start_recorder, summary_line,
                                    tap_counts, wait_recorded)
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import ProcessGroup, wait_for

DEPTH, TICKS, ROUNDS = 20_000, 10_000, 40


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Record one session; stop the recorder with SIGTERM. Returns (out dir, sent per source)."""
    base = tmp_path_factory.mktemp("session")
    procs = ProcessGroup(base / "logs")
    try:
        run_dir = short_run_dir()
        start_broker(procs, run_dir)
        out = base / "rec"
        recorder = start_recorder(procs, run_dir, out, "--rotate-mb", "1")
        sent = {
            "gen-depth.1": loadgen(procs, run_dir, "gen-depth.1", "depth", DEPTH)["sent"],
            "gen-tick.1": loadgen(procs, run_dir, "gen-tick.1", "tick", TICKS)["sent"],
            "mixed.1": run_publisher(procs, "mixed.1", [
                "-m", "tests.recorder.publish_mixed", "--run-dir", str(run_dir),
                "--rounds", str(ROUNDS)])["sent"],
        }
        wait_recorded(out, sent)
        procs.kill(recorder, signal.SIGTERM)
        assert recorder.wait(30) == 0, procs.log("recorder")
        yield out, sent, procs
    finally:
        procs.stop_all()


def test_every_message_is_recorded_in_order(session):
    out, sent, procs = session
    result = check_recording(out, deep=True)
    assert result.complete, result.as_dict()
    assert result.report.clean and result.report.segments >= 2  # rotated at 1 MiB
    for src, n in sent.items():
        got = result.sources[src]
        assert got.last_seq == n and got.gaps == 0 and got.out_of_order == 0
        assert got.messages == got.last_seq - got.first_seq + 1
    by_type = Counter()
    last_seq: dict[str, int] = {}
    last_recv = 0
    for record, msg in Recording(out).messages():
        assert record.recv_ns >= last_recv
        last_recv = record.recv_ns
        assert msg.seq > last_seq.get(msg.src, 0)  # in order per source
        last_seq[msg.src] = msg.seq
        if msg.src in sent:
            by_type[type(msg).__name__] += 1
    assert by_type["DepthUpdate"] == DEPTH + ROUNDS * 100
    assert by_type["Tick"] == TICKS + ROUNDS * 100
    for name in ("OrderStatus", "Position", "Execution", "AccountValue", "Alert"):
        assert by_type[name] == ROUNDS
    assert '"stopped"' in procs.log("recorder")


def test_time_and_topic_selection(session):
    out, _, _ = session
    rec = Recording(out)
    first, last = rec.time_range()
    everything = list(rec.records())
    mid = everything[len(everything) // 2].recv_ns
    later = list(Recording(out).records(start_ns=mid))
    assert later  # the index seek finds exactly the records a full scan would
    assert [(r.segment_no, r.offset) for r in later] == \
        [(r.segment_no, r.offset) for r in everything if r.recv_ns >= mid]
    window = list(Recording(out).records(start_ns=first, end_ns=mid, topics=["md.tick"]))
    assert window and all(r.topic.startswith("md.tick") and r.recv_ns <= mid for r in window)
    assert len(window) == sum(1 for r in everything
                              if r.topic.startswith("md.tick") and r.recv_ns <= mid)


def _start_replay(procs, name, out, run_dir, *extra):
    return procs.start(name, [sys.executable, "-m", "services.replay", str(out), "--run-dir",
                              str(run_dir), "--wait-subscribers", "1", *extra])


def _start_tap(procs, name, run_dir):
    return procs.start(name, [sys.executable, "-m", "services.bus.tap", "--quiet", "--every",
                              "0.2", "--run-dir", str(run_dir)])


def _expected_by_type(out):
    return Counter(type(m).__name__ for _, m in Recording(out).messages())


@pytest.mark.parametrize("speed", ["max", "realtime-xN"])
def test_replay_delivers_every_message_in_order(session, procs, speed):
    out, _, _ = session
    expected = _expected_by_type(out)
    total = sum(expected.values())
    first, last = Recording(out).time_range()
    args = ["--speed", "max"]
    if speed != "max":  # scaled so the replay lasts about 2 s
        factor = max((last - first) / 1e9 / 2.0, 1.0)
        args = ["--speed", f"{factor:g}"]
    run_dir = short_run_dir()
    replay = _start_replay(procs, "replay", out, run_dir, *args)
    _start_tap(procs, "tap", run_dir)
    assert replay.wait(120) == 0, procs.log("replay")
    wait_for(lambda: (tap_counts(procs, "tap") or {}).get("received", 0) >= total, deadline=90,
             what="the tap to receive the whole replay")
    counts = tap_counts(procs, "tap")
    assert counts["received"] == total
    assert counts["by_type"] == dict(expected)
    assert counts["gaps"] == 0 and counts["missing"] == 0 and counts["duplicates"] == 0
    assert counts["bad_frames"] == {}
    summary = summary_line(procs, "replay")
    assert summary["messages"] == total
    if speed != "max":  # paced from the receive times: it cannot be faster than the schedule
        assert summary["seconds"] >= 0.9 * (last - first) / 1e9 / factor


def test_replay_refuses_a_live_bus_run_dir(procs):
    run_dir = short_run_dir()
    start_broker(procs, run_dir)
    empty = run_dir / "no-recording"
    empty.mkdir()
    proc = procs.start("replay", [sys.executable, "-m", "services.replay", str(empty),
                                  "--run-dir", str(run_dir)])
    assert proc.wait(60) == 2
    assert "a live bus runs in" in procs.log("replay")


def test_max_speed_waits_for_a_slow_subscriber_instead_of_dropping(session, procs):
    out, _, _ = session
    total = sum(_expected_by_type(out).values())
    run_dir = short_run_dir()
    replay = _start_replay(procs, "replay", out, run_dir, "--speed", "max", "--hwm", "5")
    slow = procs.start("slow", [sys.executable, "-m", "tests.recorder.slow_subscriber",
                                "--endpoint", f"ipc://{run_dir}/bus-out", "--expect",
                                str(total), "--hwm", "5"])
    assert slow.wait(150) == 0, procs.log("slow")
    assert replay.wait(60) == 0, procs.log("replay")
    got = summary_line(procs, "slow")
    assert got["received"] == total and got["gaps"] == 0 and got["missing"] == 0
    assert summary_line(procs, "replay")["stalls"] > 0  # it did have to wait
