from __future__ import annotations

import os
import shutil

import pytest

from tests.support.bus import CREATED
from tests.support.fleet import Fleet
from tests.support.processes import ProcessGroup


# ---- the protobuf second run (docs/simulator.md, "Protobuf") ---------------------------------
#: env var every simulator process reads as its default --server-version (services/simulator)
SIM_VERSION_ENV = "IBFLEET_SIM_SERVER_VERSION"
#: the newest server version ibapi-stable negotiates: protobuf for every family
PROTOBUF_MAX = 226
#: the bridge's integration tests (those on a fleet: a simulator process and the gateway) that run
#: a second time with the simulator at PROTOBUF_MAX; `@pytest.mark.both_wire_formats` adds others.
#: Every protobuf family the bridge uses (orders, executions, contract data, market data and
#: depth, account/positions, history, completed orders) and the reconnect paths (faults, outage,
#: time zones): about 2 minutes more on the 2-core machine. Left out: durability's 1000-order
#: burst, disk-full and the probe/dispatch tests (no wire-format dependent path).
PROTOBUF_SECOND_RUN = (
    "tests/gateway/test_gateway_core.py",
    "tests/gateway/test_gateway_reports.py",
    "tests/gateway/test_gateway_lookup.py",
    "tests/gateway/test_gateway_history.py",
    "tests/gateway/test_gateway_faults.py",
    "tests/trading/test_time_zones.py",
    "tests/trading/test_gateway_outage.py",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "both_wire_formats: run on a fleet at server version 200 "
                                       "(text) and again at the protobuf maximum")


def pytest_generate_tests(metafunc):
    """The named fleet tests run at v200 and v226 (ids `v200`/`v226`); not when the whole run is
    pinned to one version by $IBFLEET_SIM_SERVER_VERSION, nor with IBFLEET_PROTOBUF_RUN=0."""
    if "fleet" not in metafunc.fixturenames or os.environ.get(SIM_VERSION_ENV) \
            or os.environ.get("IBFLEET_PROTOBUF_RUN") == "0":
        return
    path = metafunc.definition.nodeid.split("::")[0]
    if path in PROTOBUF_SECOND_RUN or metafunc.definition.get_closest_marker("both_wire_formats"):
        metafunc.parametrize("sim_server_version", [200, PROTOBUF_MAX], ids=["v200", "v226"],
                             indirect=True)


@pytest.fixture(autouse=True)
def sim_server_version(request, monkeypatch):
    """The highest server version this test's simulators serve (None: their default, 200)."""
    version = getattr(request, "param", None)
    if version is not None:
        monkeypatch.setenv(SIM_VERSION_ENV, str(version))
        return version
    pinned = os.environ.get(SIM_VERSION_ENV)
    return int(pinned) if pinned else None


def pytest_sessionfinish(session, exitstatus):
    for path in CREATED:  # the short ipc:// run directories the tests made
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs(tmp_path):
    """Real processes for one test, all stopped by process group at the end, pass or fail."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def fleet(procs, tmp_path):
    """A whole fleet on the simulator (tests/support/fleet.py), closed at the end; the
    gateway tests' conftest has its own, lighter one."""
    f = Fleet(procs, tmp_path)
    try:
        yield f
    finally:
        f.close()
