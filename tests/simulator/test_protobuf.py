"""The protobuf wire of server versions 201+ (services/simulator/pbwire.py), in process, against
ibapi 10.50.2's own client and decoder:

- the request table has ibapi's versions, and every protobuf request ibapi writes for the calls
  the simulator serves reaches the session as the fields of the same call in text;
- every response kind switches from text to protobuf at its version, and ibapi reads the same
  callbacks from the protobuf frame as from the v200 text frame.

The live client suites run at v200 and at the maximum (start_sim_at_versions); the last test runs
one session through every version at which a family switches."""
from __future__ import annotations

import enum
import inspect
from decimal import Decimal

import pytest
from ibapi.client import EClient
from ibapi.common import PROTOBUF_MSG_ID, getServerVersionForMessage
from ibapi.decoder import Decoder
from ibapi.execution import ExecutionFilter
from ibapi.order_cancel import OrderCancel
from ibapi.server_versions import MAX_CLIENT_VER
from ibapi.wrapper import EWrapper

from services.simulator import pbwire
from services.simulator import protocol as P
from services.simulator.broker import Broker
from services.simulator.config import SimConfig
from services.simulator.contracts import ContractQuery
from services.simulator.encoders import TextEncoder
from services.simulator.orders import OrderRequest
from services.simulator.protocol import Out
from tests.simulator.ibapi_client import IbapiClient, forex, future, order, stock
from tests.support.processes import wait_for

MAX = P.MAX_SERVED


class Calls(EWrapper):
    """Every EWrapper callback, recorded (the *ProtoBuf raw-message callbacks left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []


def _recorder(name: str):
    def record(self, *args):
        self.calls.append((name, args))
    return record


for _name, _ in inspect.getmembers(EWrapper, inspect.isfunction):
    if not _name.startswith("_") and not _name.endswith("ProtoBuf") and _name not in ("logAnswer",):
        setattr(Calls, _name, _recorder(_name))


def _norm(value):
    """ibapi's objects as plain data; an empty list is None (ibapi's protobuf decoder gives []
    where its text decoder leaves None: secIdList, smartComboRoutingParams)."""
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        return [_norm(v) for v in value]
    if hasattr(value, "__dict__") and type(value).__module__.startswith("ibapi") \
            and not isinstance(value, enum.Enum):
        return {k: _norm(v) for k, v in vars(value).items()}
    if isinstance(value, enum.Enum):
        return value.name
    return value


def decode(frame: bytes, version: int) -> list[tuple]:
    """What ibapi's client at `version` calls back for one frame as the session writes it."""
    w = Calls()
    d = Decoder(w, version)
    body = frame[4:]
    if version >= pbwire.PROTOBUF:
        body = pbwire.raw_ids(frame)[4:]
        msg_id, body = int.from_bytes(body[:4], "big"), body[4:]
        if msg_id > PROTOBUF_MSG_ID:
            d.processProtoBuf(body, msg_id - PROTOBUF_MSG_ID)
        else:
            d.interpret(tuple(body.split(b"\0")[:-1]), msg_id)
    else:
        fields = body.split(b"\0")[:-1]
        d.interpret(tuple(fields[1:]), int(fields[0]))
    # an error's time is the moment it was written: not compared
    return [(n, _norm(a[:1] + a[2:] if n == "error" else a)) for n, a in w.calls]


def _frame_id(frame: bytes) -> int:
    return int.from_bytes(pbwire.raw_ids(frame)[4:8], "big")


# ---------------------------------------------------------------------------------- requests
def test_request_versions_are_ibapis():
    for msg_id, (gate, _) in pbwire.REQUEST_DECODERS.items():
        assert getServerVersionForMessage(msg_id) == gate, msg_id
    assert pbwire.MAX_SERVED == P.MAX_SERVED == MAX_CLIENT_VER


class _Writer(EClient):
    """ibapi's EClient at a given server version, capturing what it would send."""

    def __init__(self, version: int) -> None:
        super().__init__(EWrapper())
        self.serverVersion_ = version
        self.connState = EClient.CONNECTED
        self.sent: list[bytes] = []

    def isConnected(self):
        return True

    def sendMsg(self, msgId, msg):
        self.sent.append(_TextFrame(msgId, msg))

    def sendMsgProtoBuf(self, msgId, msg):
        self.sent.append(msgId.to_bytes(4, "big") + msg)


class _TextFrame(bytes):
    def __new__(cls, msg_id, msg):
        obj = super().__new__(cls, int(msg_id).to_bytes(4, "big") + msg.encode("latin-1"))
        obj.fields = [str(int(msg_id))] + msg.split("\0")[:-1]
        return obj


def _orders():
    from ibapi.order import Order
    lmt = order("BUY", 100, "LMT", lmt=189.5, tif="GTC", ref="s1-7")
    lmt.outsideRth = True
    stp = order("SELL", 100, "STP", aux=180.25, ref="s1-8", parent=41, transmit=False)
    stp.ocaGroup, stp.ocaType = "oca-1", 3
    mkt = order("SELL", Decimal("2.5"), "MKT")
    mkt.account = "DU1234567"
    return [lmt, stp, mkt, Order()]


def _filter():
    f = ExecutionFilter()
    f.clientId, f.acctCode, f.time, f.symbol, f.side = 7, "DU1234567", "20260101-10:00:00", "AAPL", "BUY"
    return f


REQUESTS = [
    ("startApi", ()),
    ("reqExecutions", (5, _filter())), ("reqExecutions", (6, ExecutionFilter())),
    *[("placeOrder", (40 + i, c, o)) for i, o in enumerate(_orders())
      for c in (stock("AAPL"), future("202612"), forex())],
    ("cancelOrder", (41, OrderCancel())), ("reqGlobalCancel", (OrderCancel(),)),
    ("reqOpenOrders", ()), ("reqAllOpenOrders", ()), ("reqAutoOpenOrders", (True,)),
    ("reqCompletedOrders", (False,)),
    ("reqContractDetails", (3, stock("MSFT"))), ("reqContractDetails", (4, future(""))),
    ("reqMktData", (7, stock("SPY"), "233", False, False, [])),
    ("reqMktData", (8, forex(), "", True, False, [])), ("cancelMktData", (7,)),
    ("reqMktDepth", (9, future("202612"), 5, True, [])), ("cancelMktDepth", (9, True)),
    ("reqMarketDataType", (3,)),
    ("reqAccountUpdates", (True, "DU1234567")), ("reqManagedAccts", ()), ("reqPositions", ()),
    ("cancelPositions", ()), ("reqAccountSummary", (10, "All", "NetLiquidation,$LEDGER")),
    ("cancelAccountSummary", (10,)), ("reqPositionsMulti", (11, "DU1234567", "")),
    ("cancelPositionsMulti", (11,)), ("reqAccountUpdatesMulti", (12, "DU1234567", "", True)),
    ("cancelAccountUpdatesMulti", (12,)),
    ("reqHistoricalData", (13, stock("AAPL"), "20260402 16:00:00 US/Eastern", "1 D", "5 mins",
                           "TRADES", 1, 1, False, [])),
    ("cancelHistoricalData", (13,)),
    ("reqRealTimeBars", (14, stock("AAPL"), 5, "MIDPOINT", False, [])), ("cancelRealTimeBars", (14,)),
    ("reqTickByTickData", (15, stock("AAPL"), "AllLast", 0, False)), ("cancelTickByTickData", (15,)),
    ("reqNewsBulletins", (True,)), ("cancelNewsBulletins", ()),
    ("reqPnL", (16, "DU1234567", "")), ("cancelPnL", (16,)),
    ("reqPnLSingle", (17, "DU1234567", "", 265598)), ("cancelPnLSingle", (17,)),
    ("reqMarketRule", (26,)),
    ("reqIds", (1,)), ("reqCurrentTime", ()), ("reqCurrentTimeInMillis", ()),
    ("setServerLogLevel", (3,)),
]


def _same_fields(a: list[str], b: list[str]) -> bool:
    """Equal field by field, numbers by value ('0.0' is '0': a float default that the protobuf
    form carries as a double, e.g. discretionaryAmt)."""
    def same(x: str, y: str) -> bool:
        if x == y:
            return True
        try:
            return float(x) == float(y)
        except ValueError:
            return False
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method,args", REQUESTS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(REQUESTS)])
def test_a_protobuf_request_reaches_the_session_as_the_same_call_in_text(method, args):
    text, proto = _Writer(200), _Writer(MAX)
    for w in (text, proto):
        w.clientId, w.optCapab = 12, ""
        getattr(w, method)(*args)
    (t,), (p,) = text.sent, proto.sent
    msg_id = int.from_bytes(p[:4], "big")
    if msg_id <= PROTOBUF_MSG_ID:
        pytest.fail(f"ibapi sent {method} in text at {MAX}")
    assert _same_fields(pbwire.request_fields(p, MAX), t.fields)
    gate = getServerVersionForMessage(msg_id - PROTOBUF_MSG_ID)
    if gate > pbwire.PROTOBUF:
        # below its version the same request is text, with a raw id: passed through as such
        below = _Writer(gate - 1)
        below.clientId, below.optCapab = 12, ""
        getattr(below, method)(*args)
        (b,) = below.sent
        assert int.from_bytes(b[:4], "big") < PROTOBUF_MSG_ID
        assert pbwire.request_fields(bytes(b), gate - 1) == b.fields
        with pytest.raises(pbwire.FieldError):
            pbwire.request_fields(p, gate - 1)


def test_raw_ids_converts_text_frames_only():
    text = TextEncoder(226).next_valid_id(5) + TextEncoder(226).current_time(7.0)
    assert pbwire.raw_ids(text) == (b"\x00\x00\x00\x08\x00\x00\x00\x09" + b"1\x005\x00"
                                    + b"\x00\x00\x00\x08\x00\x00\x00\x31" + b"1\x007\x00")
    proto = pbwire.encoder_for(226, "UTC").next_valid_id(5)
    assert pbwire.raw_ids(proto) == proto
    for junk in (b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x02\x00abc"[:5]):
        assert pbwire.raw_ids(junk) == junk


def test_hostile_protobuf_requests_are_field_errors():
    for body in (b"", b"\x00\x00", (200 + 3).to_bytes(4, "big") + b"\xff\xff\xff",
                 (200 + 9).to_bytes(4, "big") + b"\x0a\x05ab"):
        with pytest.raises(pbwire.FieldError):
            pbwire.request_fields(body, MAX)
    # a protobuf kind the simulator does not decode: its id alone (the session answers 321/320)
    assert pbwire.request_fields((200 + 68).to_bytes(4, "big") + b"\x08\x01", MAX) == ["68"]


# ---------------------------------------------------------------------------------- responses
def _world():
    """A broker with an AAPL fill, a working stop, a cancelled order and an ES position."""
    b = Broker(SimConfig())
    aapl, es = b.universe.by_con_id[265598], b.universe.by_con_id[495512563]

    def req(oid, action, qty, typ="MKT", lmt=None, aux=None, sym="AAPL", sec="STK", exch="SMART", tif="DAY"):
        return OrderRequest(order_id=oid, contract=ContractQuery(symbol=sym, sec_type=sec, exchange=exch,
                                                                 currency="USD"),
                            action=action, total_qty=qty, order_type=typ, lmt_price=lmt, aux_price=aux,
                            tif=tif, order_ref=f"ref-{oid}")

    b.engine.place(3, req(1, "BUY", 100), aapl)
    b.engine.place(3, req(2, "SELL", 100, "STP", aux=100.0), aapl)
    b.engine.place(3, req(3, "BUY", 1, "LMT", lmt=100.0, tif="GTC"), aapl)
    b.engine.broker_cancel(3, 3)
    b.engine.place(3, req(4, "BUY", 2, sym="ES", sec="FUT", exch="CME"), es)
    return b, aapl, es


def _messages():
    b, aapl, es = _world()
    fill = b.ledger.fills[0]
    filled, stop, cancelled = (b.engine.orders[(3, i)] for i in (1, 2, 3))
    pos = b.ledger.positions[es.con_id]
    bars = [("20260402 09:30:00 US/Eastern", "190.01", "190.5", "189.75", "190.25", "1200", "190.1275", 31),
            ("20260402 09:35:00 US/Eastern", "190.25", "190.25", "190", "190.1", "0", "190.15", 0)]
    return [
        (Out.NEXT_VALID_ID, "next_valid_id", (17,)),
        (Out.MANAGED_ACCTS, "managed_accounts", ("DU1234567",)),
        (Out.ERR_MSG, "error", (7, 10089, "Requested market data requires additional subscription")),
        (Out.ERR_MSG, "error", (-1, 2104, "Market data farm connection is OK:usfarm", '{"x":1}')),
        (Out.CURRENT_TIME, "current_time", (1775136600.5,)),
        (Out.CURRENT_TIME_IN_MILLIS, "current_time_millis", (1775136600.5,)),
        (Out.CONTRACT_DATA, "contract_data", (3, aapl)),
        (Out.CONTRACT_DATA, "contract_data", (4, es)),
        (Out.CONTRACT_DATA, "contract_data", (5, b.universe.by_con_id[12087792])),
        (Out.CONTRACT_DATA_END, "contract_data_end", (3,)),
        (Out.MARKET_RULE, "market_rule", (26, [(0.0, 0.01), (1000.0, 0.05)])),
        (Out.MARKET_RULE, "market_rule", (1001, [(0.0, 0.25)])),
        (Out.TICK_PRICE, "tick_price", (7, 1, "190.01", "300", 0)),
        (Out.TICK_PRICE, "tick_price", (7, 9, "189.5", "", 0)),
        (Out.TICK_PRICE, "tick_price", (7, 66, "190.01", "300", 1)),
        (Out.TICK_SIZE, "tick_size", (7, 8, "12345")),
        (Out.TICK_STRING, "tick_string", (7, 45, "1775136600")),
        (Out.TICK_REQ_PARAMS, "tick_req_params", (7, 0.01, "9c0001")),
        (Out.TICK_REQ_PARAMS, "tick_req_params", (8, 5e-05, "")),
        (Out.MARKET_DATA_TYPE, "market_data_type", (7, 3)),
        (Out.TICK_SNAPSHOT_END, "tick_snapshot_end", (7,)),
        (Out.MARKET_DEPTH, "depth", (9, 0, 0, 1, "5200.25", "40")),
        (Out.MARKET_DEPTH_L2, "depth_l2", (9, 2, "NSDQ", 1, 0, "190.02", "100", True)),
        (Out.TICK_BY_TICK, "tbt_last", (15, 2, 1775136600, "190.01", "100", "NASDAQ")),
        (Out.TICK_BY_TICK, "tbt_bid_ask", (15, 1775136600, "190.01", "190.02", "300", "200")),
        (Out.TICK_BY_TICK, "tbt_mid", (15, 1775136600, "190.015")),
        (Out.REAL_TIME_BARS, "realtime_bar", (14, 1775136600, "190", "190.5", "189.5", "190.1", "500",
                                              "190.05", 12)),
        (Out.HISTORICAL_DATA, "historical_data", (13, "20260402 09:30:00 US/Eastern",
                                                  "20260402 09:40:00 US/Eastern", bars)),
        (Out.HISTORICAL_DATA_UPDATE, "historical_data_update", (13, bars[0])),
        (Out.OPEN_ORDER, "open_order", (filled,)),
        (Out.OPEN_ORDER, "open_order", (stop,)),
        (Out.ORDER_STATUS, "order_status", (filled,)),
        (Out.ORDER_STATUS, "order_status", (stop, 0)),
        (Out.OPEN_ORDER_END, "open_order_end", ()),
        (Out.COMPLETED_ORDER, "completed_order", (filled, None, "DU1234567")),
        (Out.COMPLETED_ORDER, "completed_order", (cancelled, 777, "DU1234567")),
        (Out.COMPLETED_ORDERS_END, "completed_orders_end", ()),
        (Out.EXECUTION_DATA, "exec_details", (-1, fill, aapl)),
        (Out.EXECUTION_DATA, "exec_details", (5, b.ledger.fills[-1], es)),
        (Out.EXECUTION_DATA_END, "exec_details_end", (5,)),
        (Out.COMMISSION_REPORT, "commission_report", (fill, "USD")),
        (Out.POSITION_DATA, "position", ("DU1234567", es, pos.qty, pos.avg_cost)),
        (Out.POSITION_DATA, "position", ("DU1234567", aapl, 0.0, 0.0)),
        (Out.POSITION_END, "position_end", ()),
        (Out.PORTFOLIO_VALUE, "portfolio_value", (es, 2.0, 5200.25, 520025.0, 260000.0, 25.0, 0.0,
                                                  "DU1234567")),
        (Out.ACCT_VALUE, "account_value", ("NetLiquidation", "1000000.00", "USD", "DU1234567")),
        (Out.ACCT_UPDATE_TIME, "account_time", ("14:05",)),
        (Out.ACCT_DOWNLOAD_END, "account_download_end", ("DU1234567",)),
        (Out.ACCOUNT_SUMMARY, "account_summary", (10, "DU1234567", "NetLiquidation", "1000000.00", "USD")),
        (Out.ACCOUNT_SUMMARY, "account_summary", (10, "DU1234567", "AccountType", "INDIVIDUAL", "")),
        (Out.ACCOUNT_SUMMARY_END, "account_summary_end", (10,)),
        (Out.ACCOUNT_UPDATE_MULTI, "account_update_multi", (12, "DU1234567", "CashBalance", "5.00", "USD")),
        (Out.ACCOUNT_UPDATE_MULTI_END, "account_update_multi_end", (12,)),
        (Out.POSITION_MULTI, "position_multi", (11, "DU1234567", es, 2.0, 260000.0)),
        (Out.POSITION_MULTI_END, "position_multi_end", (11,)),
        (Out.PNL, "pnl", (16, 12.5, 10.0, 2.5)),
        (Out.PNL_SINGLE, "pnl_single", (17, 100.0, 12.5, 10.0, 2.5, 19001.0)),
    ]


MESSAGES = _messages()

#: where the protobuf form cannot say what the text form says: an unset realized P&L / yield
#: reads back as IB's max double in both (pbwire sends it explicitly), nothing else differs


def _frames(enc, method, args):
    out = getattr(enc, method)(*args)
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("msg_id,method,args", MESSAGES,
                         ids=[f"{m}-{i}" for i, (_, m, _) in enumerate(MESSAGES)])
def test_ibapi_reads_the_same_from_protobuf_as_from_text(msg_id, method, args):
    gate = pbwire.RESPONSE_GATES[msg_id]
    text = [c for f in _frames(TextEncoder(200), method, args) for c in decode(f, 200)]
    assert text, "the text frame decodes to nothing"
    for version in sorted({gate - 1, gate, MAX}):
        frames = _frames(pbwire.encoder_for(version, "America/New_York"), method, args)
        ids = {_frame_id(f) for f in frames}
        if version >= gate:
            assert all(i > PROTOBUF_MSG_ID for i in ids), (version, ids)
        else:
            assert all(i < PROTOBUF_MSG_ID for i in ids), (version, ids)
        got = [c for f in frames for c in decode(f, version)]
        assert got == text, version


def test_every_message_the_simulator_sends_has_a_protobuf_version():
    senders = {name for name, fn in inspect.getmembers(TextEncoder, inspect.isfunction)
               if not name.startswith("_") and name not in ("server_version", "garbage", "order_price")}
    assert senders <= set(vars(pbwire.ProtoEncoder)), senders - set(vars(pbwire.ProtoEncoder))
    assert senders <= {m for _, m, _ in MESSAGES}


# ---------------------------------------------------------------------------------- live
@pytest.mark.parametrize("version", [pbwire.PROTOBUF, pbwire.PLACE_ORDER, pbwire.COMPLETED_ORDER,
                                     pbwire.CONTRACT_DATA, pbwire.MARKET_DATA,
                                     pbwire.ACCOUNTS_POSITIONS, pbwire.HISTORICAL_DATA,
                                     pbwire.SCAN_DATA, pbwire.REST_MESSAGES_3])
def test_one_session_at_each_version_where_a_family_switches(procs, version):
    """ibapi against a simulator capped at each switch version: handshake, a contract, a quote,
    history, a market order's fill and commission, positions, account, completed orders, PnL."""
    from tests.simulator.conftest import FAST
    from services.simulator.control import SimControl
    from tests.support.processes import free_ports, port_open

    port, cport = free_ports(2)
    proc = procs.start_python(f"sim{version}", "services.simulator", "--port", str(port), "--seed", "1",
                              "--control", f"tcp://127.0.0.1:{cport}", "--server-version", str(version),
                              *FAST)
    wait_for(lambda: port_open(port) or proc.poll() is not None, 60, what="simulator port")
    control = SimControl(f"tcp://127.0.0.1:{cport}")
    c = IbapiClient(port, 5).connect()
    try:
        control.wait_ready(60)
        assert c.client.serverVersion() == version
        assert c.rec.get("managedAccounts") == [("DU1234567",)]
        c.wait_error(2104, -1)
        c.client.reqContractDetails(1, stock("AAPL"))
        c.wait("contractDetailsEnd", lambda e: e[0] == 1)
        c.client.reqMktData(2, stock("AAPL"), "", False, False, [])
        c.wait("tickPrice", lambda e: e[0] == 2 and e[1] == 1)
        c.client.reqHistoricalData(3, stock("AAPL"), "", "1800 S", "5 mins", "MIDPOINT", 0, 1, False, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 3)
        assert len(c.rec.get("historicalData", lambda e: e[0] == 3)) == 6
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 10, ref="live-1"))
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Filled")
        (_, _, execution), = c.wait("execDetails", lambda e: e[2].orderId == oid)
        c.wait("commission", lambda e: e[0].execId == execution.execId)
        c.client.reqPositions()
        c.wait("positionEnd")
        assert [e[2] for e in c.rec.get("position") if e[1].conId == 265598] == [Decimal(10)]
        c.client.reqAccountUpdates(True, "")
        c.wait("accountDownloadEnd")
        c.client.reqCompletedOrders(False)
        c.wait("completedOrdersEnd")
        assert [e[1].orderRef for e in c.rec.get("completedOrder")] == ["live-1"]
        c.client.reqPnL(4, "DU1234567", "")
        c.wait("pnl", lambda e: e[0] == 4)
        c.client.reqExecutions(5, ExecutionFilter())
        c.wait("execDetailsEnd", lambda e: e[0] == 5)
        c.client.reqCurrentTime()
        c.wait("currentTime")
        assert not c.errors(320) and not c.errors(321), c.errors()
    finally:
        c.disconnect()
        control.close()
