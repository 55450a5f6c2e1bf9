"""Every risk check rejects what it should, with a machine-readable reason and a sentence."""
from __future__ import annotations

import math

import pytest

from proto.schema import OrderIntent, OrderUpdate, StrategyDigest, StrategyPosition
from services.model.orders import OrderSide
from services.model.portfolio import Fill, Portfolio
from services.risk.engine import ACTIVE, HALTED, REDUCING, RiskEngine
from services.risk.limits import LimitBook, Limits
from services.runtime.instruments import Instruments
from tests.support.instruments import TEST_INSTRUMENTS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


NOW_NS = 1_764_000_000 * 10**9  # 2025-11-24 16:00 UTC, 11:00 in New York


class WallClock:
    def __init__(self) -> None:
        self.now = NOW_NS

    def __call__(self) -> int:
        return self.now


def _engine(**limits) -> tuple[RiskEngine, Clock]:
    clock = Clock()
    engine = RiskEngine(LimitBook(Limits(**limits)), Instruments(TEST_INSTRUMENTS), clock=clock,
                        wall_clock=WallClock())
    engine.portfolio = Portfolio(Instruments(TEST_INSTRUMENTS))  # execution's numbers, made by the model
    engine.gateway_state = "synchronised"
    engine.on_mark("AAPL", 99.99, 100.01)
    engine.on_mark("ES", 5000.0, 5000.25)
    return engine, clock


def _intent(qty=100.0, price=100.0, side="BUY", symbol="AAPL", action="new", coid="s-1",
            order_type="LMT", parent=""):
    return OrderIntent(strategy="s", client_order_id=coid, action=action, symbol=symbol,
                       side=side, quantity=qty, order_type=order_type, limit_price=price,
                       parent_id=parent)


def _fill(engine, qty, price=100.0, side="BUY", exec_id="e1", symbol="AAPL", commission=0.0,
          t_ns=NOW_NS):
    """A fill as risk learns it: execution books it (the model) and publishes its position."""
    portfolio = engine.portfolio
    portfolio.book_fill(Fill(exec_id, "s", symbol, OrderSide.parse(side), qty, price, t_ns))
    portfolio.book_commission(exec_id, commission)
    v = portfolio.view("s", symbol, engine.wall_clock())
    engine.on_execution_message(StrategyPosition(
        strategy="s", symbol=symbol, quantity=v.quantity, avg_cost=v.avg_cost,
        realized=v.realized, commissions=v.commissions, realized_day=v.realized_day,
        trading_day=v.trading_day, multiplier=v.multiplier))


def test_a_sound_intent_is_approved():
    engine, _ = _engine()
    assert engine.check(_intent()).approved


@pytest.mark.parametrize("limits,intent,reason", [
    ({"max_order_quantity": 50}, _intent(qty=100), "max_order_quantity"),
    ({"max_order_notional": 5_000}, _intent(qty=100), "max_order_notional"),
    ({}, _intent(price=100.005), "min_tick"),
    ({}, _intent(qty=0), "bad_quantity"),
    ({}, _intent(qty=1500, symbol="EUR.USD", price=1.1), "size_increment"),
    ({}, _intent(symbol="NOPE"), "unknown_symbol"),
    ({"price_band": 0.05}, _intent(price=120.0), "price_band"),
    ({"max_position": 50}, _intent(qty=100), "max_position"),
    ({"max_gross_exposure": 5_000}, _intent(qty=100), "max_gross_exposure"),
    ({}, _intent(order_type="LMT", price=math.nan), "missing_price"),
    ({}, _intent(action="modify", coid="unknown"), "unknown_order"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_each_check_rejects_with_its_reason(limits, intent, reason):
    engine, _ = _engine(**limits)
    decision = engine.check(intent)
    assert not decision.approved
    assert decision.reason == reason
    assert decision.text  # a human sentence too


def test_stale_market_data_blocks_new_orders():
    engine, clock = _engine(stale_after_s=5)
    clock.now += 6
    assert engine.check(_intent()).reason == "stale_market_data"


def test_a_gateway_that_is_not_synchronised_blocks_new_orders_but_not_cancels():
    engine, _ = _engine()
    engine.approved(_intent())
    engine.gateway_state = "degraded"
    assert engine.check(_intent(coid="s-2")).reason == "gateway_not_synchronised"
    assert engine.check(_intent(action="cancel")).approved


def test_the_kill_switch_halts_everything_but_cancels():
    engine, _ = _engine()
    engine.approved(_intent())
    engine.set_state("", HALTED)
    assert engine.check(_intent(coid="s-2")).reason == "halted"
    assert engine.check(_intent(action="cancel")).approved
    engine.set_state("", ACTIVE)
    assert engine.check(_intent()).approved


def test_a_paused_strategy_is_halted_alone():
    engine, _ = _engine()
    engine.set_state("s", HALTED)
    assert engine.check(_intent()).reason == "strategy_halted"


def test_pause_and_errored_are_per_strategy_and_outlive_lifting_the_kill_switch():
    from services.risk.engine import ERRORED, PAUSED
    engine, _ = _engine()
    engine.set_state("s", PAUSED, "pause by the operator")
    assert engine.check(_intent()).reason == "strategy_halted"
    assert engine.effective_state("s") == (PAUSED, "pause by the operator")
    engine.set_state("", HALTED)
    assert engine.effective_state("s")[0] == HALTED  # the kill switch shows while it is on
    assert engine.effective_state("unknown")[0] == HALTED  # also for one risk never saw
    engine.set_state("", ACTIVE)
    assert engine.effective_state("s")[0] == PAUSED  # lifting it lifts no pause
    engine.set_state("s", ACTIVE)
    assert engine.check(_intent()).approved
    engine.book("s").state = ERRORED
    engine.set_state("", HALTED)
    assert engine.effective_state("s")[0] == ERRORED
    engine.set_state("", ACTIVE)
    assert engine.check(_intent(coid="s-2")).reason == "strategy_halted"


def test_too_many_callback_errors_within_the_window_make_a_strategy_errored():
    from services.risk.engine import ERRORED
    engine, clock = _engine(max_errors=5, error_window_s=10.0)
    # its heartbeats' callback_errors: the first is the base (risk may have joined late)
    for t, total in ((0, 100), (4, 102), (8, 104), (12, 106), (16, 108), (20, 110)):
        assert engine.note_errors("s", total, now=t) is None  # 4 per 10 s: under the limit
    assert engine.note_errors("s", 115, now=24) is not None  # 7 in the last 10 s
    assert engine.book("s").state == ERRORED
    assert engine.check(_intent()).reason == "strategy_halted"
    assert engine.note_errors("s", 200, now=25) is None  # already stopped: said once
    engine.set_state("s", ACTIVE)  # unpaused: a new window from the next heartbeat
    assert engine.note_errors("s", 300, now=26) is None
    assert engine.note_errors("s", 3, now=27) is None  # the strategy restarted: from 0
    assert engine.note_errors("s", 7, now=28) is None
    assert engine.note_errors("s", 8, now=29) is not None
    engine, _ = _engine(max_errors=0)  # 0 switches it off
    assert engine.note_errors("s", 0, now=0) is None
    assert engine.note_errors("s", 10**6, now=1) is None


def test_order_rate_is_a_token_bucket_per_strategy():
    engine, clock = _engine(order_rate=2, order_burst=3, max_open_orders=0)
    results = [engine.check(_intent(coid=f"c{i}")).approved for i in range(5)]
    assert results == [True, True, True, False, False]
    assert engine.check(_intent(coid="x")).reason == "order_rate"
    clock.now += 1.0  # two more tokens
    assert [engine.check(_intent(coid=f"d{i}")).approved for i in range(3)] == \
        [True, True, False]


def test_max_open_orders_counts_approved_orders_at_once():
    engine, _ = _engine(max_open_orders=2)
    for coid in ("a", "b"):
        assert engine.check(_intent(coid=coid)).approved
        engine.approved(_intent(coid=coid))
    assert engine.check(_intent(coid="c")).reason == "max_open_orders"


def test_working_orders_count_toward_the_position_limit():
    engine, _ = _engine(max_position=150)
    engine.approved(_intent(coid="a", qty=100))
    assert engine.check(_intent(coid="b", qty=100)).reason == "max_position"
    assert engine.check(_intent(coid="c", qty=100, side="SELL")).approved


def test_daily_loss_switches_to_reducing_only():
    engine, _ = _engine(daily_loss_limit=500)
    _fill(engine, 100, price=100.0)
    engine.on_mark("AAPL", 93.99, 94.01)  # 100 x -6 = -600
    engine.evaluate_loss("s")
    assert engine.book("s").state == REDUCING and engine.breaches
    assert engine.check(_intent(price=94.0)).reason == "reducing_only"
    assert engine.check(_intent(side="SELL", price=94.0, qty=100)).approved


def test_positions_and_pnl_are_execution_numbers_net_of_commissions():
    engine, _ = _engine()
    _fill(engine, 100, price=99.0, exec_id="e1", commission=1.0)
    _fill(engine, 100, price=99.0, exec_id="e1", commission=1.0)  # a repeat changes nothing
    assert engine.book("s").held("AAPL") == 100
    realized, unrealized = engine.pnl("s")
    assert realized == pytest.approx(-1.0) and unrealized == pytest.approx(100.0)
    _fill(engine, 100, price=101.0, side="SELL", exec_id="e2", commission=1.0)
    realized, unrealized = engine.pnl("s")
    assert realized == pytest.approx(200.0 - 2.0) and unrealized == 0


def test_a_digest_that_disagrees_with_the_mirror_asks_for_a_resync():
    engine, _ = _engine()
    _fill(engine, 100)
    assert engine.on_execution_message(StrategyDigest(strategy="s", positions={"AAPL": 100}))
    assert not engine.on_execution_message(StrategyDigest(strategy="s",
                                                          positions={"AAPL": 200}))
    assert not engine.on_execution_message(StrategyDigest(strategy="s", open_orders=1,
                                                          positions={"AAPL": 100}))
    engine.resync("s", [StrategyPosition(strategy="s", symbol="AAPL", quantity=200)])
    assert engine.book("s").held("AAPL") == 200


def test_the_daily_loss_is_the_trading_days_and_resets_on_the_next_one():
    engine, _ = _engine(daily_loss_limit=500)
    yesterday = NOW_NS - 86_400 * 10**9
    _fill(engine, 100, price=100.0, exec_id="y1", t_ns=yesterday)
    _fill(engine, 100, price=90.0, side="SELL", exec_id="y2", t_ns=yesterday)  # -1000 then
    engine.on_mark("AAPL", 99.99, 100.01)
    engine.evaluate_loss("s")
    assert engine.book("s").state == ACTIVE  # yesterday's loss is not today's
    _fill(engine, 100, price=100.0, exec_id="t1")
    _fill(engine, 100, price=94.0, side="SELL", exec_id="t2", commission=1.0)
    assert engine.book("s").state == REDUCING
    engine.wall_clock.now += 86_400 * 10**9  # the next trading day
    engine.evaluate_loss("s")
    assert engine.book("s").state == ACTIVE and engine.notices


def test_a_bracket_is_approved_or_refused_as_a_whole():
    engine, _ = _engine(max_open_orders=2)
    entry = _intent(coid="p")
    take = _intent(coid="tp", side="SELL", price=102.0, parent="p")
    stop = OrderIntent(strategy="s", client_order_id="sl", action="new", symbol="AAPL",
                       side="SELL", quantity=100, order_type="STP", stop_price=98.0,
                       parent_id="p")
    decision = engine.check_group([entry, take, stop])
    assert not decision.approved and decision.reason == "max_open_orders"
    engine, _ = _engine(max_open_orders=3)
    assert engine.check_group([entry, take, stop]).approved
    bigger = _intent(coid="tp", side="SELL", price=102.0, parent="p", qty=200)
    assert engine.check_group([entry, bigger, stop]).reason == "bad_group"


def test_futures_pnl_uses_the_multiplier():
    engine, _ = _engine()
    _fill(engine, 1, price=5000.0, symbol="ES", exec_id="x")
    engine.on_mark("ES", 5010.0, 5010.0)
    assert engine.pnl("s")[1] == pytest.approx(500.0)
