"""Risk limits: global defaults, overridden per strategy. Every limit can be switched off with 0.

Where they are set, each a TOML table of any subset of ``Limits``' fields:

- the fleet config: ``[risk]`` (the global limits) and ``[risk.strategies.NAME]``;
- each strategy's TOML: ``[risk]`` (its budget; risk reads it from the file, not from the
  strategy process: ``LimitBook.load_strategy_budgets``).

A table is decoded strictly (``LimitsTable``, services.runtime.decoding): a misspelt key, a
string where a number or a boolean belongs, a float where an integer belongs or a negative
value is a ``ConfigError`` naming the file and the key, never a TypeError later in a check.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Union

import msgspec
from msgspec import UNSET, UnsetType

from services.runtime.config import ConfigError
from services.runtime.decoding import NonNegativeFloat, NonNegativeInt, decode, read_toml


@dataclass(frozen=True)
class Limits:
    # the two order-size limits count what an order could open: the part that closes the
    # strategy's position is not counted (the reducing-order rule, RiskEngine._opening)
    max_order_quantity: float = 10_000  # shares / contracts per order
    max_order_notional: float = 1_000_000  # quantity x price x multiplier, per order
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
    #: a strategy whose callbacks raised this many times within ``error_window_s`` (its
    #: heartbeat's ``callback_errors``) is halted by risk as ``errored`` until unpaused
    max_errors: int = 20
    error_window_s: float = 60.0


_FILE_TYPES = {"float": NonNegativeFloat, "int": NonNegativeInt, "bool": bool}

#: one TOML table of limits: any subset of Limits' fields, each of its type, none negative
LimitsTable = msgspec.defstruct(
    "LimitsTable", [(f.name, Union[_FILE_TYPES[f.type], UnsetType], UNSET)
                    for f in fields(Limits)],
    forbid_unknown_fields=True, module=__name__)


def build_limits(values: Any, where: str, base: Limits, *, at: str = "risk") -> Limits:
    """``base`` with the limits the table ``values`` sets. ``where`` names the file (it opens
    any error message), ``at`` is the table's key path in it."""
    table = decode(values, LimitsTable, source=where, at=at)
    return replace(base, **{name: value for name in table.__struct_fields__
                            if (value := getattr(table, name)) is not UNSET})


class LimitBook:
    """The limits in force for each strategy; ``refused``: strategy -> why its budget file
    was refused (risk refuses that strategy's new orders until the file is fixed)."""

    def __init__(self, global_limits: Limits | None = None,
                 per_strategy: dict[str, Limits] | None = None) -> None:
        self.global_limits = global_limits or Limits()
        self.per_strategy = dict(per_strategy or {})
        self.refused: dict[str, str] = {}
        #: strategy -> its TOML's ``on_kill`` (services.model.owners.KILL_MODES); a strategy
        #: not listed gets the default (``keep_exits``)
        self.on_kill: dict[str, str] = {}

    def forget(self, name: str) -> None:
        """A strategy removed from the fleet: its budget and kill mode no longer apply."""
        self.per_strategy.pop(name, None)
        self.refused.pop(name, None)
        self.on_kill.pop(name, None)

    def for_strategy(self, name: str) -> Limits:
        return self.per_strategy.get(name, self.global_limits)

    @classmethod
    def from_config(cls, raw: dict, strategies_dir: Path | None = None,
                    source: str = "the fleet config") -> "LimitBook":
        """From the fleet config's ``[risk]`` (ConfigError if it is bad), then the strategy
        files in ``strategies_dir`` (a bad one is recorded in ``refused``, not raised)."""
        risk = dict(decode(raw.get("risk", {}), dict[str, Any], source=source, at="risk"))
        per = decode(risk.pop("strategies", {}), dict[str, Any], source=source,
                     at="risk.strategies")
        book = cls(build_limits(risk, source, Limits()))
        for name, values in per.items():
            book.per_strategy[name] = build_limits(values, source, book.global_limits,
                                                   at=f"risk.strategies.{name}")
        if strategies_dir is not None:
            book.load_strategy_budgets(strategies_dir)
        return book

    def load_strategy_budgets(self, strategies_dir: Path) -> list[str]:
        """Each strategy TOML's ``[risk]`` budget, one file at a time: a bad file is refused
        (its strategy listed in ``refused``) and the others still apply. Returns the refusals'
        messages, one line each."""
        from services.strategy import config as strategy_config  # it imports this module

        refusals = []
        for path in sorted(Path(strategies_dir).glob("*.toml")):
            try:
                cfg = strategy_config.load(path)
                limits = build_limits(cfg.risk, f"strategy config {path}", self.global_limits)
            except ConfigError as exc:
                self.refused[_declared_name(path)] = str(exc)
                refusals.append(str(exc))
                continue
            self.per_strategy[cfg.name] = limits
            self.on_kill[cfg.name] = cfg.on_kill
            self.refused.pop(cfg.name, None)
        return refusals


def _declared_name(path: Path) -> str:
    """The name a refused strategy file gives, else its file name (``ibfleet strategy add``
    writes NAME.toml)."""
    try:
        name = read_toml(path, "strategy config").get("name")
    except ConfigError:
        name = None
    return name if isinstance(name, str) and name else path.stem
