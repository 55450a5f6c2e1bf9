"""The fleet config decoded into typed structures: valid files still load, every section's
types are held, and the rules beyond types (loopback, CURVE, live opt-in) still apply."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.fleet import supervisor
from services.gateway.options import GatewayOptions
from services.runtime import config
from services.runtime.config import is_loopback
from services.runtime.settings import GatewayConfig
from tests.config.helpers import FULL_CONFIG, load, refusal, write

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_example_loads(tmp_path):
    readme = (REPO / "README.md").read_text()
    example = re.search(r"## Configuration.*?```toml\n(.*?)```", readme, re.S)[1]
    cfg = load(tmp_path, example)
    assert cfg.bus.transport == "ipc" and cfg.bus.heartbeat_ms == 1000
    assert (cfg.gateway.host, cfg.gateway.port, cfg.gateway.client_id) == ("127.0.0.1", 7497, 1)


def test_the_fleet_toml_written_for_supervisord_loads_back_the_same(tmp_path):
    """``ibfleet up`` writes RUN_DIR/fleet.toml, which every program of supervisord.conf reads
    (``--config %(ENV_IBFLEET_RUN_DIR)s/fleet.toml``): it must load and mean the same."""
    assert "--config %(ENV_IBFLEET_RUN_DIR)s/fleet.toml" in (REPO / "supervisord.conf").read_text()
    original = load(tmp_path, FULL_CONFIG)
    paths = supervisor.FleetPaths(original)
    paths.prepare()
    supervisor.write_fleet_config(paths, original)
    again = config.load(paths.fleet_toml)
    assert again.bus == original.bus and again.gateway == original.gateway
    assert again.state_dir == original.state_dir and again.raw["risk"] == original.raw["risk"]


def test_the_defaults_are_typed(tmp_path):
    cfg = config.load(run_dir=tmp_path / "run", state_dir=tmp_path / "state")
    assert cfg.bus.run_dir == tmp_path / "run" and cfg.state_dir == tmp_path / "state"
    assert cfg.gateway.tuning() == {} and cfg.gateway.live is False
    assert GatewayOptions.from_config(cfg) == GatewayOptions()


def test_integers_are_taken_where_numbers_are_expected(tmp_path):
    cfg = load(tmp_path, "[gateway]\nprobe_interval = 2\n[risk]\nmax_position = 800\n")
    assert cfg.gateway.probe_interval == 2.0 and isinstance(cfg.gateway.probe_interval, float)


def test_gateway_tuning_comes_from_the_file_and_the_command_line_wins(tmp_path):
    cfg = load(tmp_path, "[gateway]\nprobe_interval = 2.5\nrate = 20\naccount_updates = false\n")
    options = GatewayOptions.from_config(cfg, rate=30.0, probe_timeout=None)
    assert (options.probe_interval, options.rate, options.account_updates) == (2.5, 30.0, False)
    assert options.probe_timeout == GatewayOptions().probe_timeout  # unset: the default
    assert options.validate() is options


@pytest.mark.parametrize("text,words", [
    ("[gateway]\nrate = 60\n", "gateway.rate must be at most 50"),
    ("[gateway]\nprobe_interval = 0\n", "gateway.probe_interval must be greater than 0"),
    ('[gateway]\naccount_updates = "no"\n', "gateway.account_updates must be true or false"),
    ("[gateway]\nmkt_data_lines = 100.0\n", "gateway.mkt_data_lines must be an integer"),
    ("[gateway]\nport = 70000\n", "gateway.port must be at most 65535"),
])
def test_bad_gateway_tuning_in_the_file_is_refused(tmp_path, text, words):
    assert words in refusal(tmp_path, text)


def test_bad_gateway_tuning_on_the_command_line_is_refused():
    with pytest.raises(config.ConfigError, match="gateway.rate must be at most 50"):
        GatewayOptions(rate=500.0).validate()
    with pytest.raises(config.ConfigError, match="not loopback"):
        GatewayOptions(host="127.attacker.example").validate()


def test_every_gateway_option_can_be_set_in_the_file():
    fields = set(GatewayOptions.__dataclass_fields__)
    assert fields == set(GatewayConfig.__struct_fields__)
    assert fields - set(GatewayConfig.TUNING) == {"host", "port", "client_id", "live", "account"}


@pytest.mark.parametrize("text,words", [
    ('[instruments.ES]\nmin_tick = "0.25"\n', "instruments.ES.min_tick must be a number"),
    ("[instruments.ES]\nmin_tick = 0\n", "instruments.ES.min_tick must be at least 1e-10"),
    ("[instruments.ES]\nmin_tick = 5e-324\n", "instruments.ES.min_tick must be at least 1e-10"),
    ("[instruments.ES]\nmin_tick = 0.25\nlot_size = 1e-300\n", "instruments.ES.lot_size must be at least 1e-10"),
    ("[instruments.ES]\nmultiplier = 50\n", "'instruments.ES.min_tick' is required"),
    ("[instruments.ES]\nmin_tick = 0.25\ntick = 1\n", "unknown key(s) in [instruments.ES]"),
    ("[trading]\nday_roll = 1700\n", "[trading] day_roll must be a time"),
    ('[trading]\nzone = "Mars/Olympus"\n', "not a known IANA time zone"),
    ("[fleet]\nstate_dir = true\n", "fleet.state_dir must be a string"),
    ("[bus]\nrun_dir = 5\n", "bus.run_dir must be a path"),
    ("[bus]\nbase_port = -1\n", "bus.base_port must be at least 0"),
    ('[simulator]\nsessions = "yes"\n', "simulator.sessions"),
])
def test_the_other_sections_are_typed_too(tmp_path, text, words):
    assert words in refusal(tmp_path, text)


def test_a_toml_time_is_a_day_roll(tmp_path):
    load(tmp_path, "[trading]\nday_roll = 16:30:00\n")


def test_existing_rules_still_hold(tmp_path):
    assert "CURVE" in refusal(tmp_path, '[bus]\ntransport = "tcp"\nhost = "0.0.0.0"\n'
                                        'base_port = 25000\n')
    assert "must be 'ipc' or 'tcp'" in refusal(tmp_path, '[bus]\ntransport = "udp"\n')
    assert "at least 50" in refusal(tmp_path, "[bus]\nheartbeat_ms = 49\n")
    assert "LIVE" in refusal(tmp_path, "[gateway]\nport = 4001\n")
    cfg = load(tmp_path, '[bus]\ntransport = "tcp"\nhost = "0.0.0.0"\nbase_port = 25000\n'
                         f'curve_dir = "{tmp_path}"\n')
    assert cfg.bus.curve_dir == tmp_path  # beyond loopback with CURVE keys: allowed


def test_a_file_that_is_not_toml_or_not_there_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="fleet.toml is not valid TOML: .*line 1"):
        load(tmp_path, "[bus\n")
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")
    bad = write(tmp_path, "x", "binary.toml")
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(config.ConfigError, match="cannot be read"):
        config.load(bad)


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("127.attacker.example", False), ("127.1", False),
    ("0.0.0.0", False), ("::", False), ("*", False), ("", False), ("10.0.0.1", False),
])
def test_loopback_is_decided_by_the_ipaddress_module(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("value", ["on", "off"])
def test_simulator_sessions_reach_the_embedded_simulator(tmp_path, value, monkeypatch):
    """``[simulator] sessions`` goes to the simulator supervisord starts: through the
    environment ``ibfleet up`` gives supervisord to the simulator's command line default."""
    from services.simulator.__main__ import build_parser
    cfg = load(tmp_path, f'[simulator]\nsessions = "{value}"\n')
    assert cfg.simulator.sessions == value
    env = supervisor.environment(supervisor.FleetPaths(cfg), cfg, simulate=True, record=False,
                                 crash_max=5, crash_window_s=60, seed=1)
    assert env["IBFLEET_SIM_SESSIONS"] == value
    monkeypatch.setenv("IBFLEET_SIM_SESSIONS", env["IBFLEET_SIM_SESSIONS"])
    assert build_parser().parse_args([]).sessions == value
    assert load(tmp_path, "").simulator.sessions == "off"  # the default: around the clock
