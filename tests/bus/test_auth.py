"""Issue 12, item 1: peers are known by the key their connection authenticated with, not by
the source they write. Real processes: the whole fleet with role keys (as every integration
test runs it), and a forger process that writes another service's name with a key of its own
making, with no key, or with a real key of another role (a compromised strategy):

- posing as execution at the gateway (an order placed around risk),
- posing as risk at execution,
- posing as strategy ``victim`` at risk, and lifting a thrown kill switch,
- publishing market data under the gateway's name.

Nothing is placed at the simulator (its ledger), no forged tick reaches the bus (so no
strategy's mid moves), the kill switch holds, each refusal by key role is counted (the
services' heartbeats) and alerted, each unknown key is refused by the ZAP handler and
alerted, and the legitimate fleet trades throughout and passes the end-of-run audit."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from proto.schema import Heartbeat, Tick
from services.bus import keys
from tests.support.audit import assert_audit
from tests.support.fleet import Fleet
from tests.support.processes import REPO

PROBE = "tests.support.probe_strategy:Probe"


def forge(fleet: Fleet, target: str, key: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.support.forger",
                           str(fleet.config_path), target, key], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def counter(fleet: Fleet, src: str, name: str) -> int:
    beats = [h for h in fleet.messages(Heartbeat) if h.src == src]
    return beats[-1].counters.get(name, 0) if beats else 0


def refused_alerts(fleet: Fleet, text: str) -> list:
    return [a for a in fleet.alerts("peer_refused") if text in a.text]


def forged_orders(fleet: Fleet) -> list[dict]:
    return [o for o in fleet.sim.orders() if o["order_ref"].startswith("forged")]


def test_forged_peers_are_refused_by_key_and_the_fleet_still_trades(fleet):
    assert fleet.config.bus.auth, "the test fleet runs with role keys"
    keys.ensure_keys(fleet.state_dir, ["strategy.evil"])  # another strategy's real key
    fleet.start_core()
    fleet.add_strategy("victim", PROBE, ["AAPL"], {"mode": "churn"},
                       risk={"max_position": 50, "max_open_orders": 4})
    fleet.start_strategy("victim")
    fleet.wait(lambda: len(fleet.fills("victim")) >= 2, deadline=90, what="victim trading")

    # -- orders: a real key of the wrong role is refused by role, nacked, counted, alerted
    for target, server in (("gateway", "gateway.1"), ("execution", "execution.1"),
                           ("risk", "risk.1")):
        got = forge(fleet, target, "strategy.evil")
        assert got["acks"] and not got["acks"][0]["ok"], got
        assert "keyed 'strategy.evil'" in got["acks"][0]["error"], got
        fleet.wait(lambda: counter(fleet, server, "peer_refused") >= 1, deadline=20,
                   what=f"{server} counting the refusal")
    fleet.wait(lambda: len(refused_alerts(fleet, "keyed 'strategy.evil'")) >= 3, deadline=20,
               what="an alert per refusal")
    # a key the fleet never issued, and no key: no connection at all, so no answer
    for target in ("gateway", "execution", "risk"):
        for key in ("own", "none"):
            got = forge(fleet, target, key)
            assert got["acks"] == [], got
    for server in ("gateway.1", "execution.1", "risk.1"):
        fleet.wait(lambda: counter(fleet, server, "refused_unknown_key") >= 1
                   and counter(fleet, server, "refused_handshake") >= 1, deadline=20,
                   what=f"{server} counting the refused connections")
    fleet.wait(lambda: len(refused_alerts(fleet, "unknown CURVE key")) >= 3, deadline=20,
               what="the ZAP handlers' refusals alerted")
    fleet.wait(lambda: len(refused_alerts(fleet, "without a valid CURVE key")) >= 3,
               deadline=20, what="the refused handshakes (no key) alerted")
    assert not forged_orders(fleet), forged_orders(fleet)

    # -- market data under the gateway's name: dropped by the broker, counted, alerted
    ticks_before = len(fleet.messages(Tick))
    for key in ("strategy.evil", "own", "none"):
        forge(fleet, "md", key)
    fleet.wait(lambda: counter(fleet, "bus.1", "topic_refused") >= 20, deadline=20,
               what="the broker counting the forged ticks")
    fleet.wait(lambda: refused_alerts(fleet, "the bus dropped 'md.tick.AAPL'"), deadline=20,
               what="the broker's alert")
    assert len(fleet.messages(Tick)) > ticks_before  # the gateway's own ticks still flow
    assert not [t for t in fleet.messages(Tick) if t.bid == 1.0], "a forged tick on the bus"

    # -- the kill switch: a forged resume does not lift it
    fleet.kill_switch()
    fleet.wait(lambda: fleet.alerts("control_kill"), deadline=20, what="the kill")
    got = forge(fleet, "resume", "strategy.evil")
    assert got["acks"] and not got["acks"][0]["ok"], got
    got = forge(fleet, "resume", "own")
    assert got["acks"] == [], got
    orders_after_kill = len(fleet.sim.orders())
    time.sleep(3.0)  # the churning victim would trade again within a second if resumed
    fleet.pump()
    assert not fleet.alerts("control_resume")
    assert len(fleet.sim.orders()) == orders_after_kill
    assert refused_alerts(fleet, "controls come from the operator only")
    assert not forged_orders(fleet)

    assert_audit(fleet, ["victim"])


# -- the pieces, without processes ---------------------------------------------------------------
def test_key_pairs_are_private_made_once_and_rotated(tmp_path):
    import os
    import stat
    directory = keys.ensure_keys(tmp_path, [*keys.FIXED_ROLES, "strategy.a"])
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    before = keys.list_keys(tmp_path)
    assert set(before) == {*keys.FIXED_ROLES, "strategy.a"}
    keys.ensure_keys(tmp_path)  # existing pairs are kept
    assert keys.list_keys(tmp_path) == before
    assert keys.create_keypair(directory, "risk", replace=True)
    after = keys.list_keys(tmp_path)
    assert after["risk"] != before["risk"] and after["gateway"] == before["gateway"]


def test_which_role_may_publish_which_topic():
    allowed = keys.topic_allowed
    assert allowed("gateway", b"md.tick.AAPL") and not allowed("strategy.a", b"md.tick.AAPL")
    for topic in (b"ord.status", b"ord.open", b"ord.exec", b"ord.comm", b"ord.completed",
                  b"ord.recon", b"acct.pos", b"gw.state"):
        assert allowed("gateway", topic) and not allowed("execution", topic), topic
    assert allowed("execution", b"ord.update.mr") and not allowed("gateway", b"ord.update.mr")
    assert allowed("risk", b"acct.pnl") and not allowed("strategy.a", b"acct.pnl")
    assert allowed("risk", b"ord.decision.mr") and not allowed("strategy.a", b"ord.decision")
    assert allowed("operator", b"ctl") and not allowed("strategy.a", b"ctl")
    assert allowed("strategy.a", b"hb.strategy.a") and allowed("operator", b"alert")
    assert allowed("strategy.a", b"sub.req") and allowed("strategy.a", b"hist.req")
    assert not allowed("", b"md.tick.AAPL")


def test_the_role_a_source_claims_is_only_the_fallback_without_keys():
    assert keys.role_from_source("risk.1") == "risk"
    assert keys.role_from_source("cli.123") == "operator"
    assert keys.role_from_source("strategy.mr") == "strategy.mr"
    with pytest.raises(ValueError):
        keys.check_role("../../etc")


def test_ibfleet_keys_lists_and_rotates(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "services.cli", "keys", *args,
                               "--state-dir", str(tmp_path), "--run-dir",
                               str(tmp_path / "run")], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
    made = run("create", "strategy.mr")
    assert made.returncode == 0, made.stderr
    assert "strategy.mr" in made.stdout and "operator" in made.stdout
    before = keys.list_keys(tmp_path)
    rotated = run("rotate", "execution")
    assert rotated.returncode == 0, rotated.stderr
    assert "rotated execution" in rotated.stdout
    assert keys.list_keys(tmp_path)["execution"] != before["execution"]
    assert run("rotate", "no/such").returncode == 2
