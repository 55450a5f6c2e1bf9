"""Broker-side events on command (broker_cancel, expire_day_orders, correct_execution) and
reqCompletedOrders, seen through IB's own ibapi client."""
from __future__ import annotations

import pytest
from ibapi.order_cancel import OrderCancel

from services.simulator.control import SimControlError
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, order, stock
from tests.support.processes import wait_for

start_sim = start_sim_at_versions()   # each test at v200 (text) and at the protobuf maximum

AAPL, SPY = 265598, 756733
BY_SYSTEM = "Cancelled by System:\n"


def _place(c: IbapiClient, contract, o) -> int:
    oid = c.next_order_id()
    c.client.placeOrder(oid, contract, o)
    return oid


def _resting(c: IbapiClient, sim, qty: float = 10, tif: str = "DAY", ref: str = "") -> int:
    """A buy limit far below the market: it works and never fills on its own."""
    bid = sim.control.quote(AAPL)["bid"]
    oid = _place(c, stock("AAPL"), order("BUY", qty, "LMT", lmt=round(bid - 30, 2), tif=tif, ref=ref))
    c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Submitted")
    return oid


def test_broker_cancel_reaches_a_connected_owner_like_a_real_cancel(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 41).connect()
    try:
        oid = _resting(c, sim, ref="victim")
        other = _resting(c, sim, ref="bystander")
        got = sim.control.broker_cancel(oid, client_id=41)
        assert got["status"] == "Cancelled" and got["notified"]
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Cancelled")
        c.wait_error(202, oid)
        assert not c.rec.get("orderStatus", lambda e: e[0] == other and e[1] == "Cancelled")
        (_, o, st) = c.completed_orders()["victim"]
        assert (st.status, st.completedStatus, int(o.filledQuantity)) == ("Cancelled", BY_SYSTEM, 0)
        with pytest.raises(SimControlError, match="not working"):
            sim.control.broker_cancel(oid, client_id=41)       # already cancelled
        with pytest.raises(SimControlError, match="no order"):
            sim.control.broker_cancel(oid, client_id=99)       # someone else's id
        c.client.cancelOrder(oid, OrderCancel())               # the client's late cancel is refused
        c.wait_error(10148, oid)
    finally:
        c.disconnect()


def test_broker_cancel_with_no_client_connected_is_what_open_and_completed_orders_show_later(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 42).connect()
    try:
        gone = _resting(c, sim, tif="GTC", ref="gone")
        kept = _resting(c, sim, tif="GTC", ref="kept")
    finally:
        c.disconnect()
    wait_for(lambda: not sim.control.clients(), 30, what="the simulator seeing the client leave")
    assert sim.control.broker_cancel(gone, client_id=42)["notified"] is False
    c = IbapiClient(sim.port, 42).connect()
    try:
        c.client.reqOpenOrders()
        c.wait("openOrderEnd")
        assert [e[0] for e in c.rec.get("openOrder")] == [kept]
        completed = c.completed_orders()
        assert set(completed) == {"gone"}
        assert (completed["gone"][2].status, completed["gone"][2].completedStatus) == ("Cancelled", BY_SYSTEM)
    finally:
        c.disconnect()


def test_expire_day_orders_cancels_the_working_day_orders_and_leaves_gtc_working(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 43).connect()
    try:
        day = _resting(c, sim, tif="DAY", ref="day")
        gtc = _resting(c, sim, tif="GTC", ref="gtc")
        filled = _place(c, stock("AAPL"), order("BUY", 5, ref="done"))      # DAY, but already filled
        c.wait("orderStatus", lambda e: e[0] == filled and e[1] == "Filled")
        expired = sim.control.expire_day_orders()["expired"]
        assert [(x["client_id"], x["order_id"]) for x in expired] == [(43, day)]
        c.wait("orderStatus", lambda e: e[0] == day and e[1] == "Cancelled")
        status = {o["order_id"]: o["status"] for o in sim.control.orders()}
        assert status == {day: "Cancelled", gtc: "Submitted", filled: "Filled"}
        completed = c.completed_orders()
        assert completed["day"][2].completedStatus == BY_SYSTEM
        assert (completed["done"][2].status, completed["done"][2].completedStatus) == ("Filled", "Filled")
        assert "gtc" not in completed
        assert sim.control.expire_day_orders()["expired"] == []
    finally:
        c.disconnect()


def test_correct_execution_sends_the_02_execution_and_its_commission_and_replaces_the_fill(start_sim):
    sim = start_sim()
    c = IbapiClient(sim.port, 44).connect()
    try:
        c.client.reqPositions()
        c.wait("positionEnd")
        oid = _place(c, stock("SPY"), order("BUY", 100, ref="fix"))
        c.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Filled")
        before = sim.control.fills()
        (old,) = [f for f in before if f["order_id"] == oid]
        price = round(old["price"] + 0.05, 2)
        got = sim.control.correct_execution(old["exec_id"], quantity=60, price=price)
        new_id = old["exec_id"][:-2] + "02"
        assert (got["exec_id"], got["corrects"], got["notified"]) == (new_id, old["exec_id"], True)
        (ex,) = [e[2] for e in c.wait("execDetails", lambda e: e[2].execId == new_id)]
        assert (int(ex.shares), ex.price, ex.orderId, ex.permId) == (60, price, oid, old["perm_id"])
        (report,) = [e[0] for e in c.wait("commission", lambda e: e[0].execId == new_id)]
        assert report.commissionAndFees == got["commission"] == 1.0          # the minimum
        c.wait("position", lambda e: e[1].conId == SPY and e[2] == 60)
        # the ledger: the fill replaced, not added; positions and cash follow
        after = sim.control.fills()
        assert [f["exec_id"] for f in after] == [f["exec_id"] if f is not old else new_id for f in before]
        (fixed,) = [f for f in after if f["exec_id"] == new_id]
        assert (fixed["qty"], fixed["price"], fixed["cum_qty"]) == (60, price, 60)
        ledger = sim.control.ledger()
        assert ledger["positions"][str(SPY)]["qty"] == 60
        assert ledger["cash"] == pytest.approx(1_000_000 - 60 * price - 1.0)
        # a correction corrects the current version only
        with pytest.raises(SimControlError, match="no current execution"):
            sim.control.correct_execution(old["exec_id"], quantity=50)
        again = sim.control.correct_execution(new_id, quantity=70)
        assert again["exec_id"] == old["exec_id"][:-2] + "03"
        assert sim.control.positions()[str(SPY)]["qty"] == 70
    finally:
        c.disconnect()


def test_completed_orders_decode_in_ibapi_and_survive_a_restart(start_sim, tmp_path):
    state = str(tmp_path / "account")
    sim = start_sim("--state-dir", state)
    c = IbapiClient(sim.port, 45).connect()
    try:
        filled = _place(c, stock("AAPL"), order("BUY", 100, ref="filled"))
        c.wait("orderStatus", lambda e: e[0] == filled and e[1] == "Filled")
        mine = _resting(c, sim, ref="by-trader")
        c.client.cancelOrder(mine, OrderCancel())
        c.wait("orderStatus", lambda e: e[0] == mine and e[1] == "Cancelled")
        system = _resting(c, sim, tif="GTC", ref="by-system")
        sim.control.broker_cancel(system, client_id=45)
        c.wait("orderStatus", lambda e: e[0] == system and e[1] == "Cancelled")
        bad = _place(c, stock("AAPL"), order("BUY", 1, "REL", aux=1.0, ref="rejected"))
        c.wait_error(201, bad)
        working = _resting(c, sim, tif="GTC", ref="working")
        first = c.completed_orders()
    finally:
        c.disconnect()
    perm = {o["order_ref"]: o["perm_id"] for o in sim.control.orders()}
    expected = {   # orderRef: (status, completedStatus, totalQuantity, filledQuantity)
        "filled": ("Filled", "Filled", 100, 100),
        "by-trader": ("Cancelled", "Cancelled by Trader", 10, 0),
        "by-system": ("Cancelled", BY_SYSTEM, 10, 0),
        "rejected": ("Inactive", "Order type 'REL' is not supported by the simulator", 1, 0),
    }

    def check(completed: dict[str, tuple]) -> None:
        assert set(completed) == set(expected) and "working" not in completed
        for ref, (status, text, total, filled_qty) in expected.items():
            contract, o, st = completed[ref]
            assert (contract.conId, contract.symbol, contract.secType) == (AAPL, "AAPL", "STK")
            assert (st.status, st.completedStatus) == (status, text), ref
            assert (int(o.totalQuantity), int(o.filledQuantity)) == (total, filled_qty), ref
            assert o.account == "DU1234567" and st.completedTime.endswith(" America/New_York")
            if ref in perm:
                assert o.permId == perm[ref]
        assert completed["rejected"][1].permId > 0

    check(first)
    assert sim.stop() == 0                                    # SIGTERM: the clean stop
    sim = start_sim("--state-dir", state)
    c = IbapiClient(sim.port, 45).connect()
    try:
        again = c.completed_orders()
        check(again)
        assert [(ref, e[1].permId) for ref, e in again.items()] == \
               [(ref, e[1].permId) for ref, e in first.items()]   # same orders, same order
        c.client.reqOpenOrders()
        c.wait("openOrderEnd")
        assert [e[0] for e in c.rec.get("openOrder")] == [working]
    finally:
        c.disconnect()
