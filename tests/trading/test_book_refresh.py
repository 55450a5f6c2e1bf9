"""A strategy whose depth book breaks (an update lost or out of place) has IB send the whole
book again, and its book is whole afterwards."""
from __future__ import annotations

from proto.schema import DepthUpdate, Heartbeat
from services.bus.loadgen import wait_until_routed
from services.bus.publisher import Publisher

IMB = "services.strategy.examples.imbalance:ImbalanceMomentum"


def _counter(fleet, src: str, key: str) -> int:
    beats = [h for h in fleet.messages(Heartbeat) if h.src == src]
    return beats[-1].counters.get(key, 0) if beats else 0


def test_a_broken_depth_book_is_refreshed_from_ib(fleet):
    fleet.start_core()
    fleet.add_strategy("imb", IMB, ["AAPL"], {"threshold": 5.0})  # watches, never trades
    fleet.start_strategy("imb")
    fleet.wait(lambda: len([m for m in fleet.messages(DepthUpdate)]) > 50, deadline=90,
               what="depth flowing")
    rogue = Publisher(fleet.ctx, fleet.config.bus.endpoint("bus-in"), "rogue.1")
    assert wait_until_routed(fleet.ctx, rogue, fleet.config.bus.endpoint("bus-out"), 60)
    # a delete of a row the book does not have: what a lost insert looks like downstream
    rogue.publish(DepthUpdate(symbol="AAPL", position=9, operation=2, side=1, price=1.0,
                              size=0.0))
    fleet.wait(lambda: _counter(fleet, "strategy.imb", "book_errors") >= 1, deadline=60,
               what="the strategy to refuse the update")
    fleet.wait(lambda: _counter(fleet, "gateway.1", "depth_refreshes") >= 1, deadline=60,
               what="the gateway to re-request the book")
    # the book heals: errors stop growing while depth keeps coming
    errors = _counter(fleet, "strategy.imb", "book_errors")
    seen = len(fleet.messages(DepthUpdate))
    fleet.wait(lambda: len(fleet.messages(DepthUpdate)) > seen + 200, deadline=120,
               what="more depth after the refresh")
    settled = _counter(fleet, "strategy.imb", "book_errors")
    seen = len(fleet.messages(DepthUpdate))
    fleet.wait(lambda: len(fleet.messages(DepthUpdate)) > seen + 200, deadline=120,
               what="still more depth")
    assert _counter(fleet, "strategy.imb", "book_errors") == settled
    assert settled >= errors
    rogue.close()
