"""Order identity across a SIGKILL of the gateway, and pacing under a burst."""
from __future__ import annotations

import signal

import zmq

from proto.schema import GatewayError, OrderStatus
from services.bus.reliable import ReliableClient
from tests.support.processes import wait_for


def test_sigkill_never_reuses_an_id_nor_duplicates_a_resent_place(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    place_a = dict(command="place", client_order_id="keep-1", symbol="AAPL", side="BUY",
                   quantity=1, order_type="LMT", limit_price=50.0, tif="GTC")
    replies = fleet.wait_acked(fleet.command(**place_a))
    a_id = [r for r in replies if isinstance(r, OrderStatus)][0].ib_order_id
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == a_id and m.status == "Submitted")

    fleet.procs.kill(fleet.gateway, signal.SIGKILL)
    fleet.gateway.wait(30)
    mark = fleet.bus.mark()
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised", since=mark)

    # execution restarted too: a new client incarnation resends the same place
    fresh = ReliableClient(zmq.Context.instance(), fleet.cfg.bus.endpoint("gateway"),
                           "execution.test")
    try:
        from proto.schema import OrderCommand
        fresh.send(OrderCommand(**place_a))
        fresh.send(OrderCommand(command="place", client_order_id="new-1", symbol="AAPL",
                                side="BUY", quantity=1, order_type="LMT", limit_price=51.0,
                                tif="GTC"))
        got: list = []
        wait_for(lambda: got.extend(fresh.poll(50)) or not fresh.pending, 30, what="acks")
    finally:
        fresh.close()
    statuses = {r.client_order_id: r for r in got if isinstance(r, OrderStatus)}
    assert statuses["keep-1"].ib_order_id == a_id      # the existing mapping, not a new order
    b_id = statuses["new-1"].ib_order_id
    assert b_id > a_id                                  # never an id from before the kill
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == b_id and m.status == "Submitted")
    orders = fleet.sim.orders()
    assert sorted((o["order_id"], o["order_ref"]) for o in orders) == [(a_id, "keep-1"),
                                                                       (b_id, "new-1")]
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 103)


def test_a_burst_of_1000_requests_stays_under_ibs_rate(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    seqs = [fleet.command(command="place", client_order_id=f"burst-{i}", symbol="MSFT",
                          side="BUY", quantity=1, order_type="LMT", limit_price=100.0,
                          tif="DAY") for i in range(1000)]
    wait_for(lambda: fleet.poll_replies() is not None and not fleet.execution.pending, 60,
             what="1000 acks")
    assert len(seqs) == 1000
    submitted = lambda: {m.client_order_id for m in fleet.bus.of(  # noqa: E731
        OrderStatus, lambda m: m.status == "Submitted")}
    wait_for(lambda: len(submitted()) == 1000, 120, interval=0.5, what="1000 orders at IB")
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 100)
    assert fleet.sim.status()["stats"]["pacing_violations"] == 0
    assert len(fleet.sim.orders()) == 1000
