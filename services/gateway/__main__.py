"""``python -m services.gateway --run-dir DIR --state-dir DIR [--config F] [--host H --port P
--client-id N] [tuning options]``: the bridge between the bus and TWS / IB Gateway.

Every tuning option can also be set in the config's [gateway] (same name, with underscores);
the command line wins."""
from __future__ import annotations

import argparse
import faulthandler
import signal

from services.gateway.service import Gateway, GatewayOptions
from services.runtime.cli import add_common_args, load_config
from services.runtime.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet gateway", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--host", help="TWS / IB Gateway host (loopback only)")
    parser.add_argument("--port", type=int, help="API port (paper 7497/4002 by default)")
    parser.add_argument("--client-id", type=int, dest="client_id")
    parser.add_argument("--account", help="the account to land on (default: gateway.account; "
                                          "unset: any paper account, a code starting with D)")
    t = parser.add_argument_group("tuning (defaults suit a real gateway; tests make them fast)")
    t.add_argument("--backoff-base", type=float, dest="backoff_base", help="first retry delay, s")
    t.add_argument("--backoff-cap", type=float, dest="backoff_cap", help="longest retry delay, s")
    t.add_argument("--connect-timeout", type=float, dest="connect_timeout")
    t.add_argument("--probe-interval", type=float, dest="probe_interval",
                   help="inbound silence before a liveness probe, s")
    t.add_argument("--probe-timeout", type=float, dest="probe_timeout")
    t.add_argument("--rate", type=float, help="outgoing messages per second (IB allows 50)")
    t.add_argument("--mkt-data-lines", type=int, dest="mkt_data_lines")
    t.add_argument("--depth-subscriptions", type=int, dest="depth_subscriptions")
    t.add_argument("--no-account-updates", action="store_false", dest="account_updates",
                   default=None)
    t.add_argument("--completed-timeout", type=float, dest="completed_timeout",
                   help="how long a reconciliation waits for completedOrdersEnd, s")
    t.add_argument("--market-data-type", dest="market_data_type",
                   choices=("auto", "live", "frozen", "delayed", "delayed_frozen"),
                   help="IB market data type asked on every connection (default auto: live, "
                        "delayed when IB says the account has no live data)")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # thread dump on demand: kill -USR1 PID
    config = load_config(parser, args)
    overrides = {k: getattr(args, k) for k in (
        "host", "port", "client_id", "account", "backoff_base", "backoff_cap", "connect_timeout",
        "probe_interval", "probe_timeout", "rate", "mkt_data_lines", "depth_subscriptions",
        "account_updates", "completed_timeout", "market_data_type")}
    options = GatewayOptions.from_config(config, **overrides)
    try:  # --host / --port / tuning can override the file: the file's rules still hold
        options.validate()
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    return Gateway(config, options).run()


if __name__ == "__main__":
    raise SystemExit(main())
