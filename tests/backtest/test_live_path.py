"""The backtest runs the live trading path: the strategy's intents through the real RiskEngine
(brackets decided as a whole), the real ExecutionEngine and its Portfolio; only the venue and
the clock are simulated."""
from __future__ import annotations

import logging
import re

import pytest

from services.backtest import synthetic
from services.backtest.engine import BacktestEngine, Settings
from services.backtest.journal import MemoryJournal
from services.backtest.matching import CommissionModel
from services.backtest.report import summarize
from services.execution.engine import ExecutionEngine
from services.model.orders import InvalidOrder
from services.model.portfolio import Portfolio
from services.recorder.reader import Recording
from services.strategy.config import StrategyConfig
from tests.backtest.helpers import (START_NS, Scripted, Tape, fill_times_ms, run_engine,
                                    seen_times_ms)

BOOK = dict(bids=[(99.99, 100.0), (99.98, 200.0)],
            asks=[(100.01, 100.0), (100.02, 200.0), (100.03, 300.0)])
IB_EXEC_ID = re.compile(r"^[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01$")


# -- the model's enums, as live ---------------------------------------------------------------

def test_a_lower_case_side_trades_as_a_buy(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 30)
    script = [(10, lambda s: s.submit("AAPL", "buy", 100, "mkt", tif="day"))]
    engine, result = run_engine(tmp_path, tape, script)
    assert result.callback_errors == 0
    assert [(i.side, i.order_type, i.tif) for i in result.intents] == [("BUY", "MKT", "DAY")]
    assert [(e.side, e.quantity, e.price) for e in result.executions] == \
        [("BUY", 100.0, 100.01)]
    assert [(f.side, f.state) for f in result.fills] == [("BUY", "filled")]
    assert engine.strategy.position("AAPL") == 100.0
    assert result.portfolio.quantity("t1", "AAPL") == 100.0


@pytest.mark.parametrize("terms, bad", [
    (dict(side="sideways", order_type="LMT", tif="DAY"), "sideways"),
    (dict(side="buy", order_type="FOK", tif="DAY"), "FOK"),
    (dict(side="buy", order_type="LMT", tif="forever"), "forever"),
])
def test_unknown_terms_are_an_invalid_order_counted_as_a_callback_error(tmp_path, caplog,
                                                                        terms, bad):
    tape = Tape().book(0, **BOOK).wake(10, 30)
    script = [(10, lambda s: s.submit("AAPL", quantity=100, limit_price=100.00, **terms))]
    with caplog.at_level(logging.ERROR, logger="backtest.engine"):
        engine, result = run_engine(tmp_path, tape, script)
    assert result.callback_errors == 1
    failures = [r for r in caplog.records if r.message == "strategy callback failed"]
    assert len(failures) == 1 and failures[0].exc_info[0] is InvalidOrder
    assert bad in str(failures[0].exc_info[1])
    # nothing was sent: not to risk, not to execution, not to the venue
    assert result.intents == [] and result.fills == [] and result.executions == []
    assert engine.execution.orders == {} and engine.venue.orders == {}
    assert engine.journal.records == 0
    assert engine.strategy.open_orders() == []


# -- brackets: decided by the real RiskEngine as a whole -------------------------------------

def _bracket(ids):
    def enter(s):
        ids.extend(s.submit_bracket("AAPL", "BUY", 100, entry=100.01, stop_loss=99.90,
                                    take_profit=100.10))
    return enter


def test_a_bracket_over_max_open_orders_is_refused_whole_and_nothing_is_sent(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 20, 30)
    ids: list[str] = []
    engine, result = run_engine(tmp_path, tape, [(10, _bracket(ids))],
                                risk={"max_open_orders": 2})
    assert len(ids) == 3 and len(result.intents) == 3
    rejected = engine.strategy.rejected
    assert [d.client_order_id for d in rejected] == ids  # every leg, entry first
    assert {d.reason for d in rejected} == {"max_open_orders"}
    assert all("group refused as a whole" in d.text for d in rejected)
    assert dict(result.rejections) == {"max_open_orders": 3}
    assert engine.execution.orders == {} and engine.venue.orders == {}
    assert engine.journal.records == 0 and result.executions == []
    assert engine.strategy.open_orders() == [] and not engine.risk.book("t1").open_orders


def test_a_bracket_within_limits_is_approved_whole(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 20, 30)
    ids: list[str] = []
    engine, result = run_engine(tmp_path, tape, [(10, _bracket(ids))],
                                risk={"max_open_orders": 3})
    assert engine.strategy.rejected == [] and not result.rejections
    assert list(engine.execution.orders) == ids
    venue = list(engine.venue.orders.values())
    assert [o.terms.client_order_id for o in venue] == ids
    assert [o.terms.transmit for o in venue] == [False, False, True]
    parent_ib = venue[0].ib_order_id
    assert [o.terms.parent_ib_id for o in venue] == [0, parent_ib, parent_ib]
    # the entry took the ask at arrival; the exits work once it is filled
    assert [(e.client_order_id, e.quantity, e.price) for e in result.executions] == \
        [(ids[0], 100.0, 100.01)]
    states = {o.client_order_id: o.state.value for o in engine.execution.orders.values()}
    assert states == {ids[0]: "filled", ids[1]: "submitted", ids[2]: "submitted"}


def test_bracket_legs_wait_for_the_transmitting_leg(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 20, 30)
    seen: dict[str, object] = {}
    legs: list[str] = []

    def held_legs(s):
        legs.append(s.submit("AAPL", "BUY", 100, "LMT", 99.99, transmit=False))
        legs.append(s.submit("AAPL", "SELL", 100, "LMT", 100.10, parent_id=legs[0],
                             oca_group="g", transmit=False))
        seen["at 10"] = (len(s.host.execution.orders), len(s.host.groups.legs[legs[0]]))

    def transmitting_leg(s):
        seen["before"] = len(s.host.execution.orders)
        legs.append(s.submit("AAPL", "SELL", 100, "STP", stop_price=99.90, parent_id=legs[0],
                             oca_group="g"))
        seen["after"] = len(s.host.execution.orders)

    engine, result = run_engine(tmp_path, tape, [(10, held_legs), (20, transmitting_leg)],
                                risk={"max_open_orders": 3})
    assert seen == {"at 10": (0, 2), "before": 0, "after": 3}
    assert not result.rejections and engine.groups.held() == 0
    assert [o.state.value for o in engine.execution.orders.values()] == ["submitted"] * 3


# -- one Portfolio: execution's -----------------------------------------------------------

def test_realized_pnl_is_net_of_commissions_and_is_the_portfolios(tmp_path):
    tape = (Tape().book(0, bids=[(99.99, 500.0)], asks=[(100.00, 500.0)]).wake(10)
            .book(20, bids=[(100.50, 500.0)], asks=[(100.51, 500.0)]).wake(30, 50))
    script = [(10, lambda s: s.submit("AAPL", "BUY", 300, "MKT")),
              (30, lambda s: s.submit("AAPL", "SELL", 300, "MKT"))]
    engine, result = run_engine(tmp_path, tape, script,
                                commission=CommissionModel(per_share=0.005, minimum=1.0))
    view = result.portfolio.view("t1", "AAPL", result.end_ns)
    assert view.quantity == 0.0
    assert view.commissions == pytest.approx(2 * 1.5)  # 300 x 0.005 each way
    assert view.realized == pytest.approx(300 * 0.50 - 3.0)  # net of commissions
    pnl = summarize(result)["pnl"]
    assert pnl["realized"] == pytest.approx(view.realized, abs=1e-6)
    assert pnl["realized_gross"] == pytest.approx(150.0, abs=1e-6)
    assert pnl["commissions"] == pytest.approx(3.0, abs=1e-6)
    assert pnl["total"] == pytest.approx(147.0, abs=1e-6) and pnl["unrealized"] == 0.0
    assert result.samples[-1].equity == pytest.approx(147.0)
    # the strategy and risk mirror execution's numbers, never their own
    assert engine.strategy.pnl()[0] == pytest.approx(view.realized)
    assert engine.risk.pnl("t1")[0] == pytest.approx(view.realized)


def test_commissions_come_as_ib_reports_keyed_by_exec_id(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 30)
    script = [(10, lambda s: s.submit("AAPL", "BUY", 350, "LMT", 100.02))]  # walks 2 levels
    engine, result = run_engine(tmp_path, tape, script)
    ids = [e.exec_id for e in result.executions]
    assert len(ids) == 2 and all(IB_EXEC_ID.match(i) for i in ids)
    assert [f.exec_id for f in result.fills] == ids
    assert [e.cum_quantity for e in result.executions] == [100.0, 300.0]
    # the per-order minimum is paid once: max(1, 0.005 x 300) over the order's two fills
    assert result.portfolio.view("t1", "AAPL", result.end_ns).commissions == \
        pytest.approx(1.5)
    assert [type(m).__name__ for m in engine.journal.replay()] == []  # kept only on request


def test_the_reports_positions_are_executions(tmp_path):
    path = tmp_path / "rec"
    recording = Recording(synthetic.write_recording(path, synthetic.random_walk(seed=5,
                                                                                steps=800)))
    cfg = StrategyConfig(name="imb", symbols=["AAPL"], risk={"max_position": 1000},
                         class_path="services.strategy.examples.imbalance:ImbalanceMomentum")
    engine = BacktestEngine(cfg, Settings())
    result = engine.run((r.recv_ns, m) for r, m in recording.messages())
    summary = summarize(result)
    assert result.portfolio is engine.execution.portfolio
    assert summary["final_positions"] == {"AAPL": engine.execution.portfolio.quantity("imb",
                                                                                     "AAPL")}
    digest = engine.execution.digest("imb")
    assert summary["trading"]["fills"] == digest.fills == len(result.fills) > 0
    assert engine.strategy.mirror.agrees(digest)
    assert engine.risk.book("imb").mirror.agrees(digest)


# -- the venue and the clock ------------------------------------------------------------------

def test_reports_reach_execution_after_the_return_latency(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 30)
    script = [(10, lambda s: s.submit("AAPL", "BUY", 100, "MKT"))]
    _, quick = run_engine(tmp_path / "a", tape, script, latency_ns=1_000_000,
                          report_latency_ns=4_000_000)
    _, same = run_engine(tmp_path / "b", Tape().book(0, **BOOK).wake(10, 30), script,
                         latency_ns=1_000_000)
    assert fill_times_ms(quick) == [11.0] and seen_times_ms(quick) == [15.0]
    assert fill_times_ms(same) == [11.0] and seen_times_ms(same) == [12.0]  # default: same


def test_a_modify_is_confirmed_by_ib_then_fills(tmp_path):
    tape = Tape().book(0, **BOOK).wake(10, 30, 50)
    ids: list[str] = []
    script = [(10, lambda s: ids.append(s.submit("AAPL", "BUY", 100, "LMT", 99.99))),
              (30, lambda s: s.modify(ids[0], limit_price=100.01))]
    engine, result = run_engine(tmp_path, tape, script)
    assert fill_times_ms(result) == [35.0]
    assert [(e.quantity, e.price) for e in result.executions] == [(100.0, 100.01)]
    states = [u.state for u in engine.strategy.updates]
    assert states == ["pending_submit", "submitted", "pending_modify", "submitted",
                      "filled"]
    assert engine.execution.orders[ids[0]].intent.limit_price == 100.01


def test_the_backtest_journal_restores_execution(tmp_path):
    tape = (Tape().book(0, bids=[(99.99, 500.0)], asks=[(100.00, 500.0)]).wake(10)
            .book(20, bids=[(100.50, 500.0)], asks=[(100.51, 500.0)]).wake(30, 50))
    script = [(10, lambda s: s.submit("AAPL", "BUY", 300, "MKT")),
              (30, lambda s: s.submit("AAPL", "SELL", 200, "MKT"))]
    cls = type("Script", (Scripted,), {"SCRIPT": script})
    cfg = StrategyConfig(name="t1", class_path="x:y", symbols=["AAPL"], timer_s=1.0)
    engine = BacktestEngine(cfg, Settings(), strategy_class=cls)
    engine.journal.keep = True
    recording = tape.write(tmp_path / "rec")
    result = engine.run((r.recv_ns, m) for r, m in recording.messages())
    assert engine.journal.records == len(engine.journal.kept) > 0
    restored = ExecutionEngine(engine.journal, portfolio=Portfolio(),
                               clock=lambda: result.end_ns)
    for owner_symbol in (("t1", "AAPL"),):
        assert restored.portfolio.view(*owner_symbol, result.end_ns) == \
            result.portfolio.view(*owner_symbol, result.end_ns)
    assert {c: o.state for c, o in restored.orders.items()} == \
        {c: o.state for c, o in engine.execution.orders.items()}


def test_memory_journal_interface():
    journal = MemoryJournal(keep=True)
    assert (journal.records, journal.syncs, journal.torn_bytes) == (0, 0, 0)
    engine = ExecutionEngine(journal, clock=lambda: START_NS)
    assert list(journal.replay()) == [] and engine.orders == {}
    journal.sync()
    journal.close()
    assert journal.syncs == 1
    with pytest.raises(ValueError):
        journal.append(None)
