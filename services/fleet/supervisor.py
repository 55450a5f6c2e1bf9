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

from services.runtime import config as fleet_config
from services.runtime.config import FleetConfig, ensure_private_dir

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "supervisord.conf"
#: the project's strategy code (and the example TOMLs): on every strategy program's PYTHONPATH
STRATEGIES = REPO / "strategies"  # = services.strategy.config.STRATEGIES_DIR


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
        #: (a market replay, ``up --market``, trades another market: an account of its own)
        self.sim_state = config.state_dir / "simulator"
        #: one folder per `ibfleet up` under this (``session_recordings``)
        self.recordings = config.state_dir / "recordings"
        #: the fleet's strategies (name -> source TOML) as `up`, `strategy add` and `remove`
        #: left them: the next plain `ibfleet up` starts these (the examples the first time)
        self.fleet_strategies = config.state_dir / "fleet-strategies.json"

    def replay_sim_state(self, market: str) -> Path:
        """The simulator account of a market replay: one per dataset list, started afresh by
        each `up --market` (replayed prices and a paper account from the random walk, or
        another day, do not mix)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in market)
        return self.state_dir / "simulator-replay" / safe

    def session_recordings(self, label: str = "") -> Path:
        """A new recording folder for this `ibfleet up`: ``recordings/YYYYMMDDTHHMMSSZ[-label]``
        (``ibfleet backtest CONFIG FOLDER`` reads one session; sessions never mix)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        return self.recordings / (f"{stamp}-{safe}" if safe else stamp)

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


def load_for_fleet(config_path=None, run_dir=None, state_dir=None) -> FleetConfig:
    """The config a command that speaks to a running fleet must use (status, controls, ``data
    download``...): the fleet ``ibfleet up`` started in the run directory decides how to
    reach it. Without ``config_path``, its RUN_DIR/fleet.toml whole; with one, that file,
    but the running fleet's bus.auth (``up`` turns role keys on by default) and, unless
    ``state_dir`` is given, its state directory (where its keys are): a command with its own
    config file still speaks with the keys the fleet admits. No fleet there: the file as
    given. Raises ConfigError."""
    config = fleet_config.load(config_path, run_dir, state_dir)
    fleet_toml = FleetPaths(config).fleet_toml
    if not fleet_toml.is_file():
        return config
    if config_path is None:
        return fleet_config.load(fleet_toml, run_dir, state_dir)
    running_fleet = fleet_config.load(fleet_toml)
    config.bus.auth = running_fleet.bus.auth
    if state_dir is None:
        config.state_dir = running_fleet.state_dir
    return config


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
                IBFLEET_REC_DIR=str(paths.session_recordings()),
                IBFLEET_PYTHON=sys.executable, IBFLEET_GATEWAY_PORT=str(config.gateway.port),
                IBFLEET_SIM_PORT=str(config.simulator.port),
                IBFLEET_SIM_SESSIONS=config.simulator.sessions,
                IBFLEET_SIM_AUTOSTART="true" if simulate else "false",
                IBFLEET_SIM_SEED=str(seed), IBFLEET_RECORD="true" if record else "false",
                IBFLEET_CRASH_MAX=str(crash_max), IBFLEET_CRASH_WINDOW_S=str(crash_window_s),
                # the notifier runs when [notify] names somewhere to send alerts
                IBFLEET_NOTIFY="true" if config.notify.urls else "false",
                IBC_PATH=os.environ.get("IBC_PATH", "/opt/ibc"), PYTHONUNBUFFERED="1")


def start(paths: FleetPaths, env: dict[str, str], timeout: float = 60.0,
          interrupted=lambda: False) -> subprocess.Popen:
    """Start supervisord in the foreground as our child, in its own session; returns once it
    answers, or as soon as ``interrupted()`` is true (the caller then stops it whole)."""
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
        if interrupted():
            return proc
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


def strategy_code_dirs(config: FleetConfig) -> list[Path]:
    """Where the fleet imports strategy code from, besides the project itself (a strategy
    program runs in the project's directory): ``[fleet] strategies_dir`` when set, then the
    project's ``strategies/``. The first is where ``ibfleet strategy new`` writes."""
    configured = str(config.raw.get("fleet", {}).get("strategies_dir", "") or "")
    dirs = [Path(configured).expanduser().resolve()] if configured else []
    return dirs + [STRATEGIES] if STRATEGIES not in dirs else dirs


def strategy_pythonpath(config: FleetConfig) -> str:
    """The PYTHONPATH of every strategy program: the strategy code folders and nothing of
    the shell that started the fleet or adds the strategy."""
    return os.pathsep.join(str(d) for d in strategy_code_dirs(config))


def fleet_environment(paths: FleetPaths) -> dict[str, str]:
    """The environment supervisord gives its programs (its own, which ``ibfleet up`` set):
    read from /proc; this process's when it cannot be read (no fleet running yet: ``up``
    starts supervisord with this process's environment)."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, ValueError):
        return dict(os.environ)
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def strategy_environment(base: dict[str, str], pythonpath: str) -> dict[str, str]:
    """A strategy program's environment: supervisord's plus its program section's."""
    return dict(base, PYTHONUNBUFFERED="1", PYTHONPATH=pythonpath)


def check_strategy(config_path: Path, env: dict[str, str], timeout: float = 120.0) -> str:
    """Load the strategy as a strategy program would, in a process of its own: the fleet's
    interpreter, working directory and environment (``strategy_environment``), not the
    caller's. Its file decoded strictly, its class imported (a ``Strategy``), its
    ``[params]`` decoded into the class's ``Params``. Returns "" if it loads, else why not."""
    python = env.get("IBFLEET_PYTHON") or sys.executable
    try:
        result = subprocess.run([python, "-m", "services.cli", "strategy", "check",
                                 str(config_path)], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"loading the strategy took more than {timeout:g}s"
    if result.returncode == 0:
        return ""
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return "\n".join(lines[-5:]) or f"exit code {result.returncode}"


def _quoted(value: str) -> str:
    """A value for a supervisord ``environment`` line: quoted, ``%`` doubled."""
    if '"' in value or "\n" in value:
        raise FleetError(f"a path with a quote or a newline cannot go to supervisord: {value!r}")
    return '"' + value.replace("%", "%%") + '"'


def strategy_program(name: str, config_path: Path, pythonpath: str = str(STRATEGIES)) -> str:
    """The supervisord program section of one strategy. Its PYTHONPATH is ``pythonpath``
    (``strategy_pythonpath``): the strategy code folders, never the shell's."""
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
environment = PYTHONUNBUFFERED="1",PYTHONPATH={_quoted(pythonpath)}
redirect_stderr = true
stdout_logfile = %(ENV_IBFLEET_RUN_DIR)s/logs/%(program_name)s.log
"""
