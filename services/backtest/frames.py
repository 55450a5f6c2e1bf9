"""``intents.bin`` / ``fills.bin``: codec frames, each prefixed by its length (uint32 LE).

Each frame is ``proto.codec.encode_one(message)``; byte-identical files mean identical runs.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable, Iterator

from proto import codec
from proto.schema import Message

_LENGTH = struct.Struct("<I")


def write_frames(path: str | Path, messages: Iterable[Message]) -> int:
    count = 0
    with open(path, "wb") as f:
        for msg in messages:
            frame = codec.encode_one(msg)
            f.write(_LENGTH.pack(len(frame)))
            f.write(frame)
            count += 1
    return count


def read_frames(path: str | Path) -> Iterator[Message]:
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        yield from codec.decode(data[pos:pos + length])
        pos += length
