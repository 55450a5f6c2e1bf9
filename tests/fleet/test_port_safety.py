"""Port safety: the embedded simulator has a port of its own, and `ibfleet up` (what `make run`
runs) refuses to start while a port it must bind is taken, naming the port and its holder,
starting nothing and connecting to nothing."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest
import tomli_w

from services.fleet import ports
from services.fleet import supervisor as sup
from services.runtime import config as fleet_config
from services.runtime.config import IB_PORTS, SIM_PORT, ConfigError
from tests.support.bus import short_run_dir
from tests.support.processes import REPO, free_port, wait_for

#: a foreign listener: binds a port the OS gives it, says which, and logs every connection
FOREIGN = """
import socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print("listening", srv.getsockname()[1], flush=True)
n = 0
while True:
    conn, peer = srv.accept()
    n += 1
    print("accepted", n, peer[1], flush=True)
    conn.close()
"""


def _config(tmp_path, **sections) -> fleet_config.FleetConfig:
    path = tmp_path / "fleet.toml"
    raw = {"bus": {"run_dir": str(short_run_dir())},
           "fleet": {"state_dir": str(tmp_path / "state")}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    path.write_text(tomli_w.dumps(raw))
    return fleet_config.load(path)


@pytest.fixture
def listener():
    """A socket listening in this process on a port from the OS."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock, sock.getsockname()[1]
    finally:
        sock.close()


# -- units ------------------------------------------------------------------------------------
def test_the_simulator_has_a_port_of_its_own(tmp_path):
    cfg = _config(tmp_path)
    assert cfg.simulator.port == SIM_PORT and SIM_PORT not in IB_PORTS
    assert cfg.gateway.port == 7497  # the real gateway's default is untouched (--gateway)
    for port, name in IB_PORTS.items():
        with pytest.raises(ConfigError, match=f"simulator.port {port} is IB's {name} port"):
            _config(tmp_path, simulator={"port": port})


def test_a_live_account_in_the_config_needs_the_live_opt_in(tmp_path):
    assert _config(tmp_path, gateway={"account": "DU7654321"}).gateway.account == "DU7654321"
    with pytest.raises(ConfigError, match="gateway.account 'U1234567' is not a paper account"):
        _config(tmp_path, gateway={"account": "U1234567"})


def test_a_free_simulator_port_passes(tmp_path):
    cfg = _config(tmp_path, simulator={"port": free_port()})
    assert ports.problems(cfg, simulate=True) == []


def test_a_taken_port_is_refused_naming_the_port_and_its_holder(tmp_path, listener):
    _, port = listener
    cfg = _config(tmp_path, simulator={"port": port})
    [problem] = ports.problems(cfg, simulate=True)
    assert f"port {port} (the embedded simulator ([simulator] port))" in problem
    assert f"already in use by pid {os.getpid()} (" in problem
    # with --gateway the simulator does not run: its port is not ours to bind
    assert ports.problems(cfg, simulate=False) == []


def test_every_tcp_bus_endpoint_is_checked(tmp_path, listener):
    _, port = listener
    cfg = _config(tmp_path, bus={"transport": "tcp", "base_port": port - 5},
                  simulator={"port": free_port()})
    [problem] = ports.problems(cfg, simulate=True)
    assert f"port {port} (the bus endpoint gateway (bus.base_port + 5))" in problem
    same = _config(tmp_path, bus={"transport": "tcp", "base_port": 20000},
                   simulator={"port": 20003})
    assert any("port 20003 is both" in p for p in ports.problems(same, simulate=True))


# -- `ibfleet up` against a foreign listener on the simulator's port -------------------------
def _fleet_processes(run_dir) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(run_dir) in part for part in proc.info["cmdline"] or ()):
            out.append(proc)
    return out


def test_ibfleet_up_refuses_a_taken_simulator_port_and_starts_nothing(procs, tmp_path):
    foreign = procs.start("foreign", [sys.executable, "-c", FOREIGN])
    line = wait_for(lambda: next((ln for ln in procs.log("foreign").splitlines()
                                  if ln.startswith("listening")), None),
                    what="the foreign listener's port")
    port = int(line.split()[1])
    run_dir = short_run_dir()
    config = tmp_path / "fleet.toml"
    config.write_text(tomli_w.dumps({"bus": {"run_dir": str(run_dir)},
                                     "simulator": {"port": port},
                                     "fleet": {"state_dir": str(tmp_path / "state")}}))
    paths = sup.FleetPaths(fleet_config.load(config))
    try:
        # exactly what `make run` runs: `ibfleet up`, in the foreground
        result = subprocess.run([sys.executable, "-m", "services.cli", "up", "--config",
                                 str(config)], cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "refusing to start, nothing was started" in result.stderr
        assert f"port {port} (the embedded simulator ([simulator] port))" in result.stderr
        assert f"in use by pid {foreign.pid} (" in result.stderr
        # nothing of the fleet: no supervisord, no process of this run directory
        assert not sup.running(paths)
        assert not paths.pidfile.exists() and not paths.socket.exists()
        assert not paths.fleet_toml.exists()
        assert _fleet_processes(run_dir) == []
        # and nothing connected to the foreign listener: a sentinel connection of ours is
        # the first it ever accepted (a connection before it would have been accepted first)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sentinel:
            mine = sentinel.getsockname()[1]
            accepted = wait_for(lambda: [ln for ln in procs.log("foreign").splitlines()
                                         if ln.startswith("accepted")],
                                what="the foreign listener to accept the sentinel")
        assert accepted == [f"accepted 1 {mine}"], accepted
        assert foreign.poll() is None
    finally:
        if sup.running(paths):  # a failed refusal must not leave a fleet behind
            subprocess.run([sys.executable, "-m", "services.cli", "down", "--config",
                            str(config)], cwd=REPO, capture_output=True, timeout=120)
        for proc in _fleet_processes(run_dir):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
