"""Historical bars and ticks on request, paced as IB requires before anything is sent.

A request waits here until its contract is known and ``HistoricalPacer`` says it may go;
its bars are gathered until IB's end marker, then published together. A request in flight
when the connection drops goes back to waiting and is sent again after the reconnect (under a
fresh id, when IB's pacing lets it). With ``journal``, every request not yet answered is
written there, so one in flight when the gateway *process* dies is asked again by the next
one: every request ends with its ``HistoricalEnd`` (bars or an error), never in silence.

Historical ticks (``HistoricalTicksRequest``, IB's reqHistoricalTicks) are jobs of the same
desk: IB paces them with the historical data rules ("Historical Data Limitations": the
pacing rules apply to historical ticks too), so one pacer, one journal and one reconnect path
serve both; ``due`` hands out one kind at a time (bars to ``MarketData.send_due_history``,
ticks to ``send_due_ticks``) and a tick job gathers ``HistoricalTick`` messages until IB's
``done``.
"""
from __future__ import annotations

import calendar
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from proto.schema import Bar, HistoricalRequest, HistoricalTick, HistoricalTicksRequest
from services.gateway import ib_time
from services.gateway.pacing import HistoricalPacer


#: what the journal keeps of a HistoricalRequest
JOURNAL_FIELDS = ("requester", "request", "symbol", "duration", "bar_size", "what_to_show",
                  "use_rth", "end")
#: ... and of a HistoricalTicksRequest (journalled with "kind": "ticks")
TICKS_JOURNAL_FIELDS = ("requester", "request", "symbol", "what_to_show", "start", "end",
                        "count", "use_rth", "ignore_size")


@dataclass
class HistoryJob:
    request: HistoricalRequest | HistoricalTicksRequest
    req_id: int | None = None
    bars: list = field(default_factory=list)  # the answer so far: Bars, or HistoricalTicks
    paced: str = ""  # the pacing rule that held it back last ("": none)

    @property
    def contract_key(self) -> tuple:
        r = self.request
        return (r.symbol, r.what_to_show)

    @property
    def request_key(self) -> tuple:
        r = self.request
        if isinstance(r, HistoricalTicksRequest):
            return (r.symbol, "ticks", r.what_to_show, r.start, r.end, r.count, r.use_rth,
                    r.ignore_size)
        return (r.symbol, r.duration, r.bar_size, r.what_to_show, r.use_rth, r.end)


class HistoryDesk:
    def __init__(self, pacer: HistoricalPacer | None = None,
                 journal: Path | None = None) -> None:
        self.pacer = pacer or HistoricalPacer()
        self.waiting: list[HistoryJob] = []
        self.in_flight: dict[int, HistoryJob] = {}
        self.journal = journal
        self.journal_errors = 0
        self.restored = 0  # requests a previous process left unanswered, asked again
        if journal is not None:
            self._restore(journal)
        #: pacing decisions that held a request back (each job counted once per rule)
        self.paced: dict[str, int] = {"identical": 0, "burst": 0, "total": 0}

    def add(self, request: HistoricalRequest | HistoricalTicksRequest) -> bool:
        """Queue ``request``; False (and nothing queued) if the same requester's same request
        is already waiting or in flight: a requester repeats an unanswered request (PUB/SUB
        may have lost it), and a repeat must not cost IB a second request."""
        ident = (request.requester, request.request)
        for job in self.waiting + list(self.in_flight.values()):
            if (job.request.requester, job.request.request) == ident:
                return False
        self.waiting.append(HistoryJob(request))
        self.save()
        return True

    # -- the journal of unanswered requests ------------------------------------------------
    def _restore(self, path: Path) -> None:
        try:
            items = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for item in items if isinstance(items, list) else ():
            try:
                if isinstance(item, dict) and item.get("kind") == "ticks":
                    request = HistoricalTicksRequest(**{k: item[k] for k in TICKS_JOURNAL_FIELDS
                                                        if k in item})
                else:
                    request = HistoricalRequest(**{k: item[k] for k in JOURNAL_FIELDS
                                                   if k in item})
            except (TypeError, KeyError, msgspec.ValidationError):
                continue
            self.waiting.append(HistoryJob(request))
            self.restored += 1

    def save(self) -> None:
        """Journal the requests not answered yet (after an answer is on the bus: a crash in
        between asks again rather than never answers)."""
        if self.journal is None:
            return
        jobs = list(self.in_flight.values()) + self.waiting
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        try:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps([_journal_item(j.request) for j in jobs]))
            os.replace(tmp, self.journal)
        except OSError:
            self.journal_errors += 1  # this process still answers them

    def due(self, now: float, resolved, kind: type = HistoricalRequest) -> list[HistoryJob]:
        """Jobs of ``kind`` (bars by default, ``HistoricalTicksRequest`` for ticks) whose
        contract is known and which pacing lets go now (recorded as sent)."""
        out, keep = [], []
        for job in self.waiting:
            if not isinstance(job.request, kind) or not resolved(job.request.symbol):
                keep.append(job)
                continue
            wait, rule = self.pacer.decide(now, job.contract_key, job.request_key)
            if wait > 0:
                if rule != job.paced:
                    job.paced = rule
                    self.paced[rule] += 1
                keep.append(job)
                continue
            self.pacer.record(now, job.contract_key, job.request_key)
            out.append(job)
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

    def ticks(self, req_id: int, ticks, done: bool) -> bool:
        """IB's historicalTicks / BidAsk / Last (the one its whatToShow asked for: MIDPOINT,
        BID_ASK, TRADES), kept as ``HistoricalTick``s; True when IB says ``done`` (then the
        caller finishes the job and publishes it, as for bars)."""
        job = self.in_flight.get(req_id)
        if job is None or not isinstance(job.request, HistoricalTicksRequest):
            return False  # a late answer to a request we gave up on
        r = job.request
        for t in ticks:
            job.bars.append(historical_tick(r.symbol, r.request, r.what_to_show, t))
        return bool(done)

    def finish(self, req_id: int) -> HistoryJob | None:
        return self.in_flight.pop(req_id, None)  # journalled once answered (``save``)

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


def _journal_item(request) -> dict:
    if isinstance(request, HistoricalTicksRequest):
        return {"kind": "ticks", **{f: getattr(request, f) for f in TICKS_JOURNAL_FIELDS}}
    return {f: getattr(request, f) for f in JOURNAL_FIELDS}


def send_due_ticks(desk: HistoryDesk, now: float, contracts, outbox) -> int:
    """Historical tick requests whose contract is known, once IB's pacing lets them go:
    reqHistoricalTicks under a fresh id of the outbox. Returns how many went."""
    jobs = desk.due(now, lambda symbol: contracts.get(symbol) is not None,
                    HistoricalTicksRequest)
    for job in jobs:
        rid = outbox.req_id()
        desk.sent(job, rid)
        contract, r = contracts.get(job.request.symbol), job.request
        outbox.submit("history ticks", lambda c, rid=rid, contract=contract, r=r:
                      c.reqHistoricalTicks(rid, contract, r.start, r.end, r.count,
                                           r.what_to_show, int(r.use_rth), r.ignore_size, []))
    return len(jobs)


def historical_tick(symbol: str, request: str, what: str, t) -> HistoricalTick:
    """One of ibapi's HistoricalTick / HistoricalTickBidAsk / HistoricalTickLast as a bus
    message (``t.time``: epoch seconds)."""
    time_ns = int(t.time) * 1_000_000_000
    if what == "BID_ASK":
        a = t.tickAttribBidAsk
        return HistoricalTick(symbol=symbol, request=request, what_to_show=what, time_ns=time_ns,
                              bid=float(t.priceBid), ask=float(t.priceAsk),
                              bid_size=float(t.sizeBid), ask_size=float(t.sizeAsk),
                              bid_past_low=bool(a.bidPastLow), ask_past_high=bool(a.askPastHigh))
    if what == "TRADES":
        a = t.tickAttribLast
        return HistoricalTick(symbol=symbol, request=request, what_to_show=what, time_ns=time_ns,
                              price=float(t.price), size=float(t.size), exchange=t.exchange or "",
                              special_conditions=t.specialConditions or "",
                              past_limit=bool(a.pastLimit), unreported=bool(a.unreported))
    return HistoricalTick(symbol=symbol, request=request, what_to_show=what, time_ns=time_ns,
                          price=float(t.price), size=float(t.size))


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
