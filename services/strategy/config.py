"""A strategy's TOML file: which class, which symbols, its parameters and its risk budget.

```toml
name = "mr1"                                  # unique in the fleet
class = "services.strategy.examples.mean_reversion:MeanReversion"
symbols = ["AAPL"]
timer_s = 1.0
require_live_data = false                     # true: never act on delayed market data
on_kill = "keep_exits"                        # the kill switch: keep_exits, cancel_all, flatten

[params]                                      # the strategy's own: its Params, typed
window = 60

[risk]                                        # read by risk from this file (see risk.limits)
max_position = 500
max_errors = 20                               # callback errors within error_window_s that
error_window_s = 60.0                         # make risk halt it as "errored" (0: off)
```

Decoded strictly (``StrategyFile``; services.runtime.decoding): an unknown key, a misspelt
risk limit (``max_postion``), a quoted number or a bad name refuses this file with a
``ConfigError`` naming it and the key; other strategies' files are read on their own.

``[params]`` belongs to the strategy class: one that declares ``Params`` (a
``msgspec.Struct`` with ``forbid_unknown_fields=True``) gets them decoded strictly into it
(``StrategyConfig.params_for``: an unknown key or a wrong type is a ``ConfigError`` naming
the file and the key) as ``self.params``; one that declares nothing gets the table as a dict.
"""
from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from services.model.owners import RESERVED_OWNERS
from services.risk.limits import Limits, build_limits
from services.runtime.config import ConfigError
from services.runtime.decoding import PositiveFloat, PositiveInt, decode, read_toml

#: the project's strategy code (``strategies/NAME.py``, ``class = "NAME:Class"``): on every
#: strategy program's PYTHONPATH (services/fleet/supervisor.py), and on the path of any process
#: that loads a strategy class (a backtest), after everything else
STRATEGIES_DIR = Path(__file__).resolve().parents[2] / "strategies"

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
    #: what ``ibfleet kill`` does to this strategy's orders (services/model/owners.py):
    #: keep_exits (cancel entries, keep protective exits), cancel_all, flatten
    on_kill: Literal["keep_exits", "cancel_all", "flatten"] = "keep_exits"


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
    on_kill: str = "keep_exits"
    path: Path | None = None

    def load_class(self):
        module_name, _, attr = self.class_path.partition(":")
        if str(STRATEGIES_DIR) not in sys.path:
            sys.path.append(str(STRATEGIES_DIR))
        if not module_name or not attr:
            raise ConfigError(f"strategy class {self.class_path!r}: write it as "
                              f"'module:ClassName' (a module in strategies/, or "
                              f"'package.module:ClassName')")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"strategy class {self.class_path!r} cannot be loaded: {exc}; "
                              f"strategy code lives in {STRATEGIES_DIR} (or "
                              f"[fleet] strategies_dir)") from None
        except Exception as exc:  # the module itself fails: say how, not where it should be
            raise ConfigError(f"strategy class {self.class_path!r}: importing {module_name} "
                              f"failed: {type(exc).__name__}: {exc}") from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"strategy class {self.class_path!r}: module {module_name} has "
                              f"no {attr!r}") from None

    def params_for(self, cls: type) -> Any:
        """``[params]`` as ``cls`` takes them: decoded strictly into ``cls.Params`` when it
        declares one (a ``msgspec.Struct``), else the table as a dict. ConfigError naming the
        file and the key: an unknown key, a missing one without a default, a wrong type."""
        declared = getattr(cls, "Params", None)
        if declared is None:
            return dict(self.params)
        if not (isinstance(declared, type) and issubclass(declared, msgspec.Struct)):
            raise ConfigError(f"{self.class_path}.Params must be a msgspec.Struct subclass")
        return decode(self.params, declared, source=f"strategy config {self.path or self.name}",
                      at="params")


def load(path: str | Path) -> StrategyConfig:
    """The strategy's config, or ConfigError naming the file and the key: an unknown or
    misspelt key (in ``[risk]`` too), a wrong type, a bad name or an empty symbol list."""
    path = Path(path)
    source = f"strategy config {path}"
    parsed = decode(read_toml(path, "strategy config"), StrategyFile, source=source)
    if not NAME.match(parsed.name):
        raise ConfigError(f"{source}: name {parsed.name!r} must be 1-32 letters, digits, _ or "
                          f"-, starting with a letter")
    if parsed.name in RESERVED_OWNERS:
        raise ConfigError(f"{source}: name {parsed.name!r} is reserved (the book of orders "
                          f"and positions no strategy owns)")
    build_limits(parsed.risk, source, Limits())  # refuse a bad budget here, not in risk
    return StrategyConfig(name=parsed.name, class_path=parsed.class_path,
                          symbols=list(parsed.symbols), params=dict(parsed.params),
                          risk=dict(parsed.risk), timer_s=parsed.timer_s,
                          depth_rows=parsed.depth_rows,
                          require_live_data=parsed.require_live_data,
                          on_kill=parsed.on_kill, path=path)
