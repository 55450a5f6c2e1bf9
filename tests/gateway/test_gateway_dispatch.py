"""The gateway's composition without a socket: every IB callback has a handler or a reason to be
ignored; the order desk's in-flight bookkeeping (untransmitted legs, lost places); a
reconciliation run that IB never finishes answering for completed orders."""
from __future__ import annotations

import inspect
import logging
from collections import Counter

import pytest
from ibapi.contract import Contract
from ibapi.wrapper import EWrapper

from proto.schema import GatewayError, OrderCommand, ReconcileEnd
from services.gateway.contracts import ContractResolver
from services.gateway.options import GatewayOptions
from services.gateway.order_desk import OrderDesk
from services.gateway.outbox import Outbox
from services.gateway.reports import Reports
from services.gateway.service import DELIBERATELY_IGNORED, Gateway
from services.gateway.wrapper import EVENT_NAMES, FORWARDED
from services.runtime import config as fleet_config
from tests.support.bus import short_run_dir

#: how many arguments the wrapper puts on the queue for its own events
OWN_EVENT_ARITY = {"error": 4, "bad_frame": 1, "session_ended": 1}


@pytest.fixture
def gateway(tmp_path):
    cfg = fleet_config.load(run_dir=short_run_dir(), state_dir=tmp_path)
    gw = Gateway(cfg, GatewayOptions(client_id=7))
    try:
        yield gw
    finally:
        gw.on_stop()
        gw.ctx.destroy(linger=0)


def test_every_forwarded_callback_is_handled_or_deliberately_ignored(gateway):
    handled = set(gateway.callbacks)
    assert len(EVENT_NAMES) == len(set(EVENT_NAMES))
    assert not handled & DELIBERATELY_IGNORED
    assert handled | DELIBERATELY_IGNORED == set(EVENT_NAMES), (
        f"forwarded but neither handled nor ignored: "
        f"{sorted(set(EVENT_NAMES) - handled - DELIBERATELY_IGNORED)}; "
        f"handled or ignored but never forwarded: "
        f"{sorted((handled | DELIBERATELY_IGNORED) - set(EVENT_NAMES))}")
    for name in FORWARDED:  # real EWrapper callbacks, and each handler takes their arguments
        assert callable(getattr(EWrapper, name, None)), name
        if name in handled:
            wants = len(inspect.signature(getattr(EWrapper, name)).parameters) - 1  # self
            inspect.signature(gateway.callbacks[name]).bind(*range(wants))
    for name, arity in OWN_EVENT_ARITY.items():
        inspect.signature(gateway.callbacks[name]).bind(*range(arity))


# -- the order desk and a reconciliation run, on an outbox nobody sends ---------------------

class Recorder:
    """Stands for the ibapi client (records calls) and for the publisher (records messages)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.published: list = []

    def publish(self, msg) -> None:
        self.published.append(msg)

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, args))


class Desk:
    def __init__(self, tmp_path) -> None:
        self.outbox = Outbox(rate=49)
        self.ib = Recorder()
        self.now = 0.0
        contract = Contract()
        contract.conId, contract.symbol, contract.secType = 8314, "IBM", "STK"
        self.contracts = ContractResolver(self.outbox, lambda: True, lambda s: None,
                                          lambda s, t: None)
        self.contracts.book.resolved["IBM"] = contract
        self.reconciles: list[str] = []
        self.counters: Counter = Counter()
        self.desk = OrderDesk(tmp_path, 7, self.outbox, self.contracts, lambda: True, self.ib,
                              self.counters, logging.getLogger("test"), self.reconciles.append)

    def place(self, coid: str, **kw) -> int:
        cmd = OrderCommand(command="place", client_order_id=coid, symbol="IBM", side="BUY",
                           quantity=1, order_type="LMT", limit_price=100.0, **kw)
        return self.desk.on_command(cmd, "execution.test")[0].ib_order_id

    def flush(self) -> None:
        while len(self.outbox):
            self.now += 1.0
            self.outbox.pump(self.ib, self.now, lambda: True)

    def placed(self, ib_id: int) -> int:
        return sum(1 for name, args in self.ib.calls if name == "placeOrder" and args[0] == ib_id)


def test_an_untransmitted_leg_is_in_flight_until_its_group_transmits_then_it_can_be_lost(
        tmp_path):
    d = Desk(tmp_path)
    parent = d.place("p", transmit=False)
    d.flush()
    assert d.placed(parent) == 1 and parent in d.desk.untransmitted
    d.desk.reconciled(d.desk.sends)  # a run that started after it was sent, IB silent
    assert not d.desk.held and d.desk.in_flight_ids() == [parent]
    child = d.place("c", parent_ib_id=parent, transmit=True)
    d.flush()
    assert set(d.desk.unacked) == {parent, child} and not d.desk.untransmitted
    d.desk.reconciled(d.desk.sends)  # now IB owes an answer: silence means lost, resend both
    assert [c.ib_order_id for c in d.desk.held] == [parent, child]
    assert d.desk.in_flight_ids() == [parent, child]
    d.desk.release_held()
    d.flush()
    assert d.placed(parent) == 2 and d.placed(child) == 2
    d.desk.on_order_error(parent, 103, "Duplicate order id")  # IB had it after all
    assert d.reconciles == ["a resent order was already at IB"]
    assert d.desk.in_flight_ids() == [child]


def test_a_place_sent_after_the_run_asked_is_not_judged_lost(tmp_path):
    d = Desk(tmp_path)
    early = d.place("early")
    d.flush()
    mark = d.desk.sends
    late = d.place("late")
    d.flush()
    d.desk.reconciled(mark)
    assert [c.ib_order_id for c in d.desk.held] == [early]
    assert d.desk.in_flight_ids() == [early, late]


def test_a_place_refused_before_sending_is_an_error_only(tmp_path):
    d = Desk(tmp_path)
    d.desk.can_send = lambda: False
    cmd = OrderCommand(command="place", client_order_id="x", symbol="NOSUCH", side="BUY",
                       quantity=1, order_type="MKT")
    ib_id = d.desk.on_command(cmd, "execution.test")[0].ib_order_id
    d.desk.contract_failed("NOSUCH", "unknown symbol 'NOSUCH'")
    assert [(type(m).__name__, m.code, m.ref, m.req_id) for m in d.ib.published] == [
        ("GatewayError", 200, "x", ib_id)]
    assert not d.desk.held
    again = d.desk.on_command(cmd, "execution.test")  # a resent place: the facts, not a retry
    assert again[0].ib_order_id == ib_id and isinstance(again[1], GatewayError)


def test_a_run_without_completed_orders_ends_after_the_timeout(tmp_path):
    d = Desk(tmp_path)
    done: list[bool] = []
    reports = Reports(GatewayOptions(client_id=7, completed_timeout=5.0), tmp_path, d.outbox,
                      d.contracts, d.desk, d.ib, d.counters, logging.getLogger("test"),
                      lambda: done.append(True))
    reports.start_run("test", server_version=200)
    d.flush()
    assert [name for name, _ in d.ib.calls] == ["reqAllOpenOrders", "reqExecutions",
                                                "reqPositions", "reqCompletedOrders"]
    reports.on_open_order_end()
    reports.on_exec_details_end(reports.run.exec_req_id)
    reports.on_position_end()
    sent_at = reports.run.completed_sent_at
    reports.tick(sent_at + 4.9)
    assert not done and reports.run is not None
    reports.tick(sent_at + 5.0)
    ends = [m for m in d.ib.published if isinstance(m, ReconcileEnd)]
    assert done and len(ends) == 1 and not ends[0].completed_included
    reports.close()
