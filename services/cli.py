"""``ibfleet``: one command for every part of the fleet.

Each subcommand is a function taking its argv; ``ibfleet COMMAND --help`` shows its options.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "up": ("services.fleet.commands:up", "start the fleet (simulator by default) under supervisord"),
    "down": ("services.fleet.commands:down", "stop the whole fleet cleanly"),
    "status": ("services.fleet.commands:status", "processes, gateway, heartbeats, positions, PnL"),
    "logs": ("services.fleet.commands:logs", "show a service's log"),
    "kill": ("services.fleet.commands:kill", "the kill switch: halt all, cancel every order"),
    "resume": ("services.fleet.commands:resume", "lift the kill switch"),
    "pause": ("services.fleet.commands:pause", "halt one strategy"),
    "unpause": ("services.fleet.commands:unpause", "resume one strategy"),
    "flatten": ("services.fleet.commands:flatten", "flatten NAME | --all: close positions at market"),
    "keys": ("services.fleet.commands:keys_command", "list, create or rotate the per-role CURVE keys"),
    "start": ("services.fleet.commands:start_process", "start a stopped fleet process again"),
    "strategy": ("services.fleet.commands:strategy", "strategy new NAME | check CONFIG | add CONFIG | remove NAME | run CONFIG"),
    "sim": ("services.simulator.__main__:main", "run the IB Gateway simulator"),
    "gateway": ("services.gateway.__main__:main", "run the gateway bridge to TWS / IB Gateway"),
    "risk": ("services.risk.service:main", "run the risk service"),
    "execution": ("services.execution.service:main", "run the execution service"),
    "bus": ("services.bus.broker:main", "run the bus (XSUB/XPUB proxy, last-value cache)"),
    "notify": ("services.notify.service:main", "send alerts out ([notify] urls, apprise)"),
    "tap": ("services.bus.tap:main", "watch messages on the bus"),
    "loadgen": ("services.bus.loadgen:main", "publish synthetic market data (load tests, demos)"),
    "record": ("services.recorder.__main__:main", "record every bus message to segment files"),
    "replay": ("services.replay.__main__:main", "replay a recording onto a bus of its own"),
    "backtest": ("services.backtest.__main__:main", "run strategies over a recording or catalog data (--data)"),
    "data": ("services.data.cli:main", "the data catalog: import, import-sample, download (from IB, through the gateway), list, show, remove"),
}


def usage() -> str:
    lines = ["usage: ibfleet COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "ibfleet COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ibfleet: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, func = COMMANDS[name][0].partition(":")
    try:  # Ctrl-C while a command loads (or one that does not handle it): one line, no traceback
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"ibfleet {name}: not available in this build ({exc})", file=sys.stderr)
            return 2
        return int(getattr(module, func)(rest) or 0)
    except KeyboardInterrupt:
        print(f"ibfleet {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
