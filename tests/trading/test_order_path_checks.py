"""Every path of an order through risk is checked (issue 12, cases 5, 6, 8 and 10), on real
processes: simulator, bus, gateway, execution, risk. The strategy under test speaks to risk as
the strategy runner does (a reliable client whose source is ``strategy.NAME``), so each intent
is exactly the one the reported case sent; the other strategies are real probe processes. Each
test asserts at the simulator's ledger (nothing placed that should not be, the worst case
within the limit, the other strategy's order untouched) and ends with the audit."""
from __future__ import annotations

import math
import time

from proto.schema import Ack, Heartbeat, OrderIntent, RiskDecision, Tick
from services.bus.reliable import ReliableClient
from tests.support.audit import assert_audit, views
from tests.support.fleet import Fleet, live_orders

PROBE = "tests.support.probe_strategy:Probe"
PASSING = {"stale_market_data", "gateway_not_synchronised"}


class StrategyLink:
    """One strategy's connection to risk, as ``services.strategy.runner`` opens it."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.fleet, self.name = fleet, name
        self.client = ReliableClient(fleet.context_as(f"strategy.{name}"),
                                     fleet.config.bus.endpoint("risk"),
                                     f"strategy.{name}", resend_after=60)
        self.count = 0

    def coid(self) -> str:
        self.count += 1
        return f"{self.name}-t-{self.count}"

    def send(self, *intents: OrderIntent) -> list[RiskDecision | Ack]:
        """Send back to back; each one's answer: its RiskDecision, or the Ack that refused it
        at the door."""
        seqs = [self.client.send(intent) for intent in intents]
        answers: dict[int, RiskDecision | Ack] = {}

        def answered():
            batch = self.client.poll(100)
            for i, msg in enumerate(batch):  # an Ack, then the decision it carries
                if isinstance(msg, Ack) and msg.ref_seq in seqs:
                    follow = batch[i + 1] if i + 1 < len(batch) else None
                    if not msg.ok:
                        answers[msg.ref_seq] = msg
                    elif isinstance(follow, RiskDecision):
                        answers[msg.ref_seq] = follow
            return len(answers) == len(seqs)
        self.fleet.wait(answered, what=f"risk's answers to {self.name}'s intents")
        self.client.nacked.clear()
        return [answers[seq] for seq in seqs]

    def ask(self, intent: OrderIntent) -> RiskDecision:
        [answer] = self.send(intent)
        assert isinstance(answer, RiskDecision), answer
        return answer

    def new(self, side: str, quantity: float, limit: float = math.nan, order_type: str = "LMT",
            stop: float = math.nan, parent: str = "", coid: str = "", transmit: bool = True,
            oca: str = "") -> OrderIntent:
        return OrderIntent(strategy=self.name, client_order_id=coid or self.coid(),
                           action="new", symbol="AAPL", side=side, quantity=quantity,
                           order_type=order_type, limit_price=limit, stop_price=stop,
                           parent_id=parent, oca_group=oca, transmit=transmit)

    def modify(self, coid: str, quantity: float = 0.0, limit: float = math.nan) -> OrderIntent:
        return OrderIntent(strategy=self.name, client_order_id=coid, action="modify",
                           symbol="AAPL", quantity=quantity, limit_price=limit)

    def cancel(self, coid: str) -> OrderIntent:
        return OrderIntent(strategy=self.name, client_order_id=coid, action="cancel",
                           symbol="AAPL")

    def place(self, intent: OrderIntent) -> str:
        """A sound order: sent again (a fresh id) while risk refuses it for a passing reason
        (no mark yet); returns its client order id once approved."""
        while True:
            decision = self.ask(intent)
            if decision.approved:
                return intent.client_order_id
            assert decision.reason in PASSING, decision
            time.sleep(0.5)
            intent = OrderIntent(**{f: getattr(intent, f) for f in intent.__struct_fields__
                                    if f not in ("client_order_id", "src", "seq", "tseq", "ts")},
                                 client_order_id=self.coid())

    def close(self) -> None:
        self.client.close()


def _mid(fleet: Fleet, symbol: str = "AAPL") -> float:
    ticks = fleet.wait(lambda: [t for t in fleet.messages(Tick) if t.symbol == symbol
                                and math.isfinite(t.bid) and math.isfinite(t.ask)],
                       deadline=60, what=f"a {symbol} tick")
    return (ticks[-1].bid + ticks[-1].ask) / 2


def _tick(price: float) -> float:
    return round(price, 2)


def _requests(fleet: Fleet, prefix: str) -> list[dict]:
    """Every place and modify request the simulator received for these orders."""
    return [r for r in fleet.sim.ledger()["order_requests"] if r["order_ref"].startswith(prefix)]


def _at_sim(fleet: Fleet, ref: str) -> dict | None:
    return next((o for o in fleet.sim.orders() if o["order_ref"] == ref), None)


def _worst_case(fleet: Fleet, name: str) -> float:
    """The strategy's position at execution plus every buy it has working at the simulator:
    where it stands if everything fills."""
    held = views(fleet, [])["execution"]["positions"].get(name, {}).get("AAPL", 0.0)
    return held + sum(o["remaining"] for o in live_orders(fleet)
                      if o["order_ref"].startswith(f"{name}-") and o["action"] == "BUY")


def _risk_counters(fleet: Fleet) -> dict:
    beats = [h for h in fleet.messages(Heartbeat) if h.src == "risk.1"]
    return beats[-1].counters if beats else {}


def _counted(fleet: Fleet, reasons: dict[str, int]) -> None:
    fleet.wait(lambda: all(_risk_counters(fleet).get(f"rejected_{r}", 0) >= n
                           for r, n in reasons.items()),
               what=f"risk to count its refusals {reasons}")


def _end(fleet: Fleet, strategies: list[str]) -> None:
    assert_audit(fleet, strategies)
    fleet.kill_switch()
    fleet.wait(lambda: not live_orders(fleet), what="the kill switch to cancel every order")
    assert_audit(fleet, strategies)


# 5 ---------------------------------------------------------------------------------------------
def test_a_child_is_checked_like_any_order_and_needs_an_open_parent_of_its_own(fleet):
    fleet.add_strategy("kid", PROBE, ["AAPL"], {"mode": "echo"}, risk={"max_position": 200})
    fleet.add_strategy("other", PROBE, ["AAPL"], {"mode": "rest_far", "count": 1})
    fleet.start_core()
    fleet.start_strategy("other")
    kid = StrategyLink(fleet, "kid")
    mid = _mid(fleet)
    parent = kid.place(kid.new("BUY", 100, _tick(mid * 0.99)))
    fleet.wait(lambda: (_at_sim(fleet, parent) or {}).get("status") == "Submitted",
               what="the parent working at the simulator")
    # the reported case: a "child" buy of 4,900 on the 100-share parent, limit 200
    child = kid.new("BUY", 4900, _tick(mid * 0.99), parent=parent)
    decision = kid.ask(child)
    assert (decision.approved, decision.reason) == (False, "max_position")
    assert "5000" in decision.text  # the parent's 100 working and the child's 4,900
    # a child whose parent does not exist, or is another strategy's
    orphan = kid.new("SELL", 100, _tick(mid * 1.01), parent="kid-t-999")
    decision = kid.ask(orphan)
    assert (decision.approved, decision.reason) == (False, "unknown_parent")
    other_order = fleet.wait(lambda: [o["order_ref"] for o in live_orders(fleet)
                                      if o["order_ref"].startswith("other-")],
                             deadline=90, what="the other strategy's order working")[0]
    stranger = kid.new("SELL", 10, _tick(mid * 1.01), parent=other_order)
    decision = kid.ask(stranger)
    assert (decision.approved, decision.reason) == (False, "not_owner")
    # a sound exit attached on its own is still an order like any other: approved, placed
    # under its parent, and held by IB until the parent fills
    stop = kid.place(kid.new("SELL", 100, order_type="STP", stop=_tick(mid * 0.95),
                             parent=parent))
    at_sim = fleet.wait(lambda: _at_sim(fleet, stop), what="the exit at the simulator")
    assert at_sim["parent_id"] == _at_sim(fleet, parent)["order_id"]
    _counted(fleet, {"max_position": 1, "unknown_parent": 1, "not_owner": 1})
    # at the broker: none of the refused children, and the worst case within the limit
    refs = {r["order_ref"] for r in _requests(fleet, "kid-")}
    assert refs == {parent, stop}
    assert not refs & {child.client_order_id, orphan.client_order_id,
                       stranger.client_order_id}
    assert _worst_case(fleet, "kid") <= 200
    assert _at_sim(fleet, other_order)["status"] == "Submitted"
    kid.close()
    _end(fleet, ["other"])


# 6 ---------------------------------------------------------------------------------------------
def test_a_modify_is_checked_with_its_new_terms_and_counts_at_once(fleet):
    fleet.add_strategy("mod", PROBE, ["AAPL"], {"mode": "echo"},
                       risk={"max_position": 200, "price_band": 0.05})
    fleet.start_core()
    mod = StrategyLink(fleet, "mod")
    mid = _mid(fleet)
    limit = _tick(mid * 0.99)
    order = mod.place(mod.new("BUY", 100, limit))
    fleet.wait(lambda: (_at_sim(fleet, order) or {}).get("status") == "Submitted",
               what="the order working at the simulator")
    # the reported case: a modify raising 100 to 300 against a limit of 200
    decision = mod.ask(mod.modify(order, quantity=300))
    assert (decision.approved, decision.reason) == (False, "max_position")
    assert "300" in decision.text
    # a raise within the limit counts at once: the next order, sent right behind it, sees
    # 150 working (not the 100 execution still reports until IB confirms)
    late = mod.new("BUY", 100, limit)
    raised, refused = mod.send(mod.modify(order, quantity=150), late)
    assert raised.approved, raised
    assert (refused.approved, refused.reason) == (False, "max_position")
    assert "250" in refused.text
    fleet.wait(lambda: _at_sim(fleet, order)["qty"] == 150, what="the raise at the simulator")
    # a modify's new price is banded too
    decision = mod.ask(mod.modify(order, limit=_tick(mid * 1.2)))
    assert (decision.approved, decision.reason) == (False, "price_band")
    _counted(fleet, {"max_position": 2, "price_band": 1})
    # at the broker: the raise to 150 only; no 300, no far price, no order behind it
    requests = _requests(fleet, "mod-")
    assert [(r["order_ref"], r["qty"], r["lmt_price"]) for r in requests] == \
        [(order, 100, limit), (order, 150, limit)]
    assert _worst_case(fleet, "mod") <= 200
    mod.close()
    _end(fleet, [])


# 8 ---------------------------------------------------------------------------------------------
def test_a_strategy_can_neither_cancel_nor_modify_nor_take_another_strategys_order(fleet):
    fleet.add_strategy("victim", PROBE, ["AAPL"], {"mode": "rest_far", "count": 1})
    fleet.add_strategy("thief", PROBE, ["AAPL"], {"mode": "echo"})
    fleet.start_core()
    fleet.start_strategy("victim")
    target = fleet.wait(lambda: [o for o in live_orders(fleet)
                                 if o["order_ref"].startswith("victim-")],
                        deadline=90, what="the victim's order working")[0]
    coid = target["order_ref"]  # the id is on the bus for anyone to read
    assert any(u.client_order_id == coid for u in fleet.updates("victim"))
    thief = StrategyLink(fleet, "thief")
    for intent in (thief.cancel(coid), thief.modify(coid, quantity=1000),
                   thief.new("SELL", 10, target["lmt_price"], coid=coid)):
        decision = thief.ask(intent)
        assert (decision.approved, decision.reason) == (False, "not_owner"), decision
        assert "another strategy" in decision.text
    # the strategy's name is checked against the connection's: a forged one is refused
    forged = OrderIntent(strategy="victim", client_order_id=coid, action="cancel",
                         symbol="AAPL")
    [ack] = thief.send(forged)
    assert isinstance(ack, Ack) and not ack.ok and "may not send intents" in ack.error
    _counted(fleet, {"not_owner": 3})
    # at the broker the victim's order works on, untouched: one place request, no cancel
    still = _at_sim(fleet, coid)
    assert still["status"] == "Submitted" and still["qty"] == target["qty"]
    assert still["lmt_price"] == target["lmt_price"]
    assert len(_requests(fleet, coid)) == 1
    assert not [c for c in fleet.sim.ledger()["cancels"]
                if c["order_id"] == target["order_id"]]
    assert not _requests(fleet, "thief-")
    thief.close()
    _end(fleet, ["victim"])


# 10 --------------------------------------------------------------------------------------------
def test_quantities_and_prices_the_broker_must_never_see_are_refused(fleet):
    fleet.add_strategy("raw", PROBE, ["AAPL"], {"mode": "echo"})
    fleet.start_core()
    raw = StrategyLink(fleet, "raw")
    mid = _mid(fleet)
    below, above = _tick(mid * 0.99), _tick(mid * 1.03)
    sound = raw.place(raw.new("BUY", 10, below))  # risk has its marks: the rest is decided
    cases = [
        (raw.new("BUY", 5e-10, below), "size_increment"),
        (raw.new("BUY", 10.0000000001, below), "size_increment"),
        (raw.new("BUY", 10, order_type="STP"), "missing_price"),
        (raw.new("BUY", 10, _tick(above + 0.5), order_type="STP LMT"), "missing_price"),
        (raw.new("BUY", 10, order_type="STP LMT", stop=above), "missing_price"),
        (raw.new("BUY", 10), "missing_price"),
        (raw.new("BUY", 10, -1.0), "bad_price"),
        (raw.new("BUY", math.inf, below), "bad_quantity"),
    ]
    for intent, reason in cases:
        decision = raw.ask(intent)
        assert (decision.approved, decision.reason) == (False, reason), (intent, decision)
        assert decision.text
    # a bracket whose stop-loss has no stop price is refused as a whole
    entry = raw.new("BUY", 10, below, transmit=False)
    take = raw.new("SELL", 10, _tick(mid * 1.01), parent=entry.client_order_id,
                   oca="raw-oca", transmit=False)
    stop_loss = raw.new("SELL", 10, order_type="STP", parent=entry.client_order_id,
                        oca="raw-oca")
    answers = raw.send(entry, take, stop_loss)
    assert [(a.approved, a.reason) for a in answers] == [(False, "missing_price")] * 3
    # the stop order with its stop price is a sound one
    stop = raw.place(raw.new("BUY", 10, order_type="STP", stop=above))
    fleet.wait(lambda: _at_sim(fleet, stop), what="the stop order at the simulator")
    _counted(fleet, {"size_increment": 2, "missing_price": 5, "bad_price": 1,
                     "bad_quantity": 1})
    # at the broker: the two sound orders, with their exact terms; nothing else
    requests = _requests(fleet, "raw-")
    assert sorted((r["order_ref"], r["qty"]) for r in requests) == \
        sorted([(sound, 10), (stop, 10)])
    assert _at_sim(fleet, stop)["aux_price"] == above
    raw.close()
    _end(fleet, [])
