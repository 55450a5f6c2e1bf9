"""A trade made outside the fleet (another API client of the same account) is seen live: IB
streams the position change (reqPositions covers the whole account), the gateway publishes it
as it comes, and execution, which owns positions, raises its position-mismatch alert and adopts
the broker's position without waiting for a reconnect. Real simulator, bus, gateway,
execution and risk (tests/support/fleet.py); the outside trader is a second ibapi client."""
from __future__ import annotations

import pytest

from proto.schema import GatewayState, Position, ReconcileEnd
from services.gateway.order_desk import EXECUTION_ASKED
from tests.simulator.ibapi_client import IbapiClient, order, stock
from tests.support.fleet import Fleet, execution_positions


@pytest.fixture
def whole_fleet(procs, tmp_path):
    f = Fleet(procs, tmp_path)
    try:
        yield f
    finally:
        f.close()


def test_a_trade_outside_the_fleet_is_alerted_live_without_a_reconnect(whole_fleet):
    fleet = whole_fleet
    fleet.start_core()
    # execution's own first reconciliation is over: from here only a live report can tell it
    fleet.wait(lambda: [m for m in fleet.messages(ReconcileEnd) if m.reason == EXECUTION_ASKED],
               what="execution's first reconciliation")
    fleet.wait_gateway("synchronised")
    assert "IBM" not in execution_positions(fleet)
    before = len(fleet.messages(GatewayState))
    outsider = IbapiClient(fleet.port, 77).connect()  # TWS, a script: not the fleet
    try:
        oid = outsider.next_order_id()
        outsider.client.placeOrder(oid, stock("IBM"), order("BUY", 7))
        outsider.wait("execDetails", lambda e: e[2].orderId == oid)
    finally:
        outsider.disconnect()
    fleet.wait(lambda: [p for p in fleet.messages(Position) if p.symbol == "IBM"
                        and p.quantity == 7], what="IB's position update on the bus")
    alert = fleet.wait(lambda: fleet.alerts("broker_positions_adopted"), deadline=60,
                       what="execution's position-mismatch alert")[0]
    assert alert.severity == "critical" and "IBM" in alert.text, alert
    fleet.wait(lambda: execution_positions(fleet).get("IBM") == 7,
               what="execution adopting the broker's IBM position")
    # no reconnect on the way: the gateway never left synchronised but for execution's own
    # reconciliation runs (synchronised -> connected -> synchronised)
    states = [m.state for m in fleet.messages(GatewayState)[before:]]
    assert not {"disconnected", "connecting", "degraded"} & set(states), states
