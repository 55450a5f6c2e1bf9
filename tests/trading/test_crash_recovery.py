"""SIGKILL of the strategy, of risk and of execution in the middle of order flow, then a
restart: no duplicate order at the simulator, no lost fill, positions equal the simulator's."""
from __future__ import annotations

from collections import Counter

from proto.schema import Heartbeat
from services.runtime.journal import Journal
from tests.support.fleet import assert_books_match_the_simulator, sim_positions

PROBE = "tests.support.probe_strategy:Probe"


def _strategy_position(fleet, name: str) -> int | None:
    beats = [h for h in fleet.messages(Heartbeat) if h.src == f"strategy.{name}"]
    return beats[-1].counters.get("position_abs") if beats else None


def test_a_strategy_killed_and_restarted_does_not_double_its_position(fleet):
    fleet.start_core()
    fleet.add_strategy("hold", PROBE, ["AAPL"], {"mode": "target", "target": 100})
    first = fleet.start_strategy("hold")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 100, deadline=90,
               what="the strategy to reach its target at the simulator")
    fleet.procs.kill(first)  # SIGKILL
    first.wait(30)
    seen = len(fleet.messages(Heartbeat))
    fleet.start_strategy("hold", proc_name="strategy-hold-2")
    fleet.wait(lambda: any(h.src == "strategy.hold" and h.counters.get("position_abs") == 100
                           for h in fleet.messages(Heartbeat)[seen:]), deadline=60,
               what="the restarted strategy to report its recovered position")
    # a few more seconds of market: a strategy that forgot would buy another 100 now
    fleet.wait(lambda: fleet.messages(Heartbeat)[seen:] and len(
        [h for h in fleet.messages(Heartbeat)[seen:] if h.src == "strategy.hold"]) >= 6,
        deadline=60, what="the restarted strategy to run a while")
    assert sim_positions(fleet).get("AAPL") == 100
    assert len([o for o in fleet.sim.orders() if o["order_ref"].startswith("hold-")]) == 1


def test_sigkill_of_strategy_risk_and_execution_mid_flow_loses_nothing(fleet):
    fleet.start_core()
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10},
                       risk={"max_position": 1000, "order_rate": 50, "order_burst": 50,
                             "max_open_orders": 10})
    procs = {"strategy": fleet.start_strategy("churn")}
    restart = {"strategy": lambda n: fleet.start_strategy("churn", proc_name=n),
               "risk": fleet.start_risk, "execution": fleet.start_execution}
    procs["risk"] = None
    procs["execution"] = None
    names = {"strategy": "strategy-churn", "risk": "risk", "execution": "execution"}
    by_name = {p.name: p for p in fleet.procs.procs}
    procs["risk"], procs["execution"] = by_name["risk"], by_name["execution"]

    def fills_at_sim() -> int:
        return len(fleet.sim.fills())

    for round_, victim in enumerate(["strategy", "risk", "execution", "strategy"]):
        before = fills_at_sim()
        fleet.wait(lambda: fills_at_sim() >= before + 3, deadline=120,
                   what=f"order flow before killing {victim}")
        fleet.procs.kill(procs[victim])  # SIGKILL, mid-flow
        procs[victim].wait(30)
        procs[victim] = restart[victim](f"{names[victim]}-{round_}")
    before = fills_at_sim()
    fleet.wait(lambda: fills_at_sim() >= before + 3, deadline=120,
               what="order flow after the last restart")

    fleet.kill_switch()
    truth = assert_books_match_the_simulator(fleet)
    fleet.wait(lambda: _strategy_position(fleet, "churn") == int(abs(truth.get("AAPL", 0))),
               deadline=60, what="the strategy's own position to equal the simulator's")


def test_a_fill_made_durable_but_not_published_before_a_kill_is_published_after_restart(fleet):
    """Execution syncs its journal, then publishes. Killed between the two, the fill is
    booked but no consumer (a strategy, the recorder) was told: the restart must tell it.
    The journal is put in exactly that state by removing its published marks while
    execution is down (every fill becomes durable-but-untold)."""
    fleet.start_core()
    fleet.add_strategy("hold", PROBE, ["AAPL"], {"mode": "target", "target": 100})
    fleet.start_strategy("hold")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 100 and fleet.fills("hold"),
               deadline=90, what="the strategy's fill on the bus")
    exec_ids = set(fleet.fills("hold"))
    told = Counter(u.exec_id for u in fleet.updates("hold") if u.exec_id)
    execution = next(p for p in fleet.procs.procs if p.name == "execution")
    fleet.procs.kill(execution)
    execution.wait(30)

    path = fleet.config.service_state_dir("execution") / "journal.bin"
    journal = Journal(path, fsync=True)
    try:
        entries = list(journal.entries())
        marks = [e for e in entries if isinstance(e, dict) and "published" in e]
        assert marks, "execution journals a published mark after telling a fill"
        journal.compact([e for e in entries if not (isinstance(e, dict) and "published" in e)])
    finally:
        journal.close()

    fleet.start_execution("execution-2")
    fleet.wait(lambda: all(Counter(u.exec_id for u in fleet.updates("hold")
                                   if u.exec_id)[e] > told[e] for e in exec_ids),
               deadline=60, what="each fill told again after the restart")
    assert set(fleet.fills("hold")) == exec_ids  # told again, not booked again
    assert_books_match_the_simulator(fleet)
