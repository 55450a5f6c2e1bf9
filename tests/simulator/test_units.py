"""Pure parts: depth operations, framing, pacing."""
from __future__ import annotations

from hypothesis import given, strategies as st

from services.simulator.market import depth_ops
from services.simulator.pacing import HistoricalPacing, MessageRate
from services.simulator.wire import FrameSplitter, frame


def _side(desc):
    return st.lists(st.integers(0, 30), unique=True, max_size=8).map(
        lambda ps: [(p, 1.0 + p % 3) for p in sorted(ps, reverse=desc)])


@given(st.booleans(), st.integers(1, 6), st.data())
def test_depth_ops_rebuild_the_new_book(desc, rows, data):
    old = data.draw(_side(desc))[:rows]
    new = data.draw(_side(desc))
    cur = list(old)
    for pos, op, lvl in depth_ops(old, new, rows, desc):
        assert pos < rows  # never a row the client's book cannot hold
        if op == 0:
            cur.insert(pos, lvl)
            del cur[rows:]  # a full book drops its last row
        elif op == 1:
            cur[pos] = lvl
        else:
            del cur[pos]
        assert len(cur) <= rows
    assert cur == new[:rows]


def test_frame_splitter_handles_partial_input():
    data = frame(["49", "1"]) + frame(["9", "1", "5"])
    sp = FrameSplitter()
    out = []
    for b in data:
        out += sp.feed(bytes([b]))
    assert out == [b"49\x001\x00", b"9\x001\x005\x00"]


def test_message_rate_and_history_pacing():
    r = MessageRate(limit=2, strikes_to_disconnect=2)
    assert r.admit(0.0)[0] and r.admit(0.1)[0]
    assert r.admit(0.2) == (False, True, False)
    assert r.admit(1.1)[0] and r.admit(1.2)[0]
    assert r.admit(1.3) == (False, True, True)
    h = HistoricalPacing(15, 6, 2, 60, 600)
    assert h.check(0, ("a",), ("a", 1)) is None
    assert h.check(1, ("a",), ("a", 1)) is not None
