"""The bridge end to end: broker + simulator + gateway as processes, driven over the bus."""
from __future__ import annotations

import math

import zmq

from proto.schema import (Ack, Alert, Commission, DepthUpdate, Execution, GatewayError,
                          GatewayState, OpenOrder, OrderCommand, OrderStatus, Position,
                          QuoteTick, Tick, TradeTick)
from services.bus.reliable import ReliableClient
from tests.support.processes import wait_for


def sim_subs(fleet, key: str) -> int:
    clients = [c for c in fleet.sim.clients() if c["client_id"] == fleet.client_id]
    return clients[0][key] if clients else -1


def test_connects_streams_and_trades(fleet, sim_server_version):
    fleet.start_gateway()
    st = fleet.bus.wait_state("synchronised")
    assert st.server_version == (sim_server_version or 200) and st.client_id == fleet.client_id
    # the first changes can go out before the gateway's PUB has our subscription (ZeroMQ's
    # slow joiner): what is seen up to synchronised is the tail of the full sequence, in order
    states = fleet.bus.states()
    seen = states[:states.index("synchronised") + 1]
    assert seen == ["disconnected", "connecting", "connected", "synchronised"][-len(seen):]

    # two strategies on one symbol make one IB request
    fleet.subscribe("AAPL", "tick", "strat.a")
    fleet.subscribe("AAPL", "tick", "strat.b")
    fleet.subscribe("AAPL", "depth", "strat.a")
    fleet.subscribe("MSFT", "quote", "strat.a")
    fleet.subscribe("MSFT", "trade", "strat.a")
    fleet.subscribe("NOSUCH", "tick", "strat.a")
    ticks = fleet.bus.wait(Tick, lambda m: m.symbol == "AAPL", count=5)
    # IB sends bid and ask as separate ticks; a merged top of book read between the two can be
    # crossed for one update, as it can be at IB itself. Most of them cannot.
    quoted = [t for t in ticks if not math.isnan(t.bid + t.ask)]
    assert quoted and all(t.bid > 0 and t.ask > 0 for t in quoted)
    assert sum(t.bid < t.ask for t in quoted) > len(quoted) / 2
    fleet.bus.wait(DepthUpdate, lambda m: m.symbol == "AAPL", count=20)
    fleet.bus.wait(QuoteTick, lambda m: m.symbol == "MSFT", count=3)
    fleet.bus.wait(TradeTick, lambda m: m.symbol == "MSFT", count=1)
    err = fleet.bus.wait(GatewayError, lambda m: m.ref == "strat.a/NOSUCH")[0]
    assert err.scope == "subscription" and "NOSUCH" in err.text
    assert sim_subs(fleet, "mkt") == 1 and sim_subs(fleet, "depth") == 1

    # the last requester leaving cancels at IB; the first leaving does not
    fleet.subscribe("AAPL", "tick", "strat.a", active=False)
    mark = fleet.bus.mark()
    fleet.bus.wait(Tick, lambda m: m.symbol == "AAPL", count=3, since=mark)
    assert sim_subs(fleet, "mkt") == 1
    fleet.subscribe("AAPL", "tick", "strat.b", active=False)
    wait_for(lambda: sim_subs(fleet, "mkt") == 0, 30, what="cancelMktData at IB")

    # a market order: PendingSubmit in the reply, then status, fill and commission on the bus
    seq = fleet.command(command="place", client_order_id="mkt-1", symbol="IBM", side="BUY",
                        quantity=10, order_type="MKT")
    replies = fleet.wait_acked(seq)
    pending = [r for r in replies if isinstance(r, OrderStatus) and r.client_order_id == "mkt-1"]
    assert pending and pending[0].status == "PendingSubmit" and pending[0].ib_order_id > 0
    ib_id = pending[0].ib_order_id
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == ib_id and m.status == "Filled")
    ex = fleet.bus.wait(Execution, lambda m: m.client_order_id == "mkt-1")[0]
    assert ex.side == "BUY" and ex.quantity == 10 and ex.symbol == "IBM"
    fleet.bus.wait(Commission, lambda m: m.exec_id == ex.exec_id)
    fleet.bus.wait(OpenOrder, lambda m: m.client_order_id == "mkt-1")
    ledger = fleet.sim.fills()
    assert [(f["exec_id"], f["order_ref"]) for f in ledger] == [(ex.exec_id, "mkt-1")]

    # a resting limit: modified, then cancelled
    seq = fleet.command(command="place", client_order_id="lmt-1", symbol="IBM", side="BUY",
                        quantity=5, order_type="LMT", limit_price=100.0, tif="GTC")
    fleet.wait_acked(seq)
    lid = fleet.bus.wait(OrderStatus, lambda m: m.client_order_id == "lmt-1"
                         and m.status == "Submitted")[0].ib_order_id
    seq = fleet.command(command="modify", client_order_id="lmt-1", symbol="IBM", side="BUY",
                        quantity=7, order_type="LMT", limit_price=101.0, tif="GTC")
    fleet.wait_acked(seq)
    fleet.bus.wait(OpenOrder, lambda m: m.ib_order_id == lid and m.limit_price == 101.0
                   and m.quantity == 7)
    seq = fleet.command(command="cancel", client_order_id="lmt-1")
    fleet.wait_acked(seq)
    fleet.bus.wait(OrderStatus, lambda m: m.ib_order_id == lid and m.status == "Cancelled")
    assert {o["order_id"]: o["order_ref"] for o in fleet.sim.orders()} == {ib_id: "mkt-1",
                                                                           lid: "lmt-1"}
    # a resent place is answered with the existing mapping, never placed twice
    seq = fleet.command(command="place", client_order_id="lmt-1", symbol="IBM", side="BUY",
                        quantity=5, order_type="LMT", limit_price=100.0, tif="GTC")
    again = [r for r in fleet.wait_acked(seq) if isinstance(r, OrderStatus)
             and r.client_order_id == "lmt-1"]
    assert again[-1].ib_order_id == lid
    assert len(fleet.sim.orders()) == 2
    fleet.bus.wait(Position, lambda m: m.symbol == "IBM" and m.quantity == 10)


def test_refuses_commands_not_from_execution(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    rogue = ReliableClient(zmq.Context.instance(), fleet.cfg.bus.endpoint("gateway"),
                           "strategy.rogue")
    try:
        rogue.send(OrderCommand(command="place", client_order_id="x-1", symbol="AAPL",
                                side="BUY", quantity=1, order_type="MKT"))
        acks = wait_for(lambda: [m for m in rogue.poll(50) if isinstance(m, Ack)], 30,
                        what="the refusal")
        assert not acks[0].ok and "only execution" in acks[0].error
    finally:
        rogue.close()
    fleet.bus.wait(Alert, lambda m: m.code == "gateway.refused_command")
    assert fleet.sim.ledger()["order_requests"] == []


def test_subscription_limits_are_enforced_locally(fleet):
    fleet.start_gateway("--depth-subscriptions", "2")
    fleet.bus.wait_state("synchronised")
    for sym in ("AAPL", "MSFT", "SPY"):
        fleet.subscribe(sym, "depth", "strat.a")
    err = fleet.bus.wait(GatewayError, lambda m: m.scope == "subscription")[0]
    assert err.ref == "strat.a/SPY" and "limit" in err.text
    fleet.bus.wait(DepthUpdate, lambda m: m.symbol == "MSFT", count=5)
    assert sim_subs(fleet, "depth") == 2
    assert not fleet.bus.of(GatewayState, lambda m: m.state == "disconnected"
                            and m.reason != "starting")
