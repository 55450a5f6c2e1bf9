"""Command-line plumbing every service shares: the common options and config loading."""
from __future__ import annotations

import argparse

from services.runtime import config as fleet_config


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="fleet config TOML (default: loopback defaults)")
    parser.add_argument("--run-dir", help="private run directory for ipc:// endpoints")
    parser.add_argument("--state-dir", help="durable state directory (journals, id sequence)")


def load_config(parser: argparse.ArgumentParser, args: argparse.Namespace
                ) -> fleet_config.FleetConfig:
    """The validated config, or exit 2 with the reason (never a traceback)."""
    try:
        return fleet_config.load(args.config, args.run_dir, args.state_dir)
    except fleet_config.ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
