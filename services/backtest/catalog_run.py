"""``ibfleet backtest CONFIG... --data DATASET...``: strategies over catalog datasets.

The strategies run together in one ``BacktestEngine`` (the live Strategy class, one
RiskEngine with each strategy's budget over the account's limits, one ExecutionEngine and
Portfolio, one simulated venue) over the datasets' messages (``CatalogSource``), with the
datasets' instruments and IB's commissions: one IB account, several strategies, as live.
Reports (``services.backtest.tearsheet``): each strategy's own (its books in the shared
Portfolio: its trades, its equity, its statistics) and, with several, the account's (every
strategy's fills together: combined equity and commissions, every round trip with its
strategy).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.backtest import analysis, tearsheet
from services.backtest.catalog_source import CatalogSource
from services.backtest.engine import ACCOUNT, BacktestEngine, Settings
from services.backtest.report import summarize, to_text
from services.data.catalog import Catalog
from services.strategy.config import StrategyConfig

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"


def _run_of(engine: BacktestEngine, result, name: str, symbols: list[str],
            owners: list[str], source: CatalogSource, settings: Settings,
            parts: list | None = None) -> tearsheet.Run:
    """The report of ``owners``' books on ``symbols`` (one strategy, or the account: all)."""
    multipliers = {s: engine.instruments.get(s).multiplier for s in symbols}
    paths = {s: source.paths[s] for s in symbols}
    last = {s: p.close[-1] for s, p in paths.items() if p.close}
    # open positions at the last price the data gave (a bar dataset's book is empty between
    # a bar's close and the next open)
    result.mids = {**result.mids, **last}
    trades, fills = [], []
    for owner in owners:
        mine = analysis.fills_of(result.portfolio, owner, symbols)
        fills += mine
        trades += [replace(t, strategy=owner)
                   for t in analysis.round_trips(mine, multipliers, paths, last)]
    # the account's: every strategy's fills in time order, round trips by entry (stable)
    fills.sort(key=lambda f: f[0])
    trades.sort(key=lambda t: t.entry_ns)
    curve = analysis.equity_curve(fills, multipliers, paths, symbols, result.start_ns,
                                  settings.initial_cash)
    stats = analysis.statistics(trades, curve, settings.initial_cash, result.start_ns,
                                result.end_ns)
    summary = summarize(result) if parts is None else account_summary(engine, result, parts)
    series = engine._slot_of[owners[0]].series if len(owners) == 1 else {}
    updates = [u for u in engine.updates if u.strategy in owners]
    return tearsheet.Run(name, symbols, summary, stats, trades, curve, paths,
                         result.executions, updates, series, result.start_ns, result.end_ns,
                         multipliers)


def account_summary(engine: BacktestEngine, result, results: list) -> dict[str, Any]:
    """The account's summary: the strategies' summaries (``results``: theirs, marked as
    their reports are) added up (PnL, commissions, trading, intents, refusals, positions by
    symbol), drawdown and exposure from the account's own samples (every strategy's equity
    together at each moment)."""
    from services.backtest.report import max_drawdown, time_weighted
    parts = [summarize(r) for r in results]
    doc = dict(parts[0])
    doc["strategy"] = result.strategy
    doc["strategies"] = [c.name for c in engine.cfgs]
    doc["symbols"] = list(result.symbols)

    def add(key: str) -> dict:
        keys = dict.fromkeys(k for p in parts for k in p[key])
        return {k: _round(sum(p[key].get(k, 0) for p in parts)) for k in keys}
    doc["pnl"] = add("pnl")
    doc["trading"] = add("trading")
    doc["final_positions"] = add("final_positions")
    doc["intents"] = add("intents")
    doc["rejected"] = {"total": sum(p["rejected"]["total"] for p in parts),
                       "by_reason": dict(sorted(result.rejections.items()))}
    doc["callback_errors"] = result.callback_errors
    doc["max_drawdown"] = _round(max_drawdown(result.samples))
    doc["exposure"] = {
        "max_gross": _round(max((s.gross for s in result.samples), default=0.0)),
        "time_weighted_gross": _round(time_weighted(result.samples, result.end_ns))}
    return doc


def _round(value):
    return round(value, 6) + 0 if isinstance(value, float) else value


def run_all(cfgs: list[StrategyConfig], catalog: Catalog, datasets: list[str],
            start_ns: int | None, end_ns: int | None, warmup_s: float | None,
            settings: Settings) -> tuple[CatalogSource, list[tuple[Any, tearsheet.Run]]]:
    """Every strategy in one engine, on one account; returns the source and ``(result,
    Run)`` per strategy, then, with several, the account's last (``Run.name`` "account")."""
    if str(STRATEGIES) not in sys.path:
        sys.path.append(str(STRATEGIES))
    probe = CatalogSource(catalog, datasets, start_ns, end_ns)
    warm_from = None if warmup_s is None else probe.start_ns - int(warmup_s * 1e9)
    source = CatalogSource(catalog, datasets, start_ns, end_ns, warm_from)
    for cfg in cfgs:
        missing = [s for s in cfg.symbols if s not in source.symbols]
        if missing:
            raise ValueError(f"strategy {cfg.name} trades {', '.join(missing)}: no dataset "
                             f"given for it (--data has {', '.join(source.symbols)})")
    first = source.first_ns()
    warmup = max(0, source.start_ns - first) if first is not None else 0
    engine = BacktestEngine(cfgs, replace(settings, warmup_ns=warmup, coalesce_idle=True),
                            instruments=source.instruments())
    result = engine.run(source.messages())
    runs = []
    for cfg in cfgs:
        mine = engine.result_for(cfg.name)
        runs.append((mine, _run_of(engine, mine, cfg.name, list(cfg.symbols), [cfg.name],
                                   source, settings)))
    if len(cfgs) > 1:
        runs.append((result, _run_of(engine, result, ACCOUNT, list(engine.symbols),
                                     [c.name for c in cfgs], source, settings,
                                     [r for r, _ in runs])))
    return source, runs


def write(source: CatalogSource, runs, out: Path, settings: Settings, plot: bool = True
          ) -> str:
    """One strategy: its report in ``out``. Several: the account's report (combined equity,
    commissions, every round trip with its strategy) in ``out``, each strategy's in
    ``out/NAME``, and ``out/report.html`` with the account and every strategy. Returns the
    text reports (the account's first)."""
    from services.backtest.frames import write_frames
    extra = {"data": {"datasets": source.names, "sec_types": source.sec_types(),
                      "bar_seconds": source.bar_sizes()},
             "commission": describe_commission(settings.commission)}
    if len(runs) > 1:
        runs = [runs[-1]] + runs[:-1]  # the account first
    texts, sections, heads = [], [], []
    for result, run in runs:
        where = out if len(runs) == 1 or run.name == ACCOUNT else out / run.name
        where.mkdir(parents=True, exist_ok=True)
        text = to_text(run.summary) + stats_text(run.stats)
        (where / "report.txt").write_text(text)
        write_frames(where / "intents.bin", result.intents)
        write_frames(where / "fills.bin", result.fills)
        tearsheet.write(run, where, extra, plot=plot and len(runs) == 1)
        if plot and len(runs) > 1:
            png = tearsheet.write_png(run, where / "report.png")
            head, chart = tearsheet.interactive(run)
            heads.append(head)
            sections.append(tearsheet.html_section(run, png, chart))
        texts.append(text)
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
