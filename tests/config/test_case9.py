"""Issue 12, case 9: every reported input, refused with a ConfigError naming the key.

As reported: ``live = "false"`` counted as true and the gateway went to the live port 7496;
``port = "7496"`` skipped the live-port check; ``flatten_on_loss = "no"`` counted as true;
``"127.attacker.example"`` passed the loopback check; ``heartbeat_ms = "fast"`` ended in a
traceback and ``50.0`` made every heartbeat undecodable; ``[gatway]`` was ignored; wrong-typed
risk limits started and then failed every intent with a TypeError.
"""
from __future__ import annotations

import pytest

from services.gateway.options import GatewayOptions
from services.runtime.config import ConfigError
from tests.config.helpers import load, refusal


def test_the_string_false_is_not_a_boolean_and_cannot_reach_a_live_port(tmp_path):
    message = refusal(tmp_path, '[gateway]\nport = 7496\nlive = "false"\n')
    assert "gateway.live must be true or false" in message
    assert 'the string "false"' in message and "live = false" in message  # what to write


def test_a_quoted_port_is_refused_so_the_live_port_check_cannot_be_skipped(tmp_path):
    message = refusal(tmp_path, '[gateway]\nport = "7496"\n')
    assert "gateway.port must be an integer" in message and "port = 7496" in message


@pytest.mark.parametrize("live", ['"true"', '"false"', '"no"', "1", "0"])
def test_a_live_port_is_reached_only_with_the_boolean_true(tmp_path, live):
    message = refusal(tmp_path, f"[gateway]\nport = 7496\nlive = {live}\n")
    assert "gateway.live must be true or false" in message
    assert load(tmp_path, "[gateway]\nport = 7496\nlive = true\n").gateway.live is True


def test_the_gateway_options_refuse_a_live_port_the_config_did_not_allow(tmp_path):
    cfg = load(tmp_path, "[gateway]\nport = 7497\nlive = false\n")
    with pytest.raises(ConfigError, match="LIVE trading port"):
        GatewayOptions.from_config(cfg, port=7496).validate()
    with pytest.raises(ConfigError, match="gateway.live must be true or false"):
        GatewayOptions(port=7496, live="false").validate()  # type: ignore[arg-type]


def test_no_is_not_a_boolean_for_flatten_on_loss(tmp_path):
    message = refusal(tmp_path, '[risk]\nflatten_on_loss = "no"\n')
    assert "risk.flatten_on_loss must be true or false" in message
    assert "without quotes" in message


@pytest.mark.parametrize("host", ["127.attacker.example", "127.0.0.1.nip.io", "10.1.2.3",
                                  "0.0.0.0", "::", "localhost.example"])
def test_a_host_that_only_looks_like_loopback_is_refused(tmp_path, host):
    message = refusal(tmp_path, f'[gateway]\nhost = "{host}"\n')
    assert f"gateway.host '{host}' is not loopback" in message


def test_a_word_for_heartbeat_ms_is_a_config_error_not_a_traceback(tmp_path):
    message = refusal(tmp_path, '[bus]\nheartbeat_ms = "fast"\n')
    assert "bus.heartbeat_ms must be an integer" in message


def test_a_float_heartbeat_ms_is_refused_with_what_to_write(tmp_path):
    message = refusal(tmp_path, "[bus]\nheartbeat_ms = 50.0\n")
    assert "bus.heartbeat_ms must be an integer, not 50.0" in message
    assert "heartbeat_ms = 50" in message
    assert load(tmp_path, "[bus]\nheartbeat_ms = 50\n").bus.heartbeat_ms == 50


def test_an_unknown_section_is_refused_and_the_likely_one_named(tmp_path):
    message = refusal(tmp_path, "[gatway]\nport = 7497\n")
    assert "unknown section [gatway]" in message and "did you mean [gateway]?" in message


def test_an_unknown_key_inside_a_known_section_is_refused(tmp_path):
    message = refusal(tmp_path, "[gateway]\nprot = 7497\n")
    assert "unknown key(s) in [gateway]: prot (did you mean port?)" in message


@pytest.mark.parametrize("text,key,words", [
    ('[risk]\nmax_position = "500"\n', "risk.max_position", "must be a number"),
    ("[risk]\nmax_open_orders = 5.5\n", "risk.max_open_orders", "must be an integer"),
    ("[risk]\nmax_order_quantity = true\n", "risk.max_order_quantity", "must be a number"),
    ("[risk]\nmax_position = -1\n", "risk.max_position", "must be at least 0"),
    ("[risk]\norder_rate = nan\n", "risk.order_rate", "must be a finite number, not nan"),
    ('[risk.strategies.mr1]\ndaily_loss_limit = "20000"\n',
     "risk.strategies.mr1.daily_loss_limit", "must be a number"),
    ("[risk.strategies.mr1]\nmax_postion = 5\n", "[risk.strategies.mr1]: max_postion",
     "did you mean max_position?"),
    ("[risk.strategies]\nmr1 = 5\n", "[risk.strategies.mr1]", "must be a table"),
    ("[risk.limits]\nmax_position = 5\n", "[risk.limits]", "unknown section"),
])
def test_wrong_typed_risk_limits_are_refused_at_load_not_at_every_intent(tmp_path, text, key,
                                                                        words):
    message = refusal(tmp_path, text)
    assert key in message and words in message


@pytest.mark.parametrize("body, key", [
    ("[risk]\nmax_position = inf\n", "risk.max_position"),
    ("[risk]\nmax_position = nan\n", "risk.max_position"),
    ("[gateway]\nbackoff_base = inf\n", "gateway.backoff_base"),
])
def test_an_infinite_or_nan_number_is_refused_by_name(tmp_path, body, key):
    assert f"{key} must be a finite number" in refusal(tmp_path, body)
