"""Historical bars on request, paced as IB requires before anything is sent.

A request waits here until its contract is known and ``HistoricalPacer`` says it may go;
its bars are gathered until IB's end marker, then published together. A request in flight
when the connection drops goes back to waiting and is sent again after the reconnect.
"""
from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field

from proto.schema import Bar, HistoricalRequest
from services.gateway import ib_time
from services.gateway.pacing import HistoricalPacer


@dataclass
class HistoryJob:
    request: HistoricalRequest
    req_id: int | None = None
    bars: list[Bar] = field(default_factory=list)

    @property
    def contract_key(self) -> tuple:
        r = self.request
        return (r.symbol, r.what_to_show)

    @property
    def request_key(self) -> tuple:
        r = self.request
        return (r.symbol, r.duration, r.bar_size, r.what_to_show, r.use_rth, r.end)


class HistoryDesk:
    def __init__(self, pacer: HistoricalPacer | None = None) -> None:
        self.pacer = pacer or HistoricalPacer()
        self.waiting: list[HistoryJob] = []
        self.in_flight: dict[int, HistoryJob] = {}

    def add(self, request: HistoricalRequest) -> None:
        self.waiting.append(HistoryJob(request))

    def due(self, now: float, resolved) -> list[HistoryJob]:
        """Jobs whose contract is known and which pacing lets go now (recorded as sent)."""
        out, keep = [], []
        for job in self.waiting:
            if resolved(job.request.symbol) and \
                    self.pacer.delay(now, job.contract_key, job.request_key) == 0:
                self.pacer.record(now, job.contract_key, job.request_key)
                out.append(job)
            else:
                keep.append(job)
        self.waiting = keep
        return out

    def sent(self, job: HistoryJob, req_id: int) -> None:
        job.req_id = req_id
        self.in_flight[req_id] = job

    def bar(self, req_id: int, data) -> None:
        job = self.in_flight.get(req_id)
        if job is None:
            return  # a late answer to a request we gave up on
        r = job.request
        job.bars.append(Bar(symbol=r.symbol, start_ns=bar_time_ns(data.date),
                            seconds=bar_seconds(r.bar_size),
                            open=float(data.open), high=float(data.high), low=float(data.low),
                            close=float(data.close), volume=float(data.volume),
                            wap=float(data.wap), count=int(data.barCount), request=r.request))

    def finish(self, req_id: int) -> HistoryJob | None:
        return self.in_flight.pop(req_id, None)

    def requeue_in_flight(self) -> int:
        """The connection dropped: whatever was in flight is asked again later."""
        jobs = list(self.in_flight.values())
        self.in_flight.clear()
        for job in jobs:
            job.req_id, job.bars = None, []
        self.waiting[:0] = jobs
        return len(jobs)

    def fail_symbol(self, symbol: str) -> list[HistoryJob]:
        failed = [j for j in self.waiting if j.request.symbol == symbol]
        self.waiting = [j for j in self.waiting if j.request.symbol != symbol]
        return failed


def bar_time_ns(date: str) -> int:
    """IB's bar time with formatDate=2: epoch seconds for intraday bars, YYYYMMDD for days; a
    'yyyymmdd hh:mm:ss [ZONE]' string (formatDate=1, some servers) through ``ib_time``."""
    text = str(date).strip()
    if len(text) == 8 and text.isdigit():
        return calendar.timegm(time.strptime(text, "%Y%m%d")) * 1_000_000_000
    return ib_time.parse_ns(text)


_UNITS = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600,
          "day": 86400, "days": 86400, "week": 604800, "weeks": 604800, "month": 2592000}


def bar_seconds(bar_size: str) -> int:
    """IB's barSizeSetting ("5 secs", "1 min", "1 day") in seconds; 0 if unknown."""
    try:
        count, unit = bar_size.split()
        return int(count) * _UNITS[unit]
    except (ValueError, KeyError):
        return 0
