"""A strategy's TOML file: which class, which symbols, its parameters and its risk budget.

```toml
name = "mr1"                                  # unique in the fleet
class = "services.strategy.examples.mean_reversion:MeanReversion"
symbols = ["AAPL"]
timer_s = 1.0

[params]                                      # passed to the strategy as a dict
window = 60

[risk]                                        # read by risk from this file (see risk.limits)
max_position = 500
```
"""
from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.runtime.config import ConfigError

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@dataclass
class StrategyConfig:
    name: str
    class_path: str
    symbols: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    risk: dict[str, Any] = field(default_factory=dict)
    timer_s: float = 1.0
    depth_rows: int = 10
    path: Path | None = None

    def load_class(self):
        module_name, _, attr = self.class_path.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"strategy class {self.class_path!r} cannot be loaded: {exc}; "
                              f"write it as 'package.module:ClassName'") from None


def load(path: str | Path) -> StrategyConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"strategy config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"strategy config {path} is not valid TOML: {exc}") from None
    known = {"name", "class", "symbols", "params", "risk", "timer_s", "depth_rows"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path.name}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    for key in ("name", "class", "symbols"):
        if key not in raw:
            raise ConfigError(f"{path.name}: '{key}' is required")
    if not isinstance(raw["name"], str) or not NAME.match(raw["name"]):
        raise ConfigError(f"{path.name}: name must be 1-32 letters, digits, _ or -, "
                          f"starting with a letter")
    symbols = raw["symbols"]
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str)
                                                               for s in symbols):
        raise ConfigError(f"{path.name}: symbols must be a non-empty list of strings")
    return StrategyConfig(name=raw["name"], class_path=raw["class"], symbols=symbols,
                          params=dict(raw.get("params", {})), risk=dict(raw.get("risk", {})),
                          timer_s=float(raw.get("timer_s", 1.0)),
                          depth_rows=int(raw.get("depth_rows", 10)), path=path)
