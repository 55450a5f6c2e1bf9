"""Issue 15 finding 9, each fix with its test: status --json is strict JSON, a stop order
shows its stop price, ``unpause --help`` names itself, and a gateway with nothing listening
says so (disabled programs not listed: tests/fleet/test_fleet.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proto.schema import GatewayState, OrderUpdate
from services.fleet.status import FleetStatus, _apply, render
from tests.support.processes import REPO


def _order(**fields) -> OrderUpdate:
    base = dict(strategy="mr1", client_order_id="mr1-7", state="submitted", symbol="MSFT",
                side="SELL", quantity=100.0)
    return OrderUpdate(**{**base, **fields})


def _status_with(*orders: OrderUpdate) -> FleetStatus:
    status = FleetStatus()
    for order in orders:
        _apply(status, "execution", order.topic(), order, 0.0)
    return status


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_status_json_has_null_where_an_order_has_no_price():
    status = _status_with(_order(order_type="STP", stop_price=399.5),
                          _order(client_order_id="mr1-8", order_type="MKT"))
    orders = _strict(status.to_json())["open_orders"]
    assert orders[0]["price"] is None and orders[0]["stop"] == 399.5
    assert orders[1]["price"] is None and orders[1]["stop"] is None
    status.pnl["mr1"] = {"unrealized": float("nan")}  # any non-finite number at all
    assert _strict(status.to_json())["pnl"]["mr1"]["unrealized"] is None


@pytest.mark.parametrize("fields, shown", [
    (dict(order_type="STP", stop_price=399.5), "MSFT stop 399.5  submitted"),
    (dict(order_type="STP LMT", stop_price=399.5, limit_price=399.0),
     "MSFT stop 399.5 limit 399  submitted"),
    (dict(order_type="LMT", limit_price=401.25), "MSFT @ 401.25  submitted"),
    (dict(order_type="MKT"), "MSFT @ market  submitted"),
])
def test_status_shows_each_order_type_with_its_prices(fields, shown):
    text = render(_status_with(_order(**fields)))
    assert shown in text and "nan" not in text


def test_unpause_help_names_unpause():
    result = subprocess.run([sys.executable, "-m", "services.cli", "unpause", "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ibfleet unpause ")
    assert "ibfleet resume" not in result.stdout


def test_a_gateway_with_nothing_listening_says_so(fleet):
    fleet.start_broker()  # and no simulator: nothing listens on the gateway's port
    fleet.start_gateway()
    fleet.wait(lambda: [s for s in fleet.messages(GatewayState)
                        if "nothing is listening" in s.reason], deadline=60,
               what="the gateway's reason for the failed connection")
    reasons = [s.reason for s in fleet.messages(GatewayState)
               if s.state == "disconnected" and s.reason != "starting"]
    assert f"could not connect to 127.0.0.1:{fleet.port}" in reasons[0]
    assert not any("closed by IB" in r for r in reasons)
