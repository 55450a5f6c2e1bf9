"""Hypothesis strategies for bus frames: random bytes, random msgpack, mutated valid frames."""
from __future__ import annotations

import typing

import msgpack
import msgspec
from hypothesis import strategies as st

from proto import codec
from proto.schema import ALL_TYPES

_SAMPLE = {str: "x", float: 1.5, int: 7, bool: True}


def _value_for(annotation):
    if annotation in _SAMPLE:
        return _SAMPLE[annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)[0]
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _value_for(typing.get_args(annotation)[0])
    return None


def sample_messages() -> list:
    """One valid message of every type on the bus, required fields filled."""
    out = []
    for cls in ALL_TYPES:
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: _value_for(hints[f.name])
                  for f in msgspec.structs.fields(cls) if f.required}
        out.append(cls(**kwargs))
    return out


SAMPLES = sample_messages()
VALID_FRAMES = [codec.encode([m]) for m in SAMPLES] + [codec.encode(SAMPLES[:5])]
for _frame in VALID_FRAMES:  # the corpus itself must decode
    codec.decode(_frame)

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
NASTY_INTS = st.sampled_from([0, -1, 1, 2, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
                              2**64 - 1, -(2**63)])
SCALARS = st.one_of(st.none(), st.booleans(), INT64, NASTY_INTS, st.floats(),
                    st.text(max_size=20), st.binary(max_size=20),
                    st.sampled_from([t.__name__ for t in ALL_TYPES]))
PACKABLE = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=8),
    st.dictionaries(st.one_of(st.text(max_size=8), INT64), inner, max_size=5)),
    max_leaves=30)


def packed(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@st.composite
def mutated_structure(draw) -> bytes:
    """A valid frame, unpacked, with its structure changed: a field replaced, dropped, added,
    the type name swapped, the batch reshaped."""
    frame = msgpack.unpackb(draw(st.sampled_from(VALID_FRAMES)), raw=False)
    for _ in range(draw(st.integers(1, 3))):
        msg = frame[draw(st.integers(0, len(frame) - 1))] if frame else None
        op = draw(st.sampled_from(["replace", "drop", "append", "type", "batch", "nest"]))
        if op == "replace" and msg:
            msg[draw(st.integers(0, len(msg) - 1))] = draw(PACKABLE)
        elif op == "drop" and msg:
            del msg[draw(st.integers(0, len(msg) - 1)):]
        elif op == "append" and msg is not None:
            msg.append(draw(PACKABLE))
        elif op == "type" and msg:
            msg[0] = draw(st.one_of(st.sampled_from([t.__name__ for t in ALL_TYPES]), SCALARS))
        elif op == "batch":
            frame = draw(st.sampled_from([[], frame * 2, frame[:1], [frame], {"a": frame}]))
        elif op == "nest" and msg:
            msg[draw(st.integers(0, len(msg) - 1))] = [msg[:]]
        if not isinstance(frame, list):
            break
    return packed(frame)


@st.composite
def mutated_bytes(draw) -> bytes:
    """A valid frame with bytes flipped, cut, inserted or duplicated."""
    data = bytearray(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "set"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "dup":
            data += data[pos:]
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0xc0, 0xc1, 0xd9, 0xdb, 0xdd, 0xdf, 0xc7,
                                              0xcf, 0xd3, 0xff, 0x90, 0x9f, 0xdc]))
    return bytes(data)


ANY_FRAME = st.one_of(st.binary(max_size=200), PACKABLE.map(packed), mutated_structure(),
                      mutated_bytes(), st.sampled_from(VALID_FRAMES))
