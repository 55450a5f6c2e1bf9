"""The reducing-order rule (issue 15, finding 9; ``RiskEngine._opening``): the order-size
limits count what an order could open, so a close (or a protective stop) of a position larger
than ``max_order_quantity`` is approved, while an order that would take the position beyond
zero by more than the limit is still refused. Real processes: simulator, bus, gateway,
execution, risk; the test speaks to risk as the strategy runner does (a reliable client whose
source is ``strategy.NAME``) and asserts at the simulator."""
from __future__ import annotations

import math
import time

from proto.schema import Ack, OrderIntent, RiskDecision, Tick
from services.bus.reliable import ReliableClient
from tests.support.fleet import Fleet, execution_positions, live_orders, sim_positions

PROBE = "tests.support.probe_strategy:Probe"
PASSING = {"stale_market_data", "gateway_not_synchronised"}  # refused for now, not for good


class Link:
    """One strategy's connection to risk, as ``services.strategy.runner`` opens it."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.fleet, self.name, self.count = fleet, name, 0
        self.client = ReliableClient(fleet.context_as(f"strategy.{name}"),
                                     fleet.config.bus.endpoint("risk"), f"strategy.{name}",
                                     resend_after=60)

    def intent(self, side: str, quantity: float, order_type: str = "MKT",
               stop: float = math.nan, action: str = "new", coid: str = "") -> OrderIntent:
        if not coid:
            self.count += 1
            coid = f"{self.name}-r-{self.count}"
        return OrderIntent(strategy=self.name, client_order_id=coid, action=action,
                           symbol="AAPL", side=side, quantity=quantity, order_type=order_type,
                           stop_price=stop)

    def ask(self, intent: OrderIntent) -> RiskDecision:
        seq = self.client.send(intent)
        answer: list[RiskDecision] = []

        def answered():
            batch = self.client.poll(100)
            for i, msg in enumerate(batch):  # an Ack, then the decision it carries
                if isinstance(msg, Ack) and msg.ref_seq == seq:
                    assert msg.ok, msg
                    follow = batch[i + 1] if i + 1 < len(batch) else None
                    if isinstance(follow, RiskDecision):
                        answer.append(follow)
            return answer
        self.fleet.wait(answered, what=f"risk's answer to {intent.client_order_id}")
        return answer[0]

    def decide(self, side: str, quantity: float, **kw) -> RiskDecision:
        """Risk's decision, asked again (a new id) while it refuses for a passing reason."""
        while True:
            decision = self.ask(self.intent(side, quantity, **kw))
            if decision.reason not in PASSING:
                return decision
            time.sleep(0.5)  # the gateway or the first mark is on its way: ask again

    def close(self) -> None:
        self.client.close()


def approved(fleet: Fleet) -> set[str]:
    return {d.client_order_id for d in fleet.decisions("closer") if d.approved}


def _mid(fleet: Fleet) -> float:
    ticks = fleet.wait(lambda: [t for t in fleet.messages(Tick) if t.symbol == "AAPL"
                                and math.isfinite(t.bid) and math.isfinite(t.ask)],
                       what="an AAPL tick")
    return (ticks[-1].bid + ticks[-1].ask) / 2


def test_a_close_above_the_order_size_limit_is_approved_a_flip_beyond_it_refused(fleet):
    fleet.add_strategy("closer", PROBE, ["AAPL"], {"mode": "echo"},
                       risk={"max_order_quantity": 50, "order_rate": 100,
                             "order_burst": 100})
    fleet.start_core()
    link = Link(fleet, "closer")
    try:
        # 199 shares, each order within the limit
        for quantity in (50, 50, 50, 49):
            decision = link.decide("BUY", quantity)
            assert decision.approved, decision
        fleet.wait(lambda: execution_positions(fleet) == {"AAPL": 199}
                   and sim_positions(fleet) == {"AAPL": 199}, deadline=90,
                   what="a position of 199 at execution and at the simulator")
        # beyond zero by 101 > 50: refused, and it never reaches the broker. Risk mirrors
        # execution's positions a moment later: asked again (refused each time) until its
        # answer shows it counts from the whole 199 ("would open 101")
        def flip_refused():
            decision = link.decide("SELL", 300)
            assert (decision.approved, decision.reason) == (False, "max_order_quantity"), \
                decision
            return decision if "open 101 " in decision.text else None
        flip = fleet.wait(flip_refused, what="risk to refuse SELL 300 from a position of 199")
        # a protective stop of the whole position is approved (199 > 50, all of it closing)
        stop = link.decide("SELL", 199, order_type="STP", stop=round(_mid(fleet) * 0.9, 2))
        assert stop.approved, stop
        fleet.wait(lambda: any(o["order_ref"] == stop.client_order_id
                               for o in live_orders(fleet)),
                   what="the protective stop working at the simulator")
        cancel = link.ask(link.intent("SELL", 0, action="cancel",
                                      coid=stop.client_order_id))
        assert cancel.approved, cancel
        fleet.wait(lambda: not live_orders(fleet), what="the stop cancelled")
        # the close: SELL 199 at market, approved and filled: flat
        close = link.decide("SELL", 199)
        assert close.approved, close
        fleet.wait(lambda: sim_positions(fleet) == {} and execution_positions(fleet) == {},
                   deadline=90, what="the close filled: flat at the simulator and execution")
        # from flat, nothing closes: the limit counts the whole order again
        opening = link.decide("BUY", 60)
        assert (opening.approved, opening.reason) == (False, "max_order_quantity"), opening
        refs = {o["order_ref"] for o in fleet.sim.orders()}
        assert not any(r.startswith("closer-") and r not in approved(fleet) for r in refs)
        assert flip.client_order_id not in refs and opening.client_order_id not in refs
        assert close.client_order_id in refs
    finally:
        link.close()
