"""A strategy's TOML file: which class, which symbols, its parameters and its risk budget.

```toml
name = "mr1"                                  # unique in the fleet
class = "services.strategy.examples.mean_reversion:MeanReversion"
symbols = ["AAPL"]
timer_s = 1.0
require_live_data = false                     # true: never act on delayed market data

[params]                                      # passed to the strategy as a dict
window = 60

[risk]                                        # read by risk from this file (see risk.limits)
max_position = 500
max_errors = 20                               # callback errors within error_window_s that
error_window_s = 60.0                         # make risk halt it as "errored" (0: off)
```

Decoded strictly (``StrategyFile``; services.runtime.decoding): an unknown key, a misspelt
risk limit (``max_postion``), a quoted number or a bad name refuses this file with a
``ConfigError`` naming it and the key; other strategies' files are read on their own.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from services.risk.limits import Limits, build_limits
from services.runtime.config import ConfigError
from services.runtime.decoding import PositiveFloat, PositiveInt, decode, read_toml

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class StrategyFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The file's shape, decoded strictly (services.runtime.decoding)."""

    name: str
    class_path: str = msgspec.field(name="class")
    symbols: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1)]
    params: dict[str, Any] = {}  # the strategy's own: it checks them
    risk: dict[str, Any] = {}  # a table of risk limits: services.risk.limits.LimitsTable
    timer_s: PositiveFloat = 1.0  # seconds between on_timer calls
    depth_rows: PositiveInt = 10  # order-book rows a depth subscription asks for
    #: true: the strategy is not given delayed market data (a paper account without live
    #: data: Tick.delayed); it logs and alerts once per symbol instead (Strategy.base)
    require_live_data: bool = False


@dataclass
class StrategyConfig:
    name: str
    class_path: str
    symbols: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    risk: dict[str, Any] = field(default_factory=dict)
    timer_s: float = 1.0
    depth_rows: int = 10
    require_live_data: bool = False
    path: Path | None = None

    def load_class(self):
        module_name, _, attr = self.class_path.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"strategy class {self.class_path!r} cannot be loaded: {exc}; "
                              f"write it as 'package.module:ClassName'") from None


def load(path: str | Path) -> StrategyConfig:
    """The strategy's config, or ConfigError naming the file and the key: an unknown or
    misspelt key (in ``[risk]`` too), a wrong type, a bad name or an empty symbol list."""
    path = Path(path)
    source = f"strategy config {path}"
    parsed = decode(read_toml(path, "strategy config"), StrategyFile, source=source)
    if not NAME.match(parsed.name):
        raise ConfigError(f"{source}: name {parsed.name!r} must be 1-32 letters, digits, _ or "
                          f"-, starting with a letter")
    build_limits(parsed.risk, source, Limits())  # refuse a bad budget here, not in risk
    return StrategyConfig(name=parsed.name, class_path=parsed.class_path,
                          symbols=list(parsed.symbols), params=dict(parsed.params),
                          risk=dict(parsed.risk), timer_s=parsed.timer_s,
                          depth_rows=parsed.depth_rows,
                          require_live_data=parsed.require_live_data, path=path)
