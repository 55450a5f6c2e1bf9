"""The trading processes through a gateway outage: no new orders while the gateway is not
synchronised, trading resumes by itself after, and the cancel-on-reconnect policy holds."""
from __future__ import annotations

from proto.schema import GatewayState
from tests.support.fleet import live_orders

PROBE = "tests.support.probe_strategy:Probe"


def test_no_new_orders_while_the_gateway_is_away_and_trading_resumes_after(fleet):
    fleet.start_core()
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10},
                       risk={"max_position": 1000, "order_rate": 50, "order_burst": 50,
                             "stale_after_s": 30})
    fleet.start_strategy("churn")
    fleet.wait(lambda: fleet.fills("churn"), deadline=120, what="trading before the outage")
    mark = len(fleet.messages(GatewayState))
    fleet.sim.restart(seconds=3)
    fleet.wait_gateway("connecting", after=mark)
    fleet.wait(lambda: any(d.reason == "gateway_not_synchronised"
                           for d in fleet.decisions("churn")), deadline=60,
               what="an intent refused while the gateway is away")
    fleet.wait_gateway("synchronised", after=mark, deadline=120)
    refused_at = max(d.seq for d in fleet.decisions("churn")
                     if d.reason == "gateway_not_synchronised")
    fills_before = len(fleet.sim.fills())
    fleet.wait(lambda: any(d.approved and d.seq > refused_at for d in fleet.decisions("churn"))
               and len(fleet.sim.fills()) > fills_before, deadline=120,
               what="trading to resume after the outage")


def test_cancel_on_reconnect_cancels_resting_orders_after_a_gateway_restart(fleet):
    fleet.start_core(execution_args=("--cancel-on-reconnect",))
    fleet.add_strategy("rest", PROBE, ["AAPL"], {"mode": "rest", "count": 3})
    fleet.start_strategy("rest")
    fleet.wait(lambda: len(live_orders(fleet)) == 3, deadline=90, what="three resting orders")
    mark = len(fleet.messages(GatewayState))
    fleet.sim.restart(seconds=1)
    fleet.wait_gateway("synchronised", after=mark, deadline=120)
    fleet.wait(lambda: not live_orders(fleet), deadline=60,
               what="the resting orders to be cancelled after the reconnect")
    fleet.wait(lambda: len([u for u in fleet.updates("rest") if u.state == "cancelled"]) >= 3,
               what="the strategy to hear of the cancels")
