"""The fleet under a real supervisord, operated with the ibfleet command."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest
import tomli_w
import zmq

from proto.schema import Alert
from services.bus import keys
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from services.simulator.control import SimControl
from tests.support.bus import short_run_dir
from tests.support.processes import REPO, free_port, wait_for
from tests.support.smtp import MailSink, text_of

PROBE = "tests.support.probe_strategy:Probe"
CRASH = "tests.support.crashing_strategy:CrashAfterStart"


def strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity are not JSON."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


class FleetCli:
    def __init__(self, tmp, notify_urls: list[str] = ()) -> None:
        self.run_dir = short_run_dir()
        self.tmp = tmp
        self.config = tmp / "fleet.toml"
        self.port = free_port()
        raw = {"bus": {"run_dir": str(self.run_dir), "heartbeat_ms": 500},
               "simulator": {"port": self.port},
               "fleet": {"state_dir": str(tmp / "state")}}
        if notify_urls:
            raw["notify"] = {"urls": list(notify_urls), "min_severity": "warning"}
        self.config.write_text(tomli_w.dumps(raw))
        self.supervisord_pid = 0
        self.mail: MailSink | None = None

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                               str(self.config)], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def status(self) -> dict:
        result = self.run("status", "--json")
        assert result.returncode == 0, result.stderr
        return strict_json(result.stdout)

    def processes(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.status()["processes"]}

    def strategy_file(self, name: str, class_path: str, params: dict) -> str:
        path = self.tmp / f"{name}.toml"
        path.write_text(tomli_w.dumps({"name": name, "class": class_path, "symbols": ["AAPL"],
                                       "timer_s": 0.5, "params": params}))
        return str(path)


def _tree(pid: int) -> set[int]:
    try:
        proc = psutil.Process(pid)
        return {pid} | {c.pid for c in proc.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    mail = MailSink().start()  # [notify]: alerts mailed to an SMTP server on loopback
    cli = FleetCli(tmp_path_factory.mktemp("fleet"), [mail.url()])
    cli.mail = mail
    hold = cli.strategy_file("hold", PROBE, {"mode": "target", "target": 100})
    result = cli.run("up", "--detach", "--no-record", "--crash-max", "2", "--crash-window-s",
                     "120", "--strategies", hold, *["--seed", "3"])
    assert result.returncode == 0, result.stdout + result.stderr
    pidfile = cli.run_dir / "supervisord.pid"
    wait_for(pidfile.exists, what="supervisord's pid file")
    cli.supervisord_pid = int(pidfile.read_text())
    try:
        yield cli
    finally:
        if psutil.pid_exists(cli.supervisord_pid):
            pids = _tree(cli.supervisord_pid)
            cli.run("down")
            for pid in pids:  # whatever the test did, leave nothing behind
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        mail.stop()


def test_every_process_runs_and_status_reports_it(fleet):
    expected = {"bus", "simulator", "gateway", "execution", "risk", "fleetwatch", "notify",
                "strategy-hold"}
    wait_for(lambda: expected <= {n for n, p in fleet.processes().items()
                                  if p["state"] == "RUNNING"}, what="every process RUNNING")
    wait_for(lambda: fleet.status()["gateway"].get("state") == "synchronised",
             what="the gateway synchronised")
    wait_for(lambda: {"bus.1", "gateway.1", "execution.1", "risk.1", "strategy.hold"}
             <= set(fleet.status()["heartbeats"]), what="heartbeats from every service")
    status = fleet.status()
    assert all(hb["age_s"] < 5 for hb in status["heartbeats"].values())
    text = fleet.run("status").stdout
    assert "PROCESSES" in text and "GATEWAY  synchronised" in text
    # programs never started (IB Gateway under IBC, the recorder with --no-record) are not
    # listed as STOPPED processes
    assert "ibgateway" not in text and "ibgateway" not in fleet.processes()
    assert {"ibgateway", "recorder"} <= set(status["not_started"])
    logs = fleet.run("logs", "gateway", "-n", "5")
    assert logs.returncode == 0 and all(json.loads(line)["svc"] == "gateway.1"
                                        for line in logs.stdout.splitlines() if line)
    missing = fleet.run("logs", "nosuchservice")
    assert missing.returncode == 1 and "known:" in missing.stderr


def test_a_strategy_added_to_the_running_fleet_trades_and_the_others_keep_running(fleet):
    wait_for(lambda: fleet.status()["gateway"].get("state") == "synchronised",
             what="the gateway synchronised")
    before = {n: p["pid"] for n, p in fleet.processes().items() if p["pid"]}
    churn = fleet.strategy_file("churn", PROBE, {"mode": "churn", "quantity": 10})
    result = fleet.run("strategy", "add", churn)
    assert result.returncode == 0, result.stderr
    sim = SimControl(f"ipc://{fleet.run_dir}/sim-control", timeout=20)
    try:
        wait_for(lambda: any(f["order_ref"].startswith("churn-") for f in sim.fills()),
                 deadline=120, what="the added strategy's first fill at the simulator")
    finally:
        sim.close()
    after = {n: p["pid"] for n, p in fleet.processes().items() if p["pid"]}
    assert {n: after.get(n) for n in before} == before  # nobody else was restarted
    wait_for(lambda: fleet.processes()["strategy-churn"]["state"] == "RUNNING",
             what="the added strategy to pass supervisord's startsecs")
    result = fleet.run("strategy", "remove", "churn", "--flatten")
    assert result.returncode == 0, result.stderr
    assert "strategy-churn" not in fleet.processes()


def test_a_strategy_killed_with_sigkill_is_restarted_and_resumes_from_snapshots(fleet):
    sim = SimControl(f"ipc://{fleet.run_dir}/sim-control", timeout=20)
    try:
        def held() -> float:
            ledger = sim.ledger()
            refs = [r for r in ledger["order_requests"] if r["order_ref"].startswith("hold-")]
            bought = sum(f["qty"] for f in ledger["fills"] if f["order_ref"].startswith("hold-"))
            return bought if refs else -1

        wait_for(lambda: held() == 100, deadline=120, what="the strategy to hold 100")
        old = fleet.processes()["strategy-hold"]["pid"]
        os.kill(old, 9)
        wait_for(lambda: fleet.processes()["strategy-hold"]["state"] == "RUNNING"
                 and fleet.processes()["strategy-hold"]["pid"] != old, deadline=60,
                 what="supervisord to restart the strategy")
        wait_for(lambda: fleet.status()["heartbeats"].get("strategy.hold", {})
                 .get("counters", {}).get("position_abs") == 100, deadline=60,
                 what="the restarted strategy to recover its position")
        # it acts on every tick: give it a stretch of market to (wrongly) buy again in
        steps = sim.quote(265598)["steps"]
        wait_for(lambda: sim.quote(265598)["steps"] >= steps + 40, what="40 market steps")
        assert held() == 100  # it did not buy again
    finally:
        sim.close()


def test_a_crash_looping_process_is_stopped_and_reported(fleet):
    cfg = fleet_config.load(fleet.run_dir / "fleet.toml")  # the one `up` wrote: role keys
    ctx = zmq.Context()
    keys.for_process(ctx, cfg, "operator")
    alerts = Subscriber(ctx, cfg.bus.endpoint("bus-out"), ["alert"])
    try:
        crash = fleet.strategy_file("crash", CRASH, {"after_s": 2.5})
        assert fleet.run("strategy", "add", crash).returncode == 0
        seen: list[Alert] = []

        def stopped_and_alerted():
            got = alerts.recv(100)
            seen.extend(m for m in (got[1] if got else []) if isinstance(m, Alert))
            state = fleet.processes().get("strategy-crash", {}).get("state")
            return state in ("STOPPED", "FATAL") and any(a.code == "crash_loop" for a in seen)

        wait_for(stopped_and_alerted, deadline=120, what="the crash loop to be stopped")
        assert "strategy-crash" in next(a.text for a in seen if a.code == "crash_loop")
        assert fleet.processes()["strategy-hold"]["state"] == "RUNNING"
        # published while no `ibfleet status` ran: status lists it all the same
        listed = [a for a in fleet.status()["alerts"] if a["code"] == "crash_loop"]
        assert listed and listed[0]["severity"] == "critical"
        assert "strategy-crash" in listed[0]["text"] and listed[0]["age_s"] >= 0
    finally:
        ctx.destroy(linger=0)


def test_the_kill_switch_alert_is_mailed_and_listed_by_status_latest_first(fleet):
    result = fleet.run("kill", "--reason", "mail test")
    assert result.returncode == 0, result.stdout + result.stderr
    mails = wait_for(lambda: [m for m in fleet.mail.mails if "control_kill" in m["Subject"]],
                     deadline=120, what="the kill switch's alert by mail")
    assert mails[0]["Subject"] == "[ibfleet critical] control_kill"
    assert "kill all by" in text_of(mails[0])
    alerts = fleet.status()["alerts"]  # strict JSON (no NaN anywhere)
    assert alerts[0]["code"] == "control_kill" and alerts[0]["severity"] == "critical"
    assert [a["age_s"] for a in alerts] == sorted(a["age_s"] for a in alerts)
    text = fleet.run("status").stdout
    assert "ALERTS" in text and "control_kill" in text
    assert text.index("control_kill") < text.index("crash_loop")  # latest first
    assert fleet.run("resume").returncode == 0


def test_commands_with_a_config_of_their_own_reach_the_fleet_with_its_keys(fleet, tmp_path):
    """``ibfleet up`` turns role keys on. Every command that speaks to the running fleet takes
    its keys from it: ``data download`` (which connected without them: "the fleet's bus is not
    running", and a critical peer_refused alert), and ``status`` with a config file that
    names the run directory but not the state directory (no snapshots, refused alerts)."""
    from datetime import date, timedelta
    day = (date.today() - timedelta(days=2)).isoformat()  # over in UTC: downloadable
    catalog = tmp_path / "catalog"
    before = {a["text"] for a in fleet.status()["alerts"] if a["code"] == "peer_refused"}
    done = fleet.run("data", "download", "AAPL", "--from", day, "--to", day, "--bar-size",
                     "1 hour", "--catalog", str(catalog), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 days stored" in done.stdout, done.stdout
    bare = tmp_path / "bare.toml"  # the run directory only: the fleet's state dir is its own
    bare.write_text(tomli_w.dumps({"bus": {"run_dir": str(fleet.run_dir)}}))
    shown = subprocess.run([sys.executable, "-m", "services.cli", "status", "--json",
                            "--config", str(bare)], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    status = strict_json(shown.stdout)
    assert status["gateway"].get("state") == "synchronised", status["gateway"]
    assert not status.get("unreachable"), status.get("unreachable")
    after = {a["text"] for a in fleet.status()["alerts"] if a["code"] == "peer_refused"}
    assert after == before, after - before


def test_ibfleet_down_leaves_no_process_behind(fleet):
    pids = _tree(fleet.supervisord_pid)
    assert len(pids) >= 7
    result = fleet.run("down")
    assert result.returncode == 0, result.stderr
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after down: {alive}"
