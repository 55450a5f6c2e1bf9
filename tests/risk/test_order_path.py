"""Every path of an order through risk is checked (issue 12, item 5): a child sent on its own,
a group's legs, a modify with its new terms, a cancel of another strategy's order, quantities
and prices the broker must never see. Each refusal carries its reason and changes nothing."""
from __future__ import annotations

import copy
import math

import pytest

from proto.schema import OrderIntent, OrderUpdate, StrategyPosition
from services.risk.engine import REDUCING, GroupDesk, RiskEngine
from services.risk.limits import LimitBook, Limits
from services.runtime.instruments import Instruments
from tests.support.instruments import TEST_INSTRUMENTS

NOW_NS = 1_764_000_000 * 10**9


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _engine(**limits) -> RiskEngine:
    engine = RiskEngine(LimitBook(Limits(**limits)), Instruments(TEST_INSTRUMENTS), clock=Clock(),
                        wall_clock=lambda: NOW_NS)
    engine.gateway_state = "synchronised"
    engine.on_mark("AAPL", 99.99, 100.01)
    engine.on_mark("MSFT", 399.99, 400.01)
    engine.on_mark("EUR.USD", 1.09995, 1.10005)
    return engine


def _new(coid, qty=100.0, side="BUY", price=100.0, strategy="s", symbol="AAPL", parent="",
         order_type="LMT", stop=math.nan, tif="DAY", transmit=True, oca=""):
    return OrderIntent(strategy=strategy, client_order_id=coid, action="new", symbol=symbol,
                       side=side, quantity=qty, order_type=order_type, limit_price=price,
                       stop_price=stop, tif=tif, parent_id=parent, transmit=transmit,
                       oca_group=oca)


def _modify(coid, qty=0.0, price=math.nan, strategy="s"):
    return OrderIntent(strategy=strategy, client_order_id=coid, action="modify",
                       symbol="AAPL", quantity=qty, limit_price=price)


def _cancel(coid, strategy="s"):
    return OrderIntent(strategy=strategy, client_order_id=coid, action="cancel", symbol="AAPL")


def _working_order(engine, coid, qty=100.0, side="BUY", price=100.0, strategy="s",
                   state="submitted", filled=0.0, parent="", reason=""):
    """An order as execution reports it (``ord.update.STRATEGY``)."""
    engine.on_execution_message(OrderUpdate(
        strategy=strategy, client_order_id=coid, state=state, symbol="AAPL", side=side,
        quantity=qty, filled=filled, limit_price=price, parent_id=parent, reason=reason))


def _held(engine, qty, strategy="s", symbol="AAPL"):
    engine.on_execution_message(StrategyPosition(strategy=strategy, symbol=symbol,
                                                 quantity=qty, avg_cost=100.0))


def _state(engine):
    """Everything a refusal must leave as it was."""
    return copy.deepcopy({
        name: (dict(b.open_orders), dict(b.working), dict(b.counted), dict(b.modifying),
               b.bucket.tokens, b.bucket.at, b.state)
        for name, b in engine.strategies.items()}), dict(engine.owners)


def _refused(engine, intent, reason):
    engine.book(intent.strategy)  # a book made on first sight is not a change
    before = _state(engine)
    decision = engine.check(intent)
    assert not decision.approved, decision
    assert decision.reason == reason, decision
    assert decision.text
    assert _state(engine) == before  # a refusal changes nothing
    return decision


def _approve(engine, intent):
    decision = engine.check(intent)
    assert decision.approved, decision
    engine.approved(intent)


# -- case 5: a child is an order like any other ------------------------------------------------
def test_a_lone_child_on_the_parents_side_counts_fully_toward_the_position_limit():
    engine = _engine(max_position=200)
    _approve(engine, _new("p", qty=100))
    decision = _refused(engine, _new("c", qty=4900, parent="p"), "max_position")
    assert "5000" in decision.text  # 0 held + 100 working (the parent) + 4,900
    assert set(engine.book("s").open_orders) == {"p"}


def test_two_lone_children_together_cannot_pass_the_position_limit():
    engine = _engine(max_position=200)
    _approve(engine, _new("p", qty=50))
    _approve(engine, _new("c1", qty=100, parent="p"))  # 50 + 100 = 150: within
    assert engine.book("s").working[("AAPL", True)] == 150
    decision = _refused(engine, _new("c2", qty=100, parent="p"), "max_position")
    assert "250" in decision.text


def test_a_lone_child_gets_the_price_band_and_the_exposure_checks():
    engine = _engine(price_band=0.05, max_gross_exposure=15_000)
    _approve(engine, _new("p", qty=100))
    _refused(engine, _new("c", qty=100, side="SELL", price=120.0, parent="p"), "price_band")
    decision = _refused(engine, _new("c", qty=200, parent="p"), "max_gross_exposure")
    assert "20,000" in decision.text  # 200 x 100: only the new child adds (nothing held)


def test_a_lone_exit_closes_what_its_open_parent_opens_and_weighs_once_the_parent_is_done():
    engine = _engine(max_position=200)
    _approve(engine, _new("p", qty=100))
    _approve(engine, _new("x", qty=100, side="SELL", price=99.0, parent="p"))
    book = engine.book("s")
    assert book.working.get(("AAPL", False), 0.0) == 0  # it only closes the parent's 100
    _working_order(engine, "p", qty=100, state="filled", filled=100)  # the parent is done
    _held(engine, 100)
    assert book.working[("AAPL", False)] == -100  # the exit now works on its own
    # an exit bigger than its parent weighs by the excess
    _approve(engine, _new("p2", qty=100, price=99.0))
    decision = _refused(engine, _new("x2", qty=400, side="SELL", price=99.0, parent="p2"),
                        "max_position")
    assert "-300" in decision.text  # 100 held - 100 (exit x) - (400 - 100)


def test_a_child_needs_an_open_parent_of_its_own_strategy_in_its_instrument():
    engine = _engine()
    decision = _refused(engine, _new("c", parent="ghost"), "unknown_parent")
    assert "ghost" in decision.text and "not an order" in decision.text
    _approve(engine, _new("t-1", strategy="t"))
    decision = _refused(engine, _new("c", parent="t-1"), "not_owner")
    assert "another strategy" in decision.text
    _approve(engine, _new("done"))
    _working_order(engine, "done", state="cancelled")
    decision = _refused(engine, _new("c", parent="done"), "unknown_parent")
    assert "no longer open" in decision.text
    _approve(engine, _new("m", symbol="MSFT", price=400.0))
    _refused(engine, _new("c", parent="m"), "bad_parent")


# -- groups: the legs are checked too -----------------------------------------------------------
def _bracket(strategy="s", entry_qty=100.0, take_qty=100.0, stop=98.0, take_price=102.0):
    return [_new("p", qty=entry_qty, strategy=strategy, transmit=False),
            _new("tp", qty=take_qty, side="SELL", price=take_price, strategy=strategy,
                 parent="p", oca="p-oca", transmit=False),
            _new("sl", side="SELL", price=math.nan, order_type="STP", stop=stop,
                 strategy=strategy, parent="p", oca="p-oca")]


def test_a_groups_exits_get_the_terms_and_size_checks():
    engine = _engine()
    assert engine.check_group(_bracket()).approved
    decision = engine.check_group(_bracket(stop=math.nan))
    assert decision.reason == "missing_price" and "exit sl" in decision.text
    assert "needs a stop price" in decision.text
    decision = engine.check_group(_bracket(entry_qty=200, take_qty=10.0000000001))
    assert decision.reason == "size_increment" and "exit tp" in decision.text
    assert engine.check_group(_bracket(take_price=-1.0)).reason == "bad_price"


def test_a_group_is_one_strategys_and_one_that_never_transmits_is_refused():
    engine = _engine()
    legs = _bracket()
    legs[1] = _new("tp", side="SELL", price=102.0, strategy="t", parent="p", transmit=False)
    assert engine.check_group(legs).reason == "bad_group"
    assert engine.check_group([_new("p", transmit=False)]).reason == "bad_group"


def test_a_refused_group_changes_nothing_not_even_the_rate():
    engine = _engine(max_open_orders=2, order_rate=1, order_burst=1)
    engine.check(_cancel("nothing"))  # makes the book
    before = _state(engine)
    assert engine.check_group(_bracket()).reason == "max_open_orders"
    assert _state(engine) == before
    assert engine.check(_new("single")).approved  # the one token is still there


def test_a_leg_of_another_strategy_never_joins_a_held_group():
    desk = GroupDesk()
    assert desk.add(_new("p", transmit=False), "s-token", 0.0) is None
    intruder = _new("x", side="SELL", strategy="t", parent="p")
    assert not desk.wants(intruder)  # checked alone: its parent is not its own (see above)
    held_intruder = _new("p", strategy="t", transmit=False)  # the same group id, held
    assert desk.add(held_intruder, "t-token", 0.0) == [(held_intruder, "t-token")]
    assert [leg.strategy for leg, _ in desk.legs["p"]] == ["s"]
    engine = _engine()
    assert engine.check_group([held_intruder]).reason == "bad_group"


# -- case 6: a modify is checked with its new terms, and counts at once -------------------------
def test_a_modify_that_raises_the_quantity_is_checked_with_it():
    engine = _engine(max_position=200, max_order_quantity=1000)
    _working_order(engine, "o", qty=100)
    decision = _refused(engine, _modify("o", qty=300), "max_position")
    assert "300" in decision.text  # 0 held + 300: the order's old 100 replaced, not added
    _refused(engine, _modify("o", qty=2000), "max_order_quantity")
    _refused(engine, _modify("o", qty=10.0000000001), "size_increment")
    _refused(engine, _modify("o", qty=-5), "bad_quantity")
    _refused(engine, _modify("o", qty=math.nan), "bad_quantity")
    _refused(engine, _modify("o", price=120.0), "price_band")
    _refused(engine, _modify("o", price=math.inf), "bad_price")
    _refused(engine, _modify("o", price=100.005), "min_tick")
    assert engine.check(_modify("o", qty=200)).approved


def test_a_raised_quantity_counts_as_soon_as_it_is_approved_until_execution_settles_it():
    engine = _engine(max_position=200)
    _working_order(engine, "o", qty=100)
    book = engine.book("s")
    _approve(engine, _modify("o", qty=150))
    assert book.working[("AAPL", True)] == 150  # at once, before execution has it
    decision = _refused(engine, _new("n", qty=100), "max_position")
    assert "250" in decision.text  # not 200: the old quantity is not the worst case
    # execution sends it (its update still carries the terms in force: 100)
    _working_order(engine, "o", qty=100, state="pending_modify")
    assert book.working[("AAPL", True)] == 150
    _working_order(engine, "o", qty=150)  # IB confirmed it
    assert book.working[("AAPL", True)] == 150 and not book.modifying
    # a raise IB refuses: the order works on at its old quantity
    _approve(engine, _modify("o", qty=200))
    assert book.working[("AAPL", True)] == 200
    _working_order(engine, "o", qty=150, state="pending_modify")
    _working_order(engine, "o", qty=150, reason="modify refused: 110: price increment")
    assert book.working[("AAPL", True)] == 150 and not book.modifying
    # a raise execution refuses
    _approve(engine, _modify("o", qty=180))
    engine.execution_refused(_modify("o", qty=180))
    assert book.working[("AAPL", True)] == 150 and not book.modifying


def test_a_modify_that_does_not_raise_the_quantity_is_not_refused_for_the_position():
    engine = _engine(max_position=200, daily_loss_limit=0)
    _working_order(engine, "o", qty=100)
    _held(engine, 250)  # beyond the limit (the limit was lowered, say)
    assert engine.check(_modify("o", qty=50)).approved
    assert engine.check(_modify("o", price=99.5)).approved
    _refused(engine, _modify("o", qty=120), "max_position")


def test_a_modify_while_reducing_only_may_not_raise_beyond_reducing():
    engine = _engine()
    _held(engine, 100)
    _working_order(engine, "o", qty=50, side="SELL")
    engine.book("s").state = REDUCING
    assert engine.check(_modify("o", qty=80)).approved  # still only reduces the 100
    _refused(engine, _modify("o", qty=150), "reducing_only")  # would turn it short


def test_a_modify_below_what_is_filled_is_refused():
    engine = _engine()
    _working_order(engine, "o", qty=100, state="partially_filled", filled=60)
    decision = _refused(engine, _modify("o", qty=50), "bad_quantity")
    assert "60" in decision.text


# -- case 8: only a strategy's own orders ------------------------------------------------------
def test_a_strategy_may_not_cancel_or_modify_another_strategys_order():
    engine = _engine()
    _working_order(engine, "t-1", strategy="t")
    decision = _refused(engine, _cancel("t-1"), "not_owner")
    assert "another strategy" in decision.text and "cancel its own" in decision.text
    _refused(engine, _modify("t-1", qty=1000), "not_owner")
    _refused(engine, _new("t-1"), "not_owner")  # nor take its client order id
    assert engine.check(_cancel("t-1", strategy="t")).approved


def test_a_cancel_needs_an_open_order_of_the_strategy():
    engine = _engine()
    decision = _refused(engine, _cancel("ghost"), "unknown_order")
    assert "ghost" in decision.text
    _working_order(engine, "o", state="filled", filled=100)
    decision = _refused(engine, _cancel("o"), "unknown_order")
    assert "no longer open" in decision.text
    _refused(engine, _new("o"), "duplicate_order_id")  # execution would take it for a resend
    _approve(engine, _new("fresh"))
    assert engine.check(_cancel("fresh")).approved  # approved, not yet reported: its own


def test_an_id_execution_refused_may_be_used_again():
    engine = _engine()
    _approve(engine, _new("x"))
    engine.execution_refused(_new("x"))
    assert not engine.book("s").open_orders and "x" not in engine.owners
    assert engine.check(_new("x")).approved


# -- case 10: what the broker must never see ---------------------------------------------------
@pytest.mark.parametrize("intent,reason", [
    (_new("q", qty=5e-10), "size_increment"),
    (_new("q", qty=10.0000000001), "size_increment"),
    (_new("q", qty=0.5), "size_increment"),
    (_new("q", qty=1500, symbol="EUR.USD", price=1.1), "size_increment"),
    (_new("q", qty=math.inf), "bad_quantity"),
    (_new("q", qty=math.nan), "bad_quantity"),
    (_new("q", qty=-100), "bad_quantity"),
    (_new("q", order_type="STP", price=math.nan), "missing_price"),
    (_new("q", order_type="STP LMT", stop=99.0, price=math.nan), "missing_price"),
    (_new("q", order_type="STP LMT", price=99.0), "missing_price"),
    (_new("q", price=math.nan), "missing_price"),
    (_new("q", price=-1.0), "bad_price"),
    (_new("q", order_type="STP", price=math.nan, stop=math.inf), "bad_price"),
    (_new("q", side="buy"), "bad_terms"),
    (_new("q", order_type="LIMIT"), "bad_terms"),
    (_new("q", tif="GTD"), "bad_terms"),
], ids=["5e-10", "10.0000000001", "half", "fx-1500", "inf", "nan", "negative", "stp-no-stop",
        "stplmt-no-limit", "stplmt-no-stop", "lmt-no-limit", "negative-limit", "inf-stop",
        "lower-case-side", "type", "tif"])
def test_what_the_broker_must_never_see_is_refused(intent, reason):
    _refused(_engine(), intent, reason)


def test_a_stop_order_names_the_price_it_misses():
    engine = _engine()
    text = engine.check(_new("q", order_type="STP", price=math.nan)).text
    assert text == "a STP order needs a stop price"
    text = engine.check(_new("q", order_type="STP LMT", stop=99.0, price=math.nan)).text
    assert text == "a STP LMT order needs a limit price"


@pytest.mark.parametrize("intent", [
    _new("ok", qty=1), _new("ok", qty=10.0), _new("ok", qty=2000, symbol="EUR.USD", price=1.1),
    _new("ok", order_type="MKT", price=math.nan),
    _new("ok", order_type="STP", price=math.nan, stop=101.0),
    _new("ok", order_type="STP LMT", price=101.5, stop=101.0),
], ids=["1", "10.0", "fx-2000", "mkt", "stp", "stplmt"])
def test_sound_sizes_and_order_types_pass(intent):
    assert _engine().check(intent).approved


def test_the_size_increment_is_exact_as_the_broker_gets_it():
    info = Instruments(TEST_INSTRUMENTS).get("AAPL")
    assert info.size_increment == 1.0
    assert [info.on_size_increment(q) for q in (1, 100.0, 5e-10, 10.0000000001, 0.0, -1.0,
                                                 math.nan, math.inf, 1e40)] == \
        [True, True, False, False, False, False, False, False, False]
    fractional = Instruments({"XYZ": {"min_tick": 0.01, "lot_size": 0.1}}).get("XYZ")
    assert fractional.on_size_increment(0.3) and not fractional.on_size_increment(0.1 * 3)
