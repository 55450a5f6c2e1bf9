"""The report of a backtest over the catalog: trades.csv, report.json, report.png and one
self-contained report.html (the charts embedded as PNG data, and with the ``report`` extra
installed (bokeh) an interactive chart whose JavaScript is inlined: it opens offline).

Charts: equity against buy-and-hold and the drawdown (%), then per symbol the price with
the fills (buy ^, sell v), the stops (red) and targets (green) while they were working, and
the series the strategy plotted (``Strategy.plot``), then the position.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from services.backtest import analysis
from services.backtest.analysis import Curve, Trade


@dataclass
class Run:
    """One strategy's backtest, with what its report needs."""
    name: str
    symbols: list[str]
    summary: dict[str, Any]  # report.summarize's
    stats: dict[str, Any]
    trades: list[Trade]
    curve: Curve
    paths: dict  # symbol -> PricePath
    executions: list  # the venue's Execution reports
    updates: list  # every OrderUpdate
    series: dict[str, list[tuple[int, float]]]
    start_ns: int
    end_ns: int
    multipliers: dict[str, float]


def _r(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, 6) + 0.0
    if isinstance(value, dict):
        return {k: _r(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_r(v) for v in value]
    return value


def report_json(run: Run, extra: dict[str, Any]) -> str:
    doc = dict(run.summary)
    doc["statistics"] = _r(run.stats)
    doc["definitions"] = analysis.DEFINITIONS
    doc.update(_r(extra))
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"


# -- charts -------------------------------------------------------------------------------------
def _times(ns):
    return [datetime.fromtimestamp(n / 1e9, tz=timezone.utc) for n in ns]


def working_levels(updates) -> list[tuple[str, str, float, int, int]]:
    """(symbol, "stop" | "target", price, from_ns, to_ns) of each exit order while working:
    stops (STP, STP LMT) at their stop price, limit orders with a parent at their limit."""
    live: dict[str, tuple[str, str, float, int]] = {}
    out = []
    final = {"filled", "cancelled", "rejected", "inactive", "expired"}
    for u in updates:
        kind = None
        if u.order_type.startswith("STP") and math.isfinite(u.stop_price):
            kind, price = "stop", u.stop_price
        elif u.order_type == "LMT" and u.parent_id and math.isfinite(u.limit_price):
            kind, price = "target", u.limit_price
        if kind is None:
            continue
        coid = u.client_order_id
        held = live.get(coid)
        if held is not None and (u.state in final or held[2] != price):
            out.append((held[0], held[1], held[2], held[3], u.ts))
            del live[coid]
        if u.state not in final and coid not in live:
            live[coid] = (u.symbol, kind, price, u.ts)
    for coid, (symbol, kind, price, since) in live.items():
        out.append((symbol, kind, price, since, 0))
    return out


def figure(run: Run):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    symbols = run.symbols
    n = len(symbols)
    fig, axes = plt.subplots(3 + n, 1, sharex=True, figsize=(12, 4 + 3 * (n + 2)),
                             gridspec_kw={"height_ratios": [3, 1.3] + [3] * n + [1.2]})
    c = run.curve
    when = _times(c.t)
    ax = axes[0]
    ax.plot(when, c.equity, color="tab:blue", lw=1.2, label="strategy equity (net)")
    ax.plot(when, c.buy_hold, color="0.5", lw=1.0, ls="--", label="buy and hold")
    ax.set_ylabel("equity")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    dd, peak = [], -math.inf
    for v in c.equity:
        peak = max(peak, v)
        dd.append((v / peak - 1.0) * 100.0 if peak > 0 else 0.0)
    axes[1].fill_between(when, dd, 0, color="tab:red", alpha=0.35, step="post")
    axes[1].set_ylabel("drawdown %")
    axes[1].grid(alpha=0.3)
    levels = working_levels(run.updates)
    end = run.end_ns
    for ax, symbol in zip(axes[2:2 + n], symbols):
        path = run.paths.get(symbol)
        if path is not None and path.t:
            pts = [(t, v) for t, v in zip(path.t, path.close) if t >= run.start_ns]
            ax.plot(_times([p[0] for p in pts]), [p[1] for p in pts], color="0.3", lw=0.8,
                    label=f"{symbol}")
        for name, values in sorted(run.series.items()):
            if values:
                ax.plot(_times([v[0] for v in values]), [v[1] for v in values], lw=0.9,
                        label=name)
        for kind, colour in (("stop", "tab:red"), ("target", "tab:green")):
            segs = [lv for lv in levels if lv[0] == symbol and lv[1] == kind]
            for i, (_s, _k, price, a, b) in enumerate(segs):
                ax.plot(_times([a, b or end]), [price, price], color=colour, lw=1.4,
                        label=f"{kind}s" if i == 0 else None)
        for side, marker, colour in (("BUY", "^", "tab:green"), ("SELL", "v", "tab:red")):
            fills = [f for f in run.executions if f.symbol == symbol and f.side == side]
            if fills:
                ax.scatter(_times([f.exec_time_ns for f in fills]), [f.price for f in fills],
                           marker=marker, color=colour, s=30, zorder=3,
                           label=f"{side.lower()} fills ({len(fills)})")
        ax.set_ylabel("price")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    for symbol in symbols:
        axes[-1].step(when, c.position[symbol], where="post", label=symbol)
    axes[-1].axhline(0, color="0.6", lw=0.6)
    axes[-1].set_ylabel("position")
    axes[-1].legend(loc="upper left", fontsize=8)
    axes[-1].grid(alpha=0.3)
    s = run.stats
    fig.suptitle(f"{run.name} on {', '.join(symbols)}: return {s['total_return_pct']:.2f}% "
                 f"(buy and hold {s['buy_and_hold_return_pct']:.2f}%), Sharpe "
                 f"{s['sharpe']:.2f}, max drawdown {s['max_drawdown_pct']:.2f}%")
    fig.tight_layout()
    return fig


def write_png(run: Run, path: Path) -> bytes:
    import matplotlib.pyplot as plt
    fig = figure(run)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


# -- HTML ---------------------------------------------------------------------------------------
STAT_ROWS = [
    ("total_return_pct", "Total return", "%"), ("annual_return_pct", "Annual return", "%"),
    ("buy_and_hold_return_pct", "Buy and hold return", "%"), ("sharpe", "Sharpe", ""),
    ("sortino", "Sortino", ""), ("max_drawdown_pct", "Max drawdown", "%"),
    ("max_drawdown_duration_days", "Max drawdown duration", " days"),
    ("longest_drawdown_days", "Longest drawdown", " days"),
    ("trades", "Trades", ""), ("win_rate_pct", "Win rate", "%"),
    ("profit_factor", "Profit factor", ""), ("avg_win", "Average win", ""),
    ("avg_loss", "Average loss", ""), ("best_trade", "Best trade", ""),
    ("worst_trade", "Worst trade", ""), ("exposure_pct", "Exposure", "%"),
    ("commissions", "Commissions paid", ""), ("net_pnl", "Net PnL", ""),
    ("initial_cash", "Initial cash", ""), ("final_equity", "Final equity", ""),
]

CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f0f0f0}td.l,th.l{text-align:left}img{max-width:100%}
.note{color:#555;font-size:12px;max-width:1000px}"""


def _fmt(value, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "inf" if value == math.inf else "n/a"
    if isinstance(value, int):
        return f"{value:,d}{unit}"
    return f"{value:,.2f}{unit}"


def html_section(run: Run, png: bytes, interactive: str) -> str:
    s = run.stats
    rows = "".join(f'<tr><td class="l">{html.escape(label)}</td><td>{_fmt(s.get(key), unit)}'
                   f"</td></tr>" for key, label, unit in STAT_ROWS)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in analysis.TRADE_COLUMNS)
    body_rows = analysis.trades_csv(run.trades, run.multipliers).splitlines()[1:]
    trades = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.split(","))
                     + "</tr>" for r in body_rows[:500])
    more = f"<p>{len(body_rows) - 500} more in trades.csv</p>" if len(body_rows) > 500 else ""
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                   for k, v in analysis.DEFINITIONS.items())
    img = base64.b64encode(png).decode()
    return f"""<section id="strategy-{html.escape(run.name)}">
<h2>{html.escape(run.name)} on {html.escape(', '.join(run.symbols))}</h2>
<p>{html.escape(run.summary['start'])} .. {html.escape(run.summary['end'])}</p>
<table class="stats" id="stats-{html.escape(run.name)}"><tr><th class="l">statistic</th>
<th>value</th></tr>{rows}</table>
{interactive}
<h3>Charts</h3>
<img alt="equity, drawdown, prices with fills, stops and targets, positions"
 src="data:image/png;base64,{img}">
<h3>Trades (round trips)</h3>
<table class="trades"><tr>{head}</tr>{trades}</table>{more}
<h3>Definitions</h3><ul class="note">{defs}</ul>
</section>"""


def html_page(title: str, sections: list[str], head_extra: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>{head_extra}</head>"
            f"<body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


def interactive(run: Run) -> tuple[str, str]:
    """(resources for <head>, the chart's HTML) with bokeh, or ("", "") without it: the
    ``report`` extra. Bokeh's JavaScript is inlined, so the page needs no network."""
    try:
        from bokeh.embed import components
        from bokeh.layouts import column
        from bokeh.plotting import figure as bfigure
    except ImportError:
        return "", ""
    c = run.curve
    when = _times(c.t)
    eq = bfigure(height=280, sizing_mode="stretch_width", x_axis_type="datetime",
                 title="equity (net of commissions) and buy and hold", tools="pan,wheel_zoom,"
                 "box_zoom,reset,save")
    eq.line(when, c.equity, color="#1f77b4", legend_label="strategy")
    eq.line(when, c.buy_hold, color="#888888", line_dash="dashed", legend_label="buy and hold")
    eq.legend.location = "top_left"
    plots = [eq]
    for symbol in run.symbols:
        path = run.paths.get(symbol)
        p = bfigure(height=300, sizing_mode="stretch_width", x_axis_type="datetime",
                    x_range=eq.x_range, title=f"{symbol}: price, fills, stops, targets",
                    tools="pan,wheel_zoom,box_zoom,reset,save")
        if path is not None and path.t:
            pts = [(t, v) for t, v in zip(path.t, path.close) if t >= run.start_ns]
            p.line(_times([q[0] for q in pts]), [q[1] for q in pts], color="#444444")
        for name, values in sorted(run.series.items()):
            if values:
                p.line(_times([v[0] for v in values]), [v[1] for v in values],
                       legend_label=name, color="#ff7f0e" if "fast" in name else "#9467bd")
        for side, colour, marker in (("BUY", "green", "triangle"),
                                     ("SELL", "red", "inverted_triangle")):
            fills = [f for f in run.executions if f.symbol == symbol and f.side == side]
            if fills:
                p.scatter(_times([f.exec_time_ns for f in fills]), [f.price for f in fills],
                          marker=marker, color=colour, size=9, legend_label=side.lower())
        for _s, kind, price, a, b in working_levels(run.updates):
            if _s == symbol:
                p.line(_times([a, b or run.end_ns]), [price, price],
                       color="red" if kind == "stop" else "green", line_width=2)
        plots.append(p)
    script, div = components(column(*plots, sizing_mode="stretch_width"))
    return script, f"<h3>Interactive chart</h3>{div}"


def bokeh_resources() -> str:
    """Bokeh's JavaScript and CSS, inlined (no network); "" without bokeh."""
    try:
        from bokeh.resources import INLINE
    except ImportError:
        return ""
    return INLINE.render()


def write(run: Run, out: Path, extra: dict[str, Any], plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "trades.csv").write_text(analysis.trades_csv(run.trades, run.multipliers))
    (out / "report.json").write_text(report_json(run, extra))
    if plot:
        png = write_png(run, out / "report.png")
        head, chart = interactive(run)
        (out / "report.html").write_text(
            html_page(f"backtest {run.name}", [html_section(run, png, chart)],
                      bokeh_resources() + head if head else ""))
