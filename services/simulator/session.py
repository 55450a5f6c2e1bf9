"""One API client connection: handshake, request decoding per server version, and replies.

Nothing a client sends can raise out of here: a frame that cannot be decoded gets IB's error 320
(or 321 for an unknown message id) and is counted; the connection carries on.
"""
from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from . import protocol as P
from .contracts import MARKET_RULES, ContractQuery, Instrument
from . import historical_ticks, pbwire, sessions
from .encoders import TextEncoder, ib_time, parse_filter_time, qty
from .feeds import DepthSub, HistLiveSub, MktSub, RtbSub, TbtSub
from .logs import log
from . import replay  # a market replay's bar datasets answer historical bars
from .orders import IB_ORDER_TYPES, OrderRequest
from .pacing import HistoricalPacing, MessageRate
from .protocol import Code, In
from .wire import UNSET_DOUBLE, FieldError, Fields, FrameSplitter, FrameTooLarge, encode, split_fields

if TYPE_CHECKING:
    from .broker import Broker

SLOW_CONSUMER_BYTES = 64 * 1024 * 1024
HELD_LIMIT = 100_000

BAR_SIZES = {"1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30, "1 min": 60,
             "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600, "15 mins": 900,
             "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200, "3 hours": 10800,
             "4 hours": 14400, "8 hours": 28800, "1 day": 86400, "1 week": 604800, "1 month": 2592000}
DURATION_UNITS = {"S": 1, "D": 86400, "W": 604800, "M": 2592000, "Y": 31536000}
MAX_BARS = 10_000
HEAD_TIMESTAMP_YEARS = 10
SCANNER_XML = '<?xml version="1.0" encoding="UTF-8"?><ScanParameterResponse/>'


class Session:
    def __init__(self, broker: "Broker", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.broker = broker
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.client_id: int | None = None
        self.version = 0
        self.enc = TextEncoder(P.DEFAULT_VERSION)
        self.raw_ids = False     # 201+: message ids as 4-byte integers (pbwire.py)
        self.closed = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.held: list[bytes] = []          # replies held back by a hang or a server reset
        self.mkt: dict[int, MktSub] = {}
        self.mkt_silent: dict[int, Instrument] = {}   # reqMktData answered 10089: open, no data
        self.tbt: dict[int, TbtSub] = {}
        self.depth: dict[int, DepthSub] = {}
        self.rtb: dict[int, RtbSub] = {}
        self.hist_pending: dict[int, asyncio.TimerHandle] = {}
        self.positions_sub = False
        self.account_updates = False
        self.auto_bind = False
        self.pnl: set[int] = set()
        self.pnl_single: dict[int, int] = {}
        self.market_data_type = 1
        cfg = broker.cfg
        self.rate = MessageRate(cfg.max_msgs_per_sec, cfg.pacing_strikes)
        self.hist_pacing = HistoricalPacing(cfg.hist_identical_seconds, cfg.hist_burst_count,
                                            cfg.hist_burst_seconds, cfg.hist_total_count, cfg.hist_total_seconds)
        self.handlers: dict[int, Callable[[Fields], None]] = {
            In.REQ_MKT_DATA: self.req_mkt_data, In.CANCEL_MKT_DATA: self.cancel_mkt_data,
            In.PLACE_ORDER: self.place_order, In.CANCEL_ORDER: self.cancel_order,
            In.REQ_OPEN_ORDERS: self.req_open_orders, In.REQ_ACCT_DATA: self.req_account_updates,
            In.REQ_EXECUTIONS: self.req_executions, In.REQ_IDS: self.req_ids,
            In.REQ_CONTRACT_DATA: self.req_contract_details, In.REQ_MKT_DEPTH: self.req_mkt_depth,
            In.CANCEL_MKT_DEPTH: self.cancel_mkt_depth, In.REQ_AUTO_OPEN_ORDERS: self.req_auto_open_orders,
            In.REQ_ALL_OPEN_ORDERS: self.req_all_open_orders, In.REQ_MANAGED_ACCTS: self.req_managed_accounts,
            In.REQ_HISTORICAL_DATA: self.req_historical_data, In.CANCEL_HISTORICAL_DATA: self.cancel_historical_data,
            In.REQ_CURRENT_TIME: self.req_current_time, In.REQ_REAL_TIME_BARS: self.req_real_time_bars,
            In.CANCEL_REAL_TIME_BARS: self.cancel_real_time_bars, In.REQ_GLOBAL_CANCEL: self.req_global_cancel,
            In.REQ_MARKET_DATA_TYPE: self.req_market_data_type, In.REQ_POSITIONS: self.req_positions,
            In.CANCEL_POSITIONS: self.cancel_positions, In.REQ_ACCOUNT_SUMMARY: self.req_account_summary,
            In.CANCEL_ACCOUNT_SUMMARY: self.ignore, In.REQ_POSITIONS_MULTI: self.req_positions_multi,
            In.CANCEL_POSITIONS_MULTI: self.ignore, In.REQ_ACCOUNT_UPDATES_MULTI: self.req_account_updates_multi,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: self.ignore, In.REQ_PNL: self.req_pnl, In.CANCEL_PNL: self.cancel_pnl,
            In.REQ_PNL_SINGLE: self.req_pnl_single, In.CANCEL_PNL_SINGLE: self.cancel_pnl_single,
            In.REQ_TICK_BY_TICK_DATA: self.req_tick_by_tick, In.CANCEL_TICK_BY_TICK_DATA: self.cancel_tick_by_tick,
            In.REQ_COMPLETED_ORDERS: self.req_completed_orders,
            In.REQ_CURRENT_TIME_IN_MILLIS: self.req_current_time_millis,
            In.REQ_NEWS_BULLETINS: self.ignore, In.CANCEL_NEWS_BULLETINS: self.ignore,
            In.SET_SERVER_LOGLEVEL: self.ignore, In.REQ_MARKET_RULE: self.req_market_rule,
        }
        self.handlers.update(self._other_handlers())

    # ================================================================ output
    def _queue(self, data: bytes) -> None:
        if self.closed:
            return
        if self.raw_ids:
            data = pbwire.raw_ids(data)
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def send(self, data: bytes) -> None:
        """A reply or status message: held while the gateway hangs."""
        if self.broker.hung:
            if len(self.held) < HELD_LIMIT:
                self.held.append(data)
            return
        self._queue(data)

    def send_exec(self, data: bytes) -> None:
        """Order and execution reports: also held back during an IB server reset."""
        if self.broker.hung or self.broker.exec_delayed:
            if len(self.held) < HELD_LIMIT:
                self.held.append(data)
            return
        self._queue(data)

    def send_md(self, data: bytes) -> None:
        """Streaming market data: simply not produced while data is stopped."""
        if self.broker.hung or self.broker.data_stopped:
            return
        self._queue(data)

    def release_held(self) -> None:
        held, self.held = self.held, []
        for data in held:
            self._queue(data)

    def send_raw(self, data: bytes) -> None:
        self._queue(data)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._out:
            self._out.clear()
            return
        self.broker.commit()   # nothing leaves before the account state it reports is durable
        data = b"".join(self._out)
        self._out.clear()
        try:
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size() > SLOW_CONSUMER_BYTES:
                self.close("slow_consumer")
        except Exception as exc:
            self.close(f"write_failed:{exc!r}")

    def flush_now(self) -> None:
        """Write what is queued now instead of at the end of this loop iteration (benchmark
        injection: the write is stamped right after)."""
        if self._out:
            self._flush()

    def error(self, req_id: int, code: tuple[int, str], advanced: str = "", **fmt: object) -> None:
        number, template = code
        try:
            text = template.format(**fmt)
        except (KeyError, IndexError, ValueError):
            text = template
        self.broker.stats["errors_sent"] += 1
        log("error_sent", client_id=self.client_id, req_id=req_id, code=number, text=text)
        data = self.enc.error(req_id, number, text, advanced)
        if number in (1100, 1101, 1102, 2103, 2104, 2105, 2106, 2157, 2158):
            self.send_raw(data)
        else:
            self.send(data)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        if self._out:
            self._flush()
        self.closed = True
        try:
            self.writer.close()
        except Exception:
            pass
        self._unregister()
        log("disconnect", client_id=self.client_id, peer=self.peer, reason=reason)

    def abort(self, reason: str) -> None:
        """Drop the socket at once (a gateway restart does not say goodbye)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.transport.abort()
        except Exception:
            pass
        self._unregister()
        log("disconnect", client_id=self.client_id, peer=self.peer, reason=reason)

    def _unregister(self) -> None:
        b = self.broker
        b.drop_market_data(self)
        for h in self.hist_pending.values():
            h.cancel()
        self.hist_pending.clear()
        b.connections.discard(self)
        if self.client_id is not None and b.sessions.get(self.client_id) is self:
            del b.sessions[self.client_id]

    # ================================================================ input
    async def run(self) -> None:
        b = self.broker
        b.connections.add(self)
        b.stats["connections"] += 1
        log("connect", peer=self.peer)
        try:
            if await self._handshake():
                await self._read_loop()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except FrameTooLarge as exc:
            log("bad_frame", client_id=self.client_id, reason=f"frame too large: {exc}")
        except asyncio.CancelledError:
            self.abort("cancelled")
            raise
        except Exception as exc:
            log("internal_error", where="session", client_id=self.client_id, error=repr(exc))
        finally:
            self.close("eof")

    async def _handshake(self) -> bool:
        prefix = await self.reader.readexactly(4)
        if prefix != b"API\0":
            log("bad_handshake", peer=self.peer, prefix=prefix.hex())
            return False
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        if size > 4096:
            log("bad_handshake", peer=self.peer, reason="version string too long")
            return False
        text = (await self.reader.readexactly(size)).decode("latin-1").rstrip("\0")
        m = re.match(r"v(\d+)(?:\.\.(\d+))?", text)
        if not m:
            log("bad_handshake", peer=self.peer, text=text)
            return False
        lo = int(m.group(1))
        hi = int(m.group(2) or m.group(1))
        version = min(hi, self.broker.cfg.server_version)
        if version < max(lo, P.MIN_SERVED):
            log("bad_handshake", peer=self.peer, reason=f"no common version in {lo}..{hi}")
            return False
        self.version = version
        self.enc = pbwire.encoder_for(version, self.broker.time_zone)
        # as a real gateway: 'yyyymmdd hh:mm:ss ZONE' in the host's zone (often a Windows name)
        conn_time = ib_time(self.broker.market.now(), self.broker.host_zone)
        self._queue(TextEncoder.server_version(version, conn_time))
        self.raw_ids = version >= pbwire.PROTOBUF
        return True

    async def _read_loop(self) -> None:
        splitter = FrameSplitter()
        b = self.broker
        while not self.closed:
            data = await self.reader.read(65536)
            if not data:
                return
            if b.hung:
                await b.resumed.wait()
            for body in splitter.feed(data):
                if self.closed:
                    return
                self._dispatch(body)

    def _dispatch(self, body: bytes) -> None:
        if self.raw_ids:
            try:
                fields = pbwire.request_fields(body, self.version)
            except FieldError as exc:
                self._bad_frame(-1, str(exc))
                return
        else:
            fields = split_fields(body)
        if not fields or not fields[0].strip().lstrip("-").isdigit():
            self._bad_frame(-1, f"Unparseable message id {fields[0][:20]!r}" if fields else "Empty message")
            return
        msg_id = int(fields[0])
        if self.client_id is None:
            if msg_id == In.START_API:
                self._start_api(Fields(fields, 1))
            else:
                log("request_before_start_api", peer=self.peer, msg_id=msg_id)
            return
        accepted, report, disconnect = self.rate.admit(time.monotonic())
        if not accepted:
            if report:
                self.broker.stats["pacing_violations"] += 1
                self.error(-1, Code.MAX_RATE, max=self.rate.limit, rec=self.rate.count)
            if disconnect:
                self.close("pacing_violation")
            return
        handler = self.handlers.get(msg_id)
        if handler is None:
            self.broker.stats["bad_frames"] += 1
            log("bad_frame", client_id=self.client_id, msg_id=msg_id, reason="unknown message id")
            self.error(-1, Code.VALIDATE_ERROR, what=msg_id, cause="Unknown message id")
            return
        try:
            handler(Fields(fields, 1))
        except FieldError as exc:
            self._bad_frame(msg_id, f"Message id {msg_id}: {exc}")
        except Exception as exc:
            log("internal_error", where=f"handler {msg_id}", client_id=self.client_id, error=repr(exc))
            self._bad_frame(msg_id, f"Message id {msg_id}: internal error")

    def _bad_frame(self, msg_id: int, text: str) -> None:
        self.broker.stats["bad_frames"] += 1
        log("bad_frame", client_id=self.client_id, msg_id=msg_id, reason=text)
        if self.client_id is not None:
            self.error(-1, Code.READ_ERROR, text=text)

    def _start_api(self, f: Fields) -> None:
        f.int(0)                       # version
        client_id = f.int(0)
        b = self.broker
        if b.client_id_blocked(client_id):
            self.enc_error_and_close(client_id)
            return
        self.client_id = client_id
        b.sessions[client_id] = self
        log("client_ready", client_id=client_id, peer=self.peer, server_version=self.version)
        acct = b.ledger.account
        self.send_raw(self.enc.managed_accounts(acct))
        self.send_raw(self.enc.next_valid_id(b.engine.issue_id(client_id)))
        for code in (Code.MD_FARM_OK, Code.HMDS_OK, Code.SECDEF_OK):
            self.error(-1, code)

    def enc_error_and_close(self, client_id: int) -> None:
        self.broker.stats["errors_sent"] += 1
        log("error_sent", client_id=client_id, req_id=-1, code=326, text=Code.CLIENT_ID_IN_USE[1])
        self._queue(self.enc.error(-1, *Code.CLIENT_ID_IN_USE))
        self.close("client_id_in_use")

    # ================================================================ helpers
    def read_contract(self, f: Fields, with_con_id: bool = True) -> ContractQuery:
        con_id = f.int(0) if with_con_id else 0
        return ContractQuery(con_id=con_id, symbol=f.str(), sec_type=f.str(), last_trade_date=f.str(),
                             strike=f.float(0.0), right=f.str(), multiplier=f.str(), exchange=f.str(),
                             primary_exchange=f.str(), currency=f.str(), local_symbol=f.str(),
                             trading_class=f.str())

    def resolve(self, req_id: int, q: ContractQuery) -> Instrument | None:
        if q.sec_type == "BAG":
            self.error(req_id, Code.VALIDATE_ERROR, what="BAG", cause="Combination contracts are not simulated")
            return None
        inst = self.broker.universe.resolve(q)
        if inst is None:
            self.error(req_id, Code.NO_SECDEF)
        return inst

    def ignore(self, f: Fields) -> None:
        pass

    def now(self) -> float:
        return self.broker.market.now()

    def _late_reply(self, action: Callable[[], None]) -> None:
        if self.broker.late_replies:
            asyncio.get_running_loop().call_later(0.05, action)

    # ================================================================ contracts
    def req_contract_details(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        q = self.read_contract(f)
        found = self.broker.universe.find(q)
        if not found:
            self.error(req_id, Code.NO_SECDEF)
            return
        for inst in found:
            self.send(self.enc.contract_data(req_id, inst))
        self.send(self.enc.contract_data_end(req_id))

    def req_market_rule(self, f: Fields) -> None:
        """reqMarketRule: IB's price bands (contracts.MARKET_RULES); an unknown id is ignored,
        as IB does."""
        rule_id = f.int()
        bands = MARKET_RULES.get(rule_id)
        if bands is not None:
            self.send(self.enc.market_rule(rule_id, bands))

    # ================================================================ market data
    def req_market_data_type(self, f: Fields) -> None:
        f.int(0)
        t = f.int(1)
        if t not in (1, 2, 3, 4):
            self.error(-1, Code.VALIDATE_ERROR, what="reqMarketDataType", cause=f"Invalid market data type {t}")
            return
        # like IB: it applies to later reqMktData requests, not to the running ones
        self.market_data_type = t

    def _mkt_data_refused(self, req_id: int, inst: Instrument) -> tuple[bool, bool]:
        """The account's market-data permission against the requested market data type:
        (refused, delayed). Refusals are IB's (docs/simulator.md, "Market data permissions"):
        no live permission and live/frozen asked: 10089 on a delayed-data account (the request
        stays open and silent, as at IB), 354 on an account without data; delayed asked on an
        account without data: 10168. Live permission always gives live data (IB: "If live
        data is available, it will always be returned instead of delayed data")."""
        perm = self.broker.cfg.market_data
        wants_delayed = self.market_data_type in (3, 4)
        if perm == "live":
            return False, False
        if perm == "delayed":
            if wants_delayed:
                return False, True
            exch = inst.spec.primary_exchange or inst.spec.exchange
            self.error(req_id, Code.NEEDS_API_SUBSCRIPTION,
                       suffix=f"Delayed market data is available.{inst.symbol} {exch}/TOP/ALL")
            return True, False
        self.error(req_id, Code.DELAYED_NOT_ENABLED if wants_delayed else Code.NOT_SUBSCRIBED)
        return True, False

    def _live_only_refused(self, req_id: int) -> bool:
        """Tick-by-tick, depth and real-time bars have no delayed form: without live permission
        IB refuses them with 10089 (a paper gateway's answer to reqRealTimeBars, captured in
        /work/shared/fixtures/tws/transcripts/realtime_bars_api_error.txt)."""
        if self.broker.cfg.market_data == "live":
            return False
        self.error(req_id, Code.NEEDS_API_SUBSCRIPTION, suffix="")
        return True

    def req_mkt_data(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        q = self.read_contract(f)
        if q.sec_type == "BAG":
            n = f.int(0)
            f.skip(4 * n)
        if f.bool():
            f.skip(3)
        f.str()                        # generic tick list: accepted, not simulated
        snapshot = f.bool()
        inst = self.resolve(req_id, q)
        if inst is None:
            return
        b = self.broker
        if req_id in self.mkt or req_id in self.mkt_silent:
            self.error(req_id, Code.DUP_TICKER, what="reqMktData")
            return
        if not snapshot and b.count(b.mkt_subs) + len(self.mkt_silent) >= b.cfg.mkt_data_lines:
            self.error(req_id, Code.MAX_TICKERS)
            return
        refused, delayed = self._mkt_data_refused(req_id, inst)
        if refused:
            if not snapshot and b.cfg.market_data == "delayed":
                self.mkt_silent[req_id] = inst   # 10089: open at IB, and silent
            return
        sub = MktSub(self, req_id, inst, delayed)
        self.send(self.enc.tick_req_params(req_id, inst.min_tick, "9c0001" if inst.sec_type == "STK" else ""))
        self.send(self.enc.market_data_type(req_id, 3 if delayed else 1))
        if delayed:
            self.error(req_id, Code.DISPLAYING_DELAYED)
        if b.data_stopped and b.faults and b.faults.competing:
            self.error(req_id, Code.COMPETING_SESSION)
        proc = b.market.processes[inst.con_id]
        if snapshot:
            sub.emit(proc, force=True)
            self.send(self.enc.tick_snapshot_end(req_id))
            return
        self.mkt[req_id] = sub
        b.mkt_subs[inst.con_id].append(sub)
        sub.emit(proc, force=True)

    def cancel_mkt_data(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        if self.mkt_silent.pop(req_id, None) is not None:
            return
        sub = self.mkt.pop(req_id, None)
        if sub is None:
            self.error(req_id, Code.NO_TICKER, id=req_id)
            return
        self.broker.mkt_subs[sub.inst.con_id].remove(sub)
        proc = self.broker.market.processes[sub.inst.con_id]
        self._late_reply(lambda: self._queue(self.enc.tick_price(
            req_id, 1, sub.inst.fmt(proc.bid), qty(proc.book.bids[0][1]), 0)))

    def req_tick_by_tick(self, f: Fields) -> None:
        req_id = f.int()
        q = self.read_contract(f)
        kind = f.str()
        f.opt_str()
        f.opt_str()
        if kind not in ("Last", "AllLast", "BidAsk", "MidPoint"):
            self.error(req_id, Code.VALIDATE_ERROR, what="reqTickByTickData", cause=f"Invalid tick type {kind}")
            return
        inst = self.resolve(req_id, q)
        if inst is None:
            return
        b = self.broker
        if req_id in self.tbt:
            self.error(req_id, Code.DUP_TICKER, what="reqTickByTickData")
            return
        if self._live_only_refused(req_id):
            return
        if b.count(b.tbt_subs) >= b.cfg.tick_by_tick_subscriptions:
            self.error(req_id, Code.MAX_TBT)
            return
        sub = TbtSub(self, req_id, inst, kind)
        self.tbt[req_id] = sub
        b.tbt_subs[inst.con_id].append(sub)
        if kind in ("BidAsk", "MidPoint"):
            sub.emit(b.market.processes[inst.con_id], int(self.now()))

    def cancel_tick_by_tick(self, f: Fields) -> None:
        req_id = f.int()
        sub = self.tbt.pop(req_id, None)
        if sub is None:
            self.error(req_id, Code.NO_TICKER, id=req_id)
            return
        self.broker.tbt_subs[sub.inst.con_id].remove(sub)
        proc = self.broker.market.processes[sub.inst.con_id]
        self._late_reply(lambda: self._queue(self.enc.tbt_bid_ask(
            req_id, int(self.now()), sub.inst.fmt(proc.bid), sub.inst.fmt(proc.ask), "1", "1")))

    def req_mkt_depth(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        q = self.read_contract(f)
        rows = f.int(5)
        smart = f.bool() if f.remaining() else False
        inst = self.resolve(req_id, q)
        if inst is None:
            return
        b = self.broker
        if req_id in self.depth:
            self.error(req_id, Code.DUP_TICKER, what="reqMktDepth")
            return
        if self._live_only_refused(req_id):
            return
        if b.count(b.depth_subs) >= b.cfg.depth_subscriptions:
            self.error(req_id, Code.MAX_DEPTH, n=b.cfg.depth_subscriptions)
            return
        rows = max(1, min(rows, b.cfg.depth_levels))
        sub = DepthSub(self, req_id, inst, rows, smart)
        self.depth[req_id] = sub
        b.depth_subs[inst.con_id].append(sub)
        sub.emit(b.market.processes[inst.con_id])   # initial book as inserts

    def cancel_mkt_depth(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        sub = self.depth.pop(req_id, None)
        if sub is None:
            self.error(req_id, Code.NO_DEPTH, id=req_id)
            return
        self.broker.depth_subs[sub.inst.con_id].remove(sub)
        proc = self.broker.market.processes[sub.inst.con_id]
        self._late_reply(lambda: self._queue(self.enc.depth(
            req_id, 0, 1, 1, sub.inst.fmt(proc.bid), qty(proc.book.bids[0][1]))))

    def req_real_time_bars(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        q = self.read_contract(f)
        bar_size = f.int(5)
        what = f.str()
        inst = self.resolve(req_id, q)
        if inst is None:
            return
        if bar_size != 5:
            self.error(req_id, Code.VALIDATE_ERROR, what="reqRealTimeBars", cause="Only 5 second bars are supported")
            return
        b = self.broker
        if req_id in self.rtb:
            self.error(req_id, Code.DUP_TICKER, what="reqRealTimeBars")
            return
        if self._live_only_refused(req_id):
            return
        sub = RtbSub(self, req_id, inst, what)
        self.rtb[req_id] = sub
        b.rtb_subs[inst.con_id].append(sub)

    def cancel_real_time_bars(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        sub = self.rtb.pop(req_id, None)
        if sub is not None:
            self.broker.rtb_subs[sub.inst.con_id].remove(sub)

    # ================================================================ history
    def req_historical_data(self, f: Fields) -> None:
        req_id = f.int()
        q = self.read_contract(f)
        f.bool()                         # includeExpired
        end_text = f.str()
        bar_text = f.str()
        duration_text = f.str()
        use_rth = f.str().strip().lower() not in ("", "0", "false")
        what = f.str()
        format_date = f.int(1)
        if q.sec_type.upper() == "BAG":   # combo legs: no combos in the universe
            f.skip(max(0, f.remaining() - 2))
        keep_up_to_date = f.remaining() > 0 and f.bool()
        inst = self.resolve(req_id, q)
        if inst is None:
            return
        if keep_up_to_date and not self._live_bars_allowed(req_id, end_text, what):
            return
        bar_seconds = BAR_SIZES.get(bar_text.strip())
        if bar_seconds is None:
            self.error(req_id, Code.VALIDATE_ERROR, what=bar_text, cause="Invalid bar size")
            return
        m = re.fullmatch(r"\s*(\d+)\s+([SDWMY])\s*", duration_text)
        if not m:
            self.error(req_id, Code.VALIDATE_ERROR, what=duration_text, cause="Invalid duration")
            return
        span = int(m.group(1)) * DURATION_UNITS[m.group(2)]
        end = self._parse_end(end_text)
        if end is None:
            self.error(req_id, Code.VALIDATE_ERROR, what=end_text, cause="Invalid end date/time")
            return
        count = max(1, -(-span // bar_seconds))
        if count > MAX_BARS:
            self.error(req_id, Code.HMDS_ERROR, text="Time length exceed max.")
            return
        violation = self.hist_pacing.check(time.monotonic(), (inst.con_id, what),
                                           (inst.con_id, end_text, bar_text, duration_text, what, use_rth))
        if violation:
            log("hist_pacing", client_id=self.client_id, req_id=req_id, reason=violation)
            self.error(req_id, Code.HMDS_ERROR, text="Historical data request pacing violation")
            return

        def answer() -> None:
            prev = self.hist_pending.pop(req_id, None)
            if isinstance(prev, HistLiveSub):   # a live series under the same id ends
                prev.cancel()
            if self.closed:
                return
            # a market replay's bar dataset of the instrument, when it has bars for the request
            frames = replay.history_frames(self, req_id, inst, end, bar_seconds, int(m.group(1)),
                                           m.group(2), use_rth, what, format_date)
            if frames is None:
                frames = sessions.history_frames(self, req_id, inst, end, bar_seconds, count,
                                                 int(m.group(1)), m.group(2), use_rth, what, format_date)
            for frame_ in frames:
                self.send(frame_)
            if keep_up_to_date and frames and what.strip().upper() != "SCHEDULE":
                live = HistLiveSub(self, req_id, inst, bar_seconds, what, format_date)
                self.hist_pending[req_id] = live   # until cancelHistoricalData
                live.start()

        delay = self.broker.cfg.history_delay_ms / 1000.0
        if delay <= 0:
            answer()
        else:
            self.hist_pending[req_id] = asyncio.get_running_loop().call_later(delay, answer)

    def _live_bars_allowed(self, req_id: int, end_text: str, what: str) -> bool:
        """keepUpToDate's rules, with the gateway's 321 causes: no end date (the bars run up to
        now), and only series with a bar in progress (TRADES, MIDPOINT, BID, ASK)."""
        if end_text.strip():
            self.error(req_id, Code.VALIDATE_ERROR, what="bM",
                       cause="End date not supported with live updates")
            return False
        if what.strip().upper() not in ("TRADES", "MIDPOINT", "BID", "ASK"):
            self.error(req_id, Code.VALIDATE_ERROR, what="bM",
                       cause="Source price not supported with live updates")
            return False
        return True

    def _parse_end(self, text: str) -> float | None:
        text = text.strip()
        if not text:
            return self.now()
        if re.fullmatch(r"\d{8}[ -]+\d{2}:\d{2}:\d{2}\s+\S.*", text):
            # an end time with its zone ('yyyymmdd hh:mm:ss US/Eastern', the form of IB's own bar
            # times): in that zone
            at = parse_filter_time(text, "UTC")
            return None if at is None else min(at, self.now())
        m = re.match(r"(\d{8})[ -]+(\d{2}):(\d{2}):(\d{2})", text)
        if not m:
            m2 = re.fullmatch(r"(\d{8})", text)
            if not m2:
                return None
            return datetime.strptime(m2.group(1), "%Y%m%d").replace(tzinfo=timezone.utc).timestamp()
        try:
            dt = datetime.strptime(m.group(1) + m.group(2) + m.group(3) + m.group(4), "%Y%m%d%H%M%S")
        except ValueError:
            return None
        return min(dt.replace(tzinfo=timezone.utc).timestamp(), self.now())

    def cancel_historical_data(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        handle = self.hist_pending.get(req_id)
        if handle is None:
            self.error(req_id, Code.NO_HIST_QUERY, id=req_id)
            return
        if self.broker.late_replies:
            return   # the answer goes out anyway: a reply after the cancel
        handle.cancel()
        del self.hist_pending[req_id]

    # ================================================================ the other request kinds
    # Every request kind IB's API has and the simulator does not serve is answered under the
    # request's own id (docs/simulator.md, "Requests the simulator does not serve"): a minimal real
    # answer where one is cheap, else the error IB gives when the service is unavailable to the
    # account. Never 321 for these: ib_async/ib_insync treat 321 as a warning and keep waiting.
    def _other_handlers(self) -> dict[int, Callable[[Fields], None]]:
        def refuse(req_id_at: int, code: tuple[int, str], **fmt: object) -> Callable[[Fields], None]:
            def handler(f: Fields) -> None:
                f.skip(req_id_at)
                self.error(f.int(-1), code, **fmt)
            return handler

        def reply(*fields: object) -> Callable[[Fields], None]:
            return lambda f: self.send(encode(list(fields)))

        def with_id(msg: int, req_id_at: int, *rest: object) -> Callable[[Fields], None]:
            def handler(f: Fields) -> None:
                f.skip(req_id_at)
                self.send(encode([msg, f.int(-1), *rest]))
            return handler

        hmds = Code.HMDS_ERROR
        no_news = (10276, "News feed is not allowed.")
        no_options = Code.NO_SECDEF      # the universe has no options
        return {
            22: refuse(0, hmds, text="Scanner subscriptions are not simulated"),   # reqScannerSubscription
            24: reply(19, 1, SCANNER_XML),                   # reqScannerParameters -> scannerParameters
            21: refuse(1, no_options),                       # exerciseOptions
            52: refuse(1, (430, "We are sorry, but fundamentals data for the security specified is "
                                "not available.")),          # reqFundamentalData (ib_async; not in ibapi 10.50)
            54: refuse(1, no_options),                       # calculateImpliedVolatility
            55: refuse(1, no_options),                       # calculateOptionPrice
            84: refuse(0, no_news),                          # reqNewsArticle
            86: refuse(0, no_news),                          # reqHistoricalNews
            100: refuse(0, no_news),                         # reqWshMetaData (WSH: a news/research feed)
            102: refuse(0, no_news),                         # reqWshEventData
            88: refuse(0, hmds, text="Histogram data is not simulated"),        # reqHistogramData
            96: lambda f: historical_ticks.serve(self, f),   # reqHistoricalTicks
            87: self.req_head_timestamp,
            78: with_id(76, 0),                              # reqSecDefOptParams -> its End, no chains
            79: with_id(77, 0, 0),                           # reqSoftDollarTiers -> none
            80: reply(78, 0),                                # reqFamilyCodes -> none
            81: self.req_matching_symbols,
            82: reply(80, 0),                                # reqMktDepthExchanges -> none
            83: with_id(82, 0, 0),                           # reqSmartComponents -> none
            85: reply(85, 0),                                # reqNewsProviders -> none
            104: with_id(107, 0, ""),                        # reqUserInfo -> no white branding id
            67: lambda f: (f.skip(1), self.send(encode([67, 1, f.int(-1), ""]))),   # queryDisplayGroups
            18: lambda f: self.error(-1, Code.VALIDATE_ERROR, what="bA",
                                     cause="FA data operations ignored for non FA customers."),  # requestFA
            19: lambda f: (f.skip(3), self.error(f.int(-1), Code.VALIDATE_ERROR, what="bA",
                           cause="FA data operations ignored for non FA customers.")),  # replaceFA
            # cancels and subscriptions with nothing to answer
            23: self.ignore, 53: self.ignore, 56: self.ignore, 57: self.ignore, 68: self.ignore,
            69: self.ignore, 70: self.ignore, 89: self.ignore, 90: self.ignore, 101: self.ignore,
            103: self.ignore, 106: self.ignore, 107: self.ignore,
            65: self.ignore, 66: self.ignore, 72: self.ignore, 73: self.ignore,     # verify*
        }

    def req_head_timestamp(self, f: Fields) -> None:
        """headTimestamp: the earliest bar the simulator serves for the instrument
        (HEAD_TIMESTAMP_YEARS before the market's start, at midnight UTC)."""
        req_id = f.int()
        q = self.read_contract(f)
        f.bool()                                           # includeExpired
        f.str()                                            # useRTH
        f.str()                                            # whatToShow
        format_date = f.int(1)
        inst = self.resolve(req_id, q)
        if inst is None:
            return
        start = self.broker.market.start_time
        head = int(start - start % 86400) - HEAD_TIMESTAMP_YEARS * 365 * 86400
        text = str(head) if format_date == 2 else \
            datetime.fromtimestamp(head, timezone.utc).strftime("%Y%m%d-%H:%M:%S")
        self.send(encode([88, req_id, text]))

    def req_matching_symbols(self, f: Fields) -> None:
        """symbolSamples from the universe: symbols starting with the pattern, then names
        containing it (IB answers at most 16)."""
        req_id = f.int()
        pattern = f.str().strip().upper()
        found: list[Instrument] = []
        if pattern:
            insts = self.broker.universe.instruments
            found = [i for i in insts if i.symbol.upper().startswith(pattern)]
            found += [i for i in insts if i not in found and pattern in i.spec.long_name.upper()]
        fields: list[object] = [79, req_id, min(16, len(found))]
        for inst in found[:16]:
            spec = inst.spec
            fields += [inst.con_id, inst.symbol, inst.sec_type,
                       spec.primary_exchange or spec.exchange, spec.currency, 0]
            if self.version >= P.BOND_ISSUERID:
                fields += [spec.long_name, ""]
        self.send(encode(fields))

    # ================================================================ orders
    def place_order(self, f: Fields) -> None:
        received_ns = time.time_ns()
        order_id = f.int()
        q = self.read_contract(f)
        f.str(); f.str()                                  # secIdType, secId
        action = f.str().upper()
        total = float(f.decimal())
        order_type = f.str().upper()
        lmt = f.float()
        aux = f.float()
        from .wire import UNSET_DOUBLE
        req = OrderRequest(order_id=order_id, contract=q, action=action, total_qty=total,
                           order_type=order_type,
                           lmt_price=None if lmt == UNSET_DOUBLE else lmt,
                           aux_price=None if aux == UNSET_DOUBLE else aux)
        req.tif = (f.str() or "DAY").upper()
        req.oca_group = f.str()
        req.account = f.str()
        req.open_close = f.str()
        req.origin = f.int(0)
        req.order_ref = f.str()
        req.transmit = f.bool()
        req.parent_id = f.int(0)
        req.block_order = f.bool()
        req.sweep_to_fill = f.bool()
        req.display_size = f.int(0)
        req.trigger_method = f.int(0)
        req.outside_rth = f.bool()
        req.hidden = f.bool()
        self.broker.stamp_order(self.client_id, order_id, q.symbol, req.lmt_price, req.order_ref,
                                received_ns)
        if order_type not in IB_ORDER_TYPES:
            # IB validates the order type before anything else, the contract included
            # (transcript place_order_invalid_type_live_error.txt)
            self.error(order_id, Code.VALIDATE_ERROR, what="bF", cause="Invalid order type was entered")
            return
        if q.sec_type == "BAG":
            self.error(order_id, Code.ORDER_REJECTED, reason="Combination orders are not simulated")
            return
        f.str()                                           # deprecated shares allocation
        f.str()                                           # discretionaryAmt
        req.good_after_time = f.str()
        req.good_till_date = f.str()
        f.skip(3)                                         # FA group, method, percentage
        if self.version < P.FA_PROFILE_DESUPPORT:
            f.skip(1)
        f.str()                                           # modelCode
        f.int(0); f.str(); f.int(-1)                      # short sale slot, location, exempt code
        req.oca_type = f.int(0)
        req.what_if = self._read_what_if(f, req)
        if order_type == "MKT":
            req.lmt_price = None
        if order_type in ("MKT", "LMT"):
            req.aux_price = None
        b = self.broker
        inst = b.universe.resolve(q)
        if inst is None and not (q.symbol or q.con_id):
            raise FieldError("order without a contract")
        log("order_received", client_id=self.client_id, order_id=order_id, symbol=q.symbol,
            action=action, qty=total, type=order_type, lmt=req.lmt_price, aux=req.aux_price, tif=req.tif,
            transmit=req.transmit, parent_id=req.parent_id, order_ref=req.order_ref, what_if=req.what_if)
        if req.what_if:
            # a margin preview: one openOrder carrying it, never an order (broker.what_if)
            b.what_if(self, req, inst)
            return
        b.engine.place(self.client_id, req, inst)

    @staticmethod
    def _read_what_if(f: Fields, req: OrderRequest | None = None) -> bool:
        """placeOrder's whatIf flag: the fields after ocaType up to it (ibapi's EClient.placeOrder
        at server versions 157+; a non-BAG contract). A frame that ends early is not a whatIf.
        On the way, the trailing fields into ``req`` (trailStopPrice, trailingPercent; after the
        whatIf flag, lmtPriceOffset): docs/simulator.md, F19."""
        try:
            f.skip(17)                        # rule80A .. volatilityType (nbboPriceCap included)
            dn_order_type = f.str()
            f.skip(1)                         # deltaNeutralAuxPrice
            if dn_order_type:
                f.skip(8)                     # deltaNeutral conId .. designatedLocation
            f.skip(2)                         # continuousUpdate, referencePriceType
            trail_stop, trail_pct = f.float(), f.float()   # trailStopPrice, trailingPercent
            if req is not None:
                req.trail_stop_price = None if trail_stop == UNSET_DOUBLE else trail_stop
                req.trailing_percent = None if trail_pct == UNSET_DOUBLE else trail_pct
            f.skip(2)                         # scaleInitLevelSize, scaleSubsLevelSize
            increment = f.float()
            if increment != UNSET_DOUBLE and increment > 0:
                f.skip(7)                     # scalePriceAdjustValue .. scaleRandomPercent
            f.skip(3)                         # scaleTable, activeStartTime, activeStopTime
            if f.str():                       # hedgeType
                f.skip(1)                     # hedgeParam
            f.skip(4)                         # optOutSmartRouting, clearing x2, notHeld
            if f.bool():                      # deltaNeutralContract
                f.skip(3)
            if f.str():                       # algoStrategy
                f.skip(2 * f.int(0))          # algoParams
            f.skip(1)                         # algoId
            what_if = f.bool()
        except FieldError:
            return False
        if req is not None:
            req.lmt_price_offset = Session._read_lmt_price_offset(f, req.order_type)
        return what_if

    @staticmethod
    def _read_lmt_price_offset(f: Fields, order_type: str) -> float | None:
        """placeOrder's lmtPriceOffset (TRAIL LIMIT), the fields after whatIf up to it (ibapi's
        EClient.placeOrder): None if unset or if the frame ends early."""
        from ibapi import order_condition
        from ibapi.utils import decode, isPegBenchOrder
        try:
            f.skip(4)                         # miscOptions, solicited, randomizeSize/Price
            if isPegBenchOrder(order_type):
                f.skip(5)                     # referenceContractId .. referenceExchangeId
            conditions = f.int(0)
            if conditions > 0:                # ibapi's own condition decoders find their length
                fields = (f.str().encode() for _ in iter(int, 1))
                for _ in range(conditions):
                    order_condition.Create(decode(int, fields)).decode(fields)
                f.skip(2)                     # conditionsIgnoreRth, conditionsCancelOrder
            f.skip(2)                         # adjustedOrderType, triggerPrice
            offset = f.float()
        except (FieldError, ValueError, TypeError, AttributeError):
            return None
        return None if offset == UNSET_DOUBLE else offset

    def cancel_order(self, f: Fields) -> None:
        if self.version < P.CME_TAGGING_FIELDS:
            f.int(0)
        order_id = f.int()
        self.broker.engine.cancel(self.client_id, order_id)

    def req_global_cancel(self, f: Fields) -> None:
        self.broker.engine.global_cancel()

    def _send_open_orders(self, client_id: int | None) -> None:
        for o in self.broker.engine.open_orders(client_id):
            self.send_exec(self.enc.open_order(o))
            self.send_exec(self.enc.order_status(o))
        self.send_exec(self.enc.open_order_end())

    def req_open_orders(self, f: Fields) -> None:
        self._send_open_orders(self.client_id)

    def req_all_open_orders(self, f: Fields) -> None:
        self._send_open_orders(None)

    def req_auto_open_orders(self, f: Fields) -> None:
        f.int(0)
        bind = f.bool()
        if self.client_id != 0:
            self.error(-1, Code.VALIDATE_ERROR, what="reqAutoOpenOrders",
                       cause="Only client id 0 can bind TWS orders")
            return
        self.auto_bind = bind

    def req_completed_orders(self, f: Fields) -> None:
        if f.remaining():
            f.bool()                                      # apiOnly: every simulated order is an API order
        engine = self.broker.engine
        account = self.broker.ledger.account
        for o in engine.completed_orders():
            self.send_exec(self.enc.completed_order(o, engine.parent_perm_id(o), account))
        self.send_exec(self.enc.completed_orders_end())

    def req_ids(self, f: Fields) -> None:
        f.int(0)
        f.int(1)
        self.send(self.enc.next_valid_id(self.broker.engine.issue_id(self.client_id)))

    def req_executions(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        client_id = f.int(0)
        acct = f.str()
        since = f.str()
        symbol = f.str()
        sec_type = f.str()
        exchange = f.str()
        side = f.str()
        # IB: 'yyyymmdd-hh:mm:ss' is UTC, 'yyyymmdd hh:mm:ss ZONE' in ZONE, without a zone the
        # gateway host's; an unreadable time filters nothing (logged)
        since_epoch = parse_filter_time(since, self.broker.host_zone) if since.strip() else None
        if since.strip() and since_epoch is None:
            log("bad_execution_filter_time", peer=self.peer, time=since)
        b = self.broker
        side_map = {"BUY": "BOT", "SELL": "SLD", "BOT": "BOT", "SLD": "SLD"}
        for fill in b.ledger.fills:
            if client_id and fill.client_id != client_id:
                continue
            if acct and acct != fill.account:
                continue
            if since_epoch is not None and fill.time < since_epoch:
                continue
            if symbol and symbol.upper() != fill.symbol.upper():
                continue
            if sec_type and sec_type.upper() != fill.sec_type:
                continue
            if exchange and exchange.upper() != fill.exchange.upper():
                continue
            if side and side_map.get(side.upper()) != fill.side:
                continue
            inst = b.universe.by_con_id[fill.con_id]
            self.send_exec(self.enc.exec_details(req_id, fill, inst))
            if b.cfg.commission_timing != "missing":  # F26: a missing report stays missing
                self.send_exec(self.enc.commission_report(fill, inst.spec.currency))
        self.send_exec(self.enc.exec_details_end(req_id))

    # ================================================================ account
    def req_managed_accounts(self, f: Fields) -> None:
        self.send(self.enc.managed_accounts(self.broker.ledger.account))

    def req_current_time(self, f: Fields) -> None:
        self.send(self.enc.current_time(self.now()))

    def req_current_time_millis(self, f: Fields) -> None:
        self.send(self.enc.current_time_millis(self.now()))

    def req_positions(self, f: Fields) -> None:
        b = self.broker
        self.positions_sub = True
        for con_id, pos in b.ledger.positions.items():
            self.send(self.enc.position(b.ledger.account, b.universe.by_con_id[con_id], pos.qty, pos.avg_cost))
        self.send(self.enc.position_end())

    def cancel_positions(self, f: Fields) -> None:
        self.positions_sub = False

    def req_positions_multi(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        b = self.broker
        for con_id, pos in b.ledger.positions.items():
            self.send(self.enc.position_multi(req_id, b.ledger.account, b.universe.by_con_id[con_id],
                                              pos.qty, pos.avg_cost))
        self.send(self.enc.position_multi_end(req_id))

    def req_account_updates(self, f: Fields) -> None:
        f.int(0)
        subscribe = f.bool()
        f.opt_str()
        b = self.broker
        self.account_updates = subscribe
        if not subscribe:
            return
        b.send_account_values(self)
        for con_id in b.ledger.positions:
            b.send_portfolio(self, b.universe.by_con_id[con_id])
        self.send(self.enc.account_download_end(b.ledger.account))

    def req_account_updates_multi(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        b = self.broker
        for key, val in b.account_values().items():
            self.send(self.enc.account_update_multi(req_id, b.ledger.account, key, f"{val:.2f}", "USD"))
        self.send(self.enc.account_update_multi_end(req_id))

    def req_account_summary(self, f: Fields) -> None:
        f.int(0)
        req_id = f.int()
        f.str()                                   # group
        tags = {t.strip() for t in f.str().split(",") if t.strip()}
        b = self.broker
        values = b.account_values()
        acct = b.ledger.account
        rows = [("AccountType", "INDIVIDUAL", "")] if "AccountType" in tags else []
        for key, val in values.items():
            if key in tags or "$LEDGER" in tags or "$LEDGER:ALL" in tags or "$LEDGER:USD" in tags:
                rows.append((key, f"{val:.2f}", "USD"))
        # IB answers in tag order, not in the request's (transcript grounded_account_summary.txt)
        for key, value, currency in sorted(rows):
            self.send(self.enc.account_summary(req_id, acct, key, value, currency))
        self.send(self.enc.account_summary_end(req_id))

    def req_pnl(self, f: Fields) -> None:
        req_id = f.int()
        self.pnl.add(req_id)
        self.broker.send_pnl(self)

    def cancel_pnl(self, f: Fields) -> None:
        self.pnl.discard(f.int())

    def req_pnl_single(self, f: Fields) -> None:
        req_id = f.int()
        f.str(); f.str()
        con_id = f.int(0)
        if con_id not in self.broker.universe.by_con_id:
            self.error(req_id, Code.NO_SECDEF)
            return
        self.pnl_single[req_id] = con_id
        self.broker.send_pnl(self)

    def cancel_pnl_single(self, f: Fields) -> None:
        self.pnl_single.pop(f.int(), None)
