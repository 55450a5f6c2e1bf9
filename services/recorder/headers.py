"""A cheap look at a bus frame: the headers of its messages, not their fields.

The recorder stores, with every frame, its source and first/last ``seq`` and ``tseq``, so a
reader can check a recording's completeness without decoding every message. msgspec decodes
only the six header elements of each array and skips the rest, several times faster than the
full typed decode.
"""
from __future__ import annotations

import msgspec

from services.recorder.format import (FLAG_MIXED_SOURCES, FLAG_NOT_CONSECUTIVE, NO_SUMMARY,
                                      FrameSummary)


class _Header(msgspec.Struct, array_like=True):
    """The leading elements of every message on the wire (see proto.schema); the rest ignored."""

    type: str
    v: int
    src: str
    seq: int
    tseq: int
    ts: int


_decode_headers = msgspec.msgpack.Decoder(list[_Header]).decode


def summarize(payload: bytes) -> FrameSummary:
    """Source and sequence ranges of a frame; ``NO_SUMMARY`` if its headers cannot be read."""
    try:
        heads = _decode_headers(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return NO_SUMMARY
    if not heads:
        return NO_SUMMARY
    first, last = heads[0], heads[-1]
    count = len(heads)
    flags = 0
    src = first.src
    if count > 1:
        if any(h.src != src for h in heads):
            flags |= FLAG_MIXED_SOURCES
        if last.seq - first.seq != count - 1 or not _consecutive(heads):
            flags |= FLAG_NOT_CONSECUTIVE
    return FrameSummary(src.encode(), first.seq, last.seq, first.tseq, last.tseq, count, flags)


def _consecutive(heads: list[_Header]) -> bool:
    start = heads[0].seq
    return [h.seq for h in heads] == list(range(start, start + len(heads)))
