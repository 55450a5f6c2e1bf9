"""Damaged recordings read back everything that is intact, and say what was not."""
from __future__ import annotations

import errno
import os

import pytest

from proto import codec
from services.bus.loadgen import make_batch
from services.bus.publisher import Stamper
from services.recorder import format as fmt
from services.recorder.check import check_recording
from services.recorder.index import read_index, rebuild_index
from services.recorder.reader import Recording
from services.recorder.segment import OS_FILE_OPS, FileOps
from services.recorder.writer import RecordingWriter, WriteFailed, WriterPolicy


def _frames(n_frames: int, batch: int = 20, source: str = "gen.1") -> list[bytes]:
    stamper = Stamper(source)
    frames = []
    for k in range(n_frames):
        msgs = make_batch("depth", "AAPL", k * batch, batch)
        for m in msgs:
            stamper.stamp(m, "md.depth.AAPL")
        frames.append(codec.encode(msgs))
    return frames


def _write(directory, frames, policy=WriterPolicy(index_every_bytes=4096), ops=OS_FILE_OPS):
    writer = RecordingWriter(directory, policy, ops)
    for i, frame in enumerate(frames):
        writer.append(1_000_000_000 + i * 1000, b"md.depth.AAPL", frame)
    writer.close()
    return sorted(directory.glob("*" + fmt.SEGMENT_SUFFIX))


def _payloads(directory):
    return [r.payload for r in Recording(directory).records()]


def test_round_trip_is_byte_exact(tmp_path):
    frames = _frames(50)
    _write(tmp_path, frames)
    assert _payloads(tmp_path) == frames
    records = list(Recording(tmp_path).records())
    assert [(r.first_seq, r.last_seq, r.count, r.src) for r in records[:2]] == \
        [(1, 20, 20, "gen.1"), (21, 40, 20, "gen.1")]


@pytest.mark.parametrize("cut", [1, 7, fmt.RECORD_HEAD.size + 3, -5, -1])
def test_a_torn_last_record_loses_only_that_record(tmp_path, cut):
    frames = _frames(30)
    (segment,) = _write(tmp_path, frames)
    size = segment.stat().st_size
    last_len = len(frames[-1]) + len(b"md.depth.AAPL") + len(b"gen.1") + fmt.RECORD_OVERHEAD
    keep = size - last_len + cut if cut > 0 else size + cut
    os.truncate(segment, keep)
    rec = Recording(tmp_path)
    assert _payloads(tmp_path) == frames[:-1]
    list(rec.records())
    assert rec.report.torn_bytes == keep - (size - last_len)
    assert rec.report.corrupt_records == 0
    result = check_recording(tmp_path)
    assert result.complete and result.report.torn_bytes > 0


def test_trailing_garbage_is_a_torn_tail(tmp_path):
    frames = _frames(10)
    (segment,) = _write(tmp_path, frames)
    with open(segment, "ab") as f:
        f.write(fmt.RECORD_MARKER + b"\x00\x10\x00\x00partial")
    rec = Recording(tmp_path)
    assert [r.payload for r in rec.records()] == frames
    assert rec.report.torn_bytes == 4 + 4 + 7


def test_a_flipped_byte_is_caught_by_the_checksum_and_only_that_record_is_lost(tmp_path):
    frames = _frames(30)
    (segment,) = _write(tmp_path, frames)
    records = list(Recording(tmp_path).records())
    victim = records[12]
    data = bytearray(segment.read_bytes())
    where = victim.offset + fmt.RECORD_HEAD.size + 40  # inside topic/payload
    data[where] ^= 0x20
    segment.write_bytes(bytes(data))
    rec = Recording(tmp_path)
    assert [r.payload for r in rec.records()] == frames[:12] + frames[13:]
    assert rec.report.corrupt_records == 1 and rec.report.torn_bytes == 0
    assert rec.report.corrupt_at[0][1] == victim.offset
    result = check_recording(tmp_path)
    assert not result.complete and result.missing == 20  # the lost frame shows as a gap


def test_a_damaged_length_field_does_not_hide_later_records(tmp_path):
    frames = _frames(10)
    (segment,) = _write(tmp_path, frames)
    victim = list(Recording(tmp_path).records())[3]
    data = bytearray(segment.read_bytes())
    data[victim.offset + 6] ^= 0x7F  # the body length: the record now claims to run past EOF
    segment.write_bytes(bytes(data))
    rec = Recording(tmp_path)
    assert [r.payload for r in rec.records()] == frames[:3] + frames[4:]
    assert rec.report.corrupt_records == 1


def test_index_is_rebuilt_when_missing_or_torn(tmp_path):
    frames = _frames(400)
    (segment,) = _write(tmp_path, frames)
    index = segment.with_suffix(fmt.INDEX_SUFFIX)
    original = read_index(index, 1)
    assert original and len(original) > 10
    start = list(Recording(tmp_path).records())[250].recv_ns
    expect = [r.offset for r in Recording(tmp_path).records() if r.recv_ns >= start]
    os.truncate(index, index.stat().st_size - 5)  # torn: the valid prefix is still used
    assert read_index(index, 1) == original[:-1]
    assert [r.offset for r in Recording(tmp_path).records(start_ns=start)] == expect
    index.unlink()  # missing: a full scan, then rebuilt identical
    assert [r.offset for r in Recording(tmp_path).records(start_ns=start)] == expect
    rebuild_index(segment, every_bytes=4096)
    assert read_index(index, 1) == original


def test_rotation_by_time_and_size(tmp_path):
    frames = _frames(100)
    writer = RecordingWriter(tmp_path, WriterPolicy(rotate_bytes=64 * 1024, rotate_seconds=1.0))
    for i, frame in enumerate(frames):  # 0.1 s apart in receive time
        writer.append(i * 100_000_000, b"md.depth.AAPL", frame)
    writer.close()
    segments = sorted(tmp_path.glob("*" + fmt.SEGMENT_SUFFIX))
    assert len(segments) >= 10  # at least one per second of receive time
    assert all(s.stat().st_size <= 64 * 1024 for s in segments)
    assert _payloads(tmp_path) == frames


def test_a_write_error_keeps_what_was_written_and_counts_what_was_not(tmp_path):
    frames = _frames(60)
    fail = {"on": False}

    def write(fd, data):
        if fail["on"]:
            raise OSError(errno.EIO, "injected I/O error")
        return os.write(fd, data)

    ops = FileOps(open=OS_FILE_OPS.open, write=write, fsync=os.fsync, close=os.close)
    writer = RecordingWriter(tmp_path, WriterPolicy(buffer_bytes=1 << 20), ops)
    for i, frame in enumerate(frames[:40]):
        writer.append(i, b"md.depth.AAPL", frame)
    writer.flush()  # 40 frames reach the kernel
    for i, frame in enumerate(frames[40:50], start=40):
        writer.append(i, b"md.depth.AAPL", frame)  # buffered only
    fail["on"] = True
    with pytest.raises(WriteFailed) as caught:
        writer.flush()
    assert caught.value.lost_frames == 10 and caught.value.lost_messages == 200
    assert caught.value.cause.errno == errno.EIO
    assert writer.frames == 40 and not writer.is_open
    fail["on"] = False  # the disk is back: a new segment, the old one untouched
    for i, frame in enumerate(frames[50:], start=50):
        writer.append(i, b"md.depth.AAPL", frame)
    writer.close()
    assert _payloads(tmp_path) == frames[:40] + frames[50:]
    assert len(list(tmp_path.glob("*" + fmt.SEGMENT_SUFFIX))) == 2
