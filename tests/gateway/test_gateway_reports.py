"""The gateway reports what IB says and never decides an order's fate: against the simulator.

An IB error is a GatewayError, not a status; a reconciliation ends with a ReconcileEnd after
everything it reported; an untransmitted bracket leg is in flight, not lost."""
from __future__ import annotations

from proto.schema import GatewayError, OpenOrder, OrderStatus, ReconcileEnd
from tests.support.processes import wait_for

RESTING_BUY = dict(symbol="IBM", side="BUY", quantity=5, order_type="LMT", limit_price=100.0,
                   tif="GTC")  # IBM trades near 180 in the simulator: this rests


def place_resting(fleet, coid: str, **overrides) -> int:
    seq = fleet.command(command="place", client_order_id=coid, **{**RESTING_BUY, **overrides})
    replies = fleet.wait_acked(seq)
    return [r for r in replies if isinstance(r, OrderStatus)
            and r.client_order_id == coid][-1].ib_order_id


def reconcile(fleet) -> tuple[int, ReconcileEnd]:
    """Ask for a reconciliation; its ReconcileEnd and the bus position before it was asked."""
    mark = fleet.bus.mark()
    fleet.wait_acked(fleet.command(command="reconcile", client_order_id=""))
    end = fleet.bus.wait(ReconcileEnd, since=mark, what="ReconcileEnd")[0]
    return mark, end


def sim_order(fleet, ib_id: int) -> dict:
    return [o for o in fleet.sim.orders() if o["order_id"] == ib_id
            and o["client_id"] == fleet.client_id][0]


def requests_for(fleet, ib_id: int) -> list[dict]:
    return [r for r in fleet.sim.ledger()["order_requests"]
            if r["order_id"] == ib_id and r["client_id"] == fleet.client_id]


def test_a_modify_refused_with_110_is_an_error_and_the_order_keeps_working(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    ib_id = place_resting(fleet, "tick-1")
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == ib_id and m.status == "Submitted")
    mark = fleet.bus.mark()
    fleet.wait_acked(fleet.command(command="modify", client_order_id="tick-1",
                                   **{**RESTING_BUY, "limit_price": 100.005}))  # off tick
    err = fleet.bus.wait(GatewayError, lambda m: m.code == 110, since=mark)[0]
    assert (err.scope, err.ref, err.req_id) == ("order", "tick-1", ib_id)
    # the order works on at IB, and the bus says nothing else happened to it
    _, end = reconcile(fleet)
    assert ib_id in end.open_ids
    assert not fleet.bus.of(OrderStatus, lambda m: m.ib_order_id == ib_id
                            and m.status in ("Inactive", "Cancelled", "Filled"))
    order = sim_order(fleet, ib_id)
    assert order["status"] == "Submitted" and order["lmt_price"] == 100.0


def test_a_reconciliation_ends_with_reconcile_end_after_its_reports(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    ib_id = place_resting(fleet, "rec-1")
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == ib_id and m.status == "Submitted")
    mark, end = reconcile(fleet)
    assert ib_id in end.open_ids and end.in_flight_ids == [] and end.completed_included
    assert end.reason == "reconcile requested by execution"
    fleet.bus.wait_state("synchronised", since=mark)
    with fleet.bus.lock:
        after = fleet.bus.messages[mark:]
    end_at = after.index(end)
    listed = [i for i, m in enumerate(after) if isinstance(m, OpenOrder) and m.ib_order_id == ib_id]
    assert listed and listed[0] < end_at  # the run's OpenOrder came first
    changes = [(i, m.state) for i, m in enumerate(after) if type(m).__name__ == "GatewayState"]
    synchronised = [i for i, state in changes if state == "synchronised"]
    assert synchronised and synchronised[-1] > end_at  # ReconcileEnd before synchronised


def test_an_untransmitted_leg_is_in_flight_and_never_resent(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    parent = place_resting(fleet, "brk-parent", transmit=False)
    wait_for(lambda: requests_for(fleet, parent), 30, what="the parent at the simulator")
    # IB says nothing about it; no connection is lost; execution asks for a reconciliation
    _, end = reconcile(fleet)
    assert parent in end.in_flight_ids and parent not in end.open_ids
    _, end = reconcile(fleet)  # a resend after the first run would be at IB before this one
    assert parent in end.in_flight_ids
    assert len(requests_for(fleet, parent)) == 1
    assert sim_order(fleet, parent)["transmitted"] is False
    # the transmitting leg releases the group: both acknowledged, nothing sent twice
    child = place_resting(fleet, "brk-child", side="SELL", limit_price=1000.0,
                          parent_ib_id=parent, transmit=True)
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == parent and m.status == "Submitted")
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == child)
    _, end = reconcile(fleet)
    assert {parent, child} <= set(end.open_ids) and end.in_flight_ids == []
    assert len(requests_for(fleet, parent)) == 1 and len(requests_for(fleet, child)) == 1


def test_a_reconciliation_publishes_the_executions_it_finds_even_those_told_before(fleet):
    """Execution asks for a reconciliation because something was lost (a gap on the bus: the
    broker restarted while a fill went out). The gateway must not hold back an execution it
    had published: only the consumer knows it missed it (it books each execId once)."""
    from proto.schema import Execution
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    place_resting(fleet, "fill-1", limit_price=1000.0, tif="DAY")  # marketable: fills
    first = fleet.bus.wait(Execution, lambda m: m.client_order_id == "fill-1",
                           what="the fill")[0]
    mark, end = reconcile(fleet)
    with fleet.bus.lock:
        after = fleet.bus.messages[mark:]
    end_at = after.index(end)
    again = [i for i, m in enumerate(after)
             if isinstance(m, Execution) and m.exec_id == first.exec_id]
    assert again and again[0] < end_at  # in the run, before its end
