"""On-disk layout of a recording: segment file header, records, index entries.

All integers are little-endian. A segment file is a 32-byte file header followed by records;
each record carries its own CRC-32 (zlib) so that a torn tail or a flipped byte is found on
read. Everything here is pure (bytes in, bytes or tuples out); the writers and the reader own
the files. See docs/recording.md.
"""
from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

FORMAT_VERSION = 1

SEGMENT_MAGIC = b"IBFLTREC"
INDEX_MAGIC = b"IBFLTIDX"
SEGMENT_SUFFIX = ".ibrec"
INDEX_SUFFIX = ".ibidx"

# magic, version, header length, segment number, created (ns), reserved, crc32 of the above
FILE_HEADER = struct.Struct("<8sHHIQII")
# index file: magic, version, reserved, segment number, crc32 of the above
INDEX_HEADER = struct.Struct("<8sHHII")

# Every record starts with this marker, so a reader that meets a damaged record can find the
# next good one (a candidate must also pass its CRC, so a marker inside a payload is harmless).
RECORD_MARKER = b"\xb5RC\x01"
# marker, body length, recv_ns, first_seq, last_seq, first_tseq, last_tseq, count, flags,
# topic length, source length.  body length counts everything after the body-length field up
# to (not including) the trailing crc32, so a record is 8 + body + 4 bytes long.
RECORD_HEAD = struct.Struct("<4sIQQQQQIHHH")
RECORD_CRC = struct.Struct("<I")
_FIXED_BODY = RECORD_HEAD.size - 8  # the body bytes that are part of RECORD_HEAD
RECORD_OVERHEAD = RECORD_HEAD.size + RECORD_CRC.size
MAX_BODY = 256 * 1024 * 1024  # a longer body length is damage, not data

# recv_ns, offset of the record in the segment, record number in the segment, crc32
INDEX_ENTRY = struct.Struct("<QQII")

# record flags
FLAG_NO_HEADERS = 1  # the payload did not yield message headers; seq fields are 0
FLAG_MIXED_SOURCES = 2  # messages from more than one source; src is that of the first
FLAG_NOT_CONSECUTIVE = 4  # seq inside the frame is not first..last in steps of 1


class FormatError(ValueError):
    """Bytes that are not a valid header, record or index entry of this format."""


class FrameSummary(NamedTuple):
    """What a record stores about its frame's messages, to check completeness cheaply."""

    src: bytes
    first_seq: int
    last_seq: int
    first_tseq: int
    last_tseq: int
    count: int
    flags: int


NO_SUMMARY = FrameSummary(b"", 0, 0, 0, 0, 0, FLAG_NO_HEADERS)


def pack_file_header(segment_no: int, created_ns: int) -> bytes:
    head = FILE_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, FILE_HEADER.size, segment_no,
                            created_ns, 0, 0)[:-4]
    return head + RECORD_CRC.pack(zlib.crc32(head))


def parse_file_header(data: bytes) -> tuple[int, int]:
    """(segment number, created ns) of a segment file header; FormatError if it is not one."""
    if len(data) < FILE_HEADER.size:
        raise FormatError("segment file is shorter than its header")
    magic, version, size, segment_no, created_ns, _, crc = FILE_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise FormatError("not an ibfleet segment file (bad magic)")
    if zlib.crc32(data[:FILE_HEADER.size - 4]) != crc:
        raise FormatError("segment file header checksum mismatch")
    if version > FORMAT_VERSION:
        raise FormatError(f"segment format version {version} is newer than this build "
                          f"({FORMAT_VERSION})")
    return segment_no, created_ns


def pack_record(recv_ns: int, topic: bytes, payload: bytes, summary: FrameSummary) -> bytes:
    src = summary.src
    body = _FIXED_BODY + len(topic) + len(src) + len(payload)
    head = RECORD_HEAD.pack(RECORD_MARKER, body, recv_ns, summary.first_seq, summary.last_seq,
                            summary.first_tseq, summary.last_tseq, summary.count, summary.flags,
                            len(topic), len(src))
    crc = zlib.crc32(payload, zlib.crc32(src, zlib.crc32(topic, zlib.crc32(head))))
    return b"".join((head, topic, src, payload, RECORD_CRC.pack(crc)))


def pack_index_header(segment_no: int) -> bytes:
    head = INDEX_HEADER.pack(INDEX_MAGIC, FORMAT_VERSION, 0, segment_no, 0)[:-4]
    return head + RECORD_CRC.pack(zlib.crc32(head))


def pack_index_entry(recv_ns: int, offset: int, record_no: int) -> bytes:
    head = INDEX_ENTRY.pack(recv_ns, offset, record_no, 0)[:-4]
    return head + RECORD_CRC.pack(zlib.crc32(head))


def segment_name(segment_no: int) -> str:
    return f"seg-{segment_no:06d}{SEGMENT_SUFFIX}"


def index_name(segment_no: int) -> str:
    return f"seg-{segment_no:06d}{INDEX_SUFFIX}"
