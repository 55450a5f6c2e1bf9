"""Issue 12, items 3, 4 and 7, with real processes: a durable writer that cannot write fails
closed and recovers; a held modify or cancel is durable once acknowledged.

A full disk is real here: a small tmpfs mounted on one service's state directory (tests run
as root; ``chmod`` would not stop root's writes), filled with a file until ENOSPC, then freed
by deleting the file. Tests skip if ``mount`` is not permitted."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from proto.schema import (Ack, Alert, GatewayState, Heartbeat, OrderCommand, OrderIntent,
                          OrderUpdate, RiskDecision)
from services.bus.reliable import ReliableClient
from services.runtime.journal import Journal
from tests.support.audit import assert_audit
from tests.support.fleet import duplicate_orders, live_orders
from tests.support.processes import REPO

PROBE = "tests.support.probe_strategy:Probe"
CHURN_RISK = {"max_position": 1000, "order_rate": 50, "order_burst": 50, "max_open_orders": 10}


# -- a small disk ----------------------------------------------------------------------------
@contextmanager
def small_disk(path: Path, size: str = "1m"):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:  # lazy: processes of the fleet may still hold files open on it
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(path: Path) -> Path:
    """Write a file until the filesystem refuses (ENOSPC); returns it (delete it to free)."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def _proc(fleet, name: str):
    return {p.name: p for p in fleet.procs.procs}[name]


def _fills_at_sim(fleet) -> int:
    return len(fleet.sim.fills())


def _refs_at_sim(fleet) -> set[str]:
    """Every client order id the simulator ever saw a place for (orders and requests)."""
    refs = {o["order_ref"] for o in fleet.sim.orders()}
    refs |= {r.get("order_ref", "") for r in fleet.sim.ledger()["order_requests"]}
    return refs - {""}


def _churn(fleet, **params) -> None:
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10, **params},
                       risk=CHURN_RISK)
    fleet.start_strategy("churn")
    fleet.wait(lambda: _fills_at_sim(fleet) >= 3, deadline=120, what="order flow")


def _pause_and_audit(fleet, name: str = "churn") -> None:
    """Pause the strategy (its orders stay) so the views can settle, then the audit."""
    result = subprocess.run([sys.executable, "-m", "services.cli", "pause", name, "--config",
                             str(fleet.config_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert_audit(fleet, [name], deadline=90)


# -- (a) execution's journal ---------------------------------------------------------------
def test_execution_disk_full_refuses_intents_alerts_keeps_running_then_resumes(fleet):
    disk = fleet.state_dir / "execution"
    with small_disk(disk):
        fleet.start_core()
        # past_cancels: two orders whose cancels the full disk refuses must not stop new
        # orders, or the window could hold refused cancels only
        _churn(fleet, past_cancels=True)
        execution = _proc(fleet, "execution")
        mark = len(fleet.seen)
        filler = fill_disk(disk)

        def refused():
            return [d for _, d in fleet.seen[mark:] if isinstance(d, RiskDecision)
                    and d.reason == "execution_refused" and "journal cannot write" in d.text]

        def new_orders_refused() -> set[str]:
            """Refused client order ids that never had an approved decision (not a cancel
            or modify of an order placed before)."""
            approved = {d.client_order_id for d in fleet.decisions() if d.approved}
            return {d.client_order_id for d in refused()} - approved
        fleet.wait(lambda: len(refused()) >= 3 and new_orders_refused(), deadline=90,
                   what="new orders refused by execution for its journal")
        assert all("ENOSPC" in d.text for d in refused()), refused()[0].text
        fleet.wait(lambda: any(a.code == "journal_write_failed" and a.severity == "critical"
                               for _, a in fleet.seen[mark:] if isinstance(a, Alert)),
                   what="execution's critical alert")
        beats = len(fleet.messages(Heartbeat))
        fleet.wait(lambda: any(h.src == "execution.1" for h in fleet.messages(Heartbeat)[beats:]),
                   what="execution to go on heartbeating with a full disk")
        assert execution.poll() is None, "execution died of a full disk"

        filler.unlink()  # space again: trading resumes by itself
        fleet.wait(lambda: any(a.code == "journal_recovered" for _, a in fleet.seen[mark:]
                               if isinstance(a, Alert)), what="execution to write again")
        before = _fills_at_sim(fleet)
        fleet.wait(lambda: _fills_at_sim(fleet) >= before + 3, deadline=120,
                   what="order flow after the disk was freed")
        assert execution.poll() is None
        # new orders the strategy was told were rejected (a refused cancel or modify names
        # an order that was placed before: it has an approved decision too)
        decisions = fleet.decisions("churn")
        told_rejected = {d.client_order_id for d in decisions if not d.approved} - \
            {d.client_order_id for d in decisions if d.approved}
        assert told_rejected & {d.client_order_id for d in refused()}
        assert not told_rejected & _refs_at_sim(fleet), "an order reported rejected was placed"
        assert not duplicate_orders(fleet)
        _pause_and_audit(fleet)


# -- (b) the gateway's state ---------------------------------------------------------------
def test_gateway_disk_full_refused_places_are_never_placed_after_a_sigterm_restart(fleet):
    disk = fleet.state_dir / "gateway"
    with small_disk(disk):
        fleet.start_core()
        _churn(fleet)
        mark, states = len(fleet.seen), len(fleet.messages(GatewayState))
        filler = fill_disk(disk)

        def rejected():
            return [u for _, u in fleet.seen[mark:] if isinstance(u, OrderUpdate)
                    and u.state == "rejected" and "gateway journal cannot write" in u.reason]
        fleet.wait(lambda: len(rejected()) >= 3, deadline=90,
                   what="places refused by the gateway for its journal, told to the strategy")
        assert all("ENOSPC" in u.reason for u in rejected()), rejected()[0].reason
        fleet.wait(lambda: any(a.code == "gateway.journal_write_failed"
                               and a.severity == "critical"
                               for _, a in fleet.seen[mark:] if isinstance(a, Alert)),
                   what="the gateway's critical alert")
        # the IB connection was not rebuilt over a journal error
        assert {s.state for s in fleet.messages(GatewayState)[states:]} <= {"synchronised"}
        told_rejected = {u.client_order_id for u in rejected()}

        filler.unlink()
        states = len(fleet.messages(GatewayState))
        fleet.procs.terminate(_proc(fleet, "gateway"))  # SIGTERM
        fleet.start_gateway("gateway-2")
        fleet.wait_gateway("synchronised", deadline=90, after=states)
        before = _fills_at_sim(fleet)
        fleet.wait(lambda: _fills_at_sim(fleet) >= before + 3, deadline=120,
                   what="order flow after the restart")
        assert not told_rejected & _refs_at_sim(fleet), "an order reported rejected was placed"
        assert not duplicate_orders(fleet)
        _pause_and_audit(fleet)


# -- (c) held modify and cancel across kill -9 ---------------------------------------------
def _requests(fleet, order_id: int, modify: bool) -> list[dict]:
    return [r for r in fleet.sim.ledger()["order_requests"]
            if r["order_id"] == order_id and bool(r.get("modify")) == modify]


def _cancels(fleet, order_id: int) -> list[dict]:
    return [c for c in fleet.sim.ledger()["cancels"] if c["order_id"] == order_id]


def test_a_modify_and_a_cancel_held_by_the_gateway_survive_its_kill_9_once(fleet):
    fleet.start_core()
    fleet.add_strategy("rest", PROBE, ["AAPL"], {"mode": "rest_far", "count": 2})
    fleet.start_strategy("rest")
    fleet.wait(lambda: len([o for o in live_orders(fleet)
                            if o["order_ref"].startswith("rest-")]) == 2,
               deadline=90, what="two resting orders at the simulator")
    a, b = sorted((o for o in live_orders(fleet) if o["order_ref"].startswith("rest-")),
                  key=lambda o: o["order_id"])
    states = len(fleet.messages(GatewayState))
    fleet.sim.restart(seconds=15)  # IB goes away: the gateway holds order commands
    fleet.wait_gateway("disconnected", deadline=30, after=states)
    # as execution would: a modify and a cancel, acknowledged while held
    client = ReliableClient(fleet.context_as("execution"), fleet.config.bus.endpoint("gateway"),
                            "execution.t9",
                            resend_after=2.0)
    new_price = round(a["lmt_price"] - 0.5, 2)
    client.send(OrderCommand(command="modify", client_order_id=a["order_ref"],
                             ib_order_id=a["order_id"], symbol="AAPL", side=a["action"],
                             quantity=a["qty"], order_type="LMT", limit_price=new_price,
                             tif=a["tif"]))
    client.send(OrderCommand(command="cancel", client_order_id=b["order_ref"],
                             ib_order_id=b["order_id"], symbol="AAPL"))
    acks: list[Ack] = []

    def acked() -> bool:
        acks.extend(m for m in client.poll(100) if isinstance(m, Ack))
        return len(acks) >= 2
    fleet.wait(acked, deadline=30, what="the gateway to acknowledge both")
    assert all(ack.ok for ack in acks), acks
    client.close()
    gateway = _proc(fleet, "gateway")
    fleet.procs.kill(gateway)  # kill -9 while they are held
    gateway.wait(30)
    fleet.start_gateway("gateway-2")
    fleet.wait(lambda: any(o["order_id"] == a["order_id"] and o["lmt_price"] == new_price
                           for o in fleet.sim.orders()), deadline=120,
               what="the held modify to reach the simulator")
    fleet.wait(lambda: any(o["order_id"] == b["order_id"] and o["status"] == "Cancelled"
                           for o in fleet.sim.orders()), deadline=60,
               what="the held cancel to reach the simulator")
    beats = len(fleet.messages(Heartbeat))  # a while more: nothing is sent twice
    fleet.wait(lambda: len([h for h in fleet.messages(Heartbeat)[beats:]
                            if h.src == "gateway.1"]) >= 6, what="the gateway to run a while")
    assert len(_requests(fleet, a["order_id"], modify=True)) == 1
    assert len(_cancels(fleet, b["order_id"])) == 1
    assert not duplicate_orders(fleet)


def test_a_modify_held_by_execution_survives_its_kill_9_once(fleet, tmp_path):
    go = tmp_path / "go"
    fleet.start_core()
    fleet.add_strategy("mp", PROBE, ["AAPL"], {"mode": "modify_pending", "go": str(go),
                                               "below": 0.01, "modify_below": 0.015})
    fleet.start_strategy("mp")
    fleet.wait(lambda: len([h for h in fleet.messages(Heartbeat)
                            if h.src == "strategy.mp"]) >= 4,
               what="the strategy to run with market data")
    fleet.sim.hang()  # IB takes the place but says nothing: execution holds the modify
    go.touch()
    fleet.wait(lambda: len([d for d in fleet.decisions("mp") if d.approved]) >= 2,
               deadline=30, what="the place and the modify acknowledged")
    execution = _proc(fleet, "execution")
    fleet.procs.kill(execution)  # kill -9 with the modify held
    execution.wait(30)
    [coid] = {d.client_order_id for d in fleet.decisions("mp")}
    # the modify was held by execution (IB had not answered the place), journalled
    journal = Journal(fleet.state_dir / "execution" / "journal.bin")
    held = [r for r in journal.iter_records() if r.get("waiting") == coid]
    journal.close()
    assert held and [msgspec.convert(i, OrderIntent).action for i in held[-1]["intents"]] \
        == ["modify"], held
    fleet.sim.resume()
    fleet.start_execution("execution-2")

    def at_sim():
        return [o for o in fleet.sim.orders() if o["order_ref"] == coid]
    fleet.wait(lambda: at_sim() and at_sim()[0]["status"] in ("Submitted", "PreSubmitted"),
               deadline=120, what="the order working at the simulator")
    order_id = at_sim()[0]["order_id"]
    fleet.wait(lambda: _requests(fleet, order_id, modify=True), deadline=120,
               what="the held modify to reach the simulator")
    beats = len(fleet.messages(Heartbeat))
    fleet.wait(lambda: len([h for h in fleet.messages(Heartbeat)[beats:]
                            if h.src == "execution.1"]) >= 6, what="execution to run a while")
    assert len(_requests(fleet, order_id, modify=True)) == 1
    assert at_sim()[0]["lmt_price"] < _requests(fleet, order_id, modify=False)[0]["lmt_price"]
    assert not duplicate_orders(fleet)
    fleet.wait(lambda: [u for u in fleet.updates("mp") if u.client_order_id == coid
                        and u.state == "submitted"
                        and u.limit_price == at_sim()[0]["lmt_price"]],
               deadline=60, what="execution to confirm the modify")
