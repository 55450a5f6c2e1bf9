"""Encoding and strict decoding of bus frames.

A frame is a msgpack list of messages (see ``proto.schema``). Decoding either returns fully
typed messages or raises one ``FrameError`` subclass that says what was wrong; a receiving loop
catches ``FrameError``, counts and logs it, and goes on.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import msgpack
import msgspec

from proto.schema import ALL_TYPES, SCHEMA_VERSION, TYPES_BY_NAME, AnyMessage, Message

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AnyMessage])


class FrameError(ValueError):
    """A bus frame that cannot be accepted. ``kind`` names the class of fault for counters."""

    kind = "frame"


class MalformedFrame(FrameError):
    kind = "malformed"


class WrongShape(FrameError):
    kind = "wrong_shape"


class UnknownType(FrameError):
    kind = "unknown_type"


class NewerSchema(FrameError):
    kind = "newer_schema"


class MissingField(FrameError):
    kind = "missing_field"


class BadField(FrameError):
    kind = "bad_field"


def encode(messages: Sequence[Message]) -> bytes:
    """Encode a batch of one or more messages as one frame."""
    return _encoder.encode(messages)


def encode_one(message: Message) -> bytes:
    return _encoder.encode((message,))


def decode(frame: bytes) -> list[Message]:
    """Decode a frame strictly. Raises a ``FrameError`` subclass naming what was wrong."""
    try:
        messages = _decoder.decode(frame)
    except msgspec.ValidationError as exc:  # valid msgpack, wrong content (a DecodeError too)
        raise _classify(frame, str(exc)) from None
    except msgspec.DecodeError as exc:  # not msgpack at all, or truncated
        raise MalformedFrame(f"frame is not valid msgpack: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec reads a type tag that is not UTF-8 this way
        raise MalformedFrame(f"frame has a string that is not UTF-8: {exc}") from None
    for msg in messages:
        if msg.v > SCHEMA_VERSION:
            raise NewerSchema(f"{type(msg).__name__} has schema version {msg.v}, "
                              f"this build reads up to {SCHEMA_VERSION}")
    return messages


def _classify(frame: bytes, detail: str) -> FrameError:
    """Turn msgspec's validation error into the specific fault, by looking at the raw frame."""
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception:  # msgspec accepted it as msgpack; be safe anyway
        return MalformedFrame(f"frame is not valid msgpack ({detail})")
    if not isinstance(raw, list):
        return WrongShape(f"frame must be a list of messages, got {type(raw).__name__}")
    for index, item in enumerate(raw):
        where = f"message {index}"
        if not isinstance(item, list) or not item:
            return WrongShape(f"{where} must be a non-empty array, got {type(item).__name__}")
        name = item[0]
        cls = TYPES_BY_NAME.get(name) if isinstance(name, str) else None
        if cls is None:
            return UnknownType(f"{where} has unknown type {name!r}")
        if len(item) > 1 and isinstance(item[1], int) and item[1] > SCHEMA_VERSION:
            return NewerSchema(f"{where} ({name}) has schema version {item[1]}, "
                               f"this build reads up to {SCHEMA_VERSION}")
        wire_fields = ("type",) + cls.__struct_fields__
        required = _required_count(cls) + 1  # +1 for the tag
        if len(item) < required:
            return MissingField(f"{where} ({name}) is missing field {wire_fields[len(item)]!r}: "
                                f"{len(item)} elements, needs at least {required}")
        if len(item) > len(wire_fields):
            return WrongShape(f"{where} ({name}) has {len(item)} elements, "
                              f"at most {len(wire_fields)}")
    return BadField(f"bad field value: {_name_path(raw, detail)}")


def _required_count(cls: type[Message]) -> int:
    """How many leading fields a message of ``cls`` must carry: up to its last required one."""
    last = 0
    for i, field in enumerate(msgspec.structs.fields(cls)):
        if field.required:
            last = i + 1
    return last


def _name_path(raw: list, detail: str) -> str:
    """msgspec says ``at `$[0][6]``; add the field's name so the log line is readable."""
    marker = "at `$["
    pos = detail.find(marker)
    if pos < 0:
        return detail
    try:
        path = detail[pos + len(marker):].rstrip("`").split("][")
        index, field_pos = int(path[0]), int(path[1].rstrip("]"))
        cls = TYPES_BY_NAME[raw[index][0]]
        name = (("type",) + cls.__struct_fields__)[field_pos]
        return f"{detail} (field {name!r} of {cls.__name__})"
    except (IndexError, ValueError, KeyError, TypeError):
        return detail


def type_names() -> Iterable[str]:
    return (t.__name__ for t in ALL_TYPES)
