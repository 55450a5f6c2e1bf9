"""Two strategies whose names share a prefix ("hold" and "hold1") each see only their own orders
and position. ZeroMQ matches topics by prefix: before exact subscriptions, strategy "hold"
received and mirrored "hold1"'s position (``ord.update.hold1`` extends ``ord.update.hold``) and
so never bought its own."""
from __future__ import annotations

from proto.schema import Heartbeat
from tests.support.audit import assert_audit
from tests.support.fleet import sim_positions

PROBE = "tests.support.probe_strategy:Probe"


def _position_abs(fleet, name: str):
    beats = [h for h in fleet.messages(Heartbeat) if h.src == f"strategy.{name}"]
    return beats[-1].counters.get("position_abs") if beats else None


def test_strategies_whose_names_share_a_prefix_keep_their_own_positions(fleet):
    fleet.start_core()
    fleet.add_strategy("hold1", PROBE, ["AAPL"], {"mode": "target", "target": 30})
    fleet.start_strategy("hold1")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 30, deadline=90,
               what="hold1 to reach its target at the simulator")
    fleet.add_strategy("hold", PROBE, ["AAPL"], {"mode": "target", "target": 10})
    fleet.start_strategy("hold")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 40, deadline=90,
               what="hold to buy its own 10 (it must not count hold1's 30 as its own)")
    fleet.wait(lambda: _position_abs(fleet, "hold") == 10 and _position_abs(fleet, "hold1") == 30,
               deadline=60, what="each strategy to report its own position")
    assert_audit(fleet, ["hold", "hold1"])
