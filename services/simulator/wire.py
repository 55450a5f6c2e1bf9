"""Framing and field codec of the TWS socket protocol (text format).

A frame is a 4-byte big-endian length followed by NUL-terminated ASCII fields. Everything here is
pure and never raises on hostile input except `FieldError`, which callers turn into IB's error 320.
"""
from __future__ import annotations

import struct
from decimal import Decimal, InvalidOperation

_LEN = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # TWS refuses anything this large; so do we

UNSET_INT = 2147483647
UNSET_DOUBLE = 1.7976931348623157e308


class FieldError(ValueError):
    """A request frame did not have the fields its message id requires."""


class FrameTooLarge(ValueError):
    pass


def frame(fields: list[str]) -> bytes:
    """Join already-formatted fields into one length-prefixed frame."""
    body = ("\0".join(fields) + "\0").encode("ascii", "backslashreplace")
    return _LEN.pack(len(body)) + body


def frame_raw(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


def fmt(value: object) -> str:
    """Format one outgoing field the way TWS does (bools as 0/1, None as empty)."""
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float):
        if value == UNSET_DOUBLE:
            return ""
        return repr(value)
    return str(value)


def encode(fields: list[object]) -> bytes:
    return frame([fmt(v) for v in fields])


class FrameSplitter:
    """Accumulates socket bytes and yields complete frame bodies."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise FrameTooLarge(size)
            if n - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    def pending(self) -> int:
        return len(self._buf)


def split_fields(body: bytes) -> list[str]:
    """Fields of a text frame; the trailing NUL's empty remainder is dropped."""
    parts = body.decode("latin-1").split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


class Fields:
    """Sequential typed reader over a request's fields; every read failure is a FieldError."""

    __slots__ = ("_f", "_i")

    def __init__(self, fields: list[str], start: int = 0) -> None:
        self._f = fields
        self._i = start

    def remaining(self) -> int:
        return len(self._f) - self._i

    def str(self) -> str:
        if self._i >= len(self._f):
            raise FieldError(f"missing field #{self._i}")
        v = self._f[self._i]
        self._i += 1
        return v

    def opt_str(self, default: str = "") -> str:
        return self.str() if self._i < len(self._f) else default

    def int(self, default: int | None = None) -> int:
        s = self.str()
        if s == "":
            if default is None:
                raise FieldError(f"empty integer field #{self._i - 1}")
            return default
        try:
            return int(s)
        except ValueError:
            try:
                return int(float(s))
            except ValueError:
                raise FieldError(f"bad integer {s!r} in field #{self._i - 1}") from None

    def float(self, default: float = UNSET_DOUBLE) -> float:
        s = self.str()
        if s == "":
            return default
        try:
            v = float(s)
        except ValueError:
            raise FieldError(f"bad number {s!r} in field #{self._i - 1}") from None
        if v != v:  # NaN
            raise FieldError(f"NaN in field #{self._i - 1}")
        return v

    def decimal(self) -> Decimal:
        s = self.str()
        if s == "":
            return Decimal(0)
        try:
            v = Decimal(s)
        except InvalidOperation:
            raise FieldError(f"bad quantity {s!r} in field #{self._i - 1}") from None
        if not v.is_finite():
            raise FieldError(f"non-finite quantity in field #{self._i - 1}")
        return v

    def bool(self) -> bool:
        return self.int(0) != 0

    def skip(self, n: int = 1) -> None:
        self._i += n
