"""Issue 12, "the kill switch cannot be blocked": ``ibfleet kill`` cancels every order of the
account at the broker (the fleet's, another API client's), with risk's disk full, with risk
and execution down; ``--flatten`` then closes the positions. Every case ends at the
simulator's own ledger: no order working."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

from tests.simulator.ibapi_client import IbapiClient, order, stock
from tests.support.fleet import live_orders, sim_positions
from tests.support.processes import REPO

PROBE = "tests.support.probe_strategy:Probe"
ROGUE_CLIENT = 77


def ibfleet_kill(fleet, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", "kill", "--config",
                           str(fleet.config_path), *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def resting_fleet(fleet, count: int = 3) -> None:
    fleet.add_strategy("rest", PROBE, ["AAPL"], {"mode": "rest", "count": count},
                       risk={"max_open_orders": 10})
    fleet.start_strategy("rest")
    fleet.wait(lambda: len(live_orders(fleet)) == count, deadline=90,
               what=f"{count} resting fleet orders")


def rogue_order(fleet) -> IbapiClient:
    """An order the fleet never made: another API client of the same account."""
    client = IbapiClient(fleet.port, ROGUE_CLIENT).connect()
    q = fleet.sim.quote(265598)
    oid = client.next_order_id()
    client.client.placeOrder(oid, stock("AAPL"), order("BUY", 7, "LMT",
                                                       lmt=round(q["bid"] * 0.9, 2)))
    client.wait("orderStatus", lambda e: e[0] == oid and e[1] == "Submitted")
    return client


def test_kill_cancels_a_rogue_order_of_another_client_and_the_fleets(fleet):
    fleet.start_core()
    resting_fleet(fleet)
    rogue = rogue_order(fleet)
    try:
        assert {o["client_id"] for o in live_orders(fleet)} == {1, ROGUE_CLIENT}
        result = ibfleet_kill(fleet)
        assert result.returncode == 0, result.stderr + result.stdout
        assert "acknowledged by risk" in result.stdout
        assert "orders working at the broker: 0" in result.stdout
        assert not live_orders(fleet), live_orders(fleet)
        # IB's global cancel: the other client hears its order cancelled (202, Cancelled)
        rogue.wait("orderStatus", lambda e: e[1] == "Cancelled")
        assert rogue.errors(202)
    finally:
        rogue.disconnect()


def _mount_full_tmpfs(path) -> bool:
    """A real ENOSPC for root (chmod does not stop root): a 64 KiB tmpfs on risk's state
    directory, filled to the last block. False if this machine cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs",
                           str(path)], capture_output=True)
    if done.returncode != 0:
        return False
    return True


def _fill(path) -> None:
    with open(path / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for name in ("filler2", "filler3"):  # the last partial block, if any
        try:
            with open(path / name, "wb", buffering=0) as fh:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


def test_kill_with_risks_state_disk_full_still_cancels_and_alerts(fleet):
    risk_dir = fleet.state_dir / "risk"
    mounted = _mount_full_tmpfs(risk_dir)
    try:
        fleet.start_core()
        resting_fleet(fleet)
        if mounted:
            _fill(risk_dir)  # every write of trading_state.json now fails with ENOSPC
        else:  # unprivileged fallback: the directory replaced by a file (ENOTDIR)
            shutil.rmtree(risk_dir)
            risk_dir.write_text("not a directory")
        result = ibfleet_kill(fleet)
        assert result.returncode == 0, result.stderr + result.stdout
        assert not live_orders(fleet)
        fleet.wait(lambda: any(a.code == "state_save_failed" for a in fleet.alerts()),
                   what="the alert that risk's state was not saved")
        alert = next(a for a in fleet.alerts() if a.code == "state_save_failed")
        assert "No space left on device" in alert.text or not mounted, alert.text
        assert "trading state not saved" in fleet.procs.log("risk")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(risk_dir)], capture_output=True)


def test_kill_with_risk_and_execution_down_goes_through_the_gateway(fleet):
    fleet.start_core()
    resting_fleet(fleet)
    rogue = rogue_order(fleet)
    try:
        procs = {getattr(p, "name", ""): p for p in fleet.procs.procs}
        fleet.procs.kill(procs["risk"])  # SIGKILL
        procs["risk"].wait(10)
        fleet.procs.terminate(procs["execution"])  # then execution stopped
        result = ibfleet_kill(fleet, "--timeout", "20")
        assert result.returncode == 0, result.stderr + result.stdout
        assert "straight to the gateway" in result.stderr
        assert "orders working at the broker: 0" in result.stdout
        assert not live_orders(fleet), live_orders(fleet)
    finally:
        rogue.disconnect()


def test_kill_flatten_cancels_then_closes_every_position(fleet):
    fleet.start_core()
    fleet.add_strategy("hold", PROBE, ["AAPL"], {"mode": "target", "target": 30},
                       risk={"max_open_orders": 10})
    fleet.start_strategy("hold")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 30, deadline=90,
               what="a position of 30 AAPL")
    resting_fleet(fleet, count=2)
    result = ibfleet_kill(fleet, "--flatten")
    assert result.returncode == 0, result.stderr + result.stdout
    assert not live_orders(fleet)
    fleet.wait(lambda: sim_positions(fleet) == {}, deadline=30,
               what="every position closed at the simulator")
    fleet.wait(lambda: not live_orders(fleet), deadline=10, what="nothing working after")
