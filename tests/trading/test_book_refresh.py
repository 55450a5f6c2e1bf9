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
    # market data comes from the gateway's key only (the broker drops it from any other):
    # a rogue update as a buggy gateway would send it
    rogue_ctx = fleet.context_as("gateway")
    rogue = Publisher(rogue_ctx, fleet.config.bus.endpoint("bus-in"), "rogue.1")
    assert wait_until_routed(rogue_ctx, rogue, fleet.config.bus.endpoint("bus-out"), 60)
    # an update the book must refuse; it resets the book, after which IB's next row updates
    # no longer fit, as after a lost message, until the book is sent afresh
    rogue.publish(DepthUpdate(symbol="AAPL", position=0, operation=1, side=1, price=1.0,
                              size=-5.0))
    fleet.wait(lambda: _counter(fleet, "strategy.imb", "book_errors") >= 1, deadline=60,
               what="the strategy to refuse the update")
    fleet.wait(lambda: _counter(fleet, "gateway.1", "depth_refreshes") >= 1, deadline=60,
               what="the gateway to re-request the book")
    # the book heals: a stretch of 300 depth updates with no new error
    # (and three heartbeats, so the counter it reports has caught up)
    window = {"errors": -1, "depth": 0, "beats": 0}

    def quiet_stretch() -> bool:
        errors = _counter(fleet, "strategy.imb", "book_errors")
        depth = len(fleet.messages(DepthUpdate))
        beats = len([h for h in fleet.messages(Heartbeat) if h.src == "strategy.imb"])
        if errors != window["errors"]:
            window.update(errors=errors, depth=depth, beats=beats)  # start the stretch again
            return False
        return depth - window["depth"] >= 300 and beats - window["beats"] >= 3

    fleet.wait(quiet_stretch, deadline=180, what="300 depth updates in a row that fit the book")
    rogue.close()
