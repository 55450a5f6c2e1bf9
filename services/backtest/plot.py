"""``report.png``: price with fills, position, and the equity curve with its drawdowns."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never a display, never a GUI backend
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from services.backtest.engine import BacktestResult  # noqa: E402


def _times(ns_values):
    return [datetime.fromtimestamp(ns / 1e9, tz=timezone.utc) for ns in ns_values]


def plot(result: BacktestResult, path: str | Path) -> Path:
    symbols = result.symbols
    fig, axes = plt.subplots(len(symbols) + 2, 1, sharex=True, figsize=(12, 3 + 2.6 * (
        len(symbols) + 1)), gridspec_kw={"height_ratios": [3] * len(symbols) + [1.4, 2.2]})
    samples = result.samples
    when = _times([s.t_ns for s in samples])
    for ax, symbol in zip(axes, symbols):
        points = [(t, s.mids[symbol]) for t, s in zip(when, samples) if symbol in s.mids]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], color="0.35", lw=0.9,
                    label=f"{symbol} mid")
        for side, marker, colour in (("BUY", "^", "tab:green"), ("SELL", "v", "tab:red")):
            fills = [f for f in result.executions if f.symbol == symbol and f.side == side]
            if fills:
                ax.scatter(_times([f.exec_time_ns for f in fills]), [f.price for f in fills],
                           marker=marker, color=colour, s=28, zorder=3,
                           label=f"{side.lower()} fills ({len(fills)})")
        ax.set_ylabel("price")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    ax_pos, ax_eq = axes[-2], axes[-1]
    for symbol in symbols:
        ax_pos.step(when, [s.positions.get(symbol, 0.0) for s in samples], where="post",
                    label=symbol)
    ax_pos.axhline(0, color="0.6", lw=0.6)
    ax_pos.set_ylabel("position")
    ax_pos.legend(loc="upper left", fontsize=8)
    ax_pos.grid(alpha=0.3)
    equity = [s.equity for s in samples]
    peaks, peak = [], 0.0
    for value in equity:
        peak = max(peak, value)
        peaks.append(peak)
    ax_eq.plot(when, equity, color="tab:blue", lw=1.1, label="equity (net of commissions)")
    ax_eq.fill_between(when, equity, peaks, color="tab:red", alpha=0.25, step=None,
                       label="drawdown")
    ax_eq.axhline(0, color="0.6", lw=0.6)
    ax_eq.set_ylabel("PnL")
    ax_eq.legend(loc="upper left", fontsize=8)
    ax_eq.grid(alpha=0.3)
    ax_eq.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    settings = result.settings
    fig.suptitle(f"backtest {result.strategy}: latency {settings.latency_ns / 1e6:g} ms "
                 f"(reports {settings.return_latency_ns / 1e6:g} ms), "
                 f"queue {settings.queue_model}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
