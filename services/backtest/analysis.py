"""What a trader compares after a backtest: round trips (trades.csv), the equity curve marked
to market, buy-and-hold, and the usual statistics, each with its formula stated here and in
report.json (``definitions``).

Inputs are the run's own: execution's ``Portfolio`` (fills, commissions by execId), the
instruments' multipliers and the price path the data source saw (``PricePath``: per data
row its time, low, high and close; for bars, the bar's end). Nothing is re-simulated.

- **Equity**: ``initial_cash`` + realized PnL net of commissions + open positions marked at
  the last price seen, evaluated at every price point and every fill from the start.
- **Round trip**: from flat back to flat (a fill through zero closes one and opens the
  next, its quantity and commission split pro rata). Entry/exit price: the quantity-weighted
  average of the fills that opened/closed it; PnL net = gross - every commission of its
  fills; MAE / MFE: the worst / best unrealized PnL of the whole position at the lows and
  highs of the price points from entry to exit (and the fill prices themselves).
- **Returns**: total = final equity / initial cash - 1; annual = (1 + total) ^ (365.25 days /
  the run's calendar length) - 1; daily returns from the equity at the end of each day that
  has data (New York days), the first against the initial cash.
- **Sharpe** = mean(daily) / stdev(daily, n-1) x sqrt(252), risk-free rate 0; **Sortino** =
  mean(daily) / sqrt(mean(min(daily, 0)^2)) x sqrt(252).
- **Max drawdown**: the largest fall of equity from a previous peak, % of that peak; its
  duration: from that peak to the recovery of the peak (or the end of the run); the longest
  time under water is given too.
- **Exposure**: the share of the run's time with a position open.
- **Buy-and-hold**: the initial cash in each symbol in equal parts at its first price at the
  start (futures: the same notional), marked at the same price points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from services.backtest.catalog_source import PricePath
from services.model.portfolio import Portfolio

ZONE = ZoneInfo("America/New_York")
DAY_NS = 86_400 * 1_000_000_000
TRADING_DAYS = 252
EPS = 1e-9

DEFINITIONS = {
    "total_return_pct": "final equity / initial cash - 1, in %",
    "annual_return_pct": "(1 + total return) ^ (365.25 days / run length) - 1, in %",
    "sharpe": "mean(daily returns) / stdev(daily returns, n-1) * sqrt(252); risk-free 0; "
              "daily: equity at the end of each New York day with data",
    "sortino": "mean(daily returns) / sqrt(mean(min(daily return, 0)^2)) * sqrt(252)",
    "max_drawdown_pct": "largest fall of equity from a previous peak, % of that peak",
    "max_drawdown_duration_days": "from the peak before the max drawdown to its recovery "
                                  "(or the end)",
    "longest_drawdown_days": "longest time equity stayed below a previous peak",
    "exposure_pct": "share of the run's time with a position open",
    "win_rate_pct": "closed round trips with net PnL > 0 / closed round trips",
    "profit_factor": "sum of net PnL of winners / |sum of net PnL of losers|",
    "buy_and_hold_return_pct": "initial cash in the symbols in equal parts at the first "
                               "price of the run, held to the end",
    "mae_mfe": "worst / best unrealized PnL of a round trip at the lows and highs seen "
               "between its entry and exit",
}


@dataclass
class Trade:
    symbol: str
    direction: str  # long / short
    entry_ns: int
    exit_ns: int  # 0 while open
    quantity: float
    entry_price: float
    exit_price: float  # the last price for an open trade
    pnl_gross: float
    commissions: float
    mae: float
    mfe: float
    status: str  # closed / open
    strategy: str = ""  # whose round trip (a run's strategies share one account)

    @property
    def pnl_net(self) -> float:
        return self.pnl_gross - self.commissions


@dataclass
class Curve:
    t: list[int]
    equity: list[float]  # initial cash + PnL
    buy_hold: list[float]
    position: dict[str, list[float]]


def _sign(side) -> float:
    return 1.0 if str(getattr(side, "value", side)).upper() in ("BUY", "BOT") else -1.0


def fills_of(portfolio: Portfolio, owner: str, symbols: list[str]):
    """(time, symbol, signed quantity, price, commission) of owner's fills, in time order
    (per symbol execution order kept; equal times across symbols in symbol order)."""
    commissions = portfolio.commissions()
    out = []
    for i, symbol in enumerate(symbols):
        book = portfolio.books.get((owner, symbol))
        if book is None:
            continue
        for n, f in enumerate(book.fills):
            out.append((f.time_ns, i, n, symbol, _sign(f.side) * f.quantity, f.price,
                        commissions.get(f.exec_id, 0.0)))
    out.sort(key=lambda r: r[:3])
    return [(r[0], r[3], r[4], r[5], r[6]) for r in out]


def round_trips(fills, multipliers: dict[str, float], paths: dict[str, PricePath],
                last_prices: dict[str, float]) -> list[Trade]:
    trades: list[Trade] = []
    state: dict[str, dict] = {}
    for t, symbol, qty, price, commission in fills:
        mult = multipliers.get(symbol, 1.0)
        while abs(qty) > EPS:
            s = state.get(symbol)
            if s is None:  # opens a trade
                s = state[symbol] = {"entry_ns": t, "pos": 0.0, "in_q": 0.0, "in_v": 0.0,
                                     "out_q": 0.0, "out_v": 0.0, "comm": 0.0}
            pos = s["pos"]
            if pos == 0 or (pos > 0) == (qty > 0):  # opening or adding
                part = qty
            else:  # reducing: at most to flat
                part = qty if abs(qty) <= abs(pos) + EPS else -pos
            share = abs(part) / abs(qty)
            s["comm"] += commission * share
            commission -= commission * share
            if pos == 0 or (pos > 0) == (part > 0):
                s["in_q"] += abs(part)
                s["in_v"] += abs(part) * price
            else:
                s["out_q"] += abs(part)
                s["out_v"] += abs(part) * price
            s["pos"] = pos + part
            if abs(s["pos"]) < EPS:
                trades.append(_trade(symbol, s, t, mult, paths.get(symbol), "closed",
                                     s["out_v"] / s["out_q"], 1.0 if pos > 0 else -1.0))
                del state[symbol]
            qty -= part
    for symbol, s in state.items():
        mult = multipliers.get(symbol, 1.0)
        last = last_prices.get(symbol, s["in_v"] / s["in_q"])
        direction = 1.0 if s["pos"] > 0 else -1.0
        # the open part valued at the last price: realized part + unrealized
        remaining = abs(s["pos"])
        exit_q = s["out_q"] + remaining
        exit_v = s["out_v"] + remaining * last
        trades.append(_trade(symbol, {**s, "out_q": exit_q, "out_v": exit_v}, 0, mult,
                             paths.get(symbol), "open", exit_v / exit_q, direction))
    return trades


def _trade(symbol, s, exit_ns, mult, path, status, exit_price, direction) -> Trade:
    qty = s["in_q"]
    entry = s["in_v"] / qty
    gross = direction * (s["out_v"] - s["in_v"]) * mult
    lo = hi = entry
    lo = min(lo, exit_price)
    hi = max(hi, exit_price)
    if path is not None and path.t:
        import bisect
        a = bisect.bisect_left(path.t, s["entry_ns"])
        b = bisect.bisect_right(path.t, exit_ns) if exit_ns else len(path.t)
        if b > a:
            lo = min(lo, min(path.low[a:b]))
            hi = max(hi, max(path.high[a:b]))
    worst = (lo - entry) if direction > 0 else (entry - hi)
    best = (hi - entry) if direction > 0 else (entry - lo)
    return Trade(symbol, "long" if direction > 0 else "short", s["entry_ns"], exit_ns, qty,
                 entry, exit_price, gross, s["comm"], min(0.0, worst * qty * mult),
                 max(0.0, best * qty * mult), status)


def equity_curve(fills, multipliers: dict[str, float], paths: dict[str, PricePath],
                 symbols: list[str], start_ns: int, initial_cash: float) -> Curve:
    """Equity and buy-and-hold at every price point (from ``start_ns``) and every fill."""
    events = []  # (t, order, ...) fills before price points at the same time
    for n, (t, symbol, qty, price, commission) in enumerate(fills):
        events.append((t, 0, n, symbol, qty, price, commission))
    for i, symbol in enumerate(symbols):
        path = paths.get(symbol)
        if path is None:
            continue
        for n, (t, close) in enumerate(zip(path.t, path.close)):
            if t >= start_ns:
                events.append((t, 1, i * 10**9 + n, symbol, 0.0, close, 0.0))
    events.sort(key=lambda e: e[:3])
    cash = 0.0
    pos = {s: 0.0 for s in symbols}
    last: dict[str, float] = {}
    first: dict[str, float] = {}
    curve = Curve([], [], [], {s: [] for s in symbols})
    share = initial_cash / max(1, len(symbols))
    for t, kind, _n, symbol, qty, price, commission in events:
        mult = multipliers.get(symbol, 1.0)
        if kind == 0:
            cash -= qty * price * mult + commission
            pos[symbol] = pos.get(symbol, 0.0) + qty
        last[symbol] = price
        first.setdefault(symbol, price)
        value = cash + sum(q * last.get(s, 0.0) * multipliers.get(s, 1.0)
                           for s, q in pos.items() if q)
        hold = sum(share * (last[s] / first[s]) if s in first else share for s in symbols)
        if curve.t and curve.t[-1] == t:  # one point per time: the last state at it
            curve.equity[-1] = initial_cash + value
            curve.buy_hold[-1] = hold
            for s in symbols:
                curve.position[s][-1] = pos.get(s, 0.0)
            continue
        curve.t.append(t)
        curve.equity.append(initial_cash + value)
        curve.buy_hold.append(hold)
        for s in symbols:
            curve.position[s].append(pos.get(s, 0.0))
    return curve


def _day(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz=timezone.utc).astimezone(ZONE).strftime(
        "%Y-%m-%d")


def daily_returns(t: list[int], values: list[float], initial: float) -> list[float]:
    closes: dict[str, float] = {}
    for when, v in zip(t, values):
        closes[_day(when)] = v  # the last value of each day
    out, prev = [], initial
    for v in closes.values():
        out.append(v / prev - 1.0 if prev else 0.0)
        prev = v
    return out


def drawdowns(t: list[int], values: list[float]) -> tuple[float, float, float]:
    """(max drawdown % of its peak, its duration in days, longest time under water, days)."""
    if not values:
        return 0.0, 0.0, 0.0
    peak, peak_t = values[0], t[0]
    worst, worst_peak_t = 0.0, None
    for when, v in zip(t, values):
        if v >= peak:
            peak, peak_t = v, when
        elif peak > 0 and (peak - v) / peak > worst:
            worst, worst_peak_t = (peak - v) / peak, peak_t
    under, longest = _under_water(t, values)
    duration = under.get(worst_peak_t, 0) if worst_peak_t is not None else 0
    return worst * 100.0, duration / DAY_NS, longest / DAY_NS


def _under_water(t: list[int], values: list[float]) -> tuple[dict[int, int], int]:
    """peak time -> how long equity stayed below it (ns); and the longest of those."""
    spans: dict[int, int] = {}
    peak, peak_t, below = values[0], t[0], False
    longest = 0
    for when, v in zip(t, values):
        if v >= peak:
            if below:
                spans[peak_t] = when - peak_t
                longest = max(longest, when - peak_t)
                below = False
            peak, peak_t = v, when
        else:
            below = True
    if below:
        spans[peak_t] = t[-1] - peak_t
        longest = max(longest, t[-1] - peak_t)
    return spans, longest


def statistics(trades: list[Trade], curve: Curve, initial_cash: float, start_ns: int,
               end_ns: int) -> dict:
    values = curve.equity or [initial_cash]
    final = values[-1]
    span_ns = max(1, end_ns - start_ns)
    total = final / initial_cash - 1.0
    years = span_ns / (365.25 * DAY_NS)
    annual = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1 else -1.0
    rets = daily_returns(curve.t, values, initial_cash)
    sharpe = sortino = 0.0
    if len(rets) > 1:
        mean = sum(rets) / len(rets)
        var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
        sharpe = mean / math.sqrt(var) * math.sqrt(TRADING_DAYS) if var > 0 else 0.0
        down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / len(rets))
        sortino = mean / down * math.sqrt(TRADING_DAYS) if down > 0 else 0.0
    mdd, mdd_days, longest = drawdowns(curve.t, values) if curve.t else (0.0, 0.0, 0.0)
    closed = [tr for tr in trades if tr.status == "closed"]
    wins = [tr.pnl_net for tr in closed if tr.pnl_net > 0]
    losses = [tr.pnl_net for tr in closed if tr.pnl_net <= 0]
    exposure = _exposure(curve, start_ns, end_ns)
    hold = curve.buy_hold[-1] / initial_cash - 1.0 if curve.buy_hold else 0.0
    hold_dd = drawdowns(curve.t, curve.buy_hold)[0] if curve.t else 0.0
    return {
        "initial_cash": initial_cash,
        "final_equity": final,
        "total_return_pct": total * 100.0,
        "annual_return_pct": annual * 100.0,
        "sharpe": sharpe,
        "sortino": sortino,
        "daily_returns": len(rets),
        "max_drawdown_pct": mdd,
        "max_drawdown_duration_days": mdd_days,
        "longest_drawdown_days": longest,
        "trades": len(trades),
        "closed_trades": len(closed),
        "win_rate_pct": 100.0 * len(wins) / len(closed) if closed else 0.0,
        "profit_factor": (sum(wins) / -sum(losses)) if losses and sum(losses) < 0
        else (math.inf if wins else 0.0),
        "avg_win": sum(wins) / len(wins) if wins else 0.0,
        "avg_loss": sum(losses) / len(losses) if losses else 0.0,
        "best_trade": max((tr.pnl_net for tr in closed), default=0.0),
        "worst_trade": min((tr.pnl_net for tr in closed), default=0.0),
        "exposure_pct": exposure * 100.0,
        "commissions": sum(tr.commissions for tr in trades),
        "net_pnl": final - initial_cash,
        "buy_and_hold_return_pct": hold * 100.0,
        "buy_and_hold_max_drawdown_pct": hold_dd,
    }


def _exposure(curve: Curve, start_ns: int, end_ns: int) -> float:
    if not curve.t or end_ns <= start_ns:
        return 0.0
    held = 0
    symbols = list(curve.position)
    for i, when in enumerate(curve.t):
        until = curve.t[i + 1] if i + 1 < len(curve.t) else end_ns
        if any(abs(curve.position[s][i]) > EPS for s in symbols):
            held += max(0, min(until, end_ns) - max(when, start_ns))
    return held / (end_ns - start_ns)


TRADE_COLUMNS = ["strategy", "symbol", "direction", "status", "entry_time", "exit_time", "quantity",
                 "entry_price", "exit_price", "pnl_gross", "commissions", "pnl_net", "mae",
                 "mfe", "return_pct"]


def iso(ns: int) -> str:
    if not ns:
        return ""
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def trades_csv(trades: list[Trade], multipliers: dict[str, float]) -> str:
    lines = [",".join(TRADE_COLUMNS)]
    for tr in trades:
        notional = tr.entry_price * tr.quantity * multipliers.get(tr.symbol, 1.0)
        ret = tr.pnl_net / notional * 100.0 if notional else 0.0
        lines.append(",".join([
            tr.strategy, tr.symbol, tr.direction, tr.status, iso(tr.entry_ns), iso(tr.exit_ns),
            _f(tr.quantity), _f(tr.entry_price), _f(tr.exit_price), _f(tr.pnl_gross, 2),
            _f(tr.commissions, 4), _f(tr.pnl_net, 2), _f(tr.mae, 2), _f(tr.mfe, 2),
            _f(ret, 4)]))
    return "\n".join(lines) + "\n"


def _f(value: float, digits: int = 8) -> str:
    text = f"{round(value, digits) + 0.0:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
