"""A real gateway process given a bad config: exit 2, one clear line on stderr, no traceback,
and never a connection attempt."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.bus import short_run_dir
from tests.support.processes import REPO


@pytest.mark.parametrize("text,words", [
    ('[gateway]\nport = 7496\nlive = "false"\n', "gateway.live must be true or false"),
    ("[gatway]\nport = 7497\n", "unknown section [gatway]"),
])
def test_the_gateway_refuses_a_bad_config_in_one_line(tmp_path, text, words):
    cfg_file = tmp_path / "fleet.toml"
    cfg_file.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway", "--config", str(cfg_file),
         "--run-dir", str(short_run_dir()), "--state-dir", str(tmp_path / "state")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ibfleet gateway: config file {cfg_file}: ")
    assert words in lines[0]
    assert not (tmp_path / "state").exists()  # refused before anything was started
