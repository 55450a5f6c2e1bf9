"""The backtest's fast path for runs of depth updates (``core/replay.pyx``).

``messages(engine, recording, start_ns, end_ns)`` is what ``BacktestEngine.run`` iterates in
place of ``recording.messages(...)``: it yields every message the general path would, except
the DepthUpdates of the strategy's symbols once the engine has started, which it runs itself
(``core.replay.DepthLoop``) between two yields, while the engine waits for the next message.
Those are read from the segment files in columns (``core.replay.scan``: the records' CRCs
checked as the reader checks them, frames decoded only when they are DepthUpdates exactly as
``proto.codec`` writes them) and applied one at a time as ``BacktestEngine.run`` / ``_market``
and ``Strategy.handle_depth`` do: scheduled events run when due, the venue matches on every
update, risk is marked, the strategy's book is updated and its ``on_depth(symbol, book)``
called. Anything else (other messages, damaged records, a frame the scanner does not take,
the messages before the engine starts) goes through the general path, record by record, in
file order. The result is byte-identical to the general path
(``tests/backtest/test_fast_depth_path.py``); memory stays bounded (pages of the segment
already read are given back).
"""
from __future__ import annotations

import mmap
from typing import Iterator

from core.replay import (SCAN_DAMAGED, SCAN_END, SCAN_FULL, SCAN_OTHER, SCAN_PAST, DepthBatch,
                         DepthLoop, scan)
from proto import codec
from proto.schema import SCHEMA_VERSION, Message
from services.backtest import engine as engine_module
from services.backtest.market import SymbolMarket
from services.recorder import format as fmt
from services.recorder.reader import ReadReport, Recording, _iter_segment, _parse_at
from services.risk.engine import RiskEngine
from services.strategy.base import Strategy

BATCH = 65536  # updates decoded at a time
RELEASE_BYTES = 8 << 20  # give back the segment's pages read, every this many bytes
INT64_MAX = (1 << 63) - 1


def usable(engine) -> bool:
    """Whether the fast path does exactly what the general one would for this engine: the
    engine, its markets and the strategy's depth handling are the ones it reproduces."""
    cls = type(engine)
    strategy = type(engine.strategy)
    return (len(engine.slots) == 1 and not engine._delay_data  # one strategy, data at once
            and cls._market is engine_module.BacktestEngine._market
            and cls._bars_from is engine_module.BacktestEngine._bars_from
            and cls.run is engine_module.BacktestEngine.run
            and all(type(m).apply is SymbolMarket.apply for m in engine.markets.values())
            and strategy.handle_market_data is Strategy.handle_market_data
            and strategy.handle_depth is Strategy.handle_depth
            and all(s.isascii() for s in engine.cfg.symbols))


def _mark_direct(engine) -> bool:
    """RiskEngine.on_mark with the engine's clock: the loop stores the mark itself."""
    risk = engine.risk
    return (type(risk).on_mark is RiskEngine.on_mark
            and getattr(risk.clock, "__func__", None) is engine_module.BacktestEngine._seconds
            and risk.clock.__self__ is engine)


def messages(engine, recording: Recording, start_ns: int | None = None,
             end_ns: int | None = None) -> Iterator[tuple[int, Message]]:
    """``(recv_ns, message)`` for ``engine.run``; the depth updates of the engine's symbols
    after it started are run here instead (see the module docstring)."""
    symbols = list(engine.cfg.symbols)
    names = tuple(s.encode() for s in symbols)
    batch = DepthBatch(BATCH)
    loop: DepthLoop | None = None
    report = recording.report = ReadReport()
    lo = -INT64_MAX - 1 if start_ns is None else start_ns
    hi = INT64_MAX if end_ns is None else end_ns
    for info, buf in recording.segments(start_ns, report):
        size = info.size
        view = memoryview(buf)
        released = 0
        try:
            pos = Recording._start_offset(info, buf, start_ns)
            while pos < size:
                if engine._started:
                    if loop is None:
                        loop = DepthLoop(engine, symbols, _mark_direct(engine))
                    batch.n = batch.records = 0
                    status, pos = scan(view, pos, size, names, batch, lo, hi, SCHEMA_VERSION)
                    report.records += batch.records
                    if batch.n:
                        loop.run(batch)
                    if pos - released >= RELEASE_BYTES:
                        page = (pos // mmap.PAGESIZE) * mmap.PAGESIZE
                        buf.madvise(mmap.MADV_DONTNEED, released, page - released)
                        released = page
                    if status == SCAN_FULL:
                        continue
                    if status == SCAN_PAST:  # the reader counts that record, then stops
                        report.records += 1
                        return
                    if status == SCAN_END and pos >= size:
                        break
                    if status not in (SCAN_OTHER, SCAN_DAMAGED, SCAN_END):
                        raise RuntimeError(f"unknown scan status {status}")
                # one record the general way (or, damaged, the rest of the segment)
                record = _parse_at(buf, view, pos, size, info.segment_no)
                if record is None:
                    view.release()
                    rest = _iter_segment(info, buf, pos, report)
                    try:
                        for record in rest:
                            if record.recv_ns > hi:
                                return
                            yield from _general(record, report, lo, hi)
                    finally:
                        rest.close()
                    break
                report.records += 1
                pos += (len(record.topic_bytes) + len(record.src_bytes) + len(record.payload)
                        + fmt.RECORD_OVERHEAD)
                if record.recv_ns > hi:
                    return
                yield from _general(record, report, lo, hi)
        finally:
            view.release()
            buf.close()


def _general(record, report: ReadReport, lo: int, hi: int) -> Iterator[tuple[int, Message]]:
    """One record as ``Recording.messages(start, end, topics=("md.",))`` yields it."""
    recv_ns = record.recv_ns
    if recv_ns < lo or recv_ns > hi or not record.topic_bytes.startswith(b"md."):
        return
    try:
        decoded = codec.decode(record.payload)
    except codec.FrameError:
        report.undecodable += 1
        return
    for msg in decoded:
        yield recv_ns, msg
