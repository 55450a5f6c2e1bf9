"""Issue 13, item 3: a gateway whose account zone is not UTC. Its execution times carry that
zone ("yyyymmdd hh:mm:ss Asia/Hong_Kong"); read as UTC, a zone east of UTC lay hours in the future, the next
reconciliation's execution filter came after every fill made during an outage, and such a fill
was lost (the order closed as Cancelled). Now: the fill made while the gateway is away is
booked once, at the simulator's own time of it, and the order ends Filled."""
from __future__ import annotations

import collections

import pytest

from proto.schema import Execution, GatewayState
from tests.support.audit import assert_audit
from tests.support.fleet import live_orders

PROBE = "tests.support.probe_strategy:Probe"
AAPL = 265598


@pytest.mark.parametrize("zone", ["Asia/Hong_Kong", "Europe/Berlin", "America/New_York"])
def test_a_fill_during_an_outage_is_booked_once_at_its_utc_time_in_any_account_zone(fleet, zone):
    """The three zones of issue 13's must-show: east of UTC by 8 h, by 1-2 h, and west."""
    fleet.start_core(sim_args=("--time-zone", zone))
    intents = [  # one fill now (so the bridge knows a "last fill"), one order left resting
        {"side": "BUY", "quantity": 10, "order_type": "LMT", "ticks_from_mid": 20},
        {"side": "BUY", "quantity": 10, "order_type": "LMT", "ticks_from_mid": -40},
    ]
    fleet.add_strategy("tz", PROBE, ["AAPL"], {"mode": "intents", "intents": intents},
                       risk={"max_position": 1000, "order_rate": 50, "order_burst": 50,
                             "stale_after_s": 30})
    fleet.start_strategy("tz")
    fleet.wait(lambda: len(fleet.sim.fills()) == 1 and len(live_orders(fleet)) == 1
               and len(fleet.fills("tz")) == 1, deadline=90,
               what="one fill booked and one order resting")
    first = fleet.sim.fills()[0]
    resting = live_orders(fleet)[0]

    # the gateway is cut off; while it is away the market falls through the resting buy
    mark = len(fleet.messages(GatewayState))
    fleet.sim.restart(seconds=8)
    fleet.wait_gateway("connecting", after=mark, deadline=30)
    fleet.sim.shift_price(AAPL, -80)
    fleet.wait(lambda: len(fleet.sim.fills()) == 2, deadline=30,
               what="the resting order to fill during the outage")
    fleet.pump()
    states = [s.state for s in fleet.messages(GatewayState)[mark:]]
    # (a heartbeat can repeat "synchronised" before the gateway sees the socket close)
    assert "synchronised" not in states[states.index("connecting"):], \
        "the outage fill must happen while the gateway is away"
    outage_fill = fleet.sim.fills()[1]
    assert outage_fill["order_ref"] == resting["order_ref"]

    fleet.wait_gateway("synchronised", after=mark, deadline=120)
    coid = resting["order_ref"]
    fleet.wait(lambda: outage_fill["exec_id"] in fleet.fills("tz"), deadline=60,
               what="the outage fill to reach execution")
    fleet.wait(lambda: any(u.client_order_id == coid and u.state == "filled"
                           for u in fleet.updates("tz")), deadline=60,
               what="the resting order to be Filled")
    assert not [u for u in fleet.updates("tz") if u.client_order_id == coid
                and u.state == "cancelled"], "the order filled during the outage was cancelled"

    # every execution on the bus once per exec id, at the simulator's UTC time of the fill
    execs = fleet.messages(Execution)
    by_id = {e.exec_id: e for e in execs}
    assert set(by_id) == {first["exec_id"], outage_fill["exec_id"]}
    for fill in (first, outage_fill):
        assert by_id[fill["exec_id"]].exec_time_ns == int(fill["time"]) * 1_000_000_000, \
            f"exec_time_ns must be the fill's UTC time, not its {zone} wall time read as UTC"
    booked = collections.Counter(u.exec_id for u in fleet.updates("tz") if u.exec_id)
    assert booked.keys() == by_id.keys()
    assert_audit(fleet, ["tz"])
