"""Backtests over the data catalog (issue 14, items 3 and 4): the real daily bars the project
ships (data/sample) and the real CME 6E futures minute bars (../shared/data/real), each with
the full report; figures checked against values computed here from trades.csv and IB's
schedule; the same run twice gives the same bytes; report.html opened in headless Chromium
(Debian's package, installed by `make test`), screenshot taken, failing on an error or an
empty page."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import zlib
from pathlib import Path

import pytest

from services.backtest.__main__ import main
from services.backtest.matching import CommissionModel, IBCommissions
from services.data.catalog import Catalog
from services.data.importers import Options, read
from services.data.sample import import_sample
from tests.data.conftest import SHARED

REPO = Path(__file__).resolve().parents[2]
FUTURES = "bars/6EH4_CME_1min_2024-01.csv.gz"

DAILY_TOML = """name = "smad"
class = "tests.backtest.sma_plotted:SmaPlotted"
symbols = ["AAPL"]
timer_s = 60.0

[params]
bar = "1 day"
fast = 5
slow = 20
risk = 2000.0
stop_ranges = 2.0
max_qty = 500

[risk]
max_position = 1000
max_order_quantity = 1000
"""

FUTURES_TOML = """name = "smaf"
class = "tests.backtest.sma_plotted:SmaPlotted"
symbols = ["6EH4"]
timer_s = 60.0

[params]
bar = "1 min"
fast = 10
slow = 30
risk = 500.0
stop_ranges = 3.0
max_qty = 2

[risk]
max_position = 5
max_order_quantity = 5
"""


def shared_file(path: str) -> Path:
    """A real file from ../shared (next to the repository), or the machine's copy."""
    for base in (REPO.parent / "shared" / "data" / "real", SHARED):
        if (base / path).is_file():
            return base / path
    pytest.skip(f"{path} is not in ../shared/data/real")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("bt") / "catalog")
    import_sample(cat)
    return cat


@pytest.fixture(scope="module")
def futures_catalog(catalog) -> Catalog:
    path = shared_file(FUTURES)
    options = Options(symbol="6EH4", instrument={"sec_type": "FUT", "exchange": "CME",
                                                 "min_tick": 0.00005, "multiplier": 125000.0})
    catalog.add(read("bars", [str(path)], options))
    return catalog


def _run(tmp: Path, toml: str, catalog: Catalog, data: str, *args: str, out="out") -> Path:
    cfg = tmp / "strategy.toml"
    cfg.write_text(toml)
    target = tmp / out
    assert main([str(cfg), "--data", data, "--catalog", str(catalog.root), "--out",
                 str(target), *args]) == 0
    return target


def _trades(out: Path) -> list[dict]:
    with open(out / "trades.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _check_report(out: Path, multiplier: float, fee: float) -> dict:
    report = json.loads((out / "report.json").read_text())
    stats = report["statistics"]
    trades = _trades(out)
    assert trades, "the strategy traded"
    # every round trip's PnL from its own prices, and net of its commissions
    for t in trades:
        sign = 1 if t["direction"] == "long" else -1
        gross = sign * (float(t["exit_price"]) - float(t["entry_price"])) * \
            float(t["quantity"]) * multiplier
        assert float(t["pnl_gross"]) == pytest.approx(gross, abs=0.02)
        assert float(t["pnl_net"]) == pytest.approx(
            float(t["pnl_gross"]) - float(t["commissions"]), abs=0.02)
        assert float(t["mae"]) <= 0 <= float(t["mfe"])
        assert float(t["mae"]) <= min(0.0, gross) + 0.02
    # the trades add up to the run's PnL: total return from trades.csv
    net = sum(float(t["pnl_net"]) for t in trades)
    assert net == pytest.approx(report["pnl"]["total"], abs=0.05)
    assert stats["net_pnl"] == pytest.approx(net, abs=0.05)
    cash = stats["initial_cash"]
    assert stats["total_return_pct"] == pytest.approx(net / cash * 100, abs=1e-4)
    # commissions: IB's schedule, applied here to each fill of fills.bin
    commissions = sum(float(t["commissions"]) for t in trades)
    assert stats["commissions"] == pytest.approx(commissions, abs=0.01)
    assert report["pnl"]["commissions"] == pytest.approx(commissions, abs=0.01)
    closed = [t for t in trades if t["status"] == "closed"]
    wins = [float(t["pnl_net"]) for t in closed if float(t["pnl_net"]) > 0]
    losses = [float(t["pnl_net"]) for t in closed if float(t["pnl_net"]) <= 0]
    assert stats["trades"] == len(trades)
    assert stats["win_rate_pct"] == pytest.approx(100 * len(wins) / len(closed), abs=1e-3)
    assert stats["profit_factor"] == pytest.approx(sum(wins) / -sum(losses), rel=1e-4)
    assert stats["avg_win"] == pytest.approx(sum(wins) / len(wins), abs=0.01)
    assert 0 < stats["exposure_pct"] <= 100
    assert stats["max_drawdown_pct"] >= 0
    assert "sqrt(252)" in report["definitions"]["sharpe"]
    for name in ("trades.csv", "report.json", "report.png", "report.html", "report.txt"):
        assert (out / name).stat().st_size > 0, name
    return report


def _fill_commissions(out: Path) -> list[tuple[float, float]]:
    """(quantity, price) of every fill, from fills.bin."""
    from services.backtest.frames import read_frames
    return [(u.last_fill_qty, u.last_fill_price) for u in read_frames(out / "fills.bin")]


def test_daily_bars_backtest_full_report(tmp_path, catalog):
    out = _run(tmp_path, DAILY_TOML, catalog, "bars-1d/AAPL", "--from", "2012-03-01")
    report = _check_report(out, 1.0, 0.0)
    assert report["start"].startswith("2012-03-01")
    # fixed pricing: each order pays max(1.00, 0.005 x shares), at most 1 % of its value
    fixed = CommissionModel()
    fills = _fill_commissions(out)
    expected = sum(fixed.for_order(q, q * p) for q, p in fills)  # one fill an order here
    assert report["statistics"]["commissions"] == pytest.approx(expected, abs=0.01)
    # the indicators the strategy plotted are drawn, and the stops it placed
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'class="stats"' in html


def test_futures_minute_bars_backtest_full_report(tmp_path, futures_catalog):
    out = _run(tmp_path, FUTURES_TOML, futures_catalog, "bars-1min/6EH4", "--from",
               "2024-01-03", "--to", "2024-01-06", "--fees-per-contract", "1.62")
    report = _check_report(out, 125000.0, 1.62)
    fills = _fill_commissions(out)
    contracts = sum(q for q, _ in fills)
    assert report["statistics"]["commissions"] == pytest.approx(contracts * (0.85 + 1.62),
                                                                abs=0.01)
    assert report["data"]["sec_types"] == {"6EH4": "FUT"}


def test_same_run_twice_is_byte_identical(tmp_path, catalog):
    outs = [_run(tmp_path, DAILY_TOML, catalog, "bars-1d/AAPL", "--from", "2012-03-01",
                 "--no-plot", out=f"run{i}") for i in range(2)]
    for name in ("trades.csv", "report.json", "report.txt", "intents.bin", "fills.bin"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_several_strategies_in_one_run(tmp_path, catalog):
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text(DAILY_TOML)
    b.write_text(DAILY_TOML.replace('"smad"', '"smad2"').replace("fast = 5", "fast = 8"))
    out = tmp_path / "multi"
    assert main([str(a), str(b), "--data", "bars-1d/AAPL", "--data", "bars-1d/MSFT",
                 "--catalog", str(catalog.root), "--from", "2012-03-01", "--out",
                 str(out)]) == 0
    for name in ("smad", "smad2"):
        assert (out / name / "trades.csv").is_file()
    assert "smad2" in (out / "report.html").read_text()


def test_tiered_stock_commissions():
    tiered = IBCommissions(pricing="tiered", sec_types={"AAPL": "STK"})
    # 100 shares at 50: 0.0035 x 100 = 0.35 (the minimum) + clearing 0.0002 x 100
    assert tiered.for_fill(0, 100, 50.0, 0.0, "AAPL", 0) == pytest.approx(0.35 + 0.02)
    # past 300,000 shares this month the rate is 0.002
    tiered._month_volume[("STK", "1970-01")] = 300_000
    assert tiered.for_fill(0, 1000, 50.0, 0.0, "AAPL", 0) == pytest.approx(2.0 + 0.2)
    fixed = CommissionModel()
    assert fixed.for_order(100, 100 * 50.0) == 1.0
    assert fixed.for_order(1000, 1000 * 50.0) == 5.0
    assert fixed.for_order(1000, 1000 * 0.20) == pytest.approx(2.0)  # 1 % of 200
    fut = IBCommissions(pricing="tiered", sec_types={"ES": "FUT"}, fees_per_contract=1.0)
    fut._month_volume[("FUT", "1970-01")] = 999
    assert fut.for_fill(0, 3, 5000.0, 0.0, "ES", 0) == pytest.approx(0.85 + 2 * 0.65 + 3)


# -- the report in a browser ------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _chromium(args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # chromium's helpers too
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _png_variance(path: Path) -> float:
    """Variance of the grey levels of a PNG (8-bit RGB/RGBA, non-interlaced)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = ctype = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            depth, ctype = body[8], body[9]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    values = []
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 255
        prev = line
        if y % 4 == 0:
            values.extend(line[x] for x in range(0, stride, bpp * 4))
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


@pytest.mark.parametrize("kind", ["daily", "futures"])
def test_report_html_in_headless_chromium(tmp_path, catalog, kind, request):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium "
                    "(apt-get install chromium)")
    if kind == "daily":
        out = _run(tmp_path, DAILY_TOML, catalog, "bars-1d/AAPL", "--from", "2012-03-01")
    else:
        cat = request.getfixturevalue("futures_catalog")
        out = _run(tmp_path, FUTURES_TOML, cat, "bars-1min/6EH4", "--from", "2024-01-03",
                   "--to", "2024-01-05")
    page = (out / "report.html").resolve()
    shot = tmp_path / "screenshot.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,2000",
                      page.as_uri()], tmp_path / "profile-shot")
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    assert _png_variance(shot) > 100, "the screenshot is blank"
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-dom").stdout.decode()
    assert 'class="stats"' in dom and "Sharpe" in dom and "Max drawdown" in dom
    assert "data:image/png;base64," in dom
    text = re.sub(r"(?s)<script.*?</script>|<style.*?</style>|data:image/png;base64,[^\"]*",
                  "", dom)
    for bad in ("Traceback", "Error", "ERR_", "This site can", "nan%", "n/a"):
        assert bad not in text, bad
    assert len(re.sub(r"<[^>]+>", "", text).strip()) > 500, "the page is empty"
    # self-contained: nothing fetched from the network
    source = (out / "report.html").read_text()
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?:', source)
