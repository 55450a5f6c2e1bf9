"""Risk's state machine in a running fleet: a daily loss switches a strategy to reducing-only,
and positions that differ from the gateway's after a reconciliation raise an alert."""
from __future__ import annotations

from proto.schema import GatewayState
from tests.simulator.ibapi_client import IbapiClient, order, stock

PROBE = "tests.support.probe_strategy:Probe"


def test_a_daily_loss_breach_switches_the_strategy_to_reducing_only(fleet):
    fleet.start_core()
    # crossing the spread on every trade loses a little each time: a 1 USD limit trips fast
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10},
                       risk={"daily_loss_limit": 1.0, "order_rate": 50, "order_burst": 50})
    fleet.start_strategy("churn")
    fleet.wait(lambda: fleet.alerts("daily_loss"), deadline=120, what="the daily-loss alert")
    assert fleet.alerts("daily_loss")[0].text.startswith("churn: daily loss")
    fleet.wait(lambda: any(d.reason == "reducing_only" for d in fleet.decisions("churn")),
               deadline=60, what="a position-increasing intent refused as reducing-only")


def test_a_position_the_fleet_did_not_make_is_reported_after_reconciliation(fleet):
    fleet.start_core()
    manual = IbapiClient(fleet.port, 77).connect()  # someone trades the account by hand
    try:
        oid = manual.next_order_id()
        manual.client.placeOrder(oid, stock("AAPL"), order("BUY", 25, "MKT"))
        manual.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Filled")
    finally:
        manual.disconnect()
    mark = len(fleet.messages(GatewayState))
    fleet.sim.restart(seconds=1)  # a reconnect, and with it a reconciliation
    fleet.wait_gateway("synchronised", after=mark, deadline=120)
    # execution owns positions: a difference seen in two reconciliations is adopted, alerted
    fleet.wait(lambda: fleet.alerts("broker_positions_adopted"), deadline=90,
               what="the broker-positions alert")
    text = fleet.alerts("broker_positions_adopted")[0].text
    assert "AAPL 0 -> 25" in text
