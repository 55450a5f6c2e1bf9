"""``ibfleet backtest CONFIG... --data DATASET...``: strategies over catalog datasets.

Each strategy runs in its own ``BacktestEngine`` (the live Strategy class, RiskEngine and
ExecutionEngine, the simulated venue) over the same messages (``CatalogSource``), with the
datasets' instruments and IB's commissions; each gets the full report
(``services.backtest.tearsheet``). Strategies of one run do not see each other's orders:
each trades against the recorded market alone, with its own account.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.backtest import analysis, tearsheet
from services.backtest.catalog_source import CatalogSource
from services.backtest.engine import BacktestEngine, Settings
from services.backtest.report import summarize, to_text
from services.data.catalog import Catalog
from services.strategy.config import StrategyConfig

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"


def run_one(cfg: StrategyConfig, source: CatalogSource, settings: Settings
            ) -> tuple[BacktestEngine, Any, tearsheet.Run]:
    if str(STRATEGIES) not in sys.path:
        sys.path.append(str(STRATEGIES))
    missing = [s for s in cfg.symbols if s not in source.symbols]
    if missing:
        raise ValueError(f"strategy {cfg.name} trades {', '.join(missing)}: no dataset given "
                         f"for it (--data has {', '.join(source.symbols)})")
    first = source.first_ns()
    warmup = max(0, source.start_ns - first) if first is not None else 0
    engine = BacktestEngine(cfg, replace(settings, warmup_ns=warmup, coalesce_idle=True),
                            instruments=source.instruments())
    for symbol in source.symbols:  # the path of every symbol, fresh for this run
        source.paths[symbol] = type(source.paths[symbol])()
    result = engine.run(source.messages())
    symbols = list(cfg.symbols)
    multipliers = {s: engine.instruments.get(s).multiplier for s in symbols}
    fills = analysis.fills_of(result.portfolio, cfg.name, symbols)
    paths = {s: source.paths[s] for s in symbols}
    last = {s: p.close[-1] for s, p in paths.items() if p.close}
    # open positions at the last price the data gave (a bar dataset's book is empty between
    # a bar's close and the next open)
    result.mids = {**result.mids, **last}
    trades = analysis.round_trips(fills, multipliers, paths, last)
    curve = analysis.equity_curve(fills, multipliers, paths, symbols, result.start_ns,
                                  settings.initial_cash)
    stats = analysis.statistics(trades, curve, settings.initial_cash, result.start_ns,
                                result.end_ns)
    run = tearsheet.Run(cfg.name, symbols, summarize(result), stats, trades, curve, paths,
                        result.executions, engine.updates, engine.series, result.start_ns,
                        result.end_ns, multipliers)
    return engine, result, run


def run_all(cfgs: list[StrategyConfig], catalog: Catalog, datasets: list[str],
            start_ns: int | None, end_ns: int | None, warmup_s: float | None,
            settings: Settings) -> tuple[CatalogSource, list[tuple[Any, tearsheet.Run]]]:
    probe = CatalogSource(catalog, datasets, start_ns, end_ns)
    warm_from = None if warmup_s is None else probe.start_ns - int(warmup_s * 1e9)
    source = CatalogSource(catalog, datasets, start_ns, end_ns, warm_from)
    runs = []
    for cfg in cfgs:
        _engine, result, run = run_one(cfg, source, settings)
        runs.append((result, run))
    return source, runs


def write(source: CatalogSource, runs, out: Path, settings: Settings, plot: bool = True
          ) -> str:
    """Each strategy's report in ``out`` (one strategy) or ``out/NAME`` (several), and with
    several a ``report.html`` in ``out`` with all of them; returns the text reports."""
    from services.backtest.frames import write_frames
    extra = {"data": {"datasets": source.names, "sec_types": source.sec_types(),
                      "bar_seconds": source.bar_sizes()},
             "commission": describe_commission(settings.commission)}
    texts, sections, heads = [], [], []
    for result, run in runs:
        where = out if len(runs) == 1 else out / run.name
        where.mkdir(parents=True, exist_ok=True)
        text = to_text(run.summary) + stats_text(run.stats)
        (where / "report.txt").write_text(text)
        write_frames(where / "intents.bin", result.intents)
        write_frames(where / "fills.bin", result.fills)
        tearsheet.write(run, where, extra, plot=plot)
        texts.append(text)
        if plot and len(runs) > 1:
            head, chart = tearsheet.interactive(run)
            heads.append(head)
            sections.append(tearsheet.html_section(run, (where / "report.png").read_bytes(),
                                                    chart))
    if plot and len(runs) > 1:
        head = tearsheet.bokeh_resources() + "".join(heads) if any(heads) else ""
        (out / "report.html").write_text(tearsheet.html_page(
            "backtest " + ", ".join(r.name for _, r in runs), sections, head))
    return "\n".join(texts)


def describe_commission(model) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass
    if is_dataclass(model):
        doc = {k: v for k, v in asdict(model).items() if not k.startswith("_")}
        doc["model"] = type(model).__name__
        return doc
    return {"model": type(model).__name__}


def stats_text(s: dict[str, Any]) -> str:
    def f(key, unit=""):
        v = s[key]
        return "inf" if v == float("inf") else f"{v:,.2f}{unit}"
    return "\n".join([
        "",
        "statistics (definitions in report.json)",
        f"  total return   {f('total_return_pct', '%'):>14}  buy and hold "
        f"{f('buy_and_hold_return_pct', '%')}",
        f"  annual return  {f('annual_return_pct', '%'):>14}",
        f"  Sharpe         {f('sharpe'):>14}  (daily, sqrt(252), risk-free 0)",
        f"  Sortino        {f('sortino'):>14}",
        f"  max drawdown   {f('max_drawdown_pct', '%'):>14}  lasting "
        f"{f('max_drawdown_duration_days')} days",
        f"  trades         {s['trades']:>14d}  win rate {f('win_rate_pct', '%')}, profit "
        f"factor {f('profit_factor')}",
        f"  average win    {f('avg_win'):>14}  average loss {f('avg_loss')}",
        f"  exposure       {f('exposure_pct', '%'):>14}",
        f"  commissions    {f('commissions'):>14}",
    ]) + "\n"
