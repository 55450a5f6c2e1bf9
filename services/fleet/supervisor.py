"""Talking to the fleet's supervisord: start it, reach its XML-RPC over the unix socket, stop it.

Control goes through supervisord's XML-RPC, never by signalling processes by name.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import tomli_w
from supervisor.xmlrpc import SupervisorTransport

from services.runtime.config import FleetConfig, ensure_private_dir

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "supervisord.conf"


class FleetError(RuntimeError):
    """Something the operator must act on; the message says what to do."""


class FleetPaths:
    def __init__(self, config: FleetConfig) -> None:
        self.run_dir = config.bus.run_dir
        self.logs = self.run_dir / "logs"
        self.strategies = self.run_dir / "strategies"
        self.socket = self.run_dir / "supervisor.sock"
        self.pidfile = self.run_dir / "supervisord.pid"
        self.fleet_toml = self.run_dir / "fleet.toml"
        self.state_dir = config.state_dir
        #: the embedded simulator's paper account: kept across `ibfleet up` runs, like IB's
        self.sim_state = config.state_dir / "simulator"

    def prepare(self) -> None:
        for path in (self.run_dir, self.logs, self.strategies):
            ensure_private_dir(path)


def rpc(paths: FleetPaths):
    """The supervisord XML-RPC proxy over the fleet's unix socket."""
    transport = SupervisorTransport(None, None, f"unix://{paths.socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def running(paths: FleetPaths) -> bool:
    if not paths.socket.exists():
        return False
    try:
        return rpc(paths).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Fault):
        return False


def write_fleet_config(paths: FleetPaths, config: FleetConfig) -> None:
    """The effective config every service of this fleet reads."""
    raw = dict(config.raw)
    raw["bus"] = {**raw.get("bus", {}), "run_dir": str(paths.run_dir)}
    # role keys by default under `ibfleet up` (services/bus/keys.py); the file may say no
    raw["bus"].setdefault("auth", True)
    config.bus.auth = bool(raw["bus"]["auth"])
    raw["gateway"] = {**raw.get("gateway", {}), "host": config.gateway.host,
                      "port": config.gateway.port, "client_id": config.gateway.client_id,
                      "live": config.gateway.live}
    raw["fleet"] = {**raw.get("fleet", {}), "state_dir": str(paths.state_dir)}
    paths.fleet_toml.write_text(tomli_w.dumps(raw))


def environment(paths: FleetPaths, config: FleetConfig, simulate: bool, record: bool,
                crash_max: int, crash_window_s: float, seed: int) -> dict[str, str]:
    return dict(os.environ,
                IBFLEET_RUN_DIR=str(paths.run_dir), IBFLEET_STATE_DIR=str(paths.state_dir),
                IBFLEET_SIM_STATE_DIR=str(paths.sim_state),
                IBFLEET_PYTHON=sys.executable, IBFLEET_GATEWAY_PORT=str(config.gateway.port),
                IBFLEET_SIM_PORT=str(config.simulator.port),
                IBFLEET_SIM_AUTOSTART="true" if simulate else "false",
                IBFLEET_SIM_SEED=str(seed), IBFLEET_RECORD="true" if record else "false",
                IBFLEET_CRASH_MAX=str(crash_max), IBFLEET_CRASH_WINDOW_S=str(crash_window_s),
                # the notifier runs when [notify] names somewhere to send alerts
                IBFLEET_NOTIFY="true" if config.notify.urls else "false",
                IBC_PATH=os.environ.get("IBC_PATH", "/opt/ibc"), PYTHONUNBUFFERED="1")


def start(paths: FleetPaths, env: dict[str, str], timeout: float = 60.0) -> subprocess.Popen:
    """Start supervisord in the foreground as our child, in its own session."""
    if running(paths):
        raise FleetError(f"a fleet is already running in {paths.run_dir}; "
                         f"`ibfleet status` shows it, `ibfleet down` stops it")
    log = open(paths.logs / "supervisord.console.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-n", "-c",
                             str(CONF)], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while not running(paths):
        if proc.poll() is not None:
            tail = (paths.logs / "supervisord.console.log").read_text(errors="replace")[-2000:]
            raise FleetError(f"supervisord exited at start (code {proc.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise FleetError("supervisord did not come up within "
                             f"{timeout:.0f}s; see {paths.logs}/supervisord.log")
        time.sleep(0.1)
    return proc


def stop(paths: FleetPaths, timeout: float = 90.0) -> list[int]:
    """Stop every process, then supervisord; returns the pids that were running."""
    server = rpc(paths)
    pids = [p["pid"] for p in server.supervisor.getAllProcessInfo() if p["pid"]]
    try:
        supervisord_pid = server.supervisor.getPID()
    except (OSError, xmlrpc.client.Fault):
        supervisord_pid = 0
    try:
        server.supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
        pass
    deadline = time.monotonic() + timeout
    for pid in [*pids, supervisord_pid]:
        while pid and _alive(pid):
            if time.monotonic() > deadline:
                raise FleetError(f"process {pid} did not stop within {timeout:.0f}s")
            time.sleep(0.1)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is gone for every purpose here
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def strategy_program(name: str, config_path: Path) -> str:
    """The supervisord program section of one strategy."""
    cmd = ("%(ENV_IBFLEET_PYTHON)s -m services.cli strategy run "
           f"{shlex.quote(str(config_path))} "
           "--config %(ENV_IBFLEET_RUN_DIR)s/fleet.toml")
    return f"""[program:strategy-{name}]
command = {cmd}
priority = 60
autorestart = true
startsecs = 2
startretries = 10
stopasgroup = true
killasgroup = true
stopwaitsecs = 10
environment = PYTHONUNBUFFERED="1"
redirect_stderr = true
stdout_logfile = %(ENV_IBFLEET_RUN_DIR)s/logs/%(program_name)s.log
"""
