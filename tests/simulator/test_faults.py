"""Every fault, observed from the client side."""
from __future__ import annotations

import socket
import time

import pytest
from ibapi.execution import ExecutionFilter

from services.simulator.control import SimControlError

from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, order, stock
from tests.simulator.rawclient import RawClient
from tests.support.processes import wait_for

start_sim = start_sim_at_versions()   # each test at v200 (text) and at the protobuf maximum


def connect_when_accepted(port: int, client_id: int, deadline: float = 60.0) -> IbapiClient:
    """Retry until a connection survives the handshake (the gateway is back)."""
    end = time.monotonic() + deadline
    while True:
        c = IbapiClient(port, client_id)
        try:
            c.connect(deadline=3)
            return c
        except TimeoutError:
            c.disconnect()
            if time.monotonic() > end:
                raise


REVERTING = ("--mean-reversion", "0.05")   # keeps prices near the open so resting limits fill soon


def test_restart_keeps_state_and_fills_during_outage(start_sim):
    sim = start_sim(*REVERTING)
    c = IbapiClient(sim.port, 41).connect()
    try:
        # a sell limit a little above the market: it fills once the walk reaches it
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("SELL", 100, "LMT", lmt=190.02, tif="GTC", ref="outage"))
        c.wait("orderStatus", lambda e: e[0] == oid)
        sim.control.restart(seconds=2)
        wait_for(lambda: c.rec.get("connectionClosed") or not c.connected(), 30, what="client dropped")
        # during the outage connections are accepted, then closed at once
        s = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
        try:
            s.sendall(b"API\0\0\0\0\tv100..200")
            assert s.recv(100) == b""          # closed without a server version
        except ConnectionResetError:
            pass                               # or reset: either way no session
        finally:
            s.close()
    finally:
        c.disconnect()
    c2 = connect_when_accepted(sim.port, 41)
    try:
        assert c2.rec.next_id > oid                     # order ids survive the restart
        wait_for(lambda: any(o["order_id"] == oid and o["status"] == "Filled" for o in sim.control.orders()),
                 60, what="resting order filled")
        c2.client.reqExecutions(1, ExecutionFilter())
        c2.wait("execDetailsEnd")
        execs = [e[2] for e in c2.rec.get("execDetails", lambda e: e[0] == 1)]
        assert execs and all(x.orderRef == "outage" for x in execs)
        assert sum(x.shares for x in execs) == 100
    finally:
        c2.disconnect()


def test_order_fills_while_client_disconnected(start_sim):
    sim = start_sim(*REVERTING)
    c = IbapiClient(sim.port, 42).connect()
    oid = c.next_order_id()
    try:
        c.client.placeOrder(oid, stock("SPY"), order("BUY", 10, "LMT", lmt=499.98, tif="GTC"))
        c.wait("orderStatus", lambda e: e[0] == oid)
    finally:
        c.disconnect()
    wait_for(lambda: not sim.control.clients(), 30, what="client gone")
    wait_for(lambda: any(o["order_id"] == oid and o["status"] == "Filled" for o in sim.control.orders()),
             60, what="fill while disconnected")
    c2 = IbapiClient(sim.port, 42).connect()
    try:
        c2.client.reqExecutions(7, ExecutionFilter())
        c2.wait("execDetailsEnd")
        assert sum(e[2].shares for e in c2.rec.get("execDetails", lambda e: e[0] == 7)) == 10
        c2.client.reqPositions()
        c2.wait("positionEnd")
        assert any(e[1].conId == 756733 and e[2] == 10 for e in c2.rec.get("position"))
    finally:
        c2.disconnect()


def test_server_reset_data_kept(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 43).connect()
    try:
        c.client.reqMktData(1, stock("AAPL"), "", False, False, [])
        c.wait("tickPrice")
        sim.control.server_reset(seconds=2, data_lost=False)
        c.wait_error(1100)
        for code in (2103, 2105, 2157):
            c.wait_error(code)
        wait_for(lambda: len(c.errors(1100)) >= 2, 30, what="1100 repeated")
        # orders placed meanwhile are reported only after the reset
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 1))
        c.wait_error(1102)
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Filled")
        timeline = list(c.rec.timeline)
        restored = next(i for i, (n, e) in enumerate(timeline) if n == "error" and e[1] == 1102)
        first_status = next(i for i, (n, e) in enumerate(timeline) if n == "orderStatus" and e[0] == oid)
        assert first_status > restored
        for code in (2104, 2106, 2158):
            wait_for(lambda: len(c.errors(code)) >= 2, 30, what=f"{code} after restore")
        n = len(c.rec.get("tickPrice"))
        c.wait("tickPrice", count=n + 3)                # subscription kept
        assert not c.errors(1101)
    finally:
        c.disconnect()


def test_server_reset_data_lost_drops_subscriptions(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 44).connect()
    try:
        c.client.reqMktData(1, stock("AAPL"), "", False, False, [])
        c.wait("tickPrice")
        sim.control.server_reset(seconds=1, data_lost=True)
        c.wait_error(1101)
        wait_for(lambda: sim.control.status()["subscriptions"]["mkt"] == 0, 30, what="subscriptions dropped")
        c.client.reqMktData(2, stock("AAPL"), "", False, False, [])   # re-request works
        c.wait("tickPrice", lambda e: e[0] == 2)
    finally:
        c.disconnect()


def test_farm_flap_kills_subscriptions(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 45).connect()
    try:
        c.client.reqTickByTickData(1, stock("MSFT"), "BidAsk", 0, False)
        c.wait("tbtBidAsk")
        sim.control.farm_flap(seconds=1)
        c.wait_error(2103)
        wait_for(lambda: len(c.errors(2104)) >= 2, 30, what="farm back")
        n = len(c.rec.get("tbtBidAsk"))
        c.client.reqTickByTickData(2, stock("MSFT"), "BidAsk", 0, False)
        c.wait("tbtBidAsk", lambda e: e[0] == 2, count=3)
        assert len(c.rec.get("tbtBidAsk", lambda e: e[0] == 1)) == n   # the old one stayed dead
    finally:
        c.disconnect()


def test_silent_hang_then_resume(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 46).connect()
    try:
        sim.control.hang()
        c.client.reqCurrentTime()
        time_before = time.monotonic()
        wait_for(lambda: time.monotonic() - time_before > 1.0, 5, what="a second of silence")
        assert not c.rec.get("currentTime") and c.connected()
        sim.control.resume()
        c.wait("currentTime")
        sim.control.hang(seconds=1)
        c.client.reqCurrentTime()
        c.wait("currentTime", count=2)
    finally:
        c.disconnect()


def test_garbage_frames_do_not_kill_the_session(start_sim):
    sim = start_sim()
    raw = RawClient(sim.port, client_id=47)
    try:
        raw.read_until(lambda f: f[0] == "9")
        sim.control.garbage(client_id=47)
        assert raw.read_until(lambda f: f[0] == "9999")
        assert raw.read_until(lambda f: f[:2] == ["1", "6"] and f[2] == "abc")
        raw.send("49", "1")
        assert raw.read_until(lambda f: f[0] == "49")
    finally:
        raw.close()
    # ibapi's own reader gives up on a malformed field (its decoder raises): the simulator keeps
    # the session; what a client does about garbage is the client's business
    c = IbapiClient(sim.port, 48).connect()
    try:
        sim.control.garbage(client_id=48)
        c.wait_error(505)                     # ibapi: "Fatal Error: Unknown message id"
        assert any(x["client_id"] == 48 for x in sim.control.clients()) or not c.connected()
    finally:
        c.disconnect()


def test_bad_length_prefix_is_sent_between_frames(start_sim):
    """A bare length prefix, 0 or oversized, lands on a frame boundary of the one session;
    the simulator carries on (a real client's framing is lost from there: its business)."""
    sim = start_sim()
    raw = RawClient(sim.port, client_id=50)
    try:
        raw.read_until(lambda f: f[0] == "9")
        assert sim.control.bad_length(client_id=51, size=0) == {"sessions": 0}
        assert sim.control.bad_length(client_id=50, size=0) == {"sessions": 1}
        assert raw.read_until(lambda f: f == []) == []   # a zero prefix reads as an empty frame
        raw.send("49", "1")                              # reqCurrentTime: the session goes on
        assert raw.read_until(lambda f: f[:1] == ["49"])
        assert raw.buf == b""
        sim.control.bad_length(client_id=50, size=0x7FFFFFFF)
        data = b""
        raw.sock.settimeout(30)
        while len(data) < 4:
            chunk = raw.sock.recv(65536)
            assert chunk, "closed"
            data += chunk
        assert data[:4] == b"\x7f\xff\xff\xff"
        assert any(x["client_id"] == 50 for x in sim.control.clients())
        with pytest.raises(SimControlError):
            sim.control.bad_length(size=2**32)
        assert [f["size"] for f in sim.control.fault_history() if f["fault"] == "bad_length"] \
            == [0, 0, 0x7FFFFFFF]
    finally:
        raw.close()


def test_client_id_lockout(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 49).connect()
    c.disconnect()
    sim.control.lockout(49, 2)
    d = IbapiClient(sim.port, 49)
    try:
        d.connect(wait_ready=False)
        d.wait_error(326, -1)
    finally:
        d.disconnect()
    e = connect_when_accepted(sim.port, 49)
    e.disconnect()


def test_competing_session_and_late_replies(start_sim):
    sim = start_sim("--history-delay-ms", "300")
    c = IbapiClient(sim.port, 50).connect()
    try:
        c.client.reqMktData(1, stock("IBM"), "", False, False, [])
        c.wait("tickPrice")
        sim.control.competing_session(seconds=1)
        c.wait_error(10197, 1)
        n = len(c.rec.get("tickPrice"))
        c.wait("tickPrice", count=n + 2)          # data resumes after the competing session
        # cancelled history normally never answers ...
        c.client.reqHistoricalData(2, stock("IBM"), "", "1 D", "1 hour", "TRADES", 1, 1, False, [])
        c.client.cancelHistoricalData(2)
        c.client.reqCurrentTime()                 # a round trip: the cancel has been processed
        c.wait("currentTime")
        # ... but with late replies on, it arrives after the cancel
        sim.control.late_replies(True)
        c.client.reqHistoricalData(3, stock("IBM"), "", "2 D", "1 hour", "TRADES", 1, 1, False, [])
        c.client.cancelHistoricalData(3)
        c.wait("historicalDataEnd", lambda e: e[0] == 3)
        c.client.cancelMktData(1)
        c.wait("tickPrice", lambda e: e[0] == 1, count=len(c.rec.get("tickPrice", lambda e: e[0] == 1)) + 1)
        assert not c.rec.get("historicalDataEnd", lambda e: e[0] == 2)
    finally:
        c.disconnect()


def test_scheduled_fault_from_config(start_sim):
    sim = start_sim(toml='[[schedule]]\nat = 1.5\ncmd = "farm_flap"\nseconds = 0.5\n')
    c = IbapiClient(sim.port, 51).connect()
    try:
        c.wait_error(2103)
        assert sim.control.fault_history()[0]["fault"] == "farm_flap"
    finally:
        c.disconnect()
