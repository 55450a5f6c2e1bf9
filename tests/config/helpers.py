"""Writing a config file for a test and loading it, and the error a bad one gives."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime import config
from services.runtime.config import ConfigError, FleetConfig


#: a fleet config using every section (tuning, a strategy's limits, an instrument, the
#: trading day): real-looking input for the config tests and the config fuzz target
FULL_CONFIG = """
[bus]
heartbeat_ms = 500
[gateway]
port = 4002
client_id = 3
probe_interval = 2.5
account_updates = false
[risk]
max_position = 800
flatten_on_loss = true
[risk.strategies.mr1]
order_rate = 5
[instruments.ES]
min_tick = 0.25
multiplier = 50
[trading]
day_roll = "16:00"
zone = "UTC"
"""


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> FleetConfig:
    return config.load(write(tmp_path, text), run_dir=tmp_path / "run",
                       state_dir=tmp_path / "state")


def refusal(tmp_path: Path, text: str) -> str:
    """The ConfigError's message for a fleet config holding ``text``; one line, naming the
    file."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config file {tmp_path / 'fleet.toml'}: "), message
    return message
