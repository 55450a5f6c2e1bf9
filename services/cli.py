"""``ibfleet``: one command for every part of the fleet.

Each subcommand is a service's or tool's own ``main(argv)``; ``ibfleet CMD --help`` shows its
options.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "bus": ("services.bus.broker", "run the bus (XSUB/XPUB proxy, last-value cache, snapshots)"),
    "tap": ("services.bus.tap", "watch messages on the bus"),
    "loadgen": ("services.bus.loadgen", "publish synthetic market data (load tests, demos)"),
    "sim": ("services.simulator.__main__", "run the IB Gateway simulator"),
    "gateway": ("services.gateway.__main__", "run the gateway bridge to TWS / IB Gateway"),
    "risk": ("services.risk.service", "run the risk service"),
    "execution": ("services.execution.service", "run the execution service"),
    "strategy": ("services.strategy.runner", "run a strategy: ibfleet strategy run CONFIG"),
    "record": ("services.recorder.__main__", "record every bus message to segment files"),
    "replay": ("services.replay.__main__", "replay a recording onto a bus of its own"),
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
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
