"""A live session of the fleet against the simulator, recorded, then replayed: every message
comes back in order with nothing missing, and a strategy on the replay bus behaves as it did
live on the same inputs."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys

import tomli_w

from proto.schema import Tick
from services.recorder.check import check_recording
from services.recorder.reader import Recording
from tests.support.bus import json_lines, short_run_dir
from tests.support.processes import REPO, wait_for

MR = "services.strategy.examples.mean_reversion:MeanReversion"
PROBE = "tests.support.probe_strategy:Probe"


def _echoes(log: str) -> dict[int, tuple[float, str]]:
    out = {}
    for line in log.splitlines():
        if '"event": "echo"' in line:
            rec = json.loads(line)
            out[rec["tseq"]] = (rec["z"], rec["signal"])
    return out


def test_a_recorded_fleet_session_replays_completely_and_a_strategy_behaves_the_same(
        fleet, tmp_path):
    out = tmp_path / "recording"
    fleet.start_core()
    recorder = fleet.procs.start("recorder", [sys.executable, "-m", "services.recorder",
                                              "--config", str(fleet.config_path), "--out",
                                              str(out), "--flush-ms", "20"])
    fleet.wait(lambda: any(h.src.startswith("recorder") for h in fleet.messages(
        __import__("proto.schema", fromlist=["Heartbeat"]).Heartbeat)), what="the recorder")
    fleet.add_strategy("mr", MR, ["MSFT"], {"window": 20, "entry_z": 1.0, "stop_sigmas": 1.0,
                                            "risk_fraction": 0.0002, "max_quantity": 200,
                                            "entry_timeout_s": 5})
    fleet.add_strategy("echo", PROBE, ["MSFT"], {"mode": "echo", "window": 20})
    fleet.start_strategy("mr")
    fleet.start_strategy("echo")
    fleet.wait(lambda: len(fleet.fills("mr")) >= 2, deadline=180, what="the strategy to trade")
    fleet.wait(lambda: len(_echoes(fleet.procs.log("strategy-echo"))) >= 60, deadline=120,
               what="sixty ticks seen live")
    recorder.send_signal(signal.SIGTERM)
    assert recorder.wait(60) == 0

    check = check_recording(out, deep=True)
    assert check.gaps == 0 and check.missing == 0 and check.out_of_order == 0, check.as_dict()
    recorded = list(Recording(out).messages())
    types = {type(m).__name__ for _, m in recorded}
    assert {"Tick", "OrderUpdate", "GatewayState", "Heartbeat", "RiskDecision"} <= types
    total = len(recorded)

    for speed in ("max", "realtime"):
        run_dir = short_run_dir()
        replay = fleet.procs.start(f"replay-{speed}", [
            sys.executable, "-m", "services.replay", str(out), "--run-dir", str(run_dir),
            "--wait-subscribers", "2", "--speed", "max" if speed == "max" else "20"])
        fleet.procs.start(f"tap-{speed}", [sys.executable, "-m", "services.bus.tap", "--quiet",
                                           "--every", "0.2", "--run-dir", str(run_dir)])
        replay_cfg = tmp_path / f"replay-{speed}.toml"
        replay_cfg.write_text(tomli_w.dumps({"bus": {"run_dir": str(run_dir)},
                                             "fleet": {"state_dir": str(tmp_path / "rs")}}))
        fleet.procs.start(f"echo-{speed}", [
            sys.executable, "-m", "services.cli", "strategy", "run",
            str(fleet.strategies_dir / "echo.toml"), "--no-recover", "--config",
            str(replay_cfg)])
        assert replay.wait(300) == 0, fleet.procs.log(f"replay-{speed}")

        def tap_counts():
            lines = [r for r in json_lines(fleet.procs.log(f"tap-{speed}")) if "received" in r]
            return lines[-1] if lines else {}

        wait_for(lambda: tap_counts().get("received", 0) >= total, deadline=120,
                 what=f"the {speed} replay to arrive whole")
        counts = tap_counts()
        assert counts["received"] == total
        assert counts["gaps"] == 0 and counts["duplicates"] == 0 and counts["bad_frames"] == {}

        live = _echoes(fleet.procs.log("strategy-echo"))
        replayed = _echoes(fleet.procs.log(f"echo-{speed}"))
        common = sorted(set(live) & set(replayed))
        assert len(common) >= 40
        # both windows hold the same last 20 mids once 20 common ticks have passed
        for tseq in common[20:]:
            (z_live, s_live), (z_rep, s_rep) = live[tseq], replayed[tseq]
            assert s_live == s_rep, (tseq, live[tseq], replayed[tseq])
            assert (math.isnan(z_live) and math.isnan(z_rep)) or abs(z_live - z_rep) < 1e-6
    ticks = [m for _, m in recorded if isinstance(m, Tick) and m.symbol == "MSFT"]
    assert ticks

    # the same live recording backtested twice: byte-identical intents, fills and reports
    outputs = []
    for run in ("a", "b"):
        dest = tmp_path / f"backtest-{run}"
        result = subprocess.run([sys.executable, "-m", "services.cli", "backtest",
                                 str(fleet.strategies_dir / "mr.toml"), str(out), "--out",
                                 str(dest)], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append({name: (dest / name).read_bytes()
                        for name in ("intents.bin", "fills.bin", "report.txt", "report.json")})
        assert (dest / "report.png").stat().st_size > 10_000
    assert outputs[0] == outputs[1]
    assert outputs[0]["intents.bin"], "the strategy sent no intent over the recorded session"
