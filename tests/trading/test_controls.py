"""Controls reach every strategy process and are confirmed by it (issue 15 items 1 and 7).

Real processes on the simulator: ``ibfleet pause NAME`` / ``unpause`` / ``kill`` / ``resume``
go through risk, which publishes each strategy's ``TradingState``; the strategy applies it
(no intent leaves it while paused or halted) and confirms it in its heartbeat, which
``ibfleet status`` shows. A strategy whose callbacks keep raising logs each kind of traceback
once, and risk halts it as errored after ``max_errors`` within ``error_window_s``.
"""
from __future__ import annotations

import re
import subprocess
import sys

from proto.schema import Alert, Heartbeat, RiskDecision, TradingState
from services.fleet.status import collect, render
from services.fleet.supervisor import FleetPaths
from tests.support.processes import REPO

PROBE = "tests.support.probe_strategy:Probe"
RAISING = "tests.support.raising_strategy:RaisingStrategy"


def _cli(fleet, *args: str) -> str:
    """An ``ibfleet`` command, run as the operator runs it."""
    result = subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                             str(fleet.config_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _beats(fleet, name: str) -> list[Heartbeat]:
    return [h for h in fleet.messages(Heartbeat) if h.src == f"strategy.{name}"]


def _latest(fleet, name: str) -> Heartbeat | None:
    beats = _beats(fleet, name)
    return beats[-1] if beats else None


def _number(coid: str) -> int:
    return int(coid.rsplit("-", 1)[-1])


def _decided(fleet, name: str, since: int = 0) -> list[RiskDecision]:
    """Risk's decisions on ``name``'s intents seen on the bus after ``fleet.seen[since]``."""
    return [m for _, m in fleet.seen[since:] if isinstance(m, RiskDecision)
            and m.strategy == name]


def _status(fleet) -> dict:
    """What ``ibfleet status --json`` reports (its collect(); the test fleet runs without
    supervisord, so the processes part is unreachable)."""
    status = collect(fleet.config, FleetPaths(fleet.config), timeout=5.0)
    text = render(status)
    out = status.as_dict()
    out["text"] = text
    return out


def _strategy_line(status: dict, name: str) -> str:
    return next(line for line in status["text"].splitlines()
                if line.strip().startswith(f"{name} "))


def _stops_sending(fleet, name: str, state: str) -> None:
    """The strategy reports ``state``; over four more of its heartbeats its intent counter
    stays, and no intent it sent after the first such heartbeat reaches risk."""
    fleet.wait(lambda: _latest(fleet, name) is not None and _latest(fleet, name).state == state,
               deadline=30, what=f"{name}'s heartbeat to report {state}")
    mark = len(fleet.seen)
    first = _latest(fleet, name)
    sent = first.counters.get("intents", 0)
    fleet.wait(lambda: len([h for h in _beats(fleet, name) if h.ts > first.ts]) >= 4,
               deadline=30, what=f"four more heartbeats of {name}")
    later = [h for h in _beats(fleet, name) if h.ts > first.ts]
    assert all(h.state == state for h in later), [h.state for h in later]
    assert all(h.counters.get("intents", 0) == sent for h in later), \
        f"{name} kept sending intents while {state}: {[h.counters.get('intents') for h in later]}"
    assert all(_number(d.client_order_id) <= sent for d in _decided(fleet, name, mark)), \
        "risk decided an intent sent after the strategy confirmed it stopped"


def _trades_again(fleet, name: str) -> None:
    fleet.wait(lambda: _latest(fleet, name).state == "active", deadline=30,
               what=f"{name}'s heartbeat to report active")
    mark = len(fleet.seen)  # it sent nothing while stopped: a decision from here is new
    fleet.wait(lambda: any(d.approved for d in _decided(fleet, name, mark)),
               deadline=60, what=f"{name} trading again (an approved new intent)")


def test_pause_unpause_kill_resume_reach_the_strategy_and_are_confirmed(fleet):
    fleet.ignore_market_data()
    fleet.start_core()
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 5},
                       risk={"max_open_orders": 10})
    first = fleet.start_strategy("churn")
    fleet.wait(lambda: sum(d.approved for d in fleet.decisions("churn")) >= 3, deadline=120,
               what="churn trading")

    # -- pause: risk's state reaches the strategy, which confirms it; the CLI says so
    out = _cli(fleet, "pause", "churn")
    assert "pause acknowledged by risk" in out and "strategy churn confirmed: paused" in out, out
    _stops_sending(fleet, "churn", "paused")
    assert any(s.strategy == "churn" and s.state == "paused" and s.src == "risk.1"
               for s in fleet.messages(TradingState))
    status = _status(fleet)
    assert status["heartbeats"]["strategy.churn"]["state"] == "paused"
    assert status["risk"]["churn"] == "paused"
    assert re.search(r"churn\s+paused\s+strategy paused", _strategy_line(status, "churn"))

    # a strategy that starts while paused learns it from risk's snapshot: it never sends
    fleet.procs.terminate(first)
    mark = len(fleet.seen)
    restarted = fleet.start_strategy("churn", proc_name="strategy-churn-2")
    fresh = lambda: [h for _, h in fleet.seen[mark:] if isinstance(h, Heartbeat)  # noqa: E731
                     and h.src == "strategy.churn"]
    fleet.wait(lambda: len(fresh()) >= 4, deadline=60, what="the restarted churn's heartbeats")
    assert {h.state for h in fresh()} == {"paused"}, [h.state for h in fresh()]
    assert all(h.counters.get("intents", 0) == 0 for h in fresh())
    assert restarted.poll() is None

    # -- unpause: active again, and it trades
    out = _cli(fleet, "unpause", "churn")
    assert "strategy churn confirmed: active" in out, out
    _trades_again(fleet, "churn")

    # -- the kill switch: every strategy halted, confirmed; resume: trading again
    mark = len(fleet.seen)
    fleet.kill_switch()
    _stops_sending(fleet, "churn", "halted")
    assert _status(fleet)["heartbeats"]["strategy.churn"]["state"] == "halted"
    out = _cli(fleet, "resume")
    assert "strategy churn confirmed: active" in out, out
    _trades_again(fleet, "churn")
    assert [a for _, a in fleet.seen[mark:] if isinstance(a, Alert)
            and a.code == "control_kill"]


def test_a_strategy_raising_on_every_tick_logs_once_and_is_halted_as_errored(fleet):
    fleet.ignore_market_data()
    fleet.start_core()
    fleet.add_strategy("buggy", RAISING, ["AAPL"], {},
                       risk={"max_errors": 5, "error_window_s": 30, "max_open_orders": 10})
    fleet.start_strategy("buggy")
    fleet.wait(lambda: fleet.alerts("strategy_errored"), deadline=90,
               what="risk halting the raising strategy as errored")
    alert = fleet.alerts("strategy_errored")[0]
    assert "buggy" in alert.text and "max_errors 5 in 30s" in alert.text, alert.text
    _stops_sending(fleet, "buggy", "errored")
    status = _status(fleet)
    assert status["risk"]["buggy"] == "errored"
    assert status["heartbeats"]["strategy.buggy"]["state"] == "errored"
    assert re.search(r"buggy\s+errored\s+strategy errored", _strategy_line(status, "buggy"))
    errors = _latest(fleet, "buggy").counters["callback_errors"]
    assert errors >= 5

    # the log: each kind's traceback once, then counts (it keeps raising on every tick)
    log_name = "strategy-buggy"
    fleet.wait(lambda: "strategy callback failed again" in fleet.procs.log(log_name),
               deadline=60, what="a count line for the repeated errors")
    log = fleet.procs.log(log_name)
    assert log.count("Traceback (most recent call last)") == 2, log[-3000:]
    assert log.count("ZeroDivisionError") >= 2  # the traceback, then its count lines
    tracebacks = [line for line in log.splitlines() if "Traceback" in line]
    assert any("ZeroDivisionError" in line for line in tracebacks)
    assert any("KeyError" in line for line in tracebacks)
    assert len(log) < 100_000, f"{len(log)} bytes of log for {errors} errors"
    count_line = next(line for line in log.splitlines() if "failed again" in line)
    assert '"count"' in count_line

    # unpaused, it is active again; still raising, risk halts it again
    before = len(fleet.alerts("strategy_errored"))
    out = _cli(fleet, "unpause", "buggy")
    assert "acknowledged by risk" in out
    fleet.wait(lambda: len(fleet.alerts("strategy_errored")) > before, deadline=60,
               what="risk halting it again")
