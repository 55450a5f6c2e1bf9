"""Named scenarios of the simulated venue, each on a hand-made recorded market, through the
live risk and execution engines (order states are execution's)."""
from __future__ import annotations

import math

from services.backtest.report import summarize
from tests.backtest.helpers import Tape, fill_times_ms, run_script

BOOK = dict(bids=[(99.99, 100.0), (99.98, 200.0)],
            asks=[(100.01, 100.0), (100.02, 200.0), (100.03, 300.0)])


def test_a_marketable_limit_walks_the_book(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 50)
    script = [(10, lambda s: s.submit("AAPL", "BUY", 350, "LMT", 100.02))]
    result, strategy = run_script(tmp_path, tape, script, queue_model="none")
    fills = [(f.last_fill_qty, f.last_fill_price) for f in result.fills[:2]]
    assert fills == [(100.0, 100.01), (200.0, 100.02)]  # level by level, not beyond the limit
    assert strategy.updates[-1].state == "partially_filled"
    assert strategy.position("AAPL") == 300.0
    assert len({f.exec_id for f in result.fills}) == len(result.fills)


def test_a_resting_limit_fills_only_when_crossed(tmp_path):
    tape = (Tape().book(0, **BOOK).wake(10)
            .trade(20, 100.01, 300)  # trades above our bid: nothing for us
            .book(30, bids=[(99.99, 100.0)], asks=[(100.02, 100.0)])  # ask moves away
            .book(40, bids=[(99.99, 100.0)], asks=[(100.00, 400.0)])  # ask down to our bid
            .wake(50))  # the reports reach execution 5 ms after the fill
    script = [(10, lambda s: s.submit("AAPL", "BUY", 100, "LMT", 100.00))]
    result, strategy = run_script(tmp_path, tape, script, queue_model="none")
    assert fill_times_ms(result) == [40.0]
    assert [(f.last_fill_qty, f.last_fill_price, f.state) for f in result.fills] == \
        [(100.0, 100.00, "filled")]
    states = [u.state for u in strategy.updates]
    assert states == ["pending_submit", "submitted", "filled"]


def test_latency_delays_a_fill_past_a_price_move(tmp_path):
    def tape():
        return (Tape().book(0, **BOOK).wake(10)
                .book(12, bids=[(100.04, 100.0)], asks=[(100.05, 500.0)])  # 2 ms after send
                .wake(20))
    script = [(10, lambda s: s.submit("AAPL", "BUY", 100, "MKT"))]
    fast, _ = run_script(tmp_path / "fast", tape(), script, latency_ns=1_000_000)
    slow, _ = run_script(tmp_path / "slow", tape(), script, latency_ns=5_000_000)
    assert [f.last_fill_price for f in fast.fills] == [100.01]
    assert [f.last_fill_price for f in slow.fills] == [100.05]
    assert fill_times_ms(fast) == [11.0] and fill_times_ms(slow) == [15.0]


def test_proportional_queue_waits_for_the_size_ahead(tmp_path):
    def tape():
        return (Tape().book(0, bids=[(100.00, 500.0)], asks=[(100.02, 100.0)]).wake(10)
                .trade(20, 100.00, 200)   # 300 still ahead of us
                .book(21, bids=[(100.00, 300.0)], asks=[(100.02, 100.0)])  # the same trade
                .book(30, bids=[(100.00, 200.0)], asks=[(100.02, 100.0)])  # 100 cancelled
                .trade(40, 100.00, 200)   # ahead: 300 - 100 * 300/300 cancels... see below
                .trade(50, 100.00, 150)
                .wake(60))
    script = [(10, lambda s: s.submit("AAPL", "BUY", 100, "LMT", 100.00))]
    none, _ = run_script(tmp_path / "none", tape(), script, queue_model="none")
    prop, _ = run_script(tmp_path / "prop", tape(), script, queue_model="proportional")
    assert fill_times_ms(none) == [20.0]  # the first touch fills it
    # joined behind 500; a trade of 200 leaves 300 ahead; its echo in the book is not counted
    # twice; a cancellation of 100 out of 300 shown takes 100 of the 300 ahead (all of the
    # level is ahead of us); 200 more trade: 0 ahead; the next 150 trade fills our 100
    assert fill_times_ms(prop) == [50.0]
    assert [(f.last_fill_qty, f.last_fill_price) for f in prop.fills] == [(100.0, 100.00)]


def test_a_bracket_stop_triggers_and_the_take_profit_is_cancelled(tmp_path):
    tape = (Tape().book(0, bids=[(99.99, 500.0)], asks=[(100.00, 500.0)]).wake(10)
            .book(20, bids=[(99.99, 500.0)], asks=[(100.00, 500.0)])
            .book(30, bids=[(99.95, 500.0)], asks=[(99.96, 500.0)])
            .book(40, bids=[(99.89, 300.0), (99.88, 500.0)], asks=[(99.91, 500.0)])
            .book(60, bids=[(100.20, 500.0)], asks=[(100.21, 500.0)]))  # TP price, too late
    ids = {}

    def enter(s):
        ids["parent"], ids["take"], ids["stop"] = s.submit_bracket(
            "AAPL", "BUY", 400, entry=100.00, stop_loss=99.90, take_profit=100.10)
    result, strategy = run_script(tmp_path, tape, [(10, enter)], queue_model="none")
    by_order = [(f.client_order_id, f.last_fill_qty, f.last_fill_price) for f in result.fills]
    assert by_order == [(ids["parent"], 400.0, 100.00),      # entry took the ask
                        (ids["stop"], 300.0, 99.89),        # stop triggered at bid 99.89:
                        (ids["stop"], 100.0, 99.88)]        # a market order walks the bids
    last = {u.client_order_id: u for u in strategy.updates}
    assert last[ids["take"]].state == "cancelled"  # IB: 202 "OCA group cancelled"
    assert last[ids["stop"]].state == "filled"
    assert strategy.position("AAPL") == 0.0 and not strategy.open_orders()
    # the children waited for the parent: neither was ever filled before it
    assert fill_times_ms(result) == [15.0, 40.0, 40.0]


def test_a_cancel_after_latency_loses_to_a_fill(tmp_path):
    tape = (Tape().book(0, **BOOK).wake(10)
            .book(20, bids=[(99.99, 100.0)], asks=[(100.01, 100.0)]).wake(30)
            .book(32, bids=[(99.99, 100.0)], asks=[(99.99, 100.0)])  # crosses before the
            .wake(50))                                                 # cancel arrives (35)
    ids = []
    script = [(10, lambda s: ids.append(s.submit("AAPL", "BUY", 100, "LMT", 99.99))),
              (30, lambda s: s.cancel(ids[0]))]
    result, strategy = run_script(tmp_path, tape, script, queue_model="none")
    assert fill_times_ms(result) == [32.0]
    assert [u.state for u in strategy.updates][-2:] == ["pending_cancel", "filled"]


def test_a_cancel_that_arrives_first_cancels(tmp_path):
    tape = (Tape().book(0, **BOOK).wake(10)
            .book(20, bids=[(99.99, 100.0)], asks=[(100.01, 100.0)])
            .book(40, bids=[(99.99, 100.0)], asks=[(99.99, 100.0)]))
    ids = []
    script = [(10, lambda s: ids.append(s.submit("AAPL", "BUY", 100, "LMT", 99.99))),
              (20, lambda s: s.cancel(ids[0]))]
    result, strategy = run_script(tmp_path, tape, script, queue_model="none")
    assert result.fills == []
    assert strategy.updates[-1].state == "cancelled" and not strategy.open_orders()


def test_risk_rejections_reach_the_strategy_and_the_report(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 20, 30, 40)
    script = [(10, lambda s: s.submit("AAPL", "BUY", 100, "LMT", 100.01)),   # over 50
              (20, lambda s: s.submit("AAPL", "BUY", 10, "LMT", 110.00)),    # fat finger
              (30, lambda s: s.submit("AAPL", "BUY", 10, "LMT", 100.01))]    # fine
    result, strategy = run_script(tmp_path, tape, script, risk={"max_order_quantity": 50})
    assert [d.reason for d in strategy.rejected] == ["max_order_quantity", "price_band"]
    summary = summarize(result)
    assert summary["rejected"] == {"total": 2, "by_reason": {"max_order_quantity": 1,
                                                             "price_band": 1}}
    assert [f.last_fill_qty for f in result.fills] == [10.0]
    assert not any(math.isnan(f.last_fill_price) for f in result.fills)
