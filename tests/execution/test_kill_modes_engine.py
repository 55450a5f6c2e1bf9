"""Execution's engine: the kill modes per owner (issue 15, finding 2) and a removed
strategy's book handed to ``unowned``, durably (finding 3). The real-process tests are
tests/trading/test_kill_modes.py and tests/fleet/test_strategy_remove.py."""
from __future__ import annotations

from services.execution.engine import ExecutionEngine
from services.model.owners import WorkingOrder, protective_exits
from services.runtime.journal import Journal
from tests.execution.test_engine import _fill, _working


def _engine(tmp_path):
    return ExecutionEngine(Journal(tmp_path / "journal.bin", fsync=False))


def _holding_40_with_exits(engine):
    """s holds 40 AAPL (s-1 filled), a stop and a target of 40 (one OCA group) and a new
    buy entry working."""
    _working(engine, "s-1", ib=7, qty=40)
    engine.on_execution(_fill("s-1", "e1.01", 40, ib=7))
    _working(engine, "s-stop", ib=8, qty=40, side="SELL")
    _working(engine, "s-take", ib=9, qty=40, side="SELL")
    for coid in ("s-stop", "s-take"):
        intent = engine.orders[coid].intent
        engine.orders[coid].intent = intent.__class__(
            **{f: getattr(intent, f) for f in intent.__struct_fields__ if f != "oca_group"},
            oca_group="g1")
    _working(engine, "s-2", ib=10, qty=10)


def test_keep_exits_cancels_entries_and_keeps_what_reduces(tmp_path):
    engine = _engine(tmp_path)
    _holding_40_with_exits(engine)
    cancels = engine.kill("", {})  # no mode named: keep_exits, the default
    assert [c.client_order_id for c in cancels] == ["s-2"]
    assert engine.kept_exits == ["s-stop", "s-take"]


def test_cancel_all_and_flatten_cancel_everything(tmp_path):
    for mode in ("cancel_all", "flatten"):
        engine = _engine(tmp_path / mode)
        _holding_40_with_exits(engine)
        cancels = engine.kill("", {"s": mode})
        assert sorted(c.client_order_id for c in cancels) == ["s-2", "s-stop", "s-take"]
        assert engine.kept_exits == []
        assert ("s" in engine.flatten_wanted) == (mode == "flatten")


def test_kill_without_modes_cancels_everything(tmp_path):
    engine = _engine(tmp_path)
    _holding_40_with_exits(engine)
    assert len(engine.kill()) == 3 and engine.kept_exits == []


def test_protective_exits_never_over_close_and_skip_a_working_entrys_children():
    pos = {("s", "X"): 10.0}
    orders = [WorkingOrder("a", "s", "X", "SELL", 10, "a"),  # kept
              WorkingOrder("b", "s", "X", "SELL", 10, "b"),  # would take it through zero
              WorkingOrder("c", "s", "X", "BUY", 5, "c"),  # adds
              WorkingOrder("d", "s", "X", "SELL", 5, "p", parent_working=True)]
    assert protective_exits(orders, lambda o, s: pos.get((o, s), 0.0)) == {"a"}


def test_a_removed_strategys_book_is_unowned_and_stays_so_after_a_restart(tmp_path):
    engine = _engine(tmp_path)
    _holding_40_with_exits(engine)
    handed = engine.reassign("s")
    assert handed == {"positions": {"AAPL": 40.0},
                      "orders": ["s-stop", "s-take", "s-2"]}
    assert engine.portfolio.quantity("unowned", "AAPL") == 40
    assert engine.portfolio.quantity("s", "AAPL") == 0 and "s" not in engine.owners()
    assert {o.strategy for o in engine.open_orders()} == {"unowned"}
    # a later fill of a kept order books to unowned
    engine.on_execution(_fill("s-stop", "e2.01", 40, side="SELL", ib=8))
    assert engine.portfolio.quantity("unowned", "AAPL") == 0
    engine.journal.sync()
    again = ExecutionEngine(Journal(tmp_path / "journal.bin", fsync=False))
    assert again.portfolio.quantity("unowned", "AAPL") == 0
    assert "s" not in again.owners()
    assert {o.strategy for o in again.open_orders()} == {"unowned"}
    assert again.portfolio.view("unowned", "AAPL", 0).realized \
        == engine.portfolio.view("unowned", "AAPL", 0).realized
