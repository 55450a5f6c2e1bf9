"""Risk rejects what it should and the strategy hears why; nothing reaches the simulator
around risk; the kill switch cancels everything at the simulator."""
from __future__ import annotations

import json
import time

from proto.schema import Ack, OrderCommand, OrderIntent
from services.bus.reliable import ReliableClient
from tests.support.fleet import live_orders

PROBE = "tests.support.probe_strategy:Probe"


def _rejections_in_log(fleet, name):
    out = {}
    for line in fleet.procs.log(f"strategy-{name}").splitlines():
        if '"intent rejected by risk"' in line:
            rec = json.loads(line)
            out[rec["reason"]] = rec["text"]
    return out


def test_every_risk_check_rejects_with_its_reason_reaching_the_strategy(fleet):
    fleet.start_core()
    intents = [
        {"quantity": 5000, "ticks_from_mid": 0},               # max_order_quantity
        {"quantity": 10, "raw_price": 1.005},                  # min_tick
        {"quantity": 10, "ticks_from_mid": 4000},              # price_band
        {"quantity": 10, "ticks_from_mid": 0, "symbol": "ZZZZ"},  # unknown_symbol
        {"quantity": 400, "ticks_from_mid": 0},                # max_order_notional
        {"quantity": 150, "ticks_from_mid": -50},              # ok, rests
        {"quantity": 150, "ticks_from_mid": -51},              # max_position (with the first)
        {"quantity": 10, "ticks_from_mid": -52},               # ok (open orders: 2)
        {"quantity": 10, "ticks_from_mid": -53},               # max_open_orders
    ]
    fleet.add_strategy("probe", PROBE, ["AAPL"], {"mode": "intents", "intents": intents},
                       risk={"max_order_quantity": 1000, "max_order_notional": 50_000,
                             "max_position": 200, "max_open_orders": 2, "price_band": 0.05,
                             "order_rate": 100, "order_burst": 100})
    fleet.start_strategy("probe")
    expected = {"max_order_quantity", "min_tick", "price_band", "unknown_symbol",
                "max_order_notional", "max_position", "max_open_orders"}
    fleet.wait(lambda: expected <= set(_rejections_in_log(fleet, "probe")), deadline=90,
               what="every rejection to reach the strategy")
    heard = _rejections_in_log(fleet, "probe")
    assert all(heard[r] for r in expected)  # each with a human sentence
    fleet.wait(lambda: len(live_orders(fleet)) == 2,
               what="the two sound orders to rest at the simulator")
    refs = {r["order_ref"] for r in fleet.sim.ledger()["order_requests"]}
    approved = {d.client_order_id for d in fleet.decisions("probe") if d.approved}
    assert refs == approved and len(approved) == 2  # nothing else reached the simulator


def test_orders_sent_around_risk_are_refused_by_execution_and_by_the_gateway(fleet):
    fleet.start_core()
    for endpoint, msg in (
            ("gateway", OrderCommand(command="place", client_order_id="rogue-1", symbol="AAPL",
                                     quantity=1, limit_price=100.0)),
            ("execution", OrderIntent(strategy="rogue", client_order_id="rogue-2",
                                      action="new", symbol="AAPL", quantity=1,
                                      limit_price=100.0))):
        client = ReliableClient(fleet.ctx, fleet.config.bus.endpoint(endpoint), "strategy.rogue",
                                resend_after=60)
        client.send(msg)
        acks = []
        fleet.wait(lambda: acks.extend(m for m in client.poll(100) if isinstance(m, Ack))
                   or acks, what=f"{endpoint}'s answer")
        assert not acks[0].ok and "refused" in acks[0].error.lower(), acks[0]
        client.close()
    assert fleet.sim.ledger()["order_requests"] == []


def test_the_kill_switch_cancels_every_order_at_the_simulator(fleet):
    fleet.start_core()
    fleet.add_strategy("rest", PROBE, ["AAPL"], {"mode": "rest", "count": 3},
                       risk={"max_open_orders": 10})
    fleet.add_strategy("rest2", PROBE, ["MSFT"], {"mode": "rest", "count": 2},
                       risk={"max_open_orders": 10})
    fleet.start_strategy("rest")
    fleet.start_strategy("rest2")
    fleet.wait(lambda: len(live_orders(fleet)) == 5, deadline=90, what="five resting orders")
    started = time.monotonic()
    fleet.kill_switch()
    fleet.wait(lambda: not live_orders(fleet), deadline=30, what="every order cancelled at the simulator")
    elapsed = time.monotonic() - started
    print(f"kill switch: all orders cancelled at the simulator {elapsed:.3f}s after the command")
    # halted: a new intent is refused with the reason
    fleet.wait(lambda: any(a.code == "control_kill" for a in fleet.alerts()),
               what="the kill alert")
