"""Fuzzing what TWS sends: frames through the bridge's decoder loop (``BridgeClient.run``,
ibapi's ``Decoder`` and our ``QueueWrapper``) and the events it makes through the gateway's
callback table (``Gateway._drain_events``). The bridge must never die: a frame ibapi cannot
decode is a ``bad_frame`` event (counted, logged, published), a callback whose handler fails is
an ``event_errors`` count; nothing escapes either loop.

Inputs: the real frames of tests/fixtures/tws/frames.jsonl, mutated (fields replaced,
dropped, added; the message id changed), and random field lists."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from ibapi.decoder import Decoder
from ibapi.message import IN

from services.gateway.client import BridgeClient
from services.gateway.options import GatewayOptions
from services.gateway.service import Gateway
from services.gateway.wrapper import QueueWrapper
from services.runtime import config as fleet_config
from tests.fuzz.support import Tally, long, quick
from tests.support.bus import short_run_dir

# real frames kept in the repository (provenance and licenses in its README), so that every
# clean clone, CI's included, replays them
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tws" / "frames.jsonl"
REAL = [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]
for _frame in REAL:  # rust-ibapi's recordings (RU) carry no version: they are at 173
    _frame["server_version"] = _frame["server_version"] or 173
VERSIONS = sorted({f["server_version"] for f in REAL})
IN_IDS = sorted({v for k, v in vars(IN).items() if not k.startswith("_") and isinstance(v, int)})

FIELD = st.one_of(
    st.sampled_from(["", "0", "-1", "1", "2147483647", "9223372036854775807",
                     "99999999999999999999999", "1.7976931348623157e309", "nan", "inf",
                     "-inf", "1e-320", "0x10", "true", "None", "1.5", "-0", "\u00e9",
                     "AAPL", "STK", "BUY", "Submitted", "20260406 09:30:00 US/Eastern",
                     "\\x00", "\\u12", "{", '{"a":', "2104"]),
    st.text(max_size=12),
    st.integers(-2**70, 2**70).map(str),
    st.floats().map(repr))


@st.composite
def mutated_real(draw) -> tuple[int, list[str]]:
    frame = draw(st.sampled_from(REAL))
    fields = list(frame["fields"])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "replace", "drop", "cut", "insert", "id",
                                   "dup"]))
        pos = draw(st.integers(0, max(0, len(fields) - 1)))
        if op == "replace" and fields:
            fields[pos] = draw(FIELD)
        elif op == "drop" and fields:
            del fields[pos]
        elif op == "cut":
            del fields[pos:]
        elif op == "insert":
            fields.insert(pos, draw(FIELD))
        elif op == "id" and fields:
            fields[0] = str(draw(st.sampled_from(IN_IDS)))
        elif op == "dup":
            fields += fields[pos:pos + 3]
    version = draw(st.one_of(st.just(frame["server_version"]), st.sampled_from(VERSIONS)))
    return version, fields


RANDOM_FIELDS = st.tuples(
    st.sampled_from(VERSIONS),
    st.builds(lambda msg_id, rest: [msg_id, *rest],
              st.one_of(st.sampled_from(IN_IDS).map(str), FIELD),
              st.lists(FIELD, max_size=30)))

FRAMES = st.one_of(mutated_real(), RANDOM_FIELDS, st.sampled_from(
    [(f["server_version"], f["fields"]) for f in REAL]))


def to_wire(fields: list[str]) -> bytes:
    """The payload after the length prefix, as EReader hands it to the decoder loop."""
    return b"".join(f.encode("utf-8", "surrogatepass") + b"\0" for f in fields)


class Bridge:
    """A gateway built in-process (no socket) and a BridgeClient feeding its event queue."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        cfg = fleet_config.load(run_dir=short_run_dir(), state_dir=self.tmp.name)
        self.gw = Gateway(cfg, GatewayOptions(client_id=7))
        self.failures: list[logging.LogRecord] = []
        bridge = self

        class Catch(logging.Handler):
            def emit(self, record):
                if record.exc_info:
                    bridge.failures.append(record)
        self.gw.log.addHandler(Catch())
        self.gw.log.propagate = False  # a traceback per bad event would flood the test log

    def feed(self, version: int, fields: list[str]) -> None:
        gw = self.gw
        wrapper = QueueWrapper(gw.events, gw.conn.generation)
        client = BridgeClient(wrapper)
        client.serverVersion_ = version
        client.decoder = Decoder(wrapper, version)
        client.msg_queue.put(to_wire(fields))
        client.run()  # not connected: decodes what is queued, then returns (never raises)
        gw._drain_events()  # never raises either: a failing handler is counted

    def close(self) -> None:
        self.gw.on_stop()
        self.gw.ctx.destroy(linger=0)
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def bridge():
    b = Bridge()
    yield b
    b.close()


def check_frame(bridge: Bridge, version: int, fields: list[str],
                tally: Tally | None = None) -> None:
    c = bridge.gw.counters
    before = (c["bad_frames"], c["event_errors"], len(bridge.failures))
    bridge.feed(version, fields)
    assert bridge.gw.events.qsize() == 0
    failed = [f"{r.__dict__.get('event')}: {r.exc_info[1]!r}"
              for r in bridge.failures[before[2]:]]
    if tally:
        for what in failed:
            tally.note(f"handler failed: {what.split('(')[0]}")
    # caught and counted by the loop, but a handler that fails may have done half its work
    # (published nothing, or stamped a bus sequence number it never sent): none may fail
    assert not failed, (version, fields, failed)
    if tally:
        if c["bad_frames"] > before[0]:
            tally.note("bad_frame")
        if c["bad_frames"] == before[0] and c["event_errors"] == before[1]:
            tally.note("clean")


@quick
@given(frame=FRAMES)
def test_a_bad_tws_frame_never_stops_the_bridge(bridge, frame):
    check_frame(bridge, *frame)


def test_every_real_frame_decodes_without_a_bad_frame(bridge):
    """The corpus itself: nothing IB really sent is a bad frame for the bridge (except the
    frames the README marks as lossy copies: bytes were lost in copying them)."""
    c = bridge.gw.counters
    for frame in REAL:
        if "lossy" in frame["label"]:
            continue
        bad = c["bad_frames"]
        bridge.feed(frame["server_version"], frame["fields"])
        assert c["bad_frames"] == bad, (frame["label"], frame["fields"])


@pytest.mark.fuzz
def test_tws_frames_long(bridge):
    tally = Tally("gateway bridge: BridgeClient.run + Gateway._drain_events")

    @long
    @given(frame=FRAMES)
    def run(frame):
        if tally.go():
            check_frame(bridge, *frame, tally)
    run()
    tally.report()
