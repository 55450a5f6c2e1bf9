"""One strategy's bad TOML affects only that strategy (issue 15, finding 4), on real
processes: simulator, bus, gateway, execution, risk and strategy processes.

Three strategy files in risk's folder; the middle one (by name) misspells a risk key
(``max_postion``). Risk reads each file on its own (``LimitBook.load_strategy_budgets``): the
strategies before and after it keep their budgets (an order above their
``max_order_quantity = 50`` is refused, one under it approved), and the bad one gets no
budget at all: not the global limits, not "unlimited", but every intent refused
(``budget_refused``), with a critical alert naming the file and the key. Its own process
refuses to start on the same file. The same holds for files added while risk runs: a bad one
and a good one after it, whose first order risk checks against its own budget (risk reads a
strategy's file before deciding its first intent, not only on its 2 s rescan).
"""
from __future__ import annotations

from proto.schema import Ack, OrderIntent, RiskDecision
from services.bus.reliable import ReliableClient
from tests.support.fleet import Fleet, unapproved_orders

PROBE = "tests.support.probe_strategy:Probe"
FAR = -100  # ticks under the mid: the approved orders rest, never fill
BUDGET = {"max_order_quantity": 50, "max_position": 500, "order_rate": 50, "order_burst": 50}


def _intents(*quantities: float) -> list[dict]:
    return [{"quantity": q, "ticks_from_mid": FAR} for q in quantities]


def test_a_misspelt_risk_key_refuses_that_strategy_only(fleet: Fleet):
    fleet.add_strategy("a_first", PROBE, ["AAPL"], {"mode": "intents",
                                                    "intents": _intents(60, 10)}, risk=BUDGET)
    fleet.add_strategy("b_bad", PROBE, ["AAPL"], {"mode": "intents", "intents": _intents(10)},
                       risk={"max_postion": 100, "max_order_quantity": 50})
    fleet.add_strategy("c_last", PROBE, ["AAPL"], {"mode": "intents",
                                                   "intents": _intents(199, 10)}, risk=BUDGET)
    fleet.start_core()
    alerts = fleet.wait(lambda: [a for a in fleet.alerts("budget_refused")], deadline=60,
                        what="risk's alert about the bad file")
    assert "b_bad.toml" in alerts[0].text and "max_postion" in alerts[0].text

    # the bad strategy's own process refuses its file too (no crash loop of a half-read one)
    bad = fleet.start_strategy("b_bad")
    assert bad.wait(60) != 0
    assert "max_postion" in fleet.procs.log("strategy-b_bad")

    for name in ("a_first", "c_last"):
        fleet.start_strategy(name)

    def decided(name: str) -> tuple[set[str], int]:
        ds = fleet.decisions(name)
        return {d.reason for d in ds if not d.approved}, sum(d.approved for d in ds)

    for name in ("a_first", "c_last"):
        fleet.wait(lambda: "max_order_quantity" in decided(name)[0] and decided(name)[1] >= 1,
                   deadline=90, what=f"{name}'s oversized order refused and its small one "
                                     f"approved")
    # at the broker: only the small orders, nothing above max_order_quantity
    fleet.wait(lambda: {o["order_ref"].split("-")[0] for o in fleet.sim.orders()}
               >= {"a_first", "c_last"}, what="the approved orders at the simulator")
    assert _placed_within_budget(fleet)

    # the bad one, speaking to risk as its runner would: no budget means refused, always
    link = ReliableClient(fleet.context_as("strategy.b_bad"), fleet.config.bus.endpoint("risk"),
                          "strategy.b_bad", resend_after=60)
    try:
        mid = fleet.sim.quote(265598)
        price = round((mid["bid"] + mid["ask"]) / 2 - 1.0, 2)
        for n, quantity in enumerate((10, 1)):
            seq = link.send(OrderIntent(strategy="b_bad", client_order_id=f"b_bad-t-{n}",
                                        action="new", symbol="AAPL", side="BUY",
                                        quantity=quantity, order_type="LMT",
                                        limit_price=price))
            answers: list = []

            def answered():
                answers.extend(link.poll(100))
                return any(isinstance(m, RiskDecision) for m in answers) or any(
                    isinstance(m, Ack) and m.ref_seq == seq and not m.ok for m in answers)
            fleet.wait(answered, what="risk's answer to the bad strategy's intent")
            decision = next((m for m in answers if isinstance(m, RiskDecision)), None)
            assert decision is not None and not decision.approved, answers
            assert decision.reason == "budget_refused" and "max_postion" in decision.text
    finally:
        link.close()

    # added while risk runs, a bad file and a good one after it, the good one starting at
    # once: its first order is checked against its own budget, never the global limits
    fleet.add_strategy("b_worse", PROBE, ["AAPL"], {"mode": "intents", "intents": _intents(10)},
                       risk={"max_order_quantty": 50})
    fleet.add_strategy("d_after", PROBE, ["AAPL"], {"mode": "intents",
                                                    "intents": _intents(199, 10)}, risk=BUDGET)
    fleet.start_strategy("d_after")
    fleet.wait(lambda: "max_order_quantity" in decided("d_after")[0]
               and decided("d_after")[1] >= 1, deadline=90,
               what="d_after's oversized order refused and its small one approved")
    fleet.wait(lambda: any("b_worse.toml" in a.text for a in fleet.alerts("budget_refused")),
               what="risk's alert about the second bad file")
    fleet.pump(200)
    assert not any(d.approved for d in fleet.decisions("b_bad"))
    assert not any(d.approved for d in fleet.decisions("b_worse"))
    assert not any(o["order_ref"].startswith("b_bad") for o in fleet.sim.orders())
    fleet.wait(lambda: any(o["order_ref"].startswith("d_after") for o in fleet.sim.orders()),
               what="d_after's small order at the simulator")
    assert _placed_within_budget(fleet)
    assert not unapproved_orders(fleet)


def _placed_within_budget(fleet: Fleet) -> bool:
    """Every order of the fleet at the simulator is within max_order_quantity = 50."""
    placed = [o for o in fleet.sim.orders() if o["order_ref"]]
    assert placed and all(o["qty"] <= 50 for o in placed), placed
    return True
