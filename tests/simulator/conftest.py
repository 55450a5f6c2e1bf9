from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.simulator import protocol
from services.simulator.control import SimControl
from tests.support.processes import ProcessGroup, free_ports, port_open, wait_for

FAST = ("--step-ms", "10", "--mktdata-ms", "50", "--reset-repeat-seconds", "0.5")


@dataclass
class Sim:
    port: int
    control: SimControl
    procs: ProcessGroup
    name: str
    proc: object
    version: int = protocol.DEFAULT_VERSION   # the highest server version it serves

    def log(self) -> str:
        return self.procs.log(self.name)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self.procs.kill(self.proc, signal.SIGKILL)
        self.proc.wait(30)
        self.control.close()

    def stop(self) -> int:
        """SIGTERM and wait: the clean stop supervisord does."""
        code = self.procs.terminate(self.proc)
        self.control.close()
        return code


@pytest.fixture
def start_sim(procs, tmp_path):
    """Start a simulator process on a free port with a control socket; extra CLI args allowed.
    `toml` is written to a config file when given."""
    controls: list[SimControl] = []
    counter = [0]

    def start(*args: str, toml: str | None = None, fast: bool = True) -> Sim:
        counter[0] += 1
        name = f"sim{counter[0]}"
        port, cport = free_ports(2)
        argv = ["--port", str(port), "--seed", "1", "--control", f"tcp://127.0.0.1:{cport}"]
        if fast:
            argv += list(FAST)
        if toml is not None:
            path = Path(tmp_path) / f"{name}.toml"
            path.write_text(toml)
            argv += ["--config", str(path)]
        proc = procs.start_python(name, "services.simulator", *argv, *args)
        wait_for(lambda: port_open(port) or proc.poll() is not None, 60, what="simulator port")
        assert proc.poll() is None, procs.log(name)
        control = SimControl(f"tcp://127.0.0.1:{cport}")
        controls.append(control)
        control.wait_ready(60)
        return Sim(port, control, procs, name, proc)

    yield start
    for c in controls:
        c.close()


#: the server versions the ibapi client suites run at: the last text version and the newest
#: (protobuf) one ibapi-stable announces (docs/simulator.md, "Protobuf")
SERVER_VERSIONS = (protocol.MAX_TEXT, protocol.MAX_SERVED)


def start_sim_at_versions():
    """A module's `start_sim = start_sim_at_versions()`: every test of the module runs once per
    SERVER_VERSIONS, with the simulator serving up to that version (`sim.version`)."""

    @pytest.fixture(params=SERVER_VERSIONS, ids=lambda v: f"v{v}")
    def start_sim(request, start_sim):
        def start(*args: str, **kwargs) -> Sim:
            sim = start_sim("--server-version", str(request.param), *args, **kwargs)
            sim.version = request.param
            return sim
        return start

    return start_sim
