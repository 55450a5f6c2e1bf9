"""Is a recording complete? Per-source sequence numbers, checked from the record summaries.

Every record stores its frame's source and first/last ``seq`` (see ``headers``), so this reads
no payload unless ``deep`` is asked for, in which case every message is decoded and checked
one by one (slower; it also proves every payload decodes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from proto import codec
from services.recorder import format as fmt
from services.recorder.reader import ReadReport, Recording


@dataclass
class SourceCheck:
    first_seq: int = 0
    last_seq: int = 0
    messages: int = 0
    gaps: int = 0  # times a gap was seen
    missing: int = 0  # messages known to be missing
    out_of_order: int = 0  # a seq at or below the last one (duplicates included)
    restarts: int = 0  # the source counted from 1 again


@dataclass
class CheckResult:
    frames: int = 0
    messages: int = 0
    sources: dict[str, SourceCheck] = field(default_factory=dict)
    unsummarised: int = 0  # frames whose headers could not be read (checked only if deep)
    not_consecutive: int = 0  # frames whose messages are not consecutive in seq
    undecodable: int = 0  # deep only
    report: ReadReport = field(default_factory=ReadReport)

    @property
    def gaps(self) -> int:
        return sum(s.gaps for s in self.sources.values())

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.sources.values())

    @property
    def out_of_order(self) -> int:
        return sum(s.out_of_order for s in self.sources.values())

    @property
    def complete(self) -> bool:
        """No sequence gap, nothing out of order, no damage skipped in the middle."""
        return not (self.missing or self.out_of_order or self.not_consecutive
                    or self.undecodable or self.report.corrupt_records
                    or self.report.bad_segments)

    def as_dict(self) -> dict:
        r = self.report
        return {"complete": self.complete, "frames": self.frames, "messages": self.messages,
                "segments": r.segments, "gaps": self.gaps, "missing": self.missing,
                "out_of_order": self.out_of_order, "not_consecutive": self.not_consecutive,
                "unsummarised": self.unsummarised, "undecodable": self.undecodable,
                "torn_bytes": r.torn_bytes, "corrupt_records": r.corrupt_records,
                "corrupt_bytes": r.corrupt_bytes, "bad_segments": r.bad_segments,
                "sources": {k: vars(v) for k, v in sorted(self.sources.items())}}


def _observe(result: CheckResult, src: str, first: int, last: int, count: int) -> None:
    state = result.sources.get(src)
    if state is None:
        result.sources[src] = SourceCheck(first_seq=first, last_seq=last, messages=count)
        return
    expected = state.last_seq + 1
    if first == expected:
        pass
    elif first > expected:
        state.gaps += 1
        state.missing += first - expected
    elif first == 1:
        state.restarts += 1
    else:
        state.out_of_order += 1
    state.messages += count
    state.last_seq = max(last, state.last_seq) if first != 1 else last


def check_recording(path: str | Path, deep: bool = False) -> CheckResult:
    recording = Recording(path)
    result = CheckResult()
    for record in recording.records():
        result.frames += 1
        if record.flags & fmt.FLAG_NO_HEADERS:
            result.unsummarised += 1
        if deep or record.flags & fmt.FLAG_NO_HEADERS:
            try:
                msgs = codec.decode(record.payload)
            except codec.FrameError:
                result.undecodable += 1
                continue
            for msg in msgs:
                _observe(result, msg.src, msg.seq, msg.seq, 1)
            result.messages += len(msgs)
            continue
        if record.flags & (fmt.FLAG_MIXED_SOURCES | fmt.FLAG_NOT_CONSECUTIVE):
            result.not_consecutive += 1
        _observe(result, record.src, record.first_seq, record.last_seq, record.count)
        result.messages += record.count
    result.report = recording.report
    return result
