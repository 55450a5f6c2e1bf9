"""Strategies before they join the fleet: checked as the fleet would run them, or written new.

``ibfleet strategy add CONFIG`` reports success only for a strategy that can work
(``validate``): its TOML decoded strictly (every key known, ``[risk]`` included); its class
imported, and its ``[params]`` decoded into the class's ``Params``, by a process of its own
with the fleet's interpreter, working directory and environment (``supervisor.check_strategy``:
``ibfleet strategy check CONFIG``), never in the caller's shell; its symbols resolved at IB by
the running fleet's gateway (``lookup_symbols``: a ``ContractLookup`` on the gateway's
reliable socket).

Strategy code lives in the fleet's strategies folder(s) (``supervisor.strategy_code_dirs``:
``[fleet] strategies_dir`` if set, and the project's ``strategies/``), which are on every
strategy program's PYTHONPATH, so ``strategies/NAME.py`` is named ``class = "NAME:Class"``;
packages of the project itself import too (``services.strategy.examples...``).
``ibfleet strategy new NAME`` writes a working skeleton there (``write_skeleton``).
"""
from __future__ import annotations

import importlib.util
import keyword
import os
import sys
import time
from pathlib import Path

import zmq

from proto.schema import Ack, ContractLookup, ContractLookupResult
from services.bus import keys
from services.bus.reliable import ReliableClient
from services.fleet import supervisor as sup
from services.runtime.config import ConfigError, FleetConfig
from services.strategy import config as strategy_config

LOOKUP_WAIT_S = 20.0  # s `strategy add` waits for the gateway's answer (it waits 10 s for IB)


def where_code_lives(config: FleetConfig) -> str:
    dirs = " or ".join(str(d) for d in sup.strategy_code_dirs(config))
    return (f"strategy code must be importable by the fleet's own Python, not only by your "
            f"shell's PYTHONPATH: put the module in {dirs} (on the PYTHONPATH of every "
            f"strategy program; class = \"MODULE:ClassName\"), or in a package of the "
            f"project ({sup.REPO}); `ibfleet strategy new NAME` writes a skeleton there")


def check_loads(source: Path, config: FleetConfig, env: dict[str, str]) -> None:
    """The strategy loads as a strategy program of this fleet would load it, in a process
    with the fleet's environment (``env``: supervisord's); ConfigError saying why not."""
    problem = sup.check_strategy(source.resolve(),
                                 sup.strategy_environment(env, sup.strategy_pythonpath(config)))
    if not problem:
        return
    if "cannot be loaded" in problem or "importing" in problem:
        problem = f"{problem}\n{where_code_lives(config)}"
    raise ConfigError(f"strategy config {source}: the fleet cannot run it:\n{problem}")


def lookup_symbols(config: FleetConfig, symbols: list[str],
                   timeout: float = LOOKUP_WAIT_S) -> None:
    """Ask the running fleet's gateway whether IB knows each symbol; ConfigError naming the
    unknown ones (IB's reason), or saying that they could not be checked."""
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the gateway answers the operator
    result: ContractLookupResult | None = None
    refused = ""
    try:
        client = ReliableClient(ctx, config.bus.endpoint("gateway"), f"cli.{os.getpid()}",
                                resend_after=2.0, curve_dir=config.bus.curve_dir)
        seq = client.send(ContractLookup(symbols=list(symbols)))
        deadline = time.monotonic() + timeout
        while result is None and not refused and time.monotonic() < deadline:
            for msg in client.poll(100):
                if isinstance(msg, ContractLookupResult):
                    result = msg
                elif isinstance(msg, Ack) and msg.ref_seq == seq and not msg.ok:
                    refused = msg.error
        client.close()
    finally:
        ctx.destroy(linger=0)
    skip = "; add it again once the gateway is synchronised, or pass --no-symbol-check"
    if refused:
        raise ConfigError(f"the gateway refused the symbol lookup: {refused}{skip}")
    if result is None:
        raise ConfigError(f"the gateway did not answer within {timeout:g}s: the symbols "
                          f"{', '.join(symbols)} could not be checked at IB{skip}")
    if not result.connected:
        raise ConfigError(f"the symbols could not be checked at IB: {result.text}{skip}")
    if result.failed:
        lines = "".join(f"\n  {symbol}: {why}" for symbol, why in sorted(result.failed.items()))
        raise ConfigError(f"symbol(s) IB does not know, as the fleet names them (AAPL: a US "
                          f"stock; EUR.USD: a currency pair; ESZ6@CME: LOCAL@EXCHANGE):{lines}")
    missing = [s for s in symbols if s not in result.resolved]
    if missing:
        raise ConfigError(f"IB did not answer for {', '.join(missing)}: {result.text}{skip}")


def validate(source: Path, config: FleetConfig, env: dict[str, str],
             symbols_at_ib: bool) -> strategy_config.StrategyConfig:
    """Everything ``strategy add`` checks before it changes anything (ConfigError if not)."""
    cfg = strategy_config.load(source)  # strict: every key known, [risk] included
    check_loads(source, config, env)
    if symbols_at_ib:
        lookup_symbols(config, cfg.symbols)
    return cfg


# -- ibfleet strategy check ------------------------------------------------------------------
def check_main(argv: list[str]) -> int:
    """``ibfleet strategy check CONFIG``: load the strategy as a strategy program would (in
    this process and environment): exit 0, or 2 with why not on stderr."""
    import argparse

    parser = argparse.ArgumentParser(prog="ibfleet strategy check", description=(
        "Check that a strategy loads in this environment as the fleet would run it: its TOML "
        "(strictly), its class (a Strategy), its [params] (the class's Params). "
        "`ibfleet strategy add` runs it in the fleet's own environment."))
    parser.add_argument("strategy_config")
    for option in ("--config", "--run-dir", "--state-dir"):  # as every command; not needed
        parser.add_argument(option, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from services.strategy.base import Strategy

    try:
        cfg = strategy_config.load(args.strategy_config)
        try:
            cls = cfg.load_class()
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the module itself raised: say so
            raise ConfigError(f"importing {cfg.class_path!r} failed: "
                              f"{type(exc).__name__}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(f"{cfg.class_path} is not a subclass of "
                              f"services.strategy.Strategy")
        params = cfg.params_for(cls)
    except ConfigError as exc:
        parser.exit(2, f"{exc}\n")
    typed = "dict" if isinstance(params, dict) else type(params).__qualname__
    print(f"strategy {cfg.name}: {cfg.class_path} loads; params: {typed}")
    return 0


# -- ibfleet strategy new ---------------------------------------------------------------------
def write_skeleton(name: str, directory: Path, symbol: str = "AAPL") -> tuple[Path, Path]:
    """``directory``/NAME.py (a working strategy with typed Params) and NAME.toml; never
    overwrites. ConfigError for a name that cannot be a module of its own."""
    if not (strategy_config.NAME.match(name) and name.isidentifier()
            and not keyword.iskeyword(name)):
        raise ConfigError(f"strategy name {name!r}: 1-32 letters, digits or _, starting with a "
                          f"letter (it is also the module's name)")
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        raise ConfigError(f"{name!r} is a module of Python's standard library: a strategy of "
                          f"that name would hide it from the fleet; choose another name")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and Path(spec.origin).parent != directory.resolve():
        raise ConfigError(f"{name!r} is already a module ({spec.origin}): a strategy of that "
                          f"name would clash with it; choose another name")
    code, toml = directory / f"{name}.py", directory / f"{name}.toml"
    for path in (code, toml):
        if path.exists():
            raise ConfigError(f"{path} exists: not overwritten")
    directory.mkdir(parents=True, exist_ok=True)
    class_name = "".join(part.capitalize() for part in name.split("_")) or "Strategy"
    if class_name == "Strategy":
        class_name = "MyStrategy"
    code.write_text(SKELETON.format(name=name, cls=class_name, dir=directory, toml=toml))
    toml.write_text(SKELETON_TOML.format(name=name, cls=class_name, symbol=symbol, toml=toml))
    return code, toml


SKELETON = '''"""{name}: a strategy written by `ibfleet strategy new {name}`; edit it freely.

It lives in {dir}, a folder on the PYTHONPATH of every strategy the fleet runs, so its
TOML names it ``class = "{name}:{cls}"``. Check and start it in the running fleet with
``ibfleet strategy add {toml}``; backtest it with ``ibfleet backtest {toml} RECORDING``.

As written it holds ``params.target`` shares of each symbol with limit orders at the touch
(0, the default: it only watches the market).
"""
from __future__ import annotations

import math

import msgspec

from proto.schema import Tick
from services.strategy import Strategy


class {cls}(Strategy):
    class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """The TOML's [params], decoded strictly: an unknown key or a wrong type refuses the
        file (naming the key) before the strategy runs."""

        target: float = 0  # shares to hold in each symbol
        quantity: float = 10  # at most this many per order

    params: Params

    def on_start(self) -> None:
        for symbol in self.symbols:
            self.subscribe(symbol, "tick")
        self.log.info("started", extra={{"target": self.params.target}})

    def on_tick(self, tick: Tick) -> None:
        if not (math.isfinite(tick.bid) and math.isfinite(tick.ask)):
            return
        missing = self.params.target - self.position(tick.symbol)
        if not missing or self.open_orders(tick.symbol):
            return
        quantity = min(abs(missing), self.params.quantity)
        if missing > 0:
            self.submit(tick.symbol, "BUY", quantity, "LMT", tick.ask)
        else:
            self.submit(tick.symbol, "SELL", quantity, "LMT", tick.bid)
'''

SKELETON_TOML = '''# {name}: written by `ibfleet strategy new {name}`; add it with `ibfleet strategy add {toml}`
name = "{name}"
class = "{name}:{cls}"
symbols = ["{symbol}"]
timer_s = 1.0

[params]                 # {cls}.Params in {name}.py: a misspelt key or a wrong type is refused
target = 0
quantity = 10

[risk]                   # this strategy's budget, read by risk from this file (known keys only)
max_position = 100
max_order_quantity = 100
max_open_orders = 4
daily_loss_limit = 5000
'''
