"""Execution's engine on its own: state machine, journal, idempotency, restart."""
from __future__ import annotations

import pytest

from proto.schema import Execution, GatewayState, OpenOrder, OrderIntent, OrderStatus
from services.execution.engine import ExecutionEngine
from services.execution.state_machine import (TERMINAL, TRANSITIONS, Event, IllegalTransition,
                                              OrderState, next_state)
from services.runtime.journal import Journal


def _intent(coid="s-1", action="new", qty=100.0, price=100.0, parent="", side="BUY"):
    return OrderIntent(strategy="s", client_order_id=coid, action=action, symbol="AAPL",
                       side=side, quantity=qty, limit_price=price, parent_id=parent)


def _fill(coid, exec_id, qty, price=100.0, side="BUY", ib=0):
    return Execution(exec_id=exec_id, ib_order_id=ib, client_order_id=coid, perm_id=0,
                     account="DU1", symbol="AAPL", side=side, quantity=qty, price=price,
                     cum_quantity=qty, avg_price=price, exec_time_ns=0)


@pytest.fixture
def engine(tmp_path):
    journal = Journal(tmp_path / "journal.bin", fsync=False)
    yield ExecutionEngine(journal)
    journal.close()


def test_every_state_is_reachable_from_new_and_terminal_states_only_take_late_fills():
    reachable, frontier = {OrderState.NEW}, [OrderState.NEW]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    assert reachable == set(OrderState)
    for (src, event), _ in TRANSITIONS.items():
        if src in TERMINAL:
            assert src is OrderState.CANCELLED and event in (Event.FILL, Event.PARTIAL_FILL)


def test_an_illegal_transition_is_refused():
    with pytest.raises(IllegalTransition):
        next_state(OrderState.FILLED, Event.CANCEL_SENT)


def test_a_new_intent_is_journaled_and_placed_once_even_if_resent(engine):
    commands = engine.on_intent(_intent())
    assert [c.command for c in commands] == ["place"]
    assert engine.orders["s-1"].state is OrderState.PENDING_SUBMIT
    assert engine.on_intent(_intent()) == []  # risk resent it: nothing more happens
    assert engine.journal.records >= 2  # the intent and its state change


def test_modify_while_the_state_is_uncertain_waits_for_ib(engine):
    engine.on_intent(_intent())
    engine.on_placed(OrderStatus(ib_order_id=7, client_order_id="s-1", status="PendingSubmit",
                                 filled=0, remaining=100))
    assert engine.on_intent(_intent(action="modify", price=101.0)) == []  # held
    released = engine.on_status(OrderStatus(ib_order_id=7, client_order_id="s-1",
                                            status="Submitted", filled=0, remaining=100))
    assert [(c.command, c.ib_order_id, c.limit_price) for c in released] == \
        [("modify", 7, 101.0)]


def test_bracket_children_are_sent_once_the_parent_has_its_ib_id(engine):
    assert [c.command for c in engine.on_intent(_intent("p"))] == ["place"]
    assert engine.on_intent(_intent("tp", parent="p", side="SELL", price=102.0)) == []
    released = engine.on_placed(OrderStatus(ib_order_id=11, client_order_id="p",
                                            status="PendingSubmit", filled=0, remaining=100))
    assert [(c.client_order_id, c.parent_ib_id) for c in released] == [("tp", 11)]


def test_fills_are_deduplicated_by_exec_id_and_drive_the_state(engine):
    engine.on_intent(_intent())
    engine.on_placed(OrderStatus(ib_order_id=7, client_order_id="s-1", status="PendingSubmit",
                                 filled=0, remaining=100))
    engine.on_execution(_fill("s-1", "e1", 40, 100.0))
    engine.on_execution(_fill("s-1", "e1", 40, 100.0))  # IB replays it
    assert engine.orders["s-1"].filled == 40
    assert engine.orders["s-1"].state is OrderState.PARTIALLY_FILLED
    engine.on_execution(_fill("s-1", "e2", 60, 101.0))
    order = engine.orders["s-1"]
    assert order.state is OrderState.FILLED and order.filled == 100
    assert order.avg_fill_price == pytest.approx(100.6)
    assert engine.positions[("s", "AAPL")].quantity == 100


def test_a_restart_rebuilds_orders_positions_and_resends_an_unconfirmed_place(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    first.on_intent(_intent("a"))
    first.on_placed(OrderStatus(ib_order_id=5, client_order_id="a", status="PendingSubmit",
                                filled=0, remaining=100))
    first.on_execution(_fill("a", "e1", 100, 99.5))
    first.on_intent(_intent("b"))  # placed, but the gateway's reply never came (a crash)
    first.journal.close()

    again = ExecutionEngine(Journal(path, fsync=False))
    assert again.orders["a"].state is OrderState.FILLED and again.orders["a"].ib_order_id == 5
    assert again.positions[("s", "AAPL")].quantity == 100
    assert "e1" in again.exec_ids
    assert again.orders["b"].state is OrderState.PENDING_SUBMIT
    resent = again.on_gateway_state(GatewayState(state="synchronised"))
    assert [(c.command, c.client_order_id) for c in resent] == [("place", "b")]
    assert again.on_execution(_fill("a", "e1", 100, 99.5)) == []  # no double count
    assert again.positions[("s", "AAPL")].quantity == 100


def test_a_torn_journal_tail_loses_only_the_last_record(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    first.on_intent(_intent("a"))
    first.on_intent(_intent("b"))
    first.journal.close()
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the last record torn mid-write
    journal = Journal(path, fsync=False)
    assert journal.torn_bytes > 0
    again = ExecutionEngine(journal)
    assert "a" in again.orders and "b" in again.orders  # b's intent came before its state
    journal.append(OrderStatus(ib_order_id=1, client_order_id="b", status="submitted",
                               filled=0, remaining=100))
    journal.close()
    assert ExecutionEngine(Journal(path, fsync=False)).orders["b"].state is OrderState.SUBMITTED


def test_an_order_at_ib_that_execution_never_placed_is_reported(engine):
    engine.on_open_order(OpenOrder(ib_order_id=99, client_order_id="", perm_id=1, client_id=0,
                                   account="DU1", symbol="AAPL", side="BUY", quantity=1,
                                   order_type="LMT"))
    assert engine.unknown_orders == {99}


def test_kill_cancels_working_orders_and_holds_cancels_for_uncertain_ones(engine):
    engine.on_intent(_intent("a"))
    engine.on_placed(OrderStatus(ib_order_id=1, client_order_id="a", status="PendingSubmit",
                                 filled=0, remaining=100))
    engine.on_status(OrderStatus(ib_order_id=1, client_order_id="a", status="Submitted",
                                 filled=0, remaining=100))
    engine.on_intent(_intent("b"))  # pending submit: uncertain
    cancels = engine.cancel_all()
    assert [(c.command, c.client_order_id) for c in cancels] == [("cancel", "a")]
    assert engine.orders["a"].state is OrderState.PENDING_CANCEL
    released = engine.on_status(OrderStatus(ib_order_id=2, client_order_id="b",
                                            status="Submitted", filled=0, remaining=100))
    assert [(c.command, c.client_order_id) for c in released] == [("cancel", "b")]


def test_an_order_ib_has_not_confirmed_in_time_is_queried_not_resent(engine):
    commands = engine.on_intent(_intent("slow"))
    assert [c.command for c in commands] == ["place"]
    sent = engine.orders["slow"].sent_at
    assert engine.unconfirmed(sent + 1.0, timeout=5.0) == []
    assert [o.client_order_id for o in engine.unconfirmed(sent + 6.0, timeout=5.0)] == ["slow"]
    engine.on_status(OrderStatus(ib_order_id=3, client_order_id="slow", status="Submitted",
                                 filled=0, remaining=100))
    assert engine.unconfirmed(sent + 60.0, timeout=5.0) == []


def test_a_cancel_ib_has_not_confirmed_is_sent_again(engine):
    engine.on_intent(_intent("c"))
    engine.on_placed(OrderStatus(ib_order_id=4, client_order_id="c", status="PendingSubmit",
                                 filled=0, remaining=100))
    engine.on_status(OrderStatus(ib_order_id=4, client_order_id="c", status="Submitted",
                                 filled=0, remaining=100))
    [cancel] = engine.on_intent(_intent("c", action="cancel"))
    sent = engine.orders["c"].sent_at
    assert engine.stuck_cancels(sent + 1.0, timeout=10.0) == []
    again = engine.stuck_cancels(sent + 11.0, timeout=10.0)
    assert [(c.command, c.ib_order_id) for c in again] == [("cancel", 4)]
    engine.on_status(OrderStatus(ib_order_id=4, client_order_id="c", status="Cancelled",
                                 filled=0, remaining=100))
    assert engine.stuck_cancels(sent + 100.0, timeout=10.0) == []
