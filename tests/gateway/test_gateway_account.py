"""The account check: the bridge trades only on the account the config allows (a paper account,
"D...", unless live; exactly ``gateway.account`` when set). Refused: a critical alert, the
bridge stays ``connected`` (never ``synchronised``), order commands are refused, nothing
reaches IB but the handshake and the probe, and it does not crash."""
from __future__ import annotations

import pytest
import zmq

from proto.schema import Alert, GatewayState, OrderCommand
from services.bus.reliable import ReliableClient
from services.gateway.accounts import check_accounts
from services.gateway.connection import ConnState
from services.gateway.options import GatewayOptions
from services.gateway.order_desk import CommandRefused
from services.gateway.service import Gateway
from services.runtime import config as fleet_config
from services.simulator.control import SimControl
from tests.gateway.conftest import GW_FAST, SIM_FAST, BusRecorder
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import free_ports, port_open, wait_for


# -- the rules ------------------------------------------------------------------------------
@pytest.mark.parametrize("accounts,live,expected,ok,account", [
    ("DU1234567", False, "", True, "DU1234567"),
    ("DU1234567,", False, "", True, "DU1234567"),       # IB's list may end with a comma
    ("DF1111111,DU2222222", False, "", True, "DF1111111"),
    ("U1234567", False, "", False, ""),                 # live-looking, paper config
    ("DU1234567,U7654321", False, "", False, ""),       # any live account refuses paper
    ("U1234567", True, "", True, "U1234567"),           # live opt-in
    ("DU1234567", False, "DU7654321", False, ""),       # not the account the config names
    ("DU1,DU7654321", False, "DU7654321", True, "DU7654321"),  # the named one is traded
    ("U1234567", True, "U7654321", False, ""),
    ("", False, "", False, ""),
])
def test_account_rules(accounts, live, expected, ok, account):
    check = check_accounts(accounts, live, expected)
    assert check.ok is ok and check.account == account
    assert bool(check.problem) is not ok


# -- the gateway's composition, without a socket --------------------------------------------
def _gateway(tmp_path, monkeypatch, **options) -> Gateway:
    """A gateway without a bus (its publisher does not wait for one) recording what it
    publishes in ``published``."""
    monkeypatch.setattr(Gateway, "PUBLISHER_READY_TIMEOUT", 0.05)
    cfg = fleet_config.load(run_dir=short_run_dir(), state_dir=tmp_path)
    gw = Gateway(cfg, GatewayOptions(client_id=7, **options))
    gw.published = []
    monkeypatch.setattr(gw.publisher, "publish", gw.published.append)
    return gw


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    gw = _gateway(tmp_path, monkeypatch)
    try:
        yield gw
    finally:
        gw.on_stop()
        gw.ctx.destroy(linger=0)


def _handshake(gw: Gateway, accounts: str) -> None:
    """managedAccounts, then nextValidId: the order IB (and the simulator) send them in."""
    gw.conn.move(ConnState.CONNECTING, "test")
    gw._on_managed_accounts(accounts)
    gw.conn.on_next_valid_id(1)


def _place(gw: Gateway, coid: str):
    return gw._on_order_request(OrderCommand(command="place", client_order_id=coid,
                                             symbol="AAPL", side="BUY", quantity=1,
                                             order_type="MKT"), "execution.test")


def test_a_refused_account_holds_everything_and_refuses_orders(gateway):
    _handshake(gateway, "U1234567")
    assert gateway.conn.state == ConnState.CONNECTED
    assert gateway.conn.sm.reason.startswith("account refused, not trading: account U1234567")
    [alert] = [m for m in gateway.published if isinstance(m, Alert)]
    assert alert.severity == "critical" and alert.code == "gateway.account_refused"
    assert "U1234567" in alert.text and "not a paper account" in alert.text
    assert len(gateway.outbox) == 0 and gateway.reports.run is None  # nothing asked of IB
    assert not gateway.desk.can_send()
    with pytest.raises(CommandRefused, match="not trading: account U1234567"):
        _place(gateway, "p-1")
    gateway._maybe_synchronised()
    gateway._reconcile_requested("execution asks")
    assert gateway.conn.state == ConnState.CONNECTED and len(gateway.outbox) == 0
    assert gateway._global_cancel("kill") is False  # held, not sent to a foreign account
    assert len(gateway.outbox) == 0
    # a new session is checked from scratch: a paper account there is traded
    gateway.conn.lost("test")
    gateway.conn.move(ConnState.CONNECTING, "test")
    gateway._on_managed_accounts("DU1234567")
    gateway.conn.on_next_valid_id(2)
    assert gateway.account_ok and gateway.reports.run is not None and len(gateway.outbox) > 0


def test_a_paper_account_is_reconciled_once_named_even_after_next_valid_id(gateway):
    gateway.conn.move(ConnState.CONNECTING, "test")
    gateway.conn.on_next_valid_id(1)  # managedAccounts not in yet: nothing goes to IB
    assert gateway.conn.state == ConnState.CONNECTED and len(gateway.outbox) == 0
    assert "waiting for IB to name the account" in gateway.conn.sm.reason
    assert gateway.account_deadline is not None
    gateway._on_managed_accounts("DU1234567")
    assert gateway.account_ok and gateway.reports.run is not None and len(gateway.outbox) > 0
    assert gateway.account_deadline is None
    assert not [m for m in gateway.published if isinstance(m, Alert)]


def test_the_named_account_must_be_the_one_ib_lands_on(tmp_path, monkeypatch):
    gw = _gateway(tmp_path, monkeypatch, account="DU7654321")
    try:
        _handshake(gw, "DU1234567")
        assert not gw.account_ok and gw.conn.state == ConnState.CONNECTED
        assert any(isinstance(m, Alert) and "expects account DU7654321" in m.text
                   for m in gw.published)
    finally:
        gw.on_stop()
        gw.ctx.destroy(linger=0)


# -- end to end: the simulator presents a live-looking account ------------------------------
def test_the_bridge_landing_on_a_live_looking_account_refuses_to_trade(procs):
    run_dir = short_run_dir()
    _, cfg = start_broker(procs, run_dir)
    port, cport = free_ports(2)
    sim_proc = procs.start_python("sim", "services.simulator", "--port", str(port),
                                  "--control", f"tcp://127.0.0.1:{cport}", "--account",
                                  "U1234567", *SIM_FAST)
    wait_for(lambda: port_open(port) or sim_proc.poll() is not None, 60, what="simulator port")
    sim = SimControl(f"tcp://127.0.0.1:{cport}")
    bus = BusRecorder(cfg.bus.endpoint("bus-out"))
    ctx = zmq.Context()
    execution = ReliableClient(ctx, cfg.bus.endpoint("gateway"), "execution.test",
                               resend_after=1.0)
    try:
        sim.wait_ready(60)
        gateway = procs.start_python("gateway", "services.gateway", "--run-dir", str(run_dir),
                                     "--state-dir", str(run_dir / "gw-state"), "--port",
                                     str(port), "--client-id", "7", *GW_FAST)
        [alert] = bus.wait(Alert, lambda m: m.code == "gateway.account_refused",
                           what="the critical account alert")
        assert alert.severity == "critical" and "U1234567" in alert.text
        bus.wait(GatewayState, lambda m: m.state == "connected"
                 and m.reason.startswith("account refused"), what="connected, refused")
        # execution places an order: refused by the gateway, never sent
        seq = execution.send(OrderCommand(command="place", client_order_id="x-1",
                                          symbol="AAPL", side="BUY", quantity=10,
                                          order_type="MKT"))
        wait_for(lambda: (execution.poll(10), seq not in execution.pending)[1],
                 what="the gateway's answer to the place")
        [(command, ack)] = execution.nacked
        assert command.client_order_id == "x-1" and not ack.ok
        assert "not trading" in ack.error and "U1234567" in ack.error
        # the bridge keeps its session alive (liveness probes answered) and does not crash:
        # three more state heartbeats, all still connected and refused
        mark = bus.mark()
        bus.wait(GatewayState, count=3, since=mark, what="three more state heartbeats")
        assert all(m.state == "connected" for m in bus.of(GatewayState, since=mark))
        assert "synchronised" not in bus.states()
        assert gateway.poll() is None, procs.log("gateway")
        ledger = sim.ledger()
        assert sim.orders() == [] and ledger["order_requests"] == [] and ledger["fills"] == []
        assert '"account refused: not trading"' in procs.log("gateway")
        assert "Traceback" not in procs.log("gateway")
    finally:
        execution.close()
        ctx.destroy(linger=0)
        bus.close()
        sim.close()
