"""IB's limits and error codes, version negotiation, bad input and determinism."""
from __future__ import annotations

from tests.simulator.ibapi_client import IbapiClient, stock
from tests.simulator.rawclient import RawClient
from tests.support.processes import wait_for

LIMITS = "mkt_data_lines = 2\ndepth_subscriptions = 3\ntick_by_tick_subscriptions = 1\n"


def test_subscription_limits(start_sim):
    sim = start_sim(toml=LIMITS)
    c = IbapiClient(sim.port, 61).connect()
    try:
        for i, sym in enumerate(("AAPL", "MSFT", "SPY")):
            c.client.reqMktData(10 + i, stock(sym), "", False, False, [])
        c.wait_error(101, 12)
        for i, sym in enumerate(("AAPL", "MSFT", "SPY", "IBM")):
            c.client.reqMktDepth(20 + i, stock(sym), 3, False, [])
        c.wait_error(309, 23)
        c.client.reqTickByTickData(30, stock("AAPL"), "Last", 0, False)
        c.client.reqTickByTickData(31, stock("MSFT"), "Last", 0, False)
        c.wait_error(10190, 31)
        assert not c.errors(101, 11) and not c.errors(309, 22) and not c.errors(10190, 30)
        c.client.reqMktData(10, stock("IBM"), "", False, False, [])
        c.wait_error(322, 10)
        c.client.cancelMktData(77)
        c.wait_error(300, 77)
    finally:
        c.disconnect()


def test_message_pacing_error_then_disconnect(start_sim):
    sim = start_sim()
    raw = RawClient(sim.port, client_id=62)
    try:
        raw.read_until(lambda f: f[0] == "9")
        for _ in range(120):
            raw.send("49", "1")
        err = raw.read_until(lambda f: f[0] == "4" and f[2] == "100")
        assert "Max rate" in err[3]
        import time
        end = time.monotonic() + 30
        closed = False
        while not closed and time.monotonic() < end:   # keep violating, second after second
            try:
                for _ in range(60):
                    raw.send("49", "1")
                while True:
                    raw.read_frame(timeout=0.05)
            except TimeoutError:
                continue
            except (ConnectionError, OSError):
                closed = True
        assert closed
        wait_for(lambda: not sim.control.clients(), 30, what="violator disconnected")
        assert sim.control.status()["stats"]["pacing_violations"] >= 3
    finally:
        raw.close()


def test_historical_pacing(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 63).connect()
    try:
        c.client.reqHistoricalData(1, stock("AAPL"), "", "1 D", "1 hour", "TRADES", 1, 1, False, [])
        c.client.reqHistoricalData(2, stock("AAPL"), "", "1 D", "1 hour", "TRADES", 1, 1, False, [])
        c.wait_error(162, 2)                               # identical within 15 s
        for i, d in enumerate(("2 D", "3 D", "4 D", "5 D", "6 D")):
            c.client.reqHistoricalData(10 + i, stock("AAPL"), "", d, "1 hour", "TRADES", 1, 1, False, [])
        c.wait_error(162, 14)                              # 6 for one contract within 2 s
        assert "pacing violation" in c.errors(162, 14)[0][2]
        assert len(c.rec.get("historicalDataEnd")) == 5
    finally:
        c.disconnect()


def test_bad_frames_get_errors_not_crashes(start_sim):
    sim = start_sim()
    raw = RawClient(sim.port, client_id=64)
    try:
        raw.read_until(lambda f: f[0] == "9")
        raw.send("xyz", "1")                               # unparseable message id
        assert raw.read_until(lambda f: f[0] == "4" and f[2] == "320")
        raw.send("4242", "1")                              # unknown message id
        assert raw.read_until(lambda f: f[0] == "4" and f[2] == "321")
        raw.send("1", "11")                                # reqMktData without its fields
        assert raw.read_until(lambda f: f[0] == "4" and f[2] == "320")
        raw.send("3", "5", "abc")                          # placeOrder with garbage
        assert raw.read_until(lambda f: f[0] == "4" and f[2] == "320")
        raw.send_body(b"\xff\xfe\x00garbage")
        raw.send("49", "1")
        assert raw.read_until(lambda f: f[0] == "49")
        assert sim.control.status()["stats"]["bad_frames"] >= 4
    finally:
        raw.close()
    # a wrong greeting is simply dropped; the server lives on
    import socket
    s = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    s.close()
    assert sim.control.ping() == "pong"


def test_version_negotiation(start_sim):
    sim = start_sim("--server-version", "176")
    low = RawClient(sim.port, versions="v100..170", client_id=65)
    assert low.server_version == 170
    low.close()
    hi = RawClient(sim.port, versions="v100..226", client_id=66)
    assert hi.server_version == 176
    # at 176: contractData still has no lastTradeDate, errors carry no time field
    hi.send("9", "8", "1", "0", "AAPL", "STK", "", "", "", "", "SMART", "", "USD", "", "", "0", "", "", "")
    f = hi.read_until(lambda f: f[0] == "10")
    assert f[1:4] == ["1", "AAPL", "STK"] and f[5] == "0.0" or f[5] == ""
    hi.send("9", "8", "2", "0", "ZZZ", "STK", "", "", "", "", "SMART", "", "USD", "", "", "0", "", "", "")
    err = hi.read_until(lambda f: f[0] == "4" and "2" in f[2:4])
    assert err[1] == "2" and err[3] == "200" and len(err) == 6     # version, id, code, text, advanced
    hi.close()


def _prints(ports: list[int], n: int) -> list[list[tuple]]:
    """AllLast prints from several simulators, subscribed at (nearly) the same moment."""
    clients = [IbapiClient(p, 70 + i) for i, p in enumerate(ports)]
    try:
        for c in clients:
            c.connect()
        for c in clients:
            c.client.reqTickByTickData(1, stock("AAPL"), "AllLast", 0, False)
        for c in clients:
            c.wait("tbtLast", count=n, deadline=60)
        return [[(e[3], e[4]) for e in c.rec.get("tbtLast")[:n]] for c in clients]
    finally:
        for c in clients:
            c.disconnect()


def _longest_common_run(a: list, b: list) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def test_same_seed_same_stream(start_sim):
    a = start_sim("--seed", "7")
    b = start_sim("--seed", "7")
    other = start_sim("--seed", "8")
    pa, pb, po = _prints([a.port, b.port, other.port], 150)
    assert _longest_common_run(pa, pb) >= 40          # same path, joined at different steps
    assert _longest_common_run(pa, po) < 15
    # history before the start is a pure function of the seed
    ha = a.control.call("status")["sim_time"]
    assert ha > 0
