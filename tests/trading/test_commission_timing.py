"""F26: IB sends commissionReport at its own pace. Right after the fill's orderStatus (normal),
before it (early), seconds later (late) or never (missing): on real processes (simulator with
``--commission-timing``, bus, gateway, execution, risk, a probe strategy), every fill reaches
the bus exactly once, its commission is attached whenever the report comes, and a fill whose
report never comes is booked with its commission counted unknown
(``StrategyPosition.commissions_unknown``), never as 0."""
from __future__ import annotations

from collections import Counter

import pytest

from proto.schema import Commission, Execution, Heartbeat, OrderStatus, StrategyPosition
from tests.support.audit import assert_audit

PROBE = "tests.support.probe_strategy:Probe"
LATE_S = 4.0  # the simulator's commission delay in "late"


def _positions(fleet):
    return [m for m in fleet.messages(StrategyPosition) if m.strategy == "c" and m.symbol == "AAPL"]


def _start(fleet, timing: str) -> list[dict]:
    """The fleet on a simulator with this timing, one strategy buying 100 AAPL; returns the
    simulator's fills once the strategy holds them."""
    fleet.start_core(sim_args=("--commission-timing", timing,
                               "--commission-delay", str(LATE_S)))
    fleet.add_strategy("c", PROBE, ["AAPL"], {"mode": "target", "target": 100})
    fleet.start_strategy("c")
    fleet.wait(lambda: any(p.quantity == 100 for p in _positions(fleet)), deadline=90,
               what="the strategy to hold 100 AAPL")
    fills = [f for f in fleet.sim.fills() if f["symbol"] == "AAPL"]
    assert sum(f["qty"] for f in fills) == 100
    return fills


def _executions_once(fleet, fills) -> None:
    ids = {f["exec_id"] for f in fills}
    fleet.wait(lambda: ids <= {e.exec_id for e in fleet.messages(Execution)},
               what="every fill on the bus")
    count = Counter(e.exec_id for e in fleet.messages(Execution))
    assert {i: count[i] for i in ids} == {i: 1 for i in ids}, "a fill on the bus twice"
    assert set(fleet.fills("c")) == ids


def _commissions_attached(fleet, fills) -> StrategyPosition:
    """Every fill's commission once on the bus, with IB's amount, and execution's position
    carrying their sum with none unknown."""
    want = {f["exec_id"]: f["commission"] for f in fills}
    total = round(sum(want.values()), 6)
    fleet.wait(lambda: [p for p in _positions(fleet)
                        if p.commissions_unknown == 0 and round(p.commissions, 6) == total],
               deadline=60, what="execution's position with every commission")
    got = [c for c in fleet.messages(Commission) if c.exec_id in want]
    assert Counter(c.exec_id for c in got) == Counter(want)  # each once
    assert {c.exec_id: c.commission for c in got} == pytest.approx(want)
    last = _positions(fleet)[-1]
    assert last.commissions_unknown == 0 and last.commissions == pytest.approx(total)
    return last


def test_normal_commission_after_the_filled_status(fleet):
    fills = _start(fleet, "normal")
    _executions_once(fleet, fills)
    _commissions_attached(fleet, fills)
    assert_audit(fleet, ["c"])


def test_early_commission_before_the_filled_status(fleet):
    fills = _start(fleet, "early")
    _executions_once(fleet, fills)
    _commissions_attached(fleet, fills)
    # on the bus in IB's order: the execution, its commission, then the order's status
    order = [(type(m).__name__, getattr(m, "exec_id", getattr(m, "status", "")))
             for _, m in fleet.seen if isinstance(m, (Execution, Commission, OrderStatus))]
    last_id = fills[-1]["exec_id"]
    at_comm = order.index(("Commission", last_id))
    assert order.index(("Execution", last_id)) < at_comm
    assert ("OrderStatus", "Filled") in order[at_comm:]
    assert_audit(fleet, ["c"])


def test_late_commission_is_attached_when_it_comes(fleet):
    fills = _start(fleet, "late")
    _executions_once(fleet, fills)
    # booked at once without it: counted unknown (not 0 silently) until the report comes
    first = next(p for p in _positions(fleet) if p.quantity == 100)
    assert first.commissions_unknown == len(fills) and first.commissions == 0.0
    seen = [m for _, m in fleet.seen]
    at_first = next(i for i, m in enumerate(seen) if m is first)
    ids = {f["exec_id"] for f in fills}
    assert not [m for m in seen[:at_first] if isinstance(m, Commission) and m.exec_id in ids]
    _commissions_attached(fleet, fills)
    assert_audit(fleet, ["c"])


def test_missing_commission_leaves_the_fill_booked_and_its_commission_unknown(fleet):
    fills = _start(fleet, "missing")
    _executions_once(fleet, fills)
    ids = {f["exec_id"] for f in fills}
    # longer than a late report (LATE_S) takes: execution heartbeats every 0.5 s, 12 more
    beats = len([h for h in fleet.messages(Heartbeat) if h.src == "execution.1"])
    fleet.wait(lambda: len([h for h in fleet.messages(Heartbeat)
                            if h.src == "execution.1"]) >= beats + 12,
               deadline=60, what="a few more of execution's heartbeats")
    assert not [c for c in fleet.messages(Commission) if c.exec_id in ids]
    last = _positions(fleet)[-1]
    assert last.quantity == 100
    assert last.commissions_unknown == len(fills) and last.commissions == 0.0
    assert_audit(fleet, ["c"])


def test_execution_books_a_commission_whenever_it_comes_and_counts_the_missing(tmp_path):
    """Execution's engine on its own, the orders the bus may bring: a commission before its
    execution (booked on arrival), one after, one never; and the same after a restart (the
    journal replayed)."""
    from services.execution.engine import ExecutionEngine
    from services.runtime.journal import Journal
    from tests.execution.test_engine import _fill, _working

    path = tmp_path / "journal.bin"
    journal = Journal(path, fsync=False)
    engine = ExecutionEngine(journal)
    _working(engine, "a", 1)
    engine.on_commission(Commission(exec_id="e.01", commission=1.25))  # before its fill
    engine.on_execution(_fill("a", "e.01", 40, 100.0))
    engine.on_execution(_fill("a", "e2.01", 30, 100.0))
    engine.on_execution(_fill("a", "e3.01", 30, 100.0))
    pos = engine.position_message("s", "AAPL")
    assert (pos.quantity, pos.commissions, pos.commissions_unknown) == (100, 1.25, 2)
    engine.frames.clear()
    engine.on_commission(Commission(exec_id="e2.01", commission=1.0))  # late
    [(topic, [late])] = engine.frames  # the position again, with it
    assert topic == "ord.update.s"
    assert (late.commissions, late.commissions_unknown) == (2.25, 1)
    assert late.realized == pytest.approx(-2.25)
    engine.on_commission(Commission(exec_id="e2.01", commission=1.0))  # IB's repeat: nothing
    assert engine.position_message("s", "AAPL").commissions == 2.25
    journal.close()
    again = ExecutionEngine(Journal(path, fsync=False))  # e3's never came: still unknown
    pos = again.position_message("s", "AAPL")
    assert (pos.quantity, pos.commissions, pos.commissions_unknown) == (100, 2.25, 1)
    again.journal.close()
