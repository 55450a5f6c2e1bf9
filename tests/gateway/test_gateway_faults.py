"""Every simulator fault while orders rest and market data streams: the bridge returns to
synchronised by itself, every subscription delivers again, and the bus agrees with the
simulator's ledger: every fill exactly once (including fills made during the outage), nothing
missing, nothing invented. An order that ended while the bridge was cut off is told by IB's
own reports (a CompletedOrder, or its absence from the next ReconcileEnd), never by a status
the gateway made up."""
from __future__ import annotations

import collections
import json
import time

import pytest

from proto.schema import (CompletedOrder, DepthUpdate, Execution, GatewayError, GatewayState,
                          Heartbeat, OrderStatus, QuoteTick, ReconcileEnd, Tick)
from services.simulator.control import SimControlError
from tests.support.processes import port_open, wait_for

STREAMS = ((Tick, "AAPL"), (DepthUpdate, "AAPL"), (QuoteTick, "MSFT"))


def start_streams_and_ladder(fleet) -> list[int]:
    """Streams on AAPL/MSFT and a ladder of resting SPY limits near the market: the random walk
    fills some of them while the bridge is cut off."""
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    fleet.subscribe("AAPL", "tick")
    fleet.subscribe("AAPL", "depth")
    fleet.subscribe("MSFT", "quote")
    for cls, sym in STREAMS:
        fleet.bus.wait(cls, lambda m, s=sym: m.symbol == s, count=3)
    q = fleet.sim.quote(756733)
    ids = []
    for i, off in enumerate((3, 6, 9, 12)):
        for side, px in (("BUY", q["ask"] - off * 0.01), ("SELL", q["bid"] + off * 0.01)):
            seq = fleet.command(command="place", client_order_id=f"ladder-{side}-{i}",
                                symbol="SPY", side=side, quantity=1, order_type="LMT",
                                limit_price=round(px, 2), tif="GTC")
            ids.append(seq)
    for seq in ids:
        fleet.wait_acked(seq)
    wait_for(lambda: len({m.client_order_id for m in fleet.bus.of(
        OrderStatus, lambda m: m.client_order_id.startswith("ladder")
        and m.status != "PendingSubmit")}) == 8, 30, what="ladder submitted")
    return ids


def assert_recovered_and_consistent(fleet, since: int, state_changes: bool = True) -> None:
    """Synchronised again, every stream delivering after that, bus == ledger."""
    if state_changes:
        fleet.bus.wait_state("synchronised", since=since, deadline=60)
    after = fleet.bus.mark()
    for cls, sym in STREAMS:
        fleet.bus.wait(cls, lambda m, s=sym: m.symbol == s, count=3, since=after,
                       what=f"{cls.__name__} {sym} after recovery")
    # fills: the ledger's, for our client, each exactly once on the bus
    def fills_match():
        ledger = {f["exec_id"]: f for f in fleet.sim.fills() if f["client_id"] == fleet.client_id}
        seen = collections.Counter(e.exec_id for e in fleet.bus.of(Execution))
        return ledger if set(seen) == set(ledger) else None
    ledger = wait_for(fills_match, 30, what="every ledger fill on the bus")
    seen = collections.Counter(e.exec_id for e in fleet.bus.of(Execution))
    assert all(n == 1 for n in seen.values()), f"duplicate executions: {seen}"
    for e in fleet.bus.of(Execution):
        assert e.client_order_id == ledger[e.exec_id]["order_ref"]
    # order states: what IB last reported on the bus is the simulator's
    try:
        wait_for(lambda: not status_mismatches(fleet), 30,
                 what="order states on the bus == simulator")
    except TimeoutError:
        raise AssertionError(f"orders whose state on the bus is not the simulator's: "
                             f"{status_mismatches(fleet)}")


DONE = {"Filled", "Cancelled", "ApiCancelled", "Inactive"}


def status_mismatches(fleet) -> dict:
    """Per order of ours, the simulator's status against the bus's last report of it: an
    OrderStatus, or a CompletedOrder. An order that ended unseen and that IB reports no
    completed order for (an older server) must at least be neither open nor in flight in a
    ReconcileEnd after its last report: execution closes it from there."""
    sim = {o["order_id"]: o["status"] for o in fleet.sim.orders()
           if o["client_id"] == fleet.client_id}
    last: dict[int, str] = {}
    at: dict[int, int] = {}
    ends: list[tuple[int, ReconcileEnd]] = []
    for i, m in enumerate(fleet.bus.of((OrderStatus, CompletedOrder, ReconcileEnd))):
        if isinstance(m, ReconcileEnd):
            ends.append((i, m))
        elif m.status != "PendingSubmit" and m.ib_order_id:
            last[m.ib_order_id], at[m.ib_order_id] = m.status, i
    wrong = {}
    for order_id in set(sim) | set(last):
        status, reported = sim.get(order_id), last.get(order_id)
        if status == reported:
            continue
        if status in DONE and reported not in DONE and any(
                i > at.get(order_id, -1) and order_id not in e.open_ids
                and order_id not in e.in_flight_ids for i, e in ends):
            continue
        wrong[order_id] = (status, reported)
    return wrong


FAULTS = {
    "restart": (lambda f: f.sim.restart(seconds=2.0), "disconnected"),
    # the API port gone (connects refused), not a proxy's accept-then-close
    "restart_port_gone": (lambda f: f.sim.restart(seconds=2.0, port_gone=True), "disconnected"),
    "reset_data_lost": (lambda f: f.sim.server_reset(seconds=1.5, data_lost=True), "degraded"),
    "reset_data_kept": (lambda f: f.sim.server_reset(seconds=1.5, data_lost=False), "degraded"),
    "farm_flap": (lambda f: f.sim.farm_flap(seconds=1.0), "degraded"),
    "hang": (lambda f: f.sim.hang(seconds=3.0), "disconnected"),
    "lockout": (lambda f: f.sim.lockout(client_id=7, seconds=2.0), "disconnected"),
    "garbage": (lambda f: f.sim.garbage(), None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_recovers_from_fault(fleet, fault):
    start_streams_and_ladder(fleet)
    inject, expect_state = FAULTS[fault]
    mark = fleet.bus.mark()
    inject(fleet)
    if expect_state is not None:
        fleet.bus.wait_state(expect_state, since=mark, deadline=30)
    else:  # garbage: the session survives; the frames are counted, not fatal
        fleet.bus.wait(Tick, lambda m: m.symbol == "AAPL", count=5, since=mark)
    if fault == "hang":  # an order sent into the hung socket is read after the resume:
        # placed at IB while we are cut off; it must appear once, via reconciliation
        seq = fleet.command(command="place", client_order_id="during-hang", symbol="IBM",
                            side="BUY", quantity=3, order_type="MKT")
        fleet.wait_acked(seq)
    if fault == "reset_data_lost":  # the sequence: 1100 -> 1101, then 1100 -> 1102
        fleet.bus.wait_state("synchronised", since=mark, deadline=60)
        mark = fleet.bus.mark()
        fleet.sim.server_reset(seconds=1.5, data_lost=False)
        fleet.bus.wait_state("degraded", since=mark, deadline=30)
    assert_recovered_and_consistent(fleet, mark, state_changes=expect_state is not None)
    states = fleet.bus.states()
    assert states[-1] == "synchronised", states
    if expect_state is None:
        assert fleet.bus.states(since=mark) == []  # survived without dropping the session
    if fault == "hang":
        fleet.bus.wait(Execution, lambda m: m.client_order_id == "during-hang")


BAD_LENGTHS = {"zero": 0, "oversized": 0x7FFFFFFF}


@pytest.mark.parametrize("variant", list(BAD_LENGTHS))
def test_bad_length_prefix_drops_the_session_at_once(fleet, variant):
    """A length prefix of 0 or above ibapi's MAX_MSG_LEN: the framing is lost, so the bridge
    drops the session at once (logged, counted), reconnects and its subscriptions deliver
    again; the hang probe has no part in it. The probe and the backoff are at their defaults
    (probe 10 s + 5 s, first retry 0.5-1 s), so the time printed is what a real bridge takes."""
    size = BAD_LENGTHS[variant]
    fleet.start_gateway("--probe-interval", "10", "--probe-timeout", "5",
                        "--backoff-base", "1", "--backoff-cap", "30")
    fleet.bus.wait_state("synchronised")
    fleet.subscribe("AAPL", "tick")
    fleet.bus.wait(Tick, lambda m: m.symbol == "AAPL", count=3)
    mark = fleet.bus.mark()
    injected = time.time_ns()
    assert fleet.sim.bad_length(client_id=fleet.client_id, size=size) == {"sessions": 1}

    down = fleet.bus.wait_state("disconnected", since=mark, deadline=30)
    assert f"bad frame length {size} from IB" in down.reason, down.reason
    with fleet.bus.lock:
        down_at = next(i for i, m in enumerate(fleet.bus.messages) if m is down)
    first = fleet.bus.wait(Tick, lambda m: m.symbol == "AAPL", since=down_at, deadline=60,
                           what="AAPL tick after the reconnect")[0]
    fleet.bus.wait_state("synchronised", since=down_at, deadline=60)
    print(f"\nbad length {variant} ({size:#x}): injection -> disconnected "
          f"{(down.ts - injected) / 1e6:.0f} ms, -> first AAPL tick after it "
          f"{(first.ts - injected) / 1e6:.0f} ms")

    # one drop, for the framing; not the probe
    gone = [m.reason for m in fleet.bus.of(GatewayState, lambda m: m.state == "disconnected",
                                           since=mark)]
    assert all(r == down.reason for r in gone), gone
    assert not [m for m in fleet.bus.of(GatewayState, since=mark) if "liveness probe" in m.reason]
    assert fleet.bus.states(since=mark)[:1] == ["disconnected"]
    assert fleet.bus.of(GatewayError, lambda m: f"bad frame length {size}" in m.text, since=mark)
    fleet.bus.wait(Heartbeat, lambda m: m.counters.get("bad_frame_length") == 1, since=mark,
                   deadline=30, what="bad_frame_length counted in the heartbeat")

    def logged():
        for line in fleet.procs.log("gateway").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "bad frame length from IB, dropping the connection":
                return rec
        return None
    rec = wait_for(logged, 30, what="the error line in the gateway's log")
    assert rec["lvl"] == "error" and rec["size"] == size
    # still streaming on the new session
    fleet.bus.wait(Tick, lambda m: m.symbol == "AAPL", count=5, since=down_at)
    assert any(c["client_id"] == fleet.client_id for c in fleet.sim.clients())


def test_the_sunday_cold_restart_waits_for_the_login_then_recovers(fleet):
    """IB Gateway's weekly cold restart: every socket dropped and nothing listens on the API
    port until someone logs in (two-factor). The bridge keeps probing (never a session while
    nobody logs in), then recovers by itself after the login, with the orders and fills made
    meanwhile consistent with the broker."""
    start_streams_and_ladder(fleet)
    mark = fleet.bus.mark()
    assert fleet.sim.cold_restart()["awaiting_login"] is True
    fleet.bus.wait_state("disconnected", since=mark, deadline=30)
    assert fleet.sim.status()["awaiting_login"] is True
    wait_for(lambda: not port_open(fleet.sim_port), 30, what="the API port closed")
    # the bridge repeats its state with each heartbeat: five of them while nobody logs in,
    # each disconnected and probing, none a session
    down_at = fleet.bus.mark()
    fleet.bus.wait(GatewayState, lambda m: m.state == "disconnected" and "probing" in m.reason,
                   count=5, since=down_at, deadline=60, what="five probing heartbeats")
    assert set(fleet.bus.states(since=mark)) == {"disconnected"}, fleet.bus.states(since=mark)
    fleet.sim.login()
    wait_for(lambda: port_open(fleet.sim_port), 30, what="the API port after the login")
    assert fleet.sim.status()["awaiting_login"] is False
    assert_recovered_and_consistent(fleet, down_at)
    assert fleet.bus.states()[-1] == "synchronised"
    with pytest.raises(SimControlError, match="no cold restart"):
        fleet.sim.login()  # nothing waits for a login now
