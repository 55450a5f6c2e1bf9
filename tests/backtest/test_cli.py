"""``ibfleet backtest`` end to end: determinism to the byte, and a report that adds up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proto.schema import OrderIntent, OrderUpdate
from services.backtest import synthetic
from services.backtest.frames import read_frames

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
name = "mr1"
class = "services.strategy.examples.mean_reversion:MeanReversion"
symbols = ["AAPL"]
timer_s = 1.0

[params]
window = 60

[risk]
max_position = 500
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    synthetic.write_recording(base / "rec", synthetic.random_walk(seed=3, steps=2000))
    (base / "mr1.toml").write_text(CONFIG)
    outs = []
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "services.cli", "backtest",
                               str(base / "mr1.toml"), str(base / "rec"), "--out",
                               str(base / name), "--latency-ms", "5"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outs.append((base / name, proc.stdout))
    return outs


def test_two_runs_are_byte_identical(runs):
    (a, stdout_a), (b, stdout_b) = runs
    for name in ("intents.bin", "fills.bin", "report.txt", "report.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "fills.bin").stat().st_size > 0
    assert stdout_a == stdout_b == (a / "report.txt").read_text()


def test_the_report_matches_a_recomputation_from_fills_bin(runs):
    out = runs[0][0]
    fills = list(read_frames(out / "fills.bin"))
    intents = list(read_frames(out / "intents.bin"))
    assert fills and all(isinstance(f, OrderUpdate) and f.exec_id for f in fills)
    assert intents and all(isinstance(i, OrderIntent) for i in intents)
    # average-cost realized PnL and per-order commission, written independently here
    qty = cost = realized = 0.0
    per_order: dict[str, float] = {}
    for f in fills:
        signed = f.last_fill_qty if f.side == "BUY" else -f.last_fill_qty
        if qty == 0 or (qty > 0) == (signed > 0):
            cost = (cost * abs(qty) + f.last_fill_price * abs(signed)) / abs(qty + signed)
            qty += signed
        else:
            closed = min(abs(qty), abs(signed))
            realized += closed * (f.last_fill_price - cost) * (1 if qty > 0 else -1)
            left = qty + signed
            if abs(left) < 1e-12:
                qty, cost = 0.0, 0.0
            elif (left > 0) != (qty > 0):
                qty, cost = left, f.last_fill_price
            else:
                qty = left
        per_order[f.client_order_id] = per_order.get(f.client_order_id, 0.0) + f.last_fill_qty
    commissions = sum(max(1.0, 0.005 * q) for q in per_order.values())
    report = json.loads((out / "report.json").read_text())
    assert report["trading"]["fills"] == len(fills)
    assert report["trading"]["filled_orders"] == len(per_order)
    assert report["pnl"]["realized_gross"] == pytest.approx(realized, abs=1e-6)
    assert report["pnl"]["commissions"] == pytest.approx(commissions, abs=1e-6)
    # realized PnL is reported net of commissions, as the Portfolio (and IB) report it
    assert report["pnl"]["realized"] == pytest.approx(realized - commissions, abs=1e-6)
    assert report["final_positions"]["AAPL"] == qty
    assert report["intents"]["total"] == len(intents)
    text = (out / "report.txt").read_text()
    assert f"{realized - commissions:,.2f}" in text and f"{len(fills):d}" in text


def test_the_plot_is_a_real_png(runs):
    png = runs[0][0] / "report.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000


def test_help():
    proc = subprocess.run([sys.executable, "-m", "services.cli", "backtest", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--latency-ms", "--report-latency-ms", "--queue-model", "--from", "--to",
                   "--out", "RECORDING"):
        assert option in proc.stdout


def test_main_rejects_a_missing_recording(tmp_path, capsys):
    from services.backtest.__main__ import main
    (tmp_path / "s.toml").write_text(CONFIG)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "s.toml"), str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "no recording" in capsys.readouterr().err


def test_from_and_to_cut_the_run(runs, tmp_path):
    from services.backtest.__main__ import main
    base = runs[0][0].parent
    assert main([str(base / "mr1.toml"), str(base / "rec"), "--out", str(tmp_path / "cut"),
                 "--from", "+20", "--to", "+80", "--no-plot", "--queue-model", "none"]) == 0
    report = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert 59 <= report["duration_s"] <= 60 and report["queue_model"] == "none"
    assert not (tmp_path / "cut" / "report.png").exists()
