"""Recovery follows the gateway: a TCP probe of its port while it is gone, the handshake as soon
as it accepts; the backoff only after a failed handshake and 326.

Behaviour only, never a duration: every wait has a generous deadline, and what is asserted is
the order of events (no handshake attempt before the port accepts) and which rule applied
(probe or backoff)."""
from __future__ import annotations

import socket
import time
from collections import Counter

from proto.schema import GatewayState
from services.gateway.connection import ConnState, Connection, PortProbe
from services.gateway.options import GatewayOptions
from tests.support.processes import free_port, port_open, wait_for

from .conftest import SIM_FAST

# production backoff: an old-style retry would be seen between probes
PROD_BACKOFF = ("--backoff-base", "1", "--backoff-cap", "30")


def _poll_until(probe: PortProbe, deadline: float = 30.0, limit: float | None = None) -> bool:
    """Drive ``probe`` with the real clock until it reports the port accepting (True), or
    until ``limit`` seconds have passed (False: still not accepting)."""
    end = time.monotonic() + (limit if limit is not None else deadline)
    while time.monotonic() < end:
        if probe.poll(time.monotonic()):
            return True
        time.sleep(0.005)
    if limit is None:
        raise AssertionError(f"the probe never saw {probe.port} accepting: {probe.last_error}")
    return False


def test_probe_sees_nothing_listening_then_a_listener():
    port = free_port()
    probe = PortProbe("127.0.0.1", port, interval=0.02, settle=0.02)
    probe.reset(time.monotonic())
    wait_for(lambda: (probe.poll(time.monotonic()), probe.attempts >= 3)[1], 30,
             what="three refused probes")
    assert probe.sock is None or probe.connected_at is None
    assert probe.last_error  # refused, said why
    listener = socket.create_server(("127.0.0.1", port))
    try:
        assert _poll_until(probe)
        assert probe.sock is None  # the probe's own connection is closed: the handshake opens one
    finally:
        listener.close()


def test_probe_does_not_trust_a_port_that_accepts_and_drops():
    """A restarting gateway behind a proxy accepts and drops at once: not accepting."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.05)
    probe = PortProbe("127.0.0.1", port, interval=0.02, settle=0.1)
    probe.reset(time.monotonic())
    dropped = 0
    end = time.monotonic() + 30
    try:
        while dropped < 3 and time.monotonic() < end:
            assert not probe.poll(time.monotonic())
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()  # RST, as the simulator's restart fault does
            dropped += 1
        assert dropped == 3
        # nothing drops connections any more: the probe reports the port accepting
        assert _poll_until(probe)
    finally:
        listener.close()


class _Publisher:
    def __init__(self) -> None:
        self.sent: list = []

    def publish(self, msg) -> None:
        self.sent.append(msg)


class _Log:
    def info(self, *a, **k) -> None: ...
    def warning(self, *a, **k) -> None: ...
    def error(self, *a, **k) -> None: ...


def _connection(port: int) -> Connection:
    opts = GatewayOptions(port=port, backoff_base=1.0, backoff_cap=30.0)
    return Connection(opts, events=None, outbox=None, publisher=_Publisher(),  # type: ignore[arg-type]
                      counters=Counter(), log=_Log(),  # type: ignore[arg-type]
                      on_up=lambda: None, on_down=lambda: None)


def _attempt(conn: Connection) -> None:
    """What ``_connect`` does to the state, without a session."""
    conn.connect_failed = False
    conn.trusted = False
    conn.sm.move(ConnState.CONNECTING, "test")


def test_which_losses_back_off():
    conn = _connection(free_port())
    # nothing listening (502): probe, no backoff step taken
    _attempt(conn)
    conn.on_connect_failed()
    conn.lost("could not connect")
    assert conn.backoff.attempts == 0 and conn.probing
    assert "probing" in conn.sm.reason and "(backoff)" not in conn.sm.reason
    # a synchronised session that IB closed: probe
    _attempt(conn)
    conn.sm.move(ConnState.CONNECTED, "test")
    conn.synchronised("test")
    conn.lost("connection closed by IB")
    assert conn.backoff.attempts == 0 and "probing" in conn.sm.reason
    # a trusted session lost while re-reconciling (synchronised -> connected): probe
    _attempt(conn)
    conn.sm.move(ConnState.CONNECTED, "test")
    conn.synchronised("test")
    conn.sm.move(ConnState.CONNECTED, "1102: re-reconcile")
    conn.lost("connection closed by IB")
    assert conn.backoff.attempts == 0 and "probing" in conn.sm.reason
    # the port accepted but the handshake failed: a backoff step
    _attempt(conn)
    conn.lost("connection closed by IB")
    assert conn.backoff.attempts == 1 and "(backoff)" in conn.sm.reason
    # handshake done but dropped before it was ever synchronised: a backoff step
    _attempt(conn)
    conn.sm.move(ConnState.CONNECTED, "test")
    conn.lost("connection closed by IB")
    assert conn.backoff.attempts == 2 and "(backoff)" in conn.sm.reason
    # 326: a backoff step
    _attempt(conn)
    conn.client_id_in_use()
    conn.lost("connection closed by IB")
    assert conn.backoff.attempts == 3 and "326" in conn.sm.reason \
        and "(backoff)" in conn.sm.reason
    # synchronised again: the backoff starts over
    _attempt(conn)
    conn.sm.move(ConnState.CONNECTED, "test")
    conn.synchronised("test")
    assert conn.backoff.attempts == 0


def test_the_handshake_follows_the_port_not_a_backoff_table(fleet, procs):
    """The gateway starts with nothing listening on its port (production backoff: base 1 s,
    cap 30 s). It probes without a single handshake attempt until a simulator listens there,
    then handshakes and synchronises, without any backoff step."""
    port = free_port()
    fleet.sim_port = port  # a port nothing listens on (the fixture's simulator is elsewhere)
    fleet.start_gateway(*PROD_BACKOFF)
    down = fleet.bus.wait(GatewayState, lambda m: m.state == "disconnected"
                          and "could not connect" in m.reason, deadline=60,
                          what="the failed first connect")[0]
    assert "probing" in down.reason, down.reason
    # long enough for the old backoff table to have retried several times
    time.sleep(4.0)
    mark = fleet.bus.mark()
    assert "connecting" not in fleet.bus.states(
        since=next(i for i, m in enumerate(fleet.bus.messages) if m is down)), \
        "a handshake was attempted while nothing listened"
    cport = free_port()
    procs.start_python("sim2", "services.simulator", "--port", str(port), "--seed", "1",
                       "--control", f"tcp://127.0.0.1:{cport}", *SIM_FAST)
    wait_for(lambda: port_open(port), 60, what="the second simulator's port")
    fleet.bus.wait_state("synchronised", since=mark, deadline=60)
    reasons = [m.reason for m in fleet.bus.of(GatewayState, lambda m: m.state == "disconnected")]
    assert not any("(backoff)" in r for r in reasons), reasons

    def logged() -> bool:
        return "the gateway's port accepts again: handshake" in procs.log("gateway")
    wait_for(logged, 30, what="the probe's log line")


def test_client_id_in_use_still_backs_off(fleet):
    """326 is a handshake failure the probe cannot see (the port accepts): the backoff applies,
    and the gateway synchronises once the client id is free."""
    fleet.sim.lockout(fleet.client_id, seconds=3)
    fleet.start_gateway()
    down = fleet.bus.wait(GatewayState, lambda m: m.state == "disconnected" and "326" in m.reason,
                          deadline=60, what="a loss for 326")[0]
    assert "(backoff)" in down.reason and "retry in" in down.reason, down.reason
    fleet.bus.wait_state("synchronised", deadline=90)
