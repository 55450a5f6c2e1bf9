"""Replays a transcript's client requests through ibapi's EClient against a simulator process
and records what the simulator answered, message by message (EWrapper callbacks plus the raw
fields of each frame, for the fields whose text form matters).

A recorded message is a `Msg`: the transcript's verb for its kind (``open_order``,
``order_status``, ``api_error``, ...) and a dict of the fields a client reads, named as in the
transcripts. The captured ``raw server`` frames of a transcript are decoded by the same
recorder (ibapi's own decoder at server version 200), so both sides are compared in one form.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.decoder import Decoder
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel
from ibapi.wrapper import EWrapper

from tests.support.processes import wait_for

from .transcript import Leg, Line, Step, Transcript, raw_fields

#: farm-status codes: informational, sent at connect and on farm changes
FARM_CODES = {2103, 2104, 2105, 2106, 2107, 2108, 2119, 2157, 2158}


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return v


def _contract(c: Contract) -> dict[str, Any]:
    return {"con_id": c.conId, "symbol": c.symbol, "sec_type": c.secType, "exchange": c.exchange,
            "currency": c.currency, "local_symbol": c.localSymbol, "trading_class": c.tradingClass,
            "primary_exchange": c.primaryExchange}


@dataclass
class Msg:
    kind: str
    data: dict[str, Any]
    raw: list[str] = field(default_factory=list)
    seq: int = 0
    step: int = -1           # index of the step whose window it arrived in (-1: greeting)

    @property
    def key(self) -> Any:
        return key_of(self.kind, self.data)

    def __repr__(self) -> str:
        d = self.data
        extra = {k: d[k] for k in ("order_id", "req_id", "status", "code", "tag") if k in d}
        return f"{self.kind}{extra}"


def key_of(kind: str, data: dict[str, Any]) -> Any:
    """What ties a message to its request: the order id, the request id (and an error's code)."""
    if kind == "api_error":
        return (int(data.get("req_id", -1)), int(data["code"]))
    for name in ("order_id", "req_id"):
        if name in data:
            return int(data[name])
    return None


class Recorder(EWrapper):
    """Every callback becomes a `Msg` in arrival order; ``raw`` holds the frame's fields
    (message id dropped) as ibapi read them."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.msgs: list[Msg] = []
        self.raw: list[str] = []
        self.step = -1
        self.closed = False

    def _add(self, kind: str, **data: Any) -> None:
        with self.lock:
            self.msgs.append(Msg(kind, {k: _plain(v) for k, v in data.items()}, list(self.raw),
                                 len(self.msgs), self.step))

    def snapshot(self) -> list[Msg]:
        with self.lock:
            return list(self.msgs)

    # ---- session
    def managedAccounts(self, accountsList):
        self._add("managed_accounts", accounts=[a for a in accountsList.split(",") if a])

    def nextValidId(self, orderId):
        self._add("next_valid_id", order_id=orderId)

    def error(self, reqId, errorTime, errorCode, errorString, advancedOrderRejectJson=""):
        self._add("api_error", req_id=reqId, code=errorCode, message=errorString,
                  advanced_order_reject_json=advancedOrderRejectJson or "", error_time_ms=errorTime)

    def connectionClosed(self):
        self.closed = True

    def currentTime(self, time_):
        self._add("current_time", time=time_)

    # ---- orders
    def openOrder(self, orderId, contract, order, orderState):
        raw = self.raw
        self._add("open_order", order_id=orderId, account=order.account, contract=_contract(contract),
                  action=order.action, order_type=order.orderType, quantity=order.totalQuantity,
                  # the text IB wrote (tick decimals, "0" for none), not only the value
                  lmt_price=raw[15] if len(raw) > 16 else order.lmtPrice,
                  aux_price=raw[16] if len(raw) > 16 else order.auxPrice,
                  lmt_value=order.lmtPrice, aux_value=order.auxPrice,
                  tif=order.tif, perm_id=order.permId, client_id=order.clientId,
                  status=orderState.status)

    def openOrderEnd(self):
        self._add("open_order_end")

    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId, parentId,
                    lastFillPrice, clientId, whyHeld, mktCapPrice):
        self._add("order_status", order_id=orderId, status=status, filled=filled, remaining=remaining,
                  avg_fill_price=avgFillPrice, perm_id=permId, parent_id=parentId,
                  last_fill_price=lastFillPrice, client_id=clientId, why_held=whyHeld,
                  mkt_cap_price=mktCapPrice)

    def execDetails(self, reqId, contract, execution):
        self._add("execution_detail", req_id=reqId, order_id=execution.orderId, exec_id=execution.execId,
                  account=execution.acctNumber, symbol=contract.symbol, side=execution.side,
                  shares=execution.shares, price=execution.price, time=execution.time,
                  contract=_contract(contract))

    def execDetailsEnd(self, reqId):
        self._add("execution_detail_end", req_id=reqId)

    def commissionAndFeesReport(self, report):
        self._add("commission_report", exec_id=report.execId, commission=report.commissionAndFees,
                  currency=report.currency, realized_pnl=report.realizedPNL)

    def completedOrder(self, contract, order, orderState):
        self._add("completed_order", contract=_contract(contract), action=order.action,
                  order_type=order.orderType, quantity=order.totalQuantity, lmt_price=order.lmtPrice,
                  aux_price=order.auxPrice, tif=order.tif, account=order.account, perm_id=order.permId,
                  filled_quantity=order.filledQuantity, parent_perm_id=order.parentPermId,
                  status=orderState.status, completed_status=orderState.completedStatus,
                  completed_time=orderState.completedTime)

    def completedOrdersEnd(self):
        self._add("completed_orders_end")

    # ---- reference and market data
    def contractDetails(self, reqId, cd):
        self._add("contract_details", req_id=reqId, contract=_contract(cd.contract),
                  market_name=cd.marketName, min_tick=cd.minTick, long_name=cd.longName,
                  time_zone_id=cd.timeZoneId, order_types=cd.orderTypes,
                  trading_hours=cd.tradingHours, liquid_hours=cd.liquidHours,
                  market_rule_ids=cd.marketRuleIds)

    def contractDetailsEnd(self, reqId):
        self._add("contract_details_end", req_id=reqId)

    def historicalData(self, reqId, bar):
        self._add("historical_bar", req_id=reqId, time=bar.date, open=bar.open, high=bar.high,
                  low=bar.low, close=bar.close, volume=bar.volume, wap=bar.wap, count=bar.barCount)

    def historicalDataEnd(self, reqId, start, end):
        self._add("historical_bars_end", req_id=reqId, start=start, end=end)

    def historicalSchedule(self, reqId, startDateTime, endDateTime, timeZone, sessions):
        self._add("historical_schedule", req_id=reqId, start_date_time=startDateTime,
                  end_date_time=endDateTime, time_zone=timeZone,
                  sessions=[{"start_date_time": s.startDateTime, "end_date_time": s.endDateTime,
                             "ref_date": s.refDate} for s in sessions])

    def realtimeBar(self, reqId, time_, open_, high, low, close, volume, wap, count):
        self._add("realtime_bar", req_id=reqId, time=time_)

    def tickPrice(self, reqId, tickType, price, attrib): self._add("market_data", req_id=reqId)
    def tickSize(self, reqId, tickType, size): self._add("market_data", req_id=reqId)
    def tickString(self, reqId, tickType, value): self._add("market_data", req_id=reqId)
    def tickReqParams(self, tickerId, minTick, bboExchange, snapshotPermissions):
        self._add("market_data", req_id=tickerId)
    def marketDataType(self, reqId, marketDataType): self._add("market_data", req_id=reqId)

    # ---- account
    def accountSummary(self, reqId, account, tag, value, currency):
        self._add("account_summary", req_id=reqId, account=account, tag=tag, value=value,
                  currency=currency)

    def accountSummaryEnd(self, reqId):
        self._add("account_summary_end", req_id=reqId)


def hook_raw(decoder: Decoder, rec: Recorder) -> None:
    """Let the recorder see each frame's fields before ibapi decodes them."""
    interpret = decoder.interpret

    def recording(fields, msg_id):
        rec.raw = [f.decode("latin-1") if isinstance(f, bytes) else str(f) for f in fields]
        return interpret(fields, msg_id)

    decoder.interpret = recording


def decode_raw(frame: bytes, version: int = 200) -> list[Msg]:
    """A captured frame, decoded by ibapi at ``version`` into the recorder's form."""
    rec = Recorder()
    decoder = Decoder(rec, version)
    hook_raw(decoder, rec)
    msg_id, fields = raw_fields(frame)
    decoder.interpret(tuple(fields), msg_id)
    return rec.msgs


# ------------------------------------------------------------------ requests
def _contract_of(spec: dict[str, Any] | None) -> Contract:
    c = Contract()
    spec = spec or {}
    c.conId = int(spec.get("con_id") or 0)
    c.symbol = spec.get("symbol", "")
    c.secType = spec.get("sec_type", "")
    c.exchange = spec.get("exchange", "")
    c.currency = spec.get("currency", "")
    c.primaryExchange = spec.get("primary_exchange", "")
    c.localSymbol = spec.get("local_symbol", "")
    return c


def _order_of(p: dict[str, Any]) -> Order:
    o = Order()
    o.action = p["action"]
    o.totalQuantity = Decimal(p["total_quantity"])
    o.orderType = p["order_type"]
    if "lmt_price" in p:
        o.lmtPrice = float(p["lmt_price"])
    if "aux_price" in p:
        o.auxPrice = float(p["aux_price"])
    if "trailing_percent" in p:
        o.trailingPercent = float(p["trailing_percent"])
    if "trail_stop_price" in p:
        o.trailStopPrice = float(p["trail_stop_price"])
    if "lmt_price_offset" in p:
        o.lmtPriceOffset = float(p["lmt_price_offset"])
    o.tif = p.get("tif", "")
    o.account = p.get("account", "")
    # attributes ibapi 10.50 sends but TWS no longer accepts at their defaults
    o.eTradeOnly = False
    o.firmQuoteOnly = False
    return o


class ReqIds:
    """The transcripts' ``$reqN`` placeholders -> request ids of this replay."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, value: Any) -> int:
        if isinstance(value, str) and value.startswith("$"):
            return self.ids.setdefault(value, 9000 + len(self.ids) + 1)
        return int(value)


def send_request(client: EClient, line: Line, req_ids: ReqIds) -> None:
    """One ``client VERB {json}`` line as the EClient call that sends it."""
    p = line.payload
    verb = line.verb
    if verb == "place_order":
        client.placeOrder(int(p["order_id"]), _contract_of(p.get("contract")), _order_of(p))
    elif verb == "cancel_order":
        cancel = OrderCancel()
        cancel.manualOrderCancelTime = p.get("manual_order_cancel_time", "")
        cancel.extOperator = p.get("ext_operator", "")
        client.cancelOrder(int(p["order_id"]), cancel)
    elif verb == "req_open_orders":
        client.reqAllOpenOrders() if p.get("scope") == "all" else client.reqOpenOrders()
    elif verb == "req_completed_orders":
        client.reqCompletedOrders(bool(p.get("api_only", False)))
    elif verb == "req_ids":
        client.reqIds(int(p.get("num_ids", 1)))
    elif verb == "req_current_time":
        client.reqCurrentTime()
    elif verb == "req_contract_details":
        client.reqContractDetails(req_ids(p["req_id"]), _contract_of(p["contract"]))
    elif verb == "req_historical_bars":
        end = p.get("end_time", "")
        client.reqHistoricalData(req_ids(p["req_id"]), _contract_of(p["contract"]),
                                 "" if str(end).startswith("$") else end, p["duration"], p["bar_size"],
                                 p["what_to_show"], 1 if p.get("use_rth") else 0, 1, False, [])
    elif verb == "req_account_summary":
        client.reqAccountSummary(req_ids(p["req_id"]), p.get("account", "All"), ",".join(p["tags"]))
    elif verb == "cancel_account_summary":
        client.cancelAccountSummary(req_ids(p["req_id"]))
    elif verb == "req_realtime_bars":
        client.reqRealTimeBars(req_ids(p["req_id"]), _contract_of(p["contract"]), 5, p["what_to_show"],
                               bool(p.get("use_rth")), [])
    else:
        raise NotImplementedError(f"transcript verb {verb!r} has no EClient call in the driver")


# ------------------------------------------------------------------ replay
@dataclass
class LegRun:
    leg: Leg
    client_id: int
    connection_time: str = ""
    server_version: int = 0
    greeting: list[Msg] = field(default_factory=list)
    steps: list[list[Msg]] = field(default_factory=list)   # the answers in each step's window


@dataclass
class Replay:
    transcript: Transcript
    req_ids: "ReqIds"
    legs: list[LegRun] = field(default_factory=list)


class Conn:
    """One EClient connection with the recorder hooked to its decoder."""

    def __init__(self, port: int, client_id: int) -> None:
        self.rec = Recorder()
        self.client = EClient(self.rec)
        self.client.connect("127.0.0.1", port, client_id)
        assert self.client.isConnected(), f"could not connect as client {client_id}"
        hook_raw(self.client.decoder, self.rec)
        self.thread = threading.Thread(target=self.client.run, daemon=True,
                                       name=f"conformance-{client_id}")
        self.thread.start()
        wait_for(lambda: any(m.kind == "next_valid_id" for m in self.rec.snapshot()), 30,
                 what=f"nextValidId for client {client_id}")

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.thread.join(timeout=10)


def expected_messages(step: Step, req_ids: ReqIds) -> list[Msg]:
    """The step's server lines as `Msg`s (placeholders resolved; raw frames decoded)."""
    out: list[Msg] = []
    for line in step.server:
        if line.kind == "raw":
            out += decode_raw(line.payload)
            continue
        data = dict(line.payload)
        if isinstance(data.get("req_id"), str) and data["req_id"].startswith("$"):
            data["req_id"] = req_ids(data["req_id"])
        out.append(Msg(line.verb, data))
    return out


def align(expected: list[Msg], actual: list[Msg]) -> list[int | None]:
    """For each expected message, the index in ``actual`` of the simulator's message of the same
    kind and key (order id / request id / error code), taken in order (a subsequence match)."""
    out: list[int | None] = []
    pos = 0
    for e in expected:
        found = next((i for i in range(pos, len(actual))
                      if actual[i].kind == e.kind and (e.key is None or actual[i].key == e.key)), None)
        out.append(found)
        if found is not None:
            pos = found + 1
    return out


def replay(transcript: Transcript, port: int, client_ids: list[int],
           wait_clients: Callable[[int], None], step_deadline: float = 6.0,
           settle: float = 0.5) -> Replay:
    """Replay every leg: connect (the handshake), then each step's requests; a step's window of
    answers closes when every expected message has its counterpart (or ``step_deadline``
    passed), plus ``settle`` seconds for messages the simulator sends beyond the transcript's."""
    req_ids = ReqIds()
    result = Replay(transcript, req_ids)
    for n, leg in enumerate(transcript.legs):
        client_id = client_ids[n] if n < len(client_ids) else client_ids[-1]
        conn = Conn(port, client_id)
        run = LegRun(leg, client_id)
        try:
            conn_time = conn.client.twsConnectionTime()
            run.connection_time = conn_time.decode() if isinstance(conn_time, bytes) else str(conn_time)
            run.server_version = conn.client.serverVersion()
            time.sleep(settle)              # the farm statuses that follow nextValidId
            run.greeting = conn.rec.snapshot()
            start = len(run.greeting)
            for i, step in enumerate(leg.steps):
                conn.rec.step = i
                for line in step.clients:
                    if line.kind == "sleep":
                        time.sleep(line.payload)
                    else:
                        send_request(conn.client, line, req_ids)
                expected = expected_messages(step, req_ids)
                end = time.monotonic() + step_deadline
                while time.monotonic() < end:
                    if None not in align(expected, conn.rec.snapshot()[start:]):
                        break
                    time.sleep(0.05)
                time.sleep(settle)
                snap = conn.rec.snapshot()
                run.steps.append(snap[start:])
                start = len(snap)
        finally:
            conn.close()
            wait_clients(client_id)
        result.legs.append(run)
    return result
