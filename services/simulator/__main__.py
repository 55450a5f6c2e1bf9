"""`python -m services.simulator --port 7497 --seed 1 [--config FILE.toml] [--control ENDPOINT]
[--state-dir DIR]`"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from . import config as config_mod
from .broker import Broker
from .control import ControlServer
from .faults import FaultController
from .logs import log
from .server import SimServer
from .store import StateError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ibfleet sim", description="IB Gateway simulator (TWS API server side)")
    p.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default 7497)")
    p.add_argument("--seed", type=int, help="seed of every price process (default 1)")
    p.add_argument("--config", help="TOML file: universe, rates, limits, fault schedule")
    p.add_argument("--control", help="control socket: ipc://PATH or tcp://127.0.0.1:PORT")
    p.add_argument("--state-dir", dest="state_dir",
                   help="keep the paper account (orders, fills, positions, ids) in this directory "
                        "across restarts; a new directory is a new account (default: in memory)")
    p.add_argument("--server-version", type=int, dest="server_version",
                   default=os.environ.get("IBFLEET_SIM_SERVER_VERSION") or None,
                   help="highest version served: 157..226, 201+ in protobuf where IB uses it "
                        "(default $IBFLEET_SIM_SERVER_VERSION, else 200)")
    p.add_argument("--account", help="paper account code (default DU1234567)")
    p.add_argument("--market-data", dest="market_data", choices=("live", "delayed", "none"),
                   help="the account's market-data permission: live (default), delayed (IB's free "
                        "delayed data only: 10089 for live requests, 10167 and delayed ticks after "
                        "reqMarketDataType(3)), none (354 / 10168)")
    p.add_argument("--time-zone", dest="time_zone",
                   help="the account's zone of execution times (default America/New_York)")
    p.add_argument("--host-zone", dest="host_zone",
                   help="the gateway host's zone of the connection time (IANA or Windows name; "
                        "default: --time-zone)")
    p.add_argument("--step-ms", type=float, dest="step_ms", help="market step interval in ms")
    p.add_argument("--mktdata-ms", type=float, dest="mktdata_ms", help="reqMktData sampling interval in ms")
    p.add_argument("--mean-reversion", type=float, dest="mean_reversion",
                   help="per-step pull towards the opening price (0 = pure random walk; tests use ~0.05)")
    p.add_argument("--start-time", type=float, dest="start_time", help="epoch seconds the simulated clock starts at")
    p.add_argument("--sessions", choices=("off", "on"),
                   default=os.environ.get("IBFLEET_SIM_SESSIONS") or None,
                   help="trading sessions from the exchange calendars (docs/simulator.md, "
                        "Trading sessions): on = historical bars honour useRTH and skip weekends "
                        "and holidays, orders outside RTH are held, DAY orders end at the close; "
                        "off (default; $IBFLEET_SIM_SESSIONS, [simulator] sessions under "
                        "`ibfleet up`) = the market trades around the clock")
    p.add_argument("--history-delay-ms", type=float, dest="history_delay_ms")
    p.add_argument("--commission-timing", dest="commission_timing",
                   choices=("normal", "early", "late", "missing"),
                   help="when a fill's commissionReport goes out: after its orderStatus (normal, "
                        "the default), before it (early), --commission-delay s later (late), never")
    p.add_argument("--commission-delay", type=float, dest="commission_delay",
                   help="seconds a late commissionReport waits (default 3)")
    p.add_argument("--max-msgs-per-sec", type=int, dest="max_msgs_per_sec")
    p.add_argument("--mkt-data-lines", type=int, dest="mkt_data_lines")
    p.add_argument("--depth-subscriptions", type=int, dest="depth_subscriptions")
    p.add_argument("--tick-by-tick-subscriptions", type=int, dest="tick_by_tick_subscriptions")
    p.add_argument("--reset-repeat-seconds", type=float, dest="reset_repeat_seconds")
    p.add_argument("--market", default=os.environ.get("IBFLEET_SIM_MARKET") or None,
                   metavar="DATASET[,DATASET...]",
                   help="market replay: these catalog datasets (lobster/AAPL, quotes/X, "
                        "trades/X) drive the market instead of the random walk "
                        "(default $IBFLEET_SIM_MARKET)")
    p.add_argument("--catalog", help="the data catalog's root (default: $IBFLEET_CATALOG, "
                                     "else STATE_DIR/catalog, as `ibfleet data`)")
    p.add_argument("--speed", type=float,
                   default=float(os.environ["IBFLEET_SIM_SPEED"]) if os.environ.get("IBFLEET_SIM_SPEED") else None,
                   help="replay speed: a factor on the data's event times (1 = real time, "
                        "default; 0 = as fast as the clients read)")
    p.add_argument("--market-wait", dest="market_wait", choices=("now", "subscriber", "depth"),
                   help="when the replay starts: at once, at the first market-data "
                        "subscription to a replayed instrument (default), or the first depth one")
    p.add_argument("--fault", action="append", default=[], metavar="AT:CMD[:ARG=V,...]",
                   help="schedule a fault, e.g. 10:restart:seconds=5 or 3:server_reset:seconds=2,data_lost=1")
    return p


def parse_fault(text: str) -> dict:
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise ValueError(f"bad --fault {text!r}")
    item: dict = {"at": float(parts[0]), "cmd": parts[1]}
    if len(parts) == 3 and parts[2]:
        for kv in parts[2].split(","):
            k, _, v = kv.partition("=")
            try:
                item[k] = int(v)
            except ValueError:
                try:
                    item[k] = float(v)
                except ValueError:
                    item[k] = v
            if k in ("data_lost", "enabled"):
                item[k] = bool(item[k])
    return item


async def serve(cfg: config_mod.SimConfig, replay=None) -> int:
    try:
        broker = Broker(cfg)
    except StateError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        log("state_error", error=str(exc))
        return 2
    if replay is not None:
        replay.attach(broker)              # before any client: the market is the data's
    faults = FaultController(broker)
    server = SimServer(broker, cfg.port)
    faults.server = server                 # restart with port_gone, cold_restart / login
    await server.start()
    control = ControlServer(broker, faults, cfg.control) if cfg.control else None
    if control:
        control.start()
        log("control_listening", endpoint=control.endpoint)
    broker.start()
    if replay is not None:
        replay.start()
    faults.schedule(cfg.schedule)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log("ready", port=server.port, seed=cfg.seed, server_version=cfg.server_version,
        instruments=[i.symbol + ("/" + i.local_symbol if i.local_symbol else "") for i in cfg.instruments])
    await stop.wait()
    log("stopping")
    if replay is not None:
        await replay.stop()
    await server.stop()
    if control:
        await control.stop()
    await broker.stop()
    log("stopped", stats=broker.stats)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        overrides = {k: v for k, v in vars(args).items() if k not in ("config", "fault", "market")}
        cfg = cfg.with_overrides(**overrides)
        if args.market:
            cfg = cfg.with_overrides(market=tuple(args.market.split(",")))
        if args.fault:
            cfg = cfg.with_overrides(schedule=cfg.schedule + tuple(parse_fault(f) for f in args.fault))
        replay = None
        if cfg.market:
            from services.data.errors import DataError
            from .replay import prepare
            try:
                cfg, replay = prepare(cfg)
            except DataError as exc:
                raise ValueError(f"--market: {exc}") from None
        config_mod.validate(cfg)
    except (ValueError, OSError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(cfg, replay))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
