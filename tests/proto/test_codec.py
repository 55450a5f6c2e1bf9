"""The schema's codec: every type round-trips, and every kind of bad frame gets its own error."""
from __future__ import annotations

import typing

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import codec
from proto.schema import ALL_TYPES, SCHEMA_VERSION, Heartbeat, Message, OrderIntent, Tick

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _strategy_for(tp) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return INT64
    if tp is float:
        return st.floats(allow_nan=True, allow_infinity=True)
    if tp is str:
        return st.text(max_size=20)
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(_strategy_for(item), max_size=4)
    if origin is tuple:  # fixed-length tuples (e.g. Instrument.price_bands' (edge, increment))
        return st.tuples(*(_strategy_for(item) for item in typing.get_args(tp)))
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(_strategy_for(key), _strategy_for(value), max_size=4)
    raise AssertionError(f"no strategy for field type {tp!r}: extend the test with the schema")


def message_strategy(cls: type[Message]) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {}
    for field in msgspec.structs.fields(cls):
        if field.name == "v":
            fields["v"] = st.integers(min_value=0, max_value=SCHEMA_VERSION)
        else:
            fields[field.name] = _strategy_for(hints[field.name])
    return st.builds(cls, **fields)


any_message = st.one_of([message_strategy(cls) for cls in ALL_TYPES])


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_message_type_round_trips(cls, data):
    msg = data.draw(message_strategy(cls))
    frame = codec.encode([msg])
    decoded = codec.decode(frame)
    assert len(decoded) == 1 and type(decoded[0]) is cls
    # compare encodings: NaN != NaN, but its bytes are stable
    assert codec.encode(decoded) == frame


@settings(max_examples=100, deadline=None)
@given(st.lists(any_message, min_size=1, max_size=20))
def test_a_batch_of_mixed_types_round_trips_in_order(batch):
    decoded = codec.decode(codec.encode(batch))
    assert [type(m) for m in decoded] == [type(m) for m in batch]
    assert codec.encode(decoded) == codec.encode(batch)


def test_every_message_type_has_a_topic():
    for cls in ALL_TYPES:
        assert cls.TOPIC, f"{cls.__name__} has no topic"


def test_keyed_topics_carry_the_key():
    tick = Tick(symbol="AAPL", bid=1, ask=2, bid_size=1, ask_size=1)
    assert tick.topic() == "md.tick.AAPL"
    intent = OrderIntent(strategy="mr1", client_order_id="x", action="new")
    assert intent.topic() == "ord.intent.mr1"


def _tick_array(**overrides) -> list:
    tick = Tick(symbol="AAPL", bid=1.0, ask=2.0, bid_size=1.0, ask_size=3.0)
    raw = msgpack.unpackb(codec.encode([tick]))[0]
    for index, value in overrides.items():
        raw[int(index[1:])] = value
    return raw


@pytest.mark.parametrize("frame,error,words", [
    (b"\xc1\x00", codec.MalformedFrame, "not valid msgpack"),
    (codec.encode([Tick(symbol="A", bid=1, ask=2, bid_size=1, ask_size=1)])[:-4],
     codec.MalformedFrame, "truncated"),
    (msgpack.packb({"type": "Tick"}), codec.WrongShape, "list of messages"),
    (msgpack.packb([7]), codec.WrongShape, "non-empty array"),
    (msgpack.packb([[]]), codec.WrongShape, "non-empty array"),
    (msgpack.packb([["Bogus", 1, "x", 1, 1, 1]]), codec.UnknownType, "'Bogus'"),
    (msgpack.packb([[42, 1]]), codec.UnknownType, "42"),
    (msgpack.packb([_tick_array(i1=SCHEMA_VERSION + 1)]), codec.NewerSchema, "schema version"),
    (msgpack.packb([_tick_array()[:8]]), codec.MissingField, "'ask'"),
    (msgpack.packb([_tick_array() + [1, 2, 3, 4]]), codec.WrongShape, "at most"),
    (msgpack.packb([_tick_array(i7="one")]), codec.BadField, "'bid'"),
    (msgpack.packb([_tick_array(i6=5)]), codec.BadField, "'symbol'"),
], ids=["not-msgpack", "truncated", "a-map", "not-an-array", "empty-array", "unknown-type",
        "non-string-type", "newer-schema", "missing-field", "extra-fields", "bad-float",
        "bad-string"])
def test_each_malformed_frame_raises_its_own_clear_error(frame, error, words):
    with pytest.raises(error) as info:
        codec.decode(frame)
    assert words in str(info.value)
    assert isinstance(info.value, codec.FrameError)


def test_a_newer_schema_with_extra_fields_is_reported_as_newer_not_as_shape():
    raw = _tick_array(i1=SCHEMA_VERSION + 1) + ["a field from the future"]
    with pytest.raises(codec.NewerSchema):
        codec.decode(msgpack.packb([raw]))


def test_missing_heartbeat_interval_is_a_missing_field():
    raw = msgpack.unpackb(codec.encode([Heartbeat(interval_ms=1000)]))[0][:6]
    with pytest.raises(codec.MissingField, match="interval_ms"):
        codec.decode(msgpack.packb([raw]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_frame_error(data):
    try:
        codec.decode(data)
    except codec.FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=5)
                    | st.floats(allow_nan=False),
                    lambda inner: st.lists(inner, max_size=8), max_leaves=30))
def test_random_msgpack_structures_never_raise_anything_but_a_frame_error(value):
    try:
        codec.decode(msgpack.packb(value))
    except codec.FrameError:
        pass
