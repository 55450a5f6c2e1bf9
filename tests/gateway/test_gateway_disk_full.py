"""The gateway's durable state when the disk cannot write, and held commands across a kill:
unit tests on the order desk with an outbox nobody sends (see test_gateway_dispatch)."""
from __future__ import annotations

import errno
import os

import pytest

from proto.schema import Alert, OrderCommand
from services.gateway.order_desk import CommandRefused
from services.runtime import journal as journal_mod
from tests.gateway.test_gateway_dispatch import Desk


def _full_disk(monkeypatch, short: bool = False):
    """os.write of the journal module raises ENOSPC (after a short write if ``short``)."""
    real = os.write
    state = {"n": 0}

    def write(fd, data):
        state["n"] += 1
        if short and state["n"] == 1:
            return real(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_mod.os, "write", write)


def _alerts(d: Desk, code: str) -> list[Alert]:
    return [m for m in d.ib.published if isinstance(m, Alert) and m.code == code]


@pytest.mark.parametrize("short", [False, True])
def test_a_place_refused_for_a_full_disk_is_never_placed_even_after_a_restart(tmp_path,
                                                                              monkeypatch,
                                                                              short):
    d = Desk(tmp_path)
    first = d.place("first")  # the id block and the map work
    _full_disk(monkeypatch, short)
    with pytest.raises(CommandRefused) as info:
        d.place("doomed")
    assert "gateway journal cannot write: ENOSPC" in str(info.value)
    assert d.desk.orders.get("doomed") is None and not d.desk.held
    assert [a.severity for a in _alerts(d, "gateway.journal_write_failed")] == ["critical"]
    assert d.counters["journal_write_failures"] == 1
    monkeypatch.undo()  # space again: the next place works, and says so
    second = d.place("second")
    assert [a.severity for a in _alerts(d, "gateway.journal_recovered")] == ["info"]
    d.flush()
    for ib_id in (first, second):  # IB has both (a place IB never mentioned is resent)
        d.desk.on_order_status(ib_id, "Submitted", 0, 1, 0)
    d.desk.close()  # SIGTERM
    again = Desk(tmp_path)  # restart: nothing refused is resent or known
    assert again.desk.orders.get("doomed") is None
    assert not again.desk.unsent
    again.desk.reconciled(None)
    again.desk.release_held()
    again.flush()
    placed = [args[0] for name, args in again.ib.calls if name == "placeOrder"]
    assert placed == []
    assert {first, second} <= set(again.desk.orders.by_ib)


def test_a_modify_or_cancel_that_cannot_be_journalled_is_refused(tmp_path, monkeypatch):
    d = Desk(tmp_path)
    ib = d.place("a")
    d.flush()
    _full_disk(monkeypatch)
    for command in ("modify", "cancel"):
        with pytest.raises(CommandRefused, match="ENOSPC"):
            d.desk.on_command(OrderCommand(command=command, client_order_id="a",
                                           ib_order_id=ib, symbol="IBM", side="BUY",
                                           quantity=1, order_type="LMT", limit_price=99.0),
                              "execution.test")
    d.flush()
    assert [n for n, _ in d.ib.calls] == ["placeOrder"]  # nothing refused went out


def test_held_modify_and_cancel_survive_a_kill_and_are_sent_once(tmp_path):
    d = Desk(tmp_path)
    a, b = d.place("a"), d.place("b")
    d.flush()
    d.desk.mentioned(a)
    d.desk.mentioned(b)
    d.desk.can_send = lambda: False  # the connection is down: commands are held
    d.desk.on_command(OrderCommand(command="modify", client_order_id="a", symbol="IBM",
                                   side="BUY", quantity=1, order_type="LMT",
                                   limit_price=99.0), "execution.test")
    d.desk.on_command(OrderCommand(command="cancel", client_order_id="b"), "execution.test")
    assert [c.command for c in d.desk.held] == ["modify", "cancel"]  # acknowledged, held
    # kill -9: nothing is closed, the journal is as it was written

    again = Desk(tmp_path)
    assert [(c.command, c.ib_order_id) for _, c in again.desk.unsent_commands] == \
        [("modify", a), ("cancel", b)]
    again.desk.reconciled(None)  # the first reconciliation run of the new process
    again.desk.release_held()
    again.flush()
    # (a cancel jumps the outbox's queue: urgent)
    assert sorted((n, args[0]) for n, args in again.ib.calls) == [("cancelOrder", b),
                                                                   ("placeOrder", a)]
    assert [args[2].lmtPrice for n, args in again.ib.calls if n == "placeOrder"] == [99.0]
    again.desk.reconciled(None)  # a later run sends nothing again
    again.desk.release_held()
    again.flush()
    assert len(again.ib.calls) == 2

    third = Desk(tmp_path)  # and a restart after they went out: nothing to send
    assert third.desk.unsent_commands == []
    third.desk.reconciled(None)
    third.desk.release_held()
    third.flush()
    assert third.ib.calls == []


def test_a_modify_sent_at_once_is_not_sent_again_after_a_restart(tmp_path):
    d = Desk(tmp_path)
    a = d.place("a")
    d.flush()
    d.desk.on_command(OrderCommand(command="modify", client_order_id="a", symbol="IBM",
                                   side="BUY", quantity=1, order_type="LMT",
                                   limit_price=98.0), "execution.test")
    d.flush()
    assert [(n, args[0]) for n, args in d.ib.calls] == [("placeOrder", a), ("placeOrder", a)]
    again = Desk(tmp_path)
    assert again.desk.unsent_commands == []
