"""Soak: the whole trading fleet through a cycle of gateway faults for several minutes.

Marked `soak`, outside the default run: `.venv/bin/python -m pytest -m soak -s` (minutes
from IBFLEET_SOAK_MINUTES, default 10). At the end: no order placed twice, every fill on the
bus, positions in execution equal the simulator's, and the audit (every strategy, risk,
execution, `ibfleet status` and the simulator's ledger agree; PnL equal in risk and
execution; each execId booked once). Figures go to docs/reliability.md."""
from __future__ import annotations

import os
import time

import pytest

from proto.schema import GatewayState
from tests.support.audit import assert_audit
from tests.support.fleet import assert_books_match_the_simulator, unapproved_orders

PROBE = "tests.support.probe_strategy:Probe"
MR = "services.strategy.examples.mean_reversion:MeanReversion"
IMB = "services.strategy.examples.imbalance:ImbalanceMomentum"
FAULTS = [("restart", {"seconds": 3}), ("server_reset", {"seconds": 3, "data_lost": True}),
          ("farm_flap", {"seconds": 1}), ("server_reset", {"seconds": 2, "data_lost": False}),
          ("hang", {"seconds": 6})]


MINUTES = float(os.environ.get("IBFLEET_SOAK_MINUTES", "10"))


@pytest.mark.soak
@pytest.mark.timeout(int(MINUTES * 60) + 900)
def test_the_fleet_trades_through_repeated_gateway_faults(fleet):
    fleet.start_core()
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10},
                       risk={"max_position": 1000, "order_rate": 50, "order_burst": 50})
    fleet.add_strategy("mr", MR, ["MSFT"], {"window": 20, "entry_z": 1.0, "stop_sigmas": 1.0,
                                            "risk_fraction": 0.0002, "max_quantity": 200,
                                            "entry_timeout_s": 5})
    fleet.add_strategy("imb", IMB, ["SPY"], {"threshold": 0.1, "span": 5, "quantity": 50,
                                             "max_position": 200, "cooldown_s": 0.5})
    for name in ("churn", "mr", "imb"):
        fleet.start_strategy(name)
    started = time.monotonic()
    end = started + MINUTES * 60
    round_ = 0
    recovery: list[float] = []
    while time.monotonic() < end:
        fills = len(fleet.sim.fills())
        fleet.wait(lambda: len(fleet.sim.fills()) > fills, deadline=180,
                   what=f"trading before fault {round_}")
        name, args = FAULTS[round_ % len(FAULTS)]
        mark = len(fleet.messages(GatewayState))
        t0 = time.monotonic()
        getattr(fleet.sim, name)(**args)
        fleet.wait_gateway("synchronised", after=mark, deadline=180)
        # from the fault to synchronised again, the fault's own length included
        recovery.append(time.monotonic() - t0)
        round_ += 1
    fleet.kill_switch()
    truth = assert_books_match_the_simulator(fleet, deadline=120)
    assert_audit(fleet, ["churn", "mr", "imb"], deadline=180)
    unapproved = unapproved_orders(fleet)
    assert not unapproved, unapproved
    fills, orders = len(fleet.sim.fills()), len({o["order_ref"] for o in fleet.sim.orders()})
    recovery.sort()
    print(f"soak: {(time.monotonic() - started) / 60:.1f} min, {round_} faults, {fills} fills, "
          f"{orders} orders, positions {truth}; fault -> synchronised p50 "
          f"{recovery[len(recovery) // 2]:.2f} s, max {recovery[-1]:.2f} s")
