"""Each crash the fuzzers found, as the exact input that crashed, kept in the default run.
See docs/fuzzing.md."""
from __future__ import annotations

import pytest

from proto import codec


def test_a_type_tag_that_is_not_utf8_is_a_malformed_frame():
    # found by test_fuzz_bus: msgspec raised UnicodeDecodeError (not a FrameError) for a
    # message whose type tag is not UTF-8; Subscriber.decode_parts let it escape its loop
    with pytest.raises(codec.MalformedFrame):
        codec.decode(b'\x91\x91\xa4\x00\x00\x00\x80')


def _engine():
    from tests.fuzz.test_fuzz_risk import make_engine
    return make_engine()


def test_an_intent_with_an_unknown_action_is_refused():
    # found by test_fuzz_risk: action "" passed every check as a new order (the identity and
    # open-order checks look for action == "new") and was approved
    from tests.fuzz.test_fuzz_risk import snapshot
    from proto.schema import OrderIntent
    engine = _engine()
    intent = OrderIntent(strategy="s", client_order_id="s-3", action="", symbol="AAPL",
                         side="BUY", quantity=10.0, order_type="LMT", limit_price=100.0)
    before = snapshot(engine)
    decision = engine.check(intent)
    assert not decision.approved and decision.reason == "bad_terms"
    assert snapshot(engine) == before


def test_a_group_with_two_entries_is_refused():
    # found by test_fuzz_risk: in a group of two legs without a parent only the first was
    # checked; the second (here with action "", but any terms at all) was approved unchecked
    from proto.schema import OrderIntent
    engine = _engine()
    legs = [OrderIntent(strategy="s", client_order_id="s-3", action="new", symbol="AAPL",
                        side="BUY", quantity=10.0, order_type="LMT", limit_price=100.0),
            OrderIntent(strategy="s", client_order_id="s-4", action="", symbol="ES",
                        side="SELL", quantity=1.0, order_type="STP LMT", limit_price=5000.0,
                        stop_price=5000.25)]
    decision = engine.check_group(legs)
    assert not decision.approved and decision.reason == "bad_group"
    legs[1].action = "new"
    legs[1].quantity = 1e9  # a second entry of any size: never checked before the fix
    decision = engine.check_group(legs)
    assert not decision.approved and decision.reason == "bad_group"


#: found by test_fuzz_tws (a mutated "error 2104" frame of G200): an error code beyond 64 bits;
#: ErrorRouter published it as a GatewayError and msgspec raised OverflowError (caught by the
#: loop as event_errors, but the error was lost and the publisher had already stamped a
#: sequence number it never sent: a false gap for every subscriber)
BIG_INTS_FROM_IB = [
    (200, ["4", "-1", "99999999999999999999999", "boom", "", "1775425766350"]),
    (200, ["4", "-99999999999999999999999", "110", "boom", "", "1775425766350"]),
    (173, ["4", "2", "-1", "99999999999999999999999", "boom", ""]),
]


def test_an_integer_beyond_64_bits_from_ib_is_a_bad_frame():
    from tests.fuzz.test_fuzz_tws import Bridge
    bridge = Bridge()  # a gateway in-process: seconds to build, so one for every case
    try:
        c = bridge.gw.counters
        for n, (version, fields) in enumerate(BIG_INTS_FROM_IB, 1):
            bridge.feed(version, fields)
            assert (c["bad_frames"], c["event_errors"]) == (n, 0), fields
    finally:
        bridge.close()
