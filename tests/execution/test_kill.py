"""The kill switch in execution's engine: cancels made even when the journal cannot be
written; flatten closes positions at market once the cancels are done."""
from __future__ import annotations

import errno

from services.execution.engine import FLATTEN_PREFIX, ExecutionEngine
from services.runtime.journal import Journal, JournalError
from tests.execution.test_engine import _fill, _working


def _engine(tmp_path):
    return ExecutionEngine(Journal(tmp_path / "journal.bin", fsync=False))


def test_kill_cancels_even_when_the_journal_cannot_be_written(tmp_path):
    engine = _engine(tmp_path)
    _working(engine, "s-1", ib=7)
    _working(engine, "s-2", ib=8)

    def full(_msg):
        raise JournalError(errno.ENOSPC, "No space left on device")
    engine.journal.append = full
    cancels = engine.kill()
    assert sorted(c.client_order_id for c in cancels) == ["s-1", "s-2"]
    assert all(c.command == "cancel" for c in cancels)
    assert engine.errors["journal_failed"] == 2
    assert [code for _, code, _ in engine.alerts].count("journal_failed") == 1


def test_flatten_waits_for_the_cancels_then_closes_each_position_at_market(tmp_path):
    engine = _engine(tmp_path)
    _working(engine, "s-1", ib=7)
    engine.on_execution(_fill("s-1", "e1.01", 40, ib=7))
    _working(engine, "s-2", ib=8)
    engine.kill()
    engine.want_flatten("")
    assert engine.flatten_due(now=0.0 + 10**9, wait_for_cancels=10**10) == []  # still working
    for order in engine.open_orders():
        order.state = order.state.__class__("cancelled")
    commands = engine.flatten_due()
    assert len(commands) == 1
    (cmd,) = commands
    assert cmd.client_order_id.startswith(FLATTEN_PREFIX)
    assert (cmd.side, cmd.quantity, cmd.order_type, cmd.symbol) == ("SELL", 40, "MKT", "AAPL")
    assert not engine.flatten_wanted
