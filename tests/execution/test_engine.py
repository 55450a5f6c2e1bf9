"""Execution's engine on its own: state machine, journal, idempotency, restart."""
from __future__ import annotations

import pytest

from proto.schema import (Commission, CompletedOrder, Execution, GatewayError, GatewayState,
                          OpenOrder, OrderIntent, OrderStatus, ReconcileEnd, StrategyPosition)
from services.execution.engine import EXTERNAL, ExecutionEngine, IntentRefused
from services.model.orders import (DONE as TERMINAL, TRANSITIONS, IllegalTransition,
                                   OrderEvent as Event, OrderState, next_state)
from services.runtime.journal import Journal


def _intent(coid="s-1", action="new", qty=100.0, price=100.0, parent="", side="BUY"):
    return OrderIntent(strategy="s", client_order_id=coid, action=action, symbol="AAPL",
                       side=side, quantity=qty, limit_price=price, parent_id=parent)


def _fill(coid, exec_id, qty, price=100.0, side="BUY", ib=0):
    return Execution(exec_id=exec_id, ib_order_id=ib, client_order_id=coid, perm_id=0,
                     account="DU1", symbol="AAPL", side=side, quantity=qty, price=price,
                     cum_quantity=qty, avg_price=price, exec_time_ns=1_700_000_000_000_000_000)


def _working(engine, coid="s-1", ib=7, **kw):
    engine.on_intent(_intent(coid, **kw))
    engine.on_placed(OrderStatus(ib_order_id=ib, client_order_id=coid, status="PendingSubmit",
                                 filled=0, remaining=100))
    engine.on_status(OrderStatus(ib_order_id=ib, client_order_id=coid, status="Submitted",
                                 filled=0, remaining=100))
    return engine.orders[coid]


def _open(coid, ib, qty=100.0, price=100.0, status="Submitted", client_id=1, perm=0):
    return OpenOrder(ib_order_id=ib, client_order_id=coid, perm_id=perm, client_id=client_id,
                     account="DU1", symbol="AAPL", side="BUY", quantity=qty, order_type="LMT",
                     limit_price=price, status=status)


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
            # None is "back to working": submitted or partially filled, by the filled quantity
            targets = {OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED} if dst is None \
                else {dst}
            for target in targets - reachable if src is state else ():
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(OrderState)
    for (src, event), _ in TRANSITIONS.items():
        if src in TERMINAL:  # only a fill that raced the cancel or the expiry
            assert src in (OrderState.CANCELLED, OrderState.EXPIRED)
            assert event in (Event.FILL, Event.PARTIAL_FILL)


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
    assert engine.portfolio.quantity("s", "AAPL") == 100


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
    assert again.portfolio.quantity("s", "AAPL") == 100
    assert again.portfolio.has_fill("e1")
    assert again.orders["b"].state is OrderState.PENDING_SUBMIT
    resent = again.on_gateway_state(GatewayState(state="synchronised"))
    assert [(c.command, c.client_order_id) for c in resent] == [("place", "b")]
    assert again.on_execution(_fill("a", "e1", 100, 99.5)) == []  # no double count
    assert again.portfolio.quantity("s", "AAPL") == 100


def _told(engine) -> list[str]:
    """The exec ids of the fill updates the engine has ready to publish."""
    return [m.exec_id for _, msgs in engine.frames for m in msgs if getattr(m, "exec_id", "")]


def _publish(engine) -> None:
    """What the service does after a good sync: publish the frames, journal the mark."""
    engine.frames.clear()
    mark = engine.published_mark()
    if mark is not None:
        engine.journal.append_record(mark)


def test_fills_journalled_but_not_yet_published_are_told_after_a_crash(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    _working(first, "a", 5)
    first.on_execution(_fill("a", "e1", 40, 99.5))
    _publish(first)
    first.on_execution(_fill("a", "e2", 60, 99.6))
    first.journal.sync()  # durable, then killed before the publish: e2 was never told
    first.journal.close()

    again = ExecutionEngine(Journal(path, fsync=False))
    assert _told(again) == ["e2"]  # e1 was told before the crash
    assert again.republished == 1
    update = [m for _, msgs in again.frames for m in msgs if getattr(m, "exec_id", "")][0]
    assert (update.last_fill_qty, update.last_fill_price, update.filled) == (60, 99.6, 100)
    assert any(isinstance(m, StrategyPosition) and m.quantity == 100
               for _, msgs in again.frames for m in msgs)
    _publish(again)
    again.journal.close()
    assert _told(ExecutionEngine(Journal(path, fsync=False))) == []  # told once is enough


def test_the_published_mark_survives_compaction(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    _working(first, "f", 1)
    first.on_execution(_fill("f", "x.01", 50, 10.0))
    first.on_execution(_fill("f", "y.01", 50, 10.0))
    first.on_execution(_fill("f", "y.02", 50, 10.5))  # corrects the last one told
    _publish(first)
    first.journal.compact(first.compaction())
    first.on_execution(_fill("f", "z.01", 10, 11.0))  # booked after the compaction, not told
    first.journal.sync()
    first.journal.close()
    again = ExecutionEngine(Journal(path, fsync=False))
    assert _told(again) == ["z.01"]
    assert again.errors["published_mark_unknown"] == 0


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


def test_an_order_at_ib_that_execution_never_placed_is_adopted_as_external_and_alerted(engine):
    engine.on_open_order(OpenOrder(ib_order_id=99, client_order_id="", perm_id=1, client_id=0,
                                   account="DU1", symbol="AAPL", side="BUY", quantity=1,
                                   order_type="LMT", limit_price=10.0))
    [adopted] = engine.open_orders(EXTERNAL)
    assert adopted.intent.quantity == 1 and adopted.perm_id == 1
    assert [a[1] for a in engine.alerts] == ["unknown_order"]
    assert [c.command for c in engine.cancel_all()] == ["cancel"]  # the kill switch reaches it


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


# -- the "one truth" cases, engine side ---------------------------------------------------------

def test_a_modify_refused_by_ib_keeps_the_order_working_with_its_old_terms(engine):
    order = _working(engine)
    [cmd] = engine.on_intent(_intent(action="modify", price=100.005))
    assert cmd.command == "modify" and order.state is OrderState.PENDING_MODIFY
    engine.on_order_error(GatewayError(code=110, text="price does not conform", req_id=7,
                                       scope="order", ref="s-1"))
    assert order.state is OrderState.SUBMITTED
    assert order.intent.limit_price == 100.0 and order.pending_terms is None
    assert [c.command for c in engine.cancel_all()] == ["cancel"]  # the kill switch reaches it


def test_a_modify_confirmed_by_ib_replaces_the_terms(engine, tmp_path):
    order = _working(engine)
    engine.on_intent(_intent(action="modify", price=101.0))
    engine.on_open_order(_open("s-1", 7, price=100.0))  # an old report: terms unchanged
    assert order.state is OrderState.PENDING_MODIFY
    engine.on_open_order(_open("s-1", 7, price=101.0))
    assert order.state is OrderState.SUBMITTED and order.intent.limit_price == 101.0


def test_an_order_gone_at_ib_while_down_is_closed_by_reconciliation(engine):
    cancelled, expired, vanished = (_working(engine, c, ib) for c, ib in
                                    (("c", 1), ("x", 2), ("v", 3)))
    kept = _working(engine, "k", 4)
    engine.on_completed(CompletedOrder(ib_order_id=1, client_order_id="c", perm_id=0,
                                       symbol="AAPL", side="BUY", quantity=100, filled=0,
                                       status="Cancelled"))
    engine.on_completed(CompletedOrder(ib_order_id=2, client_order_id="x", perm_id=0,
                                       symbol="AAPL", side="BUY", quantity=100, filled=0,
                                       status="Cancelled", completed_status="Cancelled by System"))
    engine.on_reconcile_end(ReconcileEnd(reason="reconnected", open_ids=[4]))
    assert cancelled.state is OrderState.CANCELLED
    assert expired.state is OrderState.EXPIRED
    assert vanished.state is OrderState.CANCELLED and "no longer lists" in vanished.reason
    assert kept.state is OrderState.SUBMITTED
    assert [o.client_order_id for o in engine.open_orders()] == ["k"]
    assert [c.client_order_id for c in engine.cancel_all()] == ["k"]  # no endless cancel loop


def test_an_order_ib_lists_filled_waits_for_its_executions_not_closed_as_cancelled(engine):
    """The fill's message was lost (the bus restarted): IB's completed orders say Filled, the
    executions are not booked yet. The order is not closed as cancelled with 0 filled; the
    next run's executions fill it. Without them for a few runs it is closed, alerted."""
    filled = _working(engine, "f", 1)
    done = CompletedOrder(ib_order_id=1, client_order_id="f", perm_id=0, symbol="AAPL",
                          side="BUY", quantity=100, filled=100, status="Filled")
    engine.on_completed(done)
    assert engine.reconcile_wanted  # asks IB for the executions again
    engine.on_reconcile_end(ReconcileEnd(reason="gap", open_ids=[]))
    assert filled.state is OrderState.SUBMITTED
    assert "order_vanished" not in [code for _, code, _ in engine.alerts]
    engine.on_execution(_fill("f", "e1", 100, ib=1))  # the next run brings it
    assert filled.state is OrderState.FILLED and filled.filled == 100

    lost = _working(engine, "l", 2)
    for _ in range(4):  # never: closed after a few runs, as before, and said so
        engine.on_completed(CompletedOrder(ib_order_id=2, client_order_id="l", perm_id=0,
                                           symbol="AAPL", side="BUY", quantity=100,
                                           filled=100, status="Filled"))
        engine.on_reconcile_end(ReconcileEnd(reason="gap", open_ids=[]))
    assert lost.state is OrderState.CANCELLED
    assert [code for _, code, _ in engine.alerts].count("order_vanished") == 1


def test_an_execution_correction_replaces_the_fill_it_corrects(engine):
    _working(engine)
    engine.on_execution(_fill("s-1", "0000e0d5.6575a7f3.01.01", 100, 100.0))
    engine.on_execution(_fill("s-1", "0000e0d5.6575a7f3.01.02", 100, 100.5))
    assert engine.portfolio.quantity("s", "AAPL") == 100
    assert engine.orders["s-1"].filled == 100
    assert engine.orders["s-1"].avg_fill_price == 100.5
    engine.on_execution(_fill("s-1", "0000e0d5.6575a7f3.01.01", 100, 100.0))  # late original
    assert engine.portfolio.quantity("s", "AAPL") == 100


def test_realized_pnl_is_net_of_commissions_and_published_with_the_fill(engine):
    _working(engine, "a", 1)
    engine.on_execution(_fill("a", "e.01", 100, 100.0))
    engine.on_commission(Commission(exec_id="e.01", commission=1.0))
    _working(engine, "b", 2, side="SELL")
    engine.frames.clear()
    engine.on_execution(_fill("b", "f.01", 100, 101.0, side="SELL"))
    engine.on_commission(Commission(exec_id="f.01", commission=1.5))
    position = engine.position_message("s", "AAPL")
    assert position.quantity == 0 and position.realized == pytest.approx(100 - 2.5)
    assert position.commissions == pytest.approx(2.5)
    topic, first = engine.frames[0]
    assert topic == "ord.update.s"
    assert isinstance(first[0], StrategyPosition) and first[1].exec_id == "f.01"


def test_bad_intents_get_a_clear_counted_error_and_change_nothing(engine):
    for bad, field in ((dict(side="buy-ish"), "side"), (dict(order_type="LIMIT?"), "order_type"),
                       (dict(tif="FOREVER"), "tif")):
        intent = OrderIntent(strategy="s", client_order_id="bad", action="new", symbol="AAPL",
                             quantity=1, limit_price=1.0, **{"side": "BUY", "order_type": "LMT",
                                                              "tif": "DAY", **bad})
        with pytest.raises(IntentRefused, match=field):
            engine.on_intent(intent)
    with pytest.raises(IntentRefused, match="unknown order"):
        engine.on_intent(_intent("nope", action="cancel"))
    order = _working(engine, "done", 5)
    engine.on_status(OrderStatus(ib_order_id=5, client_order_id="done", status="Cancelled",
                                 filled=0, remaining=100))
    with pytest.raises(IntentRefused, match="already cancelled"):
        engine.on_intent(_intent("done", action="modify", price=1.0))
    assert order.state is OrderState.CANCELLED
    assert set(engine.orders) == {"done"}
    assert engine.errors["invalid_order"] == 3
    assert engine.errors["cancel_unknown_order"] == 1 and engine.errors["modify_done_order"] == 1
    with pytest.raises(IntentRefused, match="unknown order"):
        engine.on_intent(_intent("nope", action="modify", price=2.0))
    with pytest.raises(IntentRefused, match="already cancelled"):
        engine.on_intent(_intent("done", action="cancel"))
    assert engine.errors["modify_unknown_order"] == 1 and engine.errors["cancel_done_order"] == 1
    # a correction (.02) of an execution never booked, of an order execution does not know
    records = engine.journal.file_records
    assert engine.on_execution(_fill("ghost", "0000e1.02", 50, ib=99)) == []
    assert engine.errors["correction_of_unknown_execution"] == 1
    assert not engine.portfolio.has_fill("0000e1.02") and engine.portfolio.quantity(
        EXTERNAL, "AAPL") == 0
    assert engine.journal.file_records == records  # nothing journalled, nothing booked
    assert set(engine.orders) == {"done"} and order.state is OrderState.CANCELLED


def test_positions_that_differ_from_the_broker_twice_are_adopted(engine):
    _working(engine, "a", 1)
    engine.on_execution(_fill("a", "e.01", 100, 100.0))
    from proto.schema import Position
    engine.on_broker_position(Position(account="DU1", symbol="AAPL", quantity=0, avg_cost=0))
    engine.on_broker_position(Position(account="DU1", symbol="MSFT", quantity=50, avg_cost=10))
    engine.on_reconcile_end(ReconcileEnd(reason="r"))
    assert engine.portfolio.quantity("s", "AAPL") == 100  # once may be a race: confirm first
    assert engine.reconcile_wanted
    engine.on_reconcile_end(ReconcileEnd(reason="r"))
    assert engine.portfolio.net_positions() == {"MSFT": 50}
    assert engine.portfolio.quantity("s", "AAPL") == 0
    assert engine.portfolio.quantity(EXTERNAL, "MSFT") == 50
    assert "broker_positions_adopted" in [a[1] for a in engine.alerts]


def test_a_compacted_journal_rebuilds_the_same_orders_and_portfolio(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    for i in range(30):  # churn: most orders end without a fill
        _working(first, f"c{i}", 100 + i)
        first.on_status(OrderStatus(ib_order_id=100 + i, client_order_id=f"c{i}",
                                    status="Cancelled", filled=0, remaining=100))
    _working(first, "f", 1)
    first.on_execution(_fill("f", "e.01", 100, 10.0))
    first.on_execution(_fill("f", "e.02", 100, 10.5))  # a correction
    first.on_commission(Commission(exec_id="e.02", commission=1.0))
    live = _working(first, "w", 2)
    first.on_intent(_intent("w", action="modify", price=99.0))
    before = first.journal.file_records
    first.journal.compact(first.compaction())
    assert first.journal.file_records < before / 5
    first.journal.close()
    again = ExecutionEngine(Journal(path, fsync=False))
    assert set(again.orders) == {"f", "w"}
    assert again.orders["w"].state is OrderState.PENDING_MODIFY is live.state
    assert again.orders["w"].pending_terms.limit_price == 99.0
    assert again.position_message("s", "AAPL") == first.position_message("s", "AAPL")
    assert again.portfolio.has_fill("e.02") and not again.portfolio.has_fill("e.01")


# -- a held modify/cancel is durable once acknowledged (issue 12, item 7) -------------------

def test_a_held_modify_survives_a_kill_of_execution_and_is_released_once(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    first.on_intent(_intent())
    first.on_placed(OrderStatus(ib_order_id=7, client_order_id="s-1", status="PendingSubmit",
                                filled=0, remaining=100))
    assert first.on_intent(_intent(action="modify", price=101.0)) == []  # held, acknowledged
    first.journal.sync()  # what the service does before it acknowledges
    # kill -9: the file is left as it is (no close)

    again = ExecutionEngine(Journal(path, fsync=False))
    assert [(w.action, w.limit_price) for w in again.orders["s-1"].waiting] == \
        [("modify", 101.0)]
    released = again.on_status(OrderStatus(ib_order_id=7, client_order_id="s-1",
                                           status="Submitted", filled=0, remaining=100))
    assert [(c.command, c.limit_price) for c in released] == [("modify", 101.0)]
    assert again.orders["s-1"].waiting == []
    # the same status again (a reconciliation repeats it): nothing more is sent
    assert again.on_status(OrderStatus(ib_order_id=7, client_order_id="s-1",
                                       status="Submitted", filled=0, remaining=100)) == []
    again.journal.close()

    third = ExecutionEngine(Journal(path, fsync=False))  # and after another restart: once
    assert third.orders["s-1"].waiting == []
    assert third.orders["s-1"].pending_terms.limit_price == 101.0
    third.journal.close()


def test_held_intents_are_kept_by_compaction(tmp_path):
    path = tmp_path / "journal.bin"
    first = ExecutionEngine(Journal(path, fsync=False))
    first.on_intent(_intent())
    first.on_intent(_intent(action="modify", price=101.0))
    first.on_intent(_intent(action="cancel"))
    first.journal.compact(first.compaction())
    first.journal.close()
    again = ExecutionEngine(Journal(path, fsync=False))
    assert [w.action for w in again.orders["s-1"].waiting] == ["modify", "cancel"]
    again.journal.close()


def test_a_journal_that_cannot_write_refuses_the_intent_and_changes_nothing(tmp_path,
                                                                             monkeypatch):
    import errno
    import os

    from services.runtime import journal as journal_mod
    from services.runtime.journal import JournalError
    path = tmp_path / "journal.bin"
    engine = ExecutionEngine(Journal(path, fsync=False))
    engine.on_intent(_intent("a"))

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_mod.os, "write", full)
    with pytest.raises(JournalError) as info:
        engine.on_intent(_intent("b"))
    assert info.value.errno == errno.ENOSPC
    assert "b" not in engine.orders
    monkeypatch.undo()
    engine.on_intent(_intent("c"))  # space again: goes on
    engine.journal.close()
    again = ExecutionEngine(Journal(path, fsync=False))
    assert sorted(again.orders) == ["a", "c"]
    again.journal.close()
