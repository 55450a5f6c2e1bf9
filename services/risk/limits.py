"""Risk limits: global defaults, overridden per strategy. Every limit can be switched off with 0."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from services.runtime.config import ConfigError


@dataclass(frozen=True)
class Limits:
    max_order_quantity: float = 10_000
    max_order_notional: float = 1_000_000
    max_position: float = 5_000  # per instrument, absolute
    max_gross_exposure: float = 5_000_000  # sum of |position| x mark x multiplier
    max_open_orders: int = 50
    order_rate: float = 20.0  # intents per second, token bucket (modifies count)
    order_burst: float = 40.0
    price_band: float = 0.05  # a limit more than 5 % from the mid is a fat finger
    daily_loss_limit: float = 50_000  # realized + unrealized; breach -> reducing only
    flatten_on_loss: bool = False
    stale_after_s: float = 10.0  # no tick for this long: no new orders
    equity: float = 1_000_000  # what risk-per-trade sizing is a fraction of


def build_limits(values: dict, where: str, base: Limits) -> Limits:
    known = {f.name for f in fields(Limits)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown risk limit(s) in {where}: {', '.join(sorted(unknown))}")
    try:
        return replace(base, **values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


class LimitBook:
    """The limits in force for each strategy."""

    def __init__(self, global_limits: Limits | None = None,
                 per_strategy: dict[str, Limits] | None = None) -> None:
        self.global_limits = global_limits or Limits()
        self.per_strategy = dict(per_strategy or {})

    def for_strategy(self, name: str) -> Limits:
        return self.per_strategy.get(name, self.global_limits)

    @classmethod
    def from_config(cls, raw: dict, strategies_dir: Path | None = None) -> "LimitBook":
        risk = raw.get("risk", {})
        per = {k: v for k, v in risk.items() if isinstance(v, dict)}
        flat = {k: v for k, v in risk.items() if not isinstance(v, dict)}
        book = cls(build_limits(flat, "[risk]", Limits()))
        for name, values in per.get("strategies", {}).items():
            book.per_strategy[name] = build_limits(values, f"[risk.strategies.{name}]",
                                             book.global_limits)
        if strategies_dir is not None:
            book.load_strategy_budgets(strategies_dir)
        return book

    def load_strategy_budgets(self, strategies_dir: Path) -> None:
        """A strategy's TOML carries its risk budget under [risk]; risk reads it from the file,
        not from the strategy process."""
        for path in sorted(Path(strategies_dir).glob("*.toml")):
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"strategy config {path}: {exc}") from None
            name = data.get("name")
            if name and isinstance(data.get("risk"), dict):
                self.per_strategy[name] = build_limits(data["risk"], f"[risk] of {path.name}",
                                                 self.global_limits)
