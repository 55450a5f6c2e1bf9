"""``ibfleet data download``: IB historical bars through the running fleet's gateway, into the
catalog one UTC day at a time.

Every request goes on the bus as a ``HistoricalRequest`` (``hist.req``), the way a strategy's
``history()`` asks, so the gateway's ``HistoricalPacer`` paces it together with everything else
the fleet asks IB (identical requests 15 s apart, 5 per contract and tick type in 2 s, 60 in
10 minutes): nothing here talks to IB directly, and nothing here can bypass that pacing. The
answers come back on ``hist.<our source>`` (``Bar``s, then a ``HistoricalEnd``).

Chunks are what IB accepts for the bar size (IB's "Historical Data Limitations" page,
https://interactivebrokers.github.io/tws-api/historical_limitations.html, "Step Sizes": a
duration of 1 D for bars of 1 min up to 1 day; 28800 S for 30 secs bars; 14400 S for 10 and
15 secs; 3600 S for 5 secs; 1800 S for 1 sec), never more than one UTC day: a day is one or
more requests ending at UTC times (``yyyymmdd-hh:mm:ss``, IB's UTC form of endDateTime).

A day is stored once all its chunks are in: one ``Catalog.add(..., append=True)``, all or
nothing, into ``bars-<size>/SYMBOL`` (the bars importer's schema: ts int64 ns UTC, open,
high, low, close, volume float64). Only bars that start inside the day are kept (IB may answer
a "1 D" request with the session before). Days the dataset has are skipped, so a download
that was interrupted (Ctrl-C, SIGKILL, a gateway restart, a pacing violation 162) is
continued by running the same command again; the catalog only ever holds complete days.
Days not over yet (UTC) are not downloaded: a partial day stored would be skipped later.

With ``--ticks TRADES|BID_ASK|MIDPOINT``: IB historical ticks (reqHistoricalTicks, IB's
"Historical Time and Sales" page) instead of bars, as ``HistoricalTicksRequest``s through the
same gateway pacing. IB returns at most 1000 ticks from a start time, completing the last
second; a day is walked in such pages from its UTC midnight, each page starting at the last
tick's second of the one before (``tick_pages``): the ticks of that boundary second are taken
from the later page, which starts with it and so holds all of it (no duplicates, none lost).
TRADES go to ``trades/SYMBOL`` (ts, price, size), BID_ASK to ``quotes/SYMBOL`` (ts, bid, ask,
bid_size, ask_size), MIDPOINT to ``quotes/SYMBOL`` with bid = ask = the midpoint and no sizes.
IB's tick times are whole seconds, so ``ts`` is too. A day is stored once, complete, as above.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import msgspec
import pyarrow as pa

from services.data.catalog import Catalog
from services.data.csvtable import bar_size_name
from services.data.errors import DataError
from services.data.model import Instrument, Provenance, check_symbol
from services.data.tables import Piece, build

__all__ = ["BAR_SIZES", "Chunk", "DownloadError", "Downloader", "GatewayLink", "chunks_for_day",
           "parse_day"]

NS = 1_000_000_000
DAY_S = 86400

#: IB's barSizeSetting values (intraday: one partition per UTC day) -> seconds
BAR_SIZES = {"1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
             "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
             "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600,
             "2 hours": 7200, "3 hours": 10800, "4 hours": 14400, "8 hours": 28800}

#: IB's step sizes: (smallest bar in seconds, the longest duration in seconds it allows);
#: the first row whose bar size is <= ours and largest applies
STEP_SIZES = ((60, DAY_S), (30, 28800), (10, 14400), (5, 3600), (1, 1800))

WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID_ASK")
#: --ticks: IB's whatToShow for historical ticks -> the catalog kind they are stored as
TICK_KINDS = {"TRADES": "trades", "BID_ASK": "quotes", "MIDPOINT": "quotes"}
#: IB's most ticks per reqHistoricalTicks
TICKS_PER_REQUEST = 1000

#: the gateway repeats gw.state with every heartbeat; silence this long means it is gone
GATEWAY_SILENCE_S = 20.0
#: an unanswered request is published again this often (the gateway ignores a repeat of one
#: it holds; PUB/SUB may have lost the first while the gateway restarted)
RESEND_S = 10.0
#: a progress line while a request waits (the gateway's pacing may hold it minutes)
WAIT_NOTE_S = 15.0


class DownloadError(DataError):
    """A refusal: printed as one line, exit 1."""


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise DownloadError(f"not a date (YYYY-MM-DD): {text!r}") from None


@dataclass(frozen=True)
class Chunk:
    """One request: ``duration`` of bars ending at ``end`` (UTC)."""

    end_s: int  # epoch seconds
    duration_s: int

    @property
    def end_text(self) -> str:  # IB's UTC form of endDateTime
        return datetime.fromtimestamp(self.end_s, timezone.utc).strftime("%Y%m%d-%H:%M:%S")

    @property
    def duration_text(self) -> str:
        return "1 D" if self.duration_s == DAY_S else f"{self.duration_s} S"


def max_duration(bar_seconds: int) -> int:
    for smallest, longest in STEP_SIZES:
        if bar_seconds >= smallest:
            return longest
    raise DownloadError(f"no IB duration for {bar_seconds} s bars")


def chunks_for_day(day: date, bar_seconds: int) -> list[Chunk]:
    """The requests covering one UTC day, oldest first."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    step = max_duration(bar_seconds)
    return [Chunk(min(t + step, start + DAY_S), min(step, start + DAY_S - t))
            for t in range(start, start + DAY_S, step)]


def error_code(text: str) -> int | None:
    m = re.match(r"\s*(-?\d+)\s*:", text)
    return int(m.group(1)) if m else None


def explain(text: str) -> str:
    """A gateway/IB error, with what it means for the download."""
    code = error_code(text)
    low = text.lower()
    if code == 162 and "pacing" in low:
        why = "IB's pacing violation (162): too many historical requests for this account"
    elif code == 162:
        why = "IB's historical data service refused (162)"
    elif code == 200:
        why = "IB does not know this contract (200)"
    elif code == 321:
        why = "IB refused the request as invalid (321)"
    elif code == 354 or code == 10167 or code == 10168:
        why = f"no market data permission for this instrument ({code})"
    elif code == 366:
        why = "IB lost the request (366)"
    else:
        why = "the gateway refused the request"
    return f"{why}: {text}"


def no_data(text: str) -> bool:
    """IB's 162 for a period without bars (a weekend, a holiday): an empty day, not a fault."""
    return error_code(text) == 162 and "no data" in text.lower()


# -- the bus ---------------------------------------------------------------------------------

class GatewayLink:
    """The download's seat on the bus, as the operator: publishes HistoricalRequests, reads
    the gateway's state, its answers and the instrument's reference data."""

    def __init__(self, config, symbol: str, say: Callable[[str], None]) -> None:
        import zmq

        from services.bus import keys
        from services.bus.publisher import Publisher
        from services.bus.subscriber import Subscriber
        self.config, self.symbol, self.say = config, symbol, say
        self.ctx = zmq.Context()
        keys.for_process(self.ctx, config, "operator")  # bus.auth: the operator's key
        self.source = f"data.download.{os.getpid()}"
        bus = config.bus
        self.sub = Subscriber(self.ctx, bus.endpoint("bus-out"), ["gw.state"],
                              exact=[f"hist.{self.source}", f"ref.instrument.{symbol}"])
        self.pub = Publisher(self.ctx, bus.endpoint("bus-in"), self.source, ready_timeout=5.0)
        if not self.pub.ready:
            self.close()
            why = (f"its bus refused this command's key (the state directory {config.state_dir} "
                   f"holds other keys than the fleet's: give the fleet's --state-dir)"
                   if config.bus.auth else "start the fleet (ibfleet up) with this config")
            raise DownloadError(f"nothing answers on the fleet's bus "
                                f"({bus.endpoint('bus-in')}): the fleet is not running, or "
                                f"{why}")
        self.gateway_state = ""
        self.gateway_seen = 0.0
        self.instrument = None  # proto.schema.Instrument, once the gateway published it
        self.count = 0

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def _take(self, msgs, request: str | None, bars: list) -> object | None:
        from proto.schema import Bar, GatewayState, HistoricalEnd, HistoricalTick
        from proto.schema import Instrument as RefInstrument
        end = None
        for msg in msgs:
            if isinstance(msg, GatewayState):
                if msg.state != self.gateway_state and self.gateway_state:
                    self.say(f"  gateway {msg.state}" + (f" ({msg.reason})" if msg.reason else ""))
                self.gateway_state, self.gateway_seen = msg.state, time.monotonic()
            elif isinstance(msg, RefInstrument) and msg.symbol == self.symbol:
                self.instrument = msg
            elif request is not None and isinstance(msg, (Bar, HistoricalTick)) \
                    and msg.request == request:
                bars.append(msg)
            elif request is not None and isinstance(msg, HistoricalEnd) \
                    and msg.request == request and msg.requester == self.source:
                end = msg
        return end

    def wait_gateway(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self.gateway_state:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DownloadError(
                    f"the gateway is not running: no gateway state on the bus within "
                    f"{timeout:g} s (ibfleet status shows the fleet's processes)")
            got = self.sub.recv(int(min(left, 0.5) * 1000) + 1)
            if got:
                self._take(got[1], None, [])
        return self.gateway_state

    def history(self, chunk: Chunk, bar_size: str, what: str, use_rth: bool,
                interrupted: Callable[[], bool] = lambda: False):
        """(bars, error text) for one request through the gateway."""
        from proto.schema import HistoricalRequest
        request = self._request_id()
        req = HistoricalRequest(requester=self.source, request=request, symbol=self.symbol,
                                duration=chunk.duration_text, bar_size=bar_size,
                                what_to_show=what, use_rth=use_rth, end=chunk.end_text)
        return self._ask(req, interrupted)

    def ticks(self, start_s: int, what: str, use_rth: bool,
              interrupted: Callable[[], bool] = lambda: False):
        """(HistoricalTicks, error text): up to 1000 ticks from ``start_s`` (epoch s, UTC)."""
        from proto.schema import HistoricalTicksRequest
        req = HistoricalTicksRequest(requester=self.source, request=self._request_id(),
                                     symbol=self.symbol, what_to_show=what,
                                     start=utc_text(start_s), count=TICKS_PER_REQUEST,
                                     use_rth=use_rth)
        return self._ask(req, interrupted)

    def _request_id(self) -> str:
        self.count += 1
        return f"dl{self.count}-{time.time_ns() % 1_000_000_007}"

    def _ask(self, req, interrupted: Callable[[], bool]):
        request = req.request
        bars: list = []
        sent = noted = started = time.monotonic()
        self.pub.publish(req)
        while True:
            got = self.sub.recv(500)
            now = time.monotonic()
            if got:
                end = self._take(got[1], request, bars)
                if end is not None:
                    return bars, end.error
            if interrupted():
                raise KeyboardInterrupt
            if now - self.gateway_seen > GATEWAY_SILENCE_S:
                raise DownloadError(
                    f"the gateway stopped answering (no gateway state for "
                    f"{GATEWAY_SILENCE_S:g} s: not running?); the days stored are complete, "
                    f"run the same command again to continue")
            if now - sent >= RESEND_S:
                self.pub.publish(req)  # the gateway drops a repeat of a request it holds
                sent = now
            if now - noted >= WAIT_NOTE_S:
                noted = now
                self.say(f"  ... waiting {now - started:.0f} s for the gateway (gateway "
                         f"{self.gateway_state}; IB's pacing holds requests there)")

    def fetch_instrument(self, timeout: float = 3.0):
        """The gateway's reference data for the symbol, from the bus's last-value cache."""
        if self.instrument is not None:
            return self.instrument
        from proto.schema import Instrument as RefInstrument
        from services.bus import snapshot
        from services.bus.subscriber import Subscriber
        topic = f"ref.instrument.{self.symbol}"
        sub = Subscriber(self.ctx, self.config.bus.endpoint("bus-out"), [], exact=[topic])
        try:
            state, live = snapshot.join(self.ctx, sub, self.config.bus.endpoint("bus-snap"),
                                        topic, timeout=timeout, exact=True)
        except Exception:  # noqa: BLE001 - reference data is best effort; the bars are not
            return None
        finally:
            sub.close()
        for _, msg in list(state) + list(live):
            if isinstance(msg, RefInstrument) and msg.symbol == self.symbol:
                self.instrument = msg
        return self.instrument


# -- the download ----------------------------------------------------------------------------

@dataclass
class Downloader:
    catalog: Catalog
    symbol: str  # the fleet's symbol (what the gateway resolves)
    bar_size: str = "1 min"
    what: str = "TRADES"
    use_rth: bool = True
    first: date = field(default_factory=date.today)
    last: date = field(default_factory=date.today)
    say: Callable[[str], None] = print
    now: Callable[[], float] = time.time

    ticks: str | None = None  # --ticks: IB's whatToShow for historical ticks, else bars

    def __post_init__(self) -> None:
        if self.ticks is not None and self.ticks not in TICK_KINDS:
            raise DownloadError(f"--ticks {self.ticks!r}: one of {', '.join(TICK_KINDS)}")
        if self.bar_size not in BAR_SIZES:
            raise DownloadError(f"--bar-size {self.bar_size!r}: one of IB's intraday bar "
                                f"sizes: {', '.join(BAR_SIZES)}")
        if self.what not in WHAT_TO_SHOW:
            raise DownloadError(f"--what {self.what!r}: one of {', '.join(WHAT_TO_SHOW)}")
        if self.last < self.first:
            raise DownloadError(f"--to {self.last} is before --from {self.first}")
        self.seconds = BAR_SIZES[self.bar_size]
        self.dataset_symbol = dataset_symbol(self.symbol)
        self.kind = f"bars-{bar_size_name(self.seconds)}"
        if self.ticks is not None:
            self.kind = TICK_KINDS[self.ticks]
        self.name = f"{self.kind}/{self.dataset_symbol}"
        self.stored = self.skipped = self.empty = 0

    # -- what is there already -------------------------------------------------------------
    def have(self) -> set[str]:
        """The dates (YYYY-MM-DD) the dataset holds; refuses a dataset of other settings."""
        if self.name not in self.catalog.names():
            return set()
        meta = self.catalog.meta(self.name)
        for p in meta.provenance:
            if p.importer != "download":
                continue
            theirs = (p.options.get("what_to_show"), p.options.get("use_rth"))
            if theirs != (self.ticks or self.what, str(int(self.use_rth))):
                raise DownloadError(
                    f"{self.name} holds data downloaded with whatToShow={theirs[0]}, "
                    f"useRTH={theirs[1]}; these would be other bars in the same dataset: "
                    f"ibfleet data remove {self.name} first, or use another --catalog")
        return {p.key.partition("=")[2] for p in meta.partitions}

    def days(self) -> list[date]:
        out, day = [], self.first
        while day <= self.last:
            out.append(day)
            day += timedelta(days=1)
        return out

    def run(self, link: GatewayLink, interrupted: Callable[[], bool] = lambda: False) -> int:
        have = self.have()
        days = self.days()
        todo = [d for d in days if d.isoformat() not in have]
        self.say(f"download {self.symbol} "
                 f"{f'ticks {self.ticks}' if self.ticks else f'{self.bar_size} {self.what}'} "
                 f"{'RTH' if self.use_rth else 'all hours'} {days[0]} .. {days[-1]} into "
                 f"{self.name} ({self.catalog.root}): {len(days)} days, "
                 f"{len(days) - len(todo)} there already; gateway {link.gateway_state}")
        for day in days:
            key = day.isoformat()
            if key in have:
                self.skipped += 1
                self.say(f"  {key}  in the catalog already: skipped")
                continue
            day_end = int(datetime(day.year, day.month, day.day,
                                   tzinfo=timezone.utc).timestamp()) + DAY_S
            if day_end > self.now():
                self.say(f"  {key}  not over yet (UTC): not downloaded (a part of a day would "
                         f"be taken for the whole day on the next run)")
                continue
            if self.ticks is not None:
                self._tick_day(link, day, interrupted)
            else:
                self._day(link, day, interrupted)
        self.say(f"done: {self.stored} days stored, {self.skipped} there already, "
                 f"{self.empty} without {'ticks' if self.ticks else 'bars'} "
                 f"({self.name} in {self.catalog.root})")
        return 0

    def _day(self, link: GatewayLink, day: date, interrupted) -> None:
        key = day.isoformat()
        start_ns = int(datetime(day.year, day.month, day.day,
                                tzinfo=timezone.utc).timestamp()) * NS
        end_ns = start_ns + DAY_S * NS
        requested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        began = time.monotonic()
        rows: dict[int, tuple] = {}
        chunks = chunks_for_day(day, self.seconds)
        for chunk in chunks:
            t0 = time.monotonic()
            bars, error = link.history(chunk, self.bar_size, self.what, self.use_rth,
                                       interrupted)
            if error and not no_data(error):
                raise DownloadError(f"{self.symbol} {key} (end {chunk.end_text}, "
                                    f"{chunk.duration_text}): {explain(error)}; the days "
                                    f"stored are complete, run the same command again to "
                                    f"continue")
            for b in bars:
                if start_ns <= b.start_ns < end_ns:
                    rows[b.start_ns] = (b.open, b.high, b.low, b.close, b.volume)
            if len(chunks) > 1:
                self.say(f"  {key}  {chunk.end_text} {chunk.duration_text}: {len(bars)} bars "
                         f"({time.monotonic() - t0:.1f} s)")
        self._store(key, self._piece(link, day, rows, chunks, requested_at) if rows else None,
                    "bars", "", began)

    def _store(self, key: str, piece: Piece | None, unit: str, how: str, began: float) -> None:
        """One day: appended whole to the dataset, or (no ``piece``: IB had nothing) counted
        as empty, nothing stored; said either way."""
        if not piece:
            self.empty += 1
            self.say(f"  {key}  no {unit} (IB has none for this day: a weekend, a holiday?); "
                     f"nothing stored")
            return
        results = self.catalog.add([piece], append=True)
        self.stored += 1
        self.say(f"  {key}  {piece.table.num_rows} {unit} stored{how} ({results[0].status}, "
                 f"{time.monotonic() - began:.1f} s)")

    def _piece(self, link: GatewayLink, day: date, rows: dict[int, tuple], chunks,
               requested_at: str) -> Piece:
        times = sorted(rows)
        columns = {"ts": times}
        for i, name in enumerate(("open", "high", "low", "close", "volume")):
            columns[name] = [rows[t][i] for t in times]
        return self._stored_day(link, day, columns, requested_at, "data", "bars", {
            "bar_size": bar_size_name(self.seconds), "ib_bar_size": self.bar_size,
            "what_to_show": self.what,
            "requests": ", ".join(f"{c.end_text} {c.duration_text}" for c in chunks)},
            f"{self.bar_size} {self.what}")

    def _stored_day(self, link: GatewayLink, day: date, columns: dict[str, list],
                    requested_at: str, what: str, unit: str, options: dict[str, str],
                    source: str) -> Piece:
        """One downloaded UTC day as a catalog piece: the table (``ts`` and float64 columns)
        and its provenance (the Arrow IPC bytes' sha256, how it was asked for)."""
        table = build(columns, {n: pa.float64() for n in columns if n != "ts"})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        shown = options["what_to_show"]
        line = (f"IB historical {what} via ibfleet gateway, requested {requested_at}, "
                f"whatToShow={shown}, useRTH={int(self.use_rth)}")
        prov = Provenance(
            source=f"ib:{self.symbol} {source} {day.isoformat()} (UTC)",
            sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), rows=table.num_rows,
            licence=line, imported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            importer="download",
            options={**options, "use_rth": str(int(self.use_rth)), "date": day.isoformat(),
                     "requested_at": requested_at, "symbol": self.symbol,
                     "sha256_of": f"the day's {unit} as Arrow IPC"})
        return Piece(self.kind, self.instrument(link), table, [prov], "date")

    # -- historical ticks ---------------------------------------------------------------------
    def _tick_day(self, link: GatewayLink, day: date, interrupted) -> None:
        key = day.isoformat()
        start_s = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
        requested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        began = time.monotonic()
        starts: list[int] = []

        def page(at: int) -> list:
            starts.append(at)
            got, error = link.ticks(at, self.ticks, self.use_rth, interrupted)
            if error and not no_data(error):
                raise DownloadError(f"{self.symbol} {key} (ticks from {utc_text(at)}): "
                                    f"{explain(error)}; the days stored are complete, run the "
                                    f"same command again to continue")
            return [] if error else got

        ticks = tick_pages(page, start_s, start_s + DAY_S)
        self._store(key, self._tick_piece(link, day, ticks, starts, requested_at)
                    if ticks else None, "ticks", f" in {len(starts)} requests", began)

    def _tick_piece(self, link: GatewayLink, day: date, ticks: list, starts: list[int],
                    requested_at: str) -> Piece:
        columns: dict[str, list] = {"ts": [t.time_ns for t in ticks]}
        if self.ticks == "TRADES":
            columns["price"] = [t.price for t in ticks]
            columns["size"] = [t.size for t in ticks]
        elif self.ticks == "BID_ASK":
            for name in ("bid", "ask", "bid_size", "ask_size"):
                columns[name] = [getattr(t, name) for t in ticks]
        else:  # MIDPOINT: a quote of the midpoint on both sides, sizes unknown
            columns["bid"] = columns["ask"] = [t.price for t in ticks]
            columns["bid_size"] = columns["ask_size"] = [None] * len(ticks)
        return self._stored_day(link, day, columns, requested_at, "ticks", "ticks", {
            "ticks": self.ticks, "what_to_show": self.ticks,
            "requests": ", ".join(f"{utc_text(s)} {TICKS_PER_REQUEST}" for s in starts)},
            f"ticks {self.ticks}")

    def instrument(self, link: GatewayLink) -> Instrument:
        """The reference data: the dataset's own if it has some, else the gateway's."""
        if self.name in self.catalog.names():
            return self.catalog.meta(self.name).instrument
        ref = link.fetch_instrument()
        if ref is None:
            self.say(f"  (no reference data for {self.symbol} from the gateway: "
                     f"STK/USD assumed)")
            return Instrument(symbol=self.dataset_symbol, zone="UTC")
        return Instrument(symbol=self.dataset_symbol, sec_type=ref.sec_type or "STK",
                          exchange=ref.primary_exchange or ref.exchange,
                          currency=ref.currency or "USD",
                          min_tick=ref.min_tick if ref.min_tick and ref.min_tick > 0 else None,
                          multiplier=ref.multiplier if ref.multiplier and ref.multiplier > 0
                          else 1.0, zone="UTC")


def utc_text(seconds: int) -> str:
    """IB's UTC form of a date/time (``yyyymmdd-hh:mm:ss``)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y%m%d-%H:%M:%S")


def tick_pages(page: Callable[[int], list], start_s: int, end_s: int) -> list:
    """Every tick in [start_s, end_s) (epoch seconds), walked in IB's pages: ``page(at)``
    returns the ticks IB gives from ``at`` (objects with ``time_ns``, oldest first; at most
    TICKS_PER_REQUEST, more to complete the last second; [] when none follow ``at``).

    The next page starts at the last tick's second: it holds that boundary second whole, so
    the boundary second's ticks of the page before are replaced by it. A page shorter than
    IB's maximum ended where IB's data did (or its session): the next starts a second after
    its last tick. A page all within one second (more than 1000 ticks in it, completed by IB)
    moves on a second too."""
    out: list = []
    at = start_s
    while at < end_s:
        got = [t for t in page(at) if t.time_ns >= at * NS]
        if not got:
            break
        boundary = at * NS
        while out and out[-1].time_ns >= boundary:  # the boundary second: from this page
            out.pop()
        out.extend(t for t in got if t.time_ns < end_s * NS)
        last = got[-1].time_ns // NS
        if len(got) < TICKS_PER_REQUEST or got[0].time_ns // NS == last:
            at = last + 1
        else:
            at = last
    return out


def dataset_symbol(symbol: str) -> str:
    """The fleet's symbol as a dataset name (``ESZ6@CME`` -> ``ESZ6.CME``)."""
    try:
        return check_symbol(symbol.replace("@", "."))
    except ValueError as exc:
        raise DownloadError(str(exc)) from None


def main(args, config) -> int:
    """``ibfleet data download`` (``args`` from cli.py's parser)."""
    import signal
    catalog = args.catalog_obj
    downloader = Downloader(catalog, args.symbol, bar_size=args.bar_size, what=args.what,
                            use_rth=args.rth, first=parse_day(args.from_day),
                            last=parse_day(args.to_day),
                            say=lambda line: print(line, flush=True),
                            ticks=getattr(args, "ticks", None))
    downloader.have()  # refuse a dataset of other settings before touching the bus
    stop = {"now": False}

    def on_term(signum, frame):  # SIGTERM: as Ctrl-C, between two steps
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_term)
    link = GatewayLink(config, args.symbol, downloader.say)
    try:
        link.wait_gateway(args.wait)
        return downloader.run(link, lambda: stop["now"])
    except KeyboardInterrupt:
        print(f"interrupted: {downloader.stored} days stored, each complete; run the same "
              f"command again to continue", file=sys.stderr, flush=True)
        return 130
    except msgspec.ValidationError as exc:
        raise DownloadError(str(exc)) from None
    finally:
        link.close()
