"""Fuzzing risk's checks with intents no strategy should send: NaN, infinities, negative and
huge numbers, empty and unicode strings, enum values IB does not spell that way, ids of other
strategies' orders. ``RiskEngine.check`` and ``check_group`` always answer with a Decision,
never an exception; a refused intent (or group) changes no state of the engine, an approved one
only takes a token from the rate bucket."""
from __future__ import annotations

import dataclasses
import math

import msgspec
import pytest
from hypothesis import given, strategies as st

from proto.schema import OrderIntent, StrategyPosition
from services.risk.engine import Decision, RiskEngine
from services.risk.limits import LimitBook, Limits
from services.runtime.instruments import Instruments
from tests.support.instruments import TEST_INSTRUMENTS
from tests.fuzz.support import Tally, long, quick

NOW_NS = 1_764_000_000 * 10**9


def make_engine() -> RiskEngine:
    """An engine with some state to break: open orders of two strategies, a position, marks."""
    engine = RiskEngine(LimitBook(Limits()), Instruments(TEST_INSTRUMENTS), clock=lambda: 1000.0,
                        wall_clock=lambda: NOW_NS)
    engine.gateway_state = "synchronised"
    engine.on_mark("AAPL", 99.99, 100.01)
    engine.on_mark("ES", 5000.0, 5000.25)
    for strategy, coid, symbol, side, qty, price in (
            ("s", "s-1", "AAPL", "BUY", 100.0, 100.0), ("s", "s-2", "ES", "SELL", 2.0, 5000.0),
            ("t", "t-1", "AAPL", "SELL", 50.0, 100.02)):
        intent = OrderIntent(strategy=strategy, client_order_id=coid, action="new",
                             symbol=symbol, side=side, quantity=qty, limit_price=price)
        assert engine.check(intent).approved
        engine.approved(intent)
    engine.on_execution_message(StrategyPosition(strategy="s", symbol="AAPL", quantity=30.0,
                                                 avg_cost=99.0, multiplier=1.0))
    return engine


def _freeze(obj):
    """A comparable picture of a value (NaN-safe: floats by repr, sets sorted)."""
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, (str, int, bool, type(None))):
        return obj
    if isinstance(obj, dict):
        return tuple((_freeze(k), _freeze(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return tuple(sorted(repr(_freeze(v)) for v in obj))
    if isinstance(obj, msgspec.Struct):
        return (type(obj).__name__, _freeze(msgspec.structs.asdict(obj)))
    if dataclasses.is_dataclass(obj):
        return (type(obj).__name__, _freeze({f.name: getattr(obj, f.name)
                                            for f in dataclasses.fields(obj)}))
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, _freeze(vars(obj)))
    return repr(obj)


def snapshot(engine: RiskEngine, buckets: bool = True) -> tuple:
    books = {}
    for name, book in engine.strategies.items():
        fields = {f.name: getattr(book, f.name) for f in dataclasses.fields(book)}
        if not buckets:
            fields.pop("bucket")
        books[name] = fields
    return _freeze({"books": books, "marks": engine.marks, "owners": engine.owners,
                    "global": engine.global_state, "gateway": engine.gateway_state,
                    "breaches": engine.breaches, "notices": engine.notices})


FLOATS = st.one_of(st.floats(), st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 100.0, 100.005, 5000.25, 1e-320, 5e-324, 1e308, -1e308, 1e16,
     2.0**53 + 1, float("nan"), float("inf"), float("-inf"), 10.0000000001, 5e-10]))
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\u00e9", "\U0001F600",
                                                         "\x00", "a" * 200]))


def _enum(valid):
    return st.one_of(st.sampled_from(valid), st.sampled_from([v.lower() for v in valid]), TEXT)


INTENTS = st.builds(
    OrderIntent,
    strategy=st.one_of(st.sampled_from(["s", "t"]), TEXT),
    client_order_id=st.one_of(st.sampled_from(["s-1", "s-2", "t-1", "s-9"]), TEXT),
    action=_enum(["new", "modify", "cancel"]),
    symbol=st.one_of(st.sampled_from(["AAPL", "ES", "EUR.USD", "NOPE"]), TEXT),
    side=_enum(["BUY", "SELL"]),
    quantity=FLOATS,
    order_type=_enum(["MKT", "LMT", "STP", "STP LMT"]),
    limit_price=FLOATS,
    stop_price=FLOATS,
    tif=_enum(["DAY", "GTC", "IOC"]),
    parent_id=st.one_of(st.sampled_from(["", "s-1", "s-2", "t-1", "s-9"]), TEXT),
    oca_group=TEXT,
    transmit=st.booleans(),
)


_FIELDS = {"strategy": st.one_of(st.sampled_from(["s", "t"]), TEXT),
           "client_order_id": st.one_of(st.sampled_from(["s-1", "s-2", "t-1"]), TEXT),
           "action": _enum(["new", "modify", "cancel"]), "symbol": TEXT,
           "side": _enum(["BUY", "SELL"]), "quantity": FLOATS,
           "order_type": _enum(["MKT", "LMT", "STP", "STP LMT"]), "limit_price": FLOATS,
           "stop_price": FLOATS, "tif": _enum(["DAY", "GTC", "IOC"]),
           "parent_id": st.sampled_from(["s-1", "s-2", "t-1", "s-9"])}


@st.composite
def near_valid(draw) -> OrderIntent:
    """A sound intent (new, or a modify of an open order) with one to three fields spoilt:
    these get past the first checks to the deeper ones (size, band, exposure, rate)."""
    base = draw(st.sampled_from([
        dict(strategy="s", client_order_id="s-3", action="new", symbol="AAPL", side="BUY",
             quantity=10.0, limit_price=100.0),
        dict(strategy="s", client_order_id="s-4", action="new", symbol="ES", side="SELL",
             quantity=1.0, order_type="STP LMT", limit_price=5000.0, stop_price=5000.25),
        dict(strategy="s", client_order_id="s-1", action="modify", quantity=150.0),
        dict(strategy="s", client_order_id="s-2", action="modify", limit_price=5001.0),
        dict(strategy="s", client_order_id="s-5", action="new", symbol="AAPL", side="SELL",
             quantity=100.0, limit_price=101.0, parent_id="s-1")]))
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=3)):
        base[name] = draw(_FIELDS[name])
    return OrderIntent(**base)


ANY_INTENT = st.one_of(INTENTS, near_valid())


@st.composite
def groups(draw) -> list[OrderIntent]:
    """A group: mostly one strategy's entry and exits with random terms, sometimes anything."""
    legs = draw(st.lists(ANY_INTENT, min_size=1, max_size=4))
    if draw(st.booleans()):
        entry = legs[0]
        for leg in legs[1:]:
            leg.strategy, leg.symbol = entry.strategy, entry.symbol
            leg.parent_id = draw(st.one_of(st.just(entry.client_order_id), TEXT))
    return legs


VALID = {"action": {"new", "modify", "cancel"}, "side": {"BUY", "SELL"},
         "order_type": {"MKT", "LMT", "STP", "STP LMT"}, "tif": {"DAY", "GTC", "IOC"}}


def assert_sound(intent: OrderIntent) -> None:
    """What an approved intent must be, whatever else it is."""
    assert intent.action in VALID["action"], intent
    if intent.action == "new":
        for name in ("side", "order_type", "tif"):
            assert getattr(intent, name) in VALID[name], intent
    if intent.action != "cancel":
        for price in (intent.limit_price, intent.stop_price):
            assert math.isnan(price) or (math.isfinite(price) and price > 0), intent
        assert math.isfinite(intent.quantity) and intent.quantity >= 0, intent


def check_one(intent: OrderIntent, tally: Tally | None = None) -> None:
    engine = make_engine()
    engine.book(intent.strategy)  # a book is made on first sight of a strategy: not a decision
    before, before_rate_aside = snapshot(engine), snapshot(engine, buckets=False)
    decision = engine.check(intent)
    assert isinstance(decision, Decision)
    if decision.approved:
        assert_sound(intent)
        assert snapshot(engine, buckets=False) == before_rate_aside
    else:
        assert decision.reason and decision.text
        assert snapshot(engine) == before, decision
    if tally:
        tally.note("approved" if decision.approved else decision.reason)


def check_group(legs: list[OrderIntent], tally: Tally | None = None) -> None:
    engine = make_engine()
    for leg in legs:
        engine.book(leg.strategy)
    before, before_rate_aside = snapshot(engine), snapshot(engine, buckets=False)
    decision = engine.check_group(legs)
    assert isinstance(decision, Decision)
    if decision.approved:
        for leg in legs:
            assert_sound(leg)
        assert snapshot(engine, buckets=False) == before_rate_aside
    else:
        assert decision.reason and decision.text
        assert snapshot(engine) == before, decision
    if tally:
        tally.note("approved" if decision.approved else decision.reason)


def test_the_fixture_engine_approves_a_sound_intent():
    check_one(OrderIntent(strategy="s", client_order_id="s-3", action="new", symbol="AAPL",
                          side="BUY", quantity=10.0, limit_price=100.0))
    assert not math.isnan(make_engine().marks["AAPL"][0])


@quick
@given(ANY_INTENT)
def test_any_intent_gets_a_decision_and_a_refusal_changes_nothing(intent):
    check_one(intent)


@quick
@given(groups())
def test_any_group_gets_a_decision_and_a_refusal_changes_nothing(legs):
    check_group(legs)


@pytest.mark.fuzz
def test_risk_check_long():
    tally = Tally("RiskEngine.check")

    @long
    @given(ANY_INTENT)
    def run(intent):
        if tally.go():
            check_one(intent, tally)
    run()
    tally.report()


@pytest.mark.fuzz
def test_risk_check_group_long():
    tally = Tally("RiskEngine.check_group")

    @long
    @given(groups())
    def run(legs):
        if tally.go():
            check_group(legs, tally)
    run()
    tally.report()
