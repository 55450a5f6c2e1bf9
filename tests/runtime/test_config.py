"""The fleet config: loopback and paper by default, bad configs refused with a clear message."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from services.runtime import config
from services.runtime.config import ConfigError
from tests.support.bus import short_run_dir
from tests.support.processes import REPO


def test_defaults_are_ipc_in_a_private_run_directory(tmp_path):
    cfg = config.load(run_dir=tmp_path / "run")
    assert cfg.bus.endpoint("bus-in") == f"ipc://{tmp_path / 'run' / 'bus-in'}"
    assert cfg.gateway.port == 7497 and cfg.gateway.host == "127.0.0.1" and not cfg.gateway.live
    path = config.ensure_private_dir(tmp_path / "run")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_an_existing_run_directory_open_to_others_is_made_private(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o777)
    os.chmod(run, 0o777)
    config.ensure_private_dir(run)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700


@pytest.mark.parametrize("port", [7496, 4001])
def test_live_ports_are_refused_without_an_explicit_opt_in(tmp_path, port):
    cfg_file = tmp_path / "fleet.toml"
    cfg_file.write_text(f"[gateway]\nport = {port}\n")
    with pytest.raises(ConfigError, match="LIVE"):
        config.load(cfg_file, run_dir=tmp_path)
    cfg_file.write_text(f"[gateway]\nport = {port}\nlive = true\n")
    assert config.load(cfg_file, run_dir=tmp_path).gateway.live


def test_a_gateway_on_another_machine_is_refused(tmp_path):
    cfg_file = tmp_path / "fleet.toml"
    cfg_file.write_text('[gateway]\nhost = "10.1.2.3"\n')
    with pytest.raises(ConfigError, match="not loopback"):
        config.load(cfg_file, run_dir=tmp_path)


def test_a_tcp_bus_beyond_loopback_needs_curve_keys(tmp_path):
    cfg_file = tmp_path / "fleet.toml"
    cfg_file.write_text('[bus]\ntransport = "tcp"\nhost = "0.0.0.0"\nbase_port = 25000\n')
    with pytest.raises(ConfigError, match="CURVE"):
        config.load(cfg_file, run_dir=tmp_path)
    cfg_file.write_text('[bus]\ntransport = "tcp"\nhost = "127.0.0.1"\nbase_port = 25000\n')
    assert config.load(cfg_file, run_dir=tmp_path).bus.endpoint("bus-out") == \
        "tcp://127.0.0.1:25001"


@pytest.mark.parametrize("text,words", [
    ("[bus\n", "not valid TOML"),
    ("[bus]\nheartbeat_msx = 5\n", "unknown key(s) in [bus]: heartbeat_msx"),
    ('[bus]\ntransport = "udp"\n', "must be 'ipc' or 'tcp'"),
    ("bus = 5\n", "[bus] must be a table"),
    ("[bus]\nheartbeat_ms = 1\n", "at least 50"),
])
def test_a_bad_config_names_what_is_wrong(tmp_path, text, words):
    cfg_file = tmp_path / "fleet.toml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(cfg_file, run_dir=tmp_path)
    assert words in str(info.value)


def test_a_service_started_with_a_bad_config_exits_with_the_reason_not_a_traceback(tmp_path):
    cfg_file = tmp_path / "fleet.toml"
    cfg_file.write_text("[gateway]\nport = 4001\n")
    result = subprocess.run([sys.executable, "-m", "services.cli", "bus", "--config",
                             str(cfg_file), "--run-dir", str(short_run_dir())], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "LIVE trading port" in result.stderr and "Traceback" not in result.stderr
