"""The numbers a trader reads after a backtest, as text and as JSON."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from services.backtest.account import snapshot, trading
from services.backtest.engine import BacktestResult, Sample


def summarize(result: BacktestResult) -> dict[str, Any]:
    """Every figure from execution's ``Portfolio`` (positions, realized PnL net of
    commissions, commissions, fills) and the run's samples."""
    account = snapshot(result.portfolio, result.strategy, result.symbols, result.mids)
    stats = trading(result.portfolio, result.strategy)
    actions = Counter(i.action for i in result.intents)
    return {
        "strategy": result.strategy,
        "symbols": list(result.symbols),
        "start": _iso(result.start_ns),
        "end": _iso(result.end_ns),
        "duration_s": _r((result.end_ns - result.start_ns) / 1e9),
        "market_messages": result.messages,
        "latency_ms": _r(result.settings.latency_ns / 1e6),
        "report_latency_ms": _r(result.settings.return_latency_ns / 1e6),
        "queue_model": result.settings.queue_model,
        "latency": result.settings.latency_model.describe(),
        "pnl": {
            "realized_gross": _r(account.realized_gross),
            "commissions": _r(account.commissions),
            "realized": _r(account.realized),  # net of commissions, as the Portfolio's
            "unrealized": _r(account.unrealized),
            "total": _r(account.equity),
        },
        "trading": {
            "fills": stats.fills,
            "filled_orders": stats.filled_orders,
            "round_trips": stats.round_trips,
            "shares": _r(stats.shares),
            "notional": _r(stats.notional),
        },
        "max_drawdown": _r(max_drawdown(result.samples)),
        "exposure": {
            "max_gross": _r(max((s.gross for s in result.samples), default=0.0)),
            "time_weighted_gross": _r(time_weighted(result.samples, result.end_ns)),
        },
        "final_positions": {s: _r(q) for s, q in account.positions.items()},
        "intents": {"total": len(result.intents),
                    **{a: actions[a] for a in ("new", "modify", "cancel")}},
        "rejected": {"total": sum(result.rejections.values()),
                     "by_reason": dict(sorted(result.rejections.items()))},
        "callback_errors": result.callback_errors,
        "alerts": dict(sorted(result.alerts.items())),
        "in_flight_at_end": result.unsent_at_end,
    }


def max_drawdown(samples: list[Sample]) -> float:
    """Largest fall of equity from a previous peak (the run starts flat at 0)."""
    peak, worst = 0.0, 0.0
    for s in samples:
        peak = max(peak, s.equity)
        worst = max(worst, peak - s.equity)
    return worst


def time_weighted(samples: list[Sample], end_ns: int) -> float:
    """Mean gross exposure over the run, each sample holding until the next one."""
    if not samples:
        return 0.0
    span = end_ns - samples[0].t_ns
    if span <= 0:
        return samples[-1].gross
    total = 0.0
    for here, nxt in zip(samples, samples[1:] + [None]):
        until = nxt.t_ns if nxt is not None else end_ns
        total += here.gross * (until - here.t_ns)
    return total / span


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True) + "\n"


def _latency_extra(summary: dict[str, Any]) -> str:
    """The data delay and the jitter, when the run had them (latency.LatencyModel)."""
    model = summary.get("latency") or {}
    parts = []
    if model.get("data_ms"):
        parts.append(f"data {model['data_ms']:g} ms")
    if model.get("jitter_ms"):
        parts.append(f"jitter 0..{model['jitter_ms']:g} ms (seed {model.get('seed', 0)})")
    return f", {', '.join(parts)}" if parts else ""


def to_text(summary: dict[str, Any]) -> str:
    p, t, e = summary["pnl"], summary["trading"], summary["exposure"]
    lines = [
        f"backtest of {summary['strategy']} on {', '.join(summary['symbols'])}",
        f"  period         {summary['start']} .. {summary['end']} ({summary['duration_s']:g} s, "
        f"{summary['market_messages']} market messages)",
        f"  execution      latency {summary['latency_ms']:g} ms to the exchange, "
        f"{summary['report_latency_ms']:g} ms back{_latency_extra(summary)}; "
        f"queue model {summary['queue_model']}",
        "",
        "PnL",
        f"  realized gross {p['realized_gross']:>14,.2f}",
        f"  commissions    {-p['commissions']:>14,.2f}",
        f"  realized (net) {p['realized']:>14,.2f}",
        f"  unrealized     {p['unrealized']:>14,.2f}",
        f"  total (net)    {p['total']:>14,.2f}",
        f"  max drawdown   {-summary['max_drawdown']:>14,.2f}",
        "",
        "trading",
        f"  fills          {t['fills']:>14d}",
        f"  filled orders  {t['filled_orders']:>14d}",
        f"  round trips    {t['round_trips']:>14d}",
        f"  shares         {t['shares']:>14,.0f}",
        f"  notional       {t['notional']:>14,.2f}",
        "",
        "exposure",
        f"  max gross      {e['max_gross']:>14,.2f}",
        f"  time-weighted  {e['time_weighted_gross']:>14,.2f}",
        "  final position " + ", ".join(f"{s} {q:g}" for s, q in
                                         summary["final_positions"].items()),
        "",
        "intents",
        f"  sent           {summary['intents']['total']:>14d}  (new {summary['intents']['new']}, "
        f"modify {summary['intents']['modify']}, cancel {summary['intents']['cancel']})",
        f"  rejected       {summary['rejected']['total']:>14d}",
    ]
    for reason, count in summary["rejected"]["by_reason"].items():
        lines.append(f"    {reason:<28}{count:>6d}")
    for code, count in summary["alerts"].items():
        lines.append(f"  alert {code:<22}{count:>6d}")
    if summary["callback_errors"]:
        lines.append(f"  strategy callback errors: {summary['callback_errors']} (see the log)")
    if summary["in_flight_at_end"]:
        lines.append(f"  still in flight at the end of the data: "
                     f"{summary['in_flight_at_end']}")
    return "\n".join(lines) + "\n"


def _r(value: float) -> float:
    """Rounded for reading; the same inputs still give the same bytes."""
    return round(float(value), 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")
