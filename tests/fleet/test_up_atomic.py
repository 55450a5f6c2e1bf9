"""`ibfleet up` is atomic against Ctrl-C and SIGTERM (issue 15, finding 8 and item 7): an
interruption at any moment of the start leaves a running fleet or nothing, with a one-line
message and no traceback; once up, Ctrl-C stops the fleet cleanly.

Each case starts `ibfleet up` as `make run` does (the console script, in the foreground) in a
process group of its own, standing for the terminal's foreground group, waits for a moment of
the start (a condition, never a sleep), and signals it: Ctrl-C goes to the whole group as a
terminal sends it, SIGTERM to the `up` process alone as `kill` does. Afterwards no process of
that fleet may be left (tests/support/fleet_scan.py: by the fleet's run directory, in command
lines and in supervisord's environment). Whatever happens, the test's own group and every
process of the fleet are killed at the end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from tests.support.bus import short_run_dir
from tests.support.fleet_scan import describe, fleet_processes, kill_fleet
from tests.support.processes import REPO, free_port, wait_for

IBFLEET = Path(sys.executable).with_name("ibfleet")  # the console script `make run` runs
pytestmark = pytest.mark.timeout(600)  # the deadlines below, generous for a loaded machine


class Up:
    """One `ibfleet up` in the foreground, its output in a file."""

    def __init__(self, tmp: Path) -> None:
        self.run_dir = short_run_dir()
        self.config = tmp / "fleet.toml"
        self.config.write_text(tomli_w.dumps({
            "bus": {"run_dir": str(self.run_dir), "heartbeat_ms": 500},
            "simulator": {"port": free_port()},
            "fleet": {"state_dir": str(tmp / "state")}}))
        self.out = tmp / "up.out"
        argv = [str(IBFLEET), "up", "--config", str(self.config)] if IBFLEET.exists() else \
            [sys.executable, "-m", "services.cli", "up", "--config", str(self.config)]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pgid = self.proc.pid

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.pgid, signal.SIGINT)

    def wait_exit(self, deadline: float = 240) -> int:
        return self.proc.wait(deadline)

    def cleanup(self) -> None:
        kill_fleet(self.run_dir, self.pgid)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def up(tmp_path):
    run = Up(tmp_path)
    try:
        yield run
    finally:
        run.cleanup()


def _logs(up: Up) -> Path:
    return up.run_dir / "logs"


def _assert_clean_end(up: Up, code: int) -> str:
    text = up.output()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    left = fleet_processes(up.run_dir)
    assert not left, f"processes of the fleet left after `ibfleet up` exited ({code}):\n" \
                     + "\n".join(describe(left)) + f"\noutput:\n{text[-2000:]}"
    return text


def _assert_interrupted_start(up: Up, code: int, signame: str = "SIGINT") -> None:
    """An `up` interrupted while starting: the one line saying so, the signal's exit code;
    or, had the start completed first, the clean stop of a fleet that was up."""
    text = _assert_clean_end(up, code)
    lines = [ln for ln in text.splitlines() if ln.startswith("ibfleet up:")]
    if "fleet up in" in text:  # the signal came after the start completed: a clean stop
        assert code == 0 and "fleet stopped." in text, text
    else:
        assert code == 128 + signal.Signals[signame], text
        assert len(lines) == 1 and lines[0].startswith(f"ibfleet up: {signame}: "), text


def test_ctrl_c_at_once_starts_nothing(up):
    up.ctrl_c()  # Python may not even have loaded ibfleet yet
    code = up.wait_exit()
    text = _assert_clean_end(up, code)
    assert code in (-signal.SIGINT, 130), text  # killed before ibfleet ran, or its line
    assert not (up.run_dir / "supervisord.pid").exists()


def _moment(up: Up, condition, what: str) -> None:
    """Wait for a moment of the start (or for `up` to have exited, which the test's
    assertions then report)."""
    wait_for(lambda: condition() or up.proc.poll() is not None, deadline=120, what=what)


def test_ctrl_c_as_supervisord_is_spawned_stops_it_whole(up):
    # `up` opens supervisord's console log just before it spawns supervisord
    _moment(up, (_logs(up) / "supervisord.console.log").exists, "`up` spawning supervisord")
    up.ctrl_c()
    _assert_interrupted_start(up, up.wait_exit())


def test_ctrl_c_once_supervisord_writes_its_pid_file_stops_it_whole(up):
    _moment(up, (up.run_dir / "supervisord.pid").exists, "supervisord's pid file")
    up.ctrl_c()
    _assert_interrupted_start(up, up.wait_exit())


def test_ctrl_c_once_the_gateway_runs_stops_it_whole(up):
    _moment(up, (_logs(up) / "gateway.log").exists, "the gateway started by supervisord")
    up.ctrl_c()
    _assert_interrupted_start(up, up.wait_exit())


def test_sigterm_while_starting_stops_it_whole(up):
    _moment(up, (_logs(up) / "supervisord.console.log").exists, "`up` spawning supervisord")
    up.proc.send_signal(signal.SIGTERM)  # `kill PID`: to `up` alone
    _assert_interrupted_start(up, up.wait_exit(), "SIGTERM")


def test_ctrl_c_once_up_stops_the_running_fleet_cleanly_even_pressed_twice(up):
    _moment(up, lambda: "Ctrl-C stops the fleet." in up.output(),
            "the live status of a fleet that is up")
    assert up.proc.poll() is None, up.output()
    assert fleet_processes(up.run_dir)  # the fleet runs
    up.ctrl_c()
    wait_for(lambda: "stopping the fleet..." in up.output() or up.proc.poll() is not None,
             what="`up` stopping the fleet")
    if up.proc.poll() is None:
        up.ctrl_c()  # an impatient second Ctrl-C does not cut the stop short
    code = up.wait_exit()
    text = _assert_clean_end(up, code)
    assert code == 0 and text.rstrip().endswith("fleet stopped."), text[-2000:]
