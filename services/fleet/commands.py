"""The fleet's operator commands: up, down, status, logs, kill, resume, strategy add/remove."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
import xmlrpc.client
from pathlib import Path

import zmq

from proto.schema import Ack, BrokerOrders, Control
from services.bus import keys
from services.bus.reliable import ReliableClient
from services.fleet import ports
from services.fleet.confirm import EXPECTED, STOPPED_STATES, Confirmations
from services.fleet import supervisor as sup
from services.fleet.status import collect, render
from services.runtime import config as fleet_config
from services.runtime.config import LIVE_PORTS, ConfigError
from services.strategy import config as strategy_config

EXAMPLE_STRATEGIES = sup.REPO / "strategies"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="fleet config TOML (default: loopback defaults)")
    parser.add_argument("--run-dir", help="the fleet's private run directory")
    parser.add_argument("--state-dir", help="durable state (journals, recordings)")


def _load(parser, args, running_fleet: bool = True) -> tuple[fleet_config.FleetConfig,
                                                              sup.FleetPaths]:
    """``running_fleet``: the fleet ``ibfleet up`` started in the run directory decides
    whether to speak with role keys (the operator's key): its fleet.toml's ``bus.auth``
    (``up`` turns keys on by default), and without --config, that whole file."""
    try:
        config = fleet_config.load(args.config, args.run_dir, args.state_dir)
        fleet_toml = sup.FleetPaths(config).fleet_toml
        if running_fleet and fleet_toml.is_file():
            if args.config is None:
                config = fleet_config.load(fleet_toml, args.run_dir, args.state_dir)
            else:
                config.bus.auth = fleet_config.load(fleet_toml).bus.auth
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    return config, sup.FleetPaths(config)


def _need_running(parser, paths: sup.FleetPaths) -> None:
    if not sup.running(paths):
        parser.exit(1, f"{parser.prog}: no fleet is running in {paths.run_dir}; "
                       f"start one with `ibfleet up`\n")


# -- up / down ----------------------------------------------------------------------------------
def up(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet up", description=(
        "Start the fleet under supervisord: against the embedded simulator by default, on "
        "its own port ([simulator] port, default 17497). Refuses to start while a port it "
        "must bind is taken. Runs in the foreground with a live status; Ctrl-C stops "
        "everything cleanly."))
    _common(parser)
    parser.add_argument("--gateway", metavar="HOST:PORT",
                        help="a real TWS / IB Gateway instead of the simulator (loopback only); "
                             "the only way the fleet trades on a gateway it did not start")
    parser.add_argument("--live", action="store_true",
                        help="allow a live port (7496/4001); the config must say live = true too")
    parser.add_argument("--strategies", nargs="*", metavar="TOML",
                        help="strategy configs to run (default: the two examples)")
    parser.add_argument("--no-record", action="store_true", help="do not run the recorder")
    parser.add_argument("--seed", type=int, default=1, help="the simulator's seed")
    parser.add_argument("--crash-max", type=int, default=5,
                        help="restarts within --crash-window-s that count as a crash loop")
    parser.add_argument("--crash-window-s", type=float, default=60.0)
    parser.add_argument("--detach", action="store_true",
                        help="return once the fleet is up; stop it with `ibfleet down`")
    args = parser.parse_args(argv)
    config, paths = _load(parser, args, running_fleet=False)
    if config.notify.urls:  # a URL apprise does not take: refused now, not in a crash loop
        from services.notify.service import apprise_for
        try:
            apprise_for(config.notify.urls)
        except ConfigError as exc:
            parser.exit(2, f"ibfleet up: {exc}\n")
    simulate = args.gateway is None
    if args.gateway:
        host, _, port = args.gateway.rpartition(":")
        try:
            config.gateway.host, config.gateway.port = host or "127.0.0.1", int(port)
        except ValueError:
            parser.exit(2, "ibfleet up: --gateway takes HOST:PORT, e.g. 127.0.0.1:4002\n")
        if config.gateway.port in LIVE_PORTS and not args.live:
            parser.exit(2, f"ibfleet up: port {config.gateway.port} is a LIVE trading port; "
                           f"pass --live and set [gateway] live = true in the config\n")
        if args.live and not config.gateway.live:
            parser.exit(2, "ibfleet up: --live also needs [gateway] live = true in the config\n")
        try:
            config.gateway.validate()
        except ConfigError as exc:
            parser.exit(2, f"ibfleet up: {exc}\n")
    else:  # the bridge trades on the simulator we start, on its own port, and nothing else
        if "port" in config.raw.get("gateway", {}) \
                and config.gateway.port != config.simulator.port:
            print(f"ibfleet up: note: [gateway] port {config.gateway.port} is used with "
                  f"--gateway only; the embedded simulator listens on [simulator] port "
                  f"{config.simulator.port}", file=sys.stderr)
        config.gateway.host, config.gateway.port = "127.0.0.1", config.simulator.port
    if sup.running(paths):
        parser.exit(1, f"ibfleet up: a fleet is already running in {paths.run_dir}; "
                       f"`ibfleet status` shows it, `ibfleet down` stops it\n")
    taken = ports.problems(config, simulate)
    if taken:  # before anything starts: the fleet never trades on a listener it did not start
        parser.exit(1, "ibfleet up: refusing to start, nothing was started:\n"
                    + "".join(f"  {line}\n" for line in taken))
    paths.prepare()
    for old in paths.strategies.glob("*"):
        old.unlink()
    configs = args.strategies if args.strategies is not None else sorted(
        str(p) for p in EXAMPLE_STRATEGIES.glob("*.toml"))
    names = []
    try:
        for path in configs:
            names.append(_install_strategy(paths, Path(path)))
    except ConfigError as exc:
        parser.exit(2, f"ibfleet up: {exc}\n")
    sup.write_fleet_config(paths, config)
    if config.bus.auth:  # every role's key pair, made on first use (services/bus/keys.py)
        keys.ensure_keys(config.state_dir,
                         [*keys.FIXED_ROLES, *(f"strategy.{name}" for name in names)])
    env = sup.environment(paths, config, simulate, not args.no_record, args.crash_max,
                          args.crash_window_s, args.seed)
    try:
        proc = sup.start(paths, env)
    except sup.FleetError as exc:
        parser.exit(1, f"ibfleet up: {exc}\n")
    print(f"fleet up in {paths.run_dir} (logs in {paths.logs}); "
          f"{'simulator' if simulate else config.gateway.host}:{config.gateway.port}",
          flush=True)
    if args.detach:
        return 0
    return _watch_until_interrupted(config, paths, proc)


def _watch_until_interrupted(config, paths, proc) -> int:
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop and proc.poll() is None:
            text = render(collect(config, paths, timeout=1.0))
            print("\033[2J\033[H" + text + "\n\nCtrl-C stops the fleet.", flush=True)
            for _ in range(20):
                if stop or proc.poll() is not None:
                    break
                time.sleep(0.1)
    finally:
        print("\nstopping the fleet...", flush=True)
        if sup.running(paths):
            sup.stop(paths)
        proc.wait(60)
        print("fleet stopped.", flush=True)
    return 0


def down(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet down",
                                     description="Stop every process of the fleet, cleanly.")
    _common(parser)
    args = parser.parse_args(argv)
    config, paths = _load(parser, args)
    if not sup.running(paths):
        print(f"no fleet running in {paths.run_dir}")
        return 0
    try:
        pids = sup.stop(paths)
    except sup.FleetError as exc:
        parser.exit(1, f"ibfleet down: {exc}\n")
    print(f"fleet stopped ({len(pids)} processes)")
    return 0


# -- status / logs ------------------------------------------------------------------------------
def status(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet status", description=(
        "Processes, gateway state, heartbeats, gaps, positions, open orders, PnL, risk state."))
    _common(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--watch", action="store_true", help="refresh every --every seconds")
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args(argv)
    config, paths = _load(parser, args)
    _need_running(parser, paths)
    while True:
        result = collect(config, paths)
        if args.json:
            print(result.to_json(), flush=True)
        else:
            prefix = "\033[2J\033[H" if args.watch else ""
            print(prefix + render(result), flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.every)
        except KeyboardInterrupt:
            return 0


def logs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet logs", description="Show a service's log.")
    _common(parser)
    parser.add_argument("service", help="e.g. gateway, risk, strategy-mr1, supervisord")
    parser.add_argument("-n", "--lines", type=int, default=50)
    parser.add_argument("-f", "--follow", action="store_true")
    args = parser.parse_args(argv)
    _, paths = _load(parser, args)
    path = paths.logs / f"{args.service}.log"
    if not path.exists():
        known = sorted(p.stem for p in paths.logs.glob("*.log"))
        parser.exit(1, f"ibfleet logs: no log for {args.service!r}; known: {', '.join(known)}\n")
    with open(path, errors="replace") as fh:
        for line in fh.readlines()[-args.lines:]:
            sys.stdout.write(line)
        while args.follow:
            line = fh.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


# -- control ------------------------------------------------------------------------------------
def _control(argv: list[str], command: str, help_: str, name: str) -> int:
    """``name``: the ibfleet command (``unpause`` sends the control ``resume``)."""
    parser = argparse.ArgumentParser(prog=f"ibfleet {name}", description=help_)
    _common(parser)
    if command in ("pause", "resume", "flatten"):
        parser.add_argument("strategy")
    parser.add_argument("--reason", default="operator")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for risk's acknowledgement")
    parser.add_argument("--confirm-timeout", type=float, default=5.0,
                        help="seconds to wait for the strategies' own confirmation (their "
                             "heartbeats carry the trading state they applied)")
    args = parser.parse_args(argv)
    config, _ = _load(parser, args)
    target = getattr(args, "strategy", "")
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the operator's key
    try:
        confirmations = Confirmations(ctx, config, [target] if target else None)
        client = ReliableClient(ctx, config.bus.endpoint("risk"), f"cli.{__import__('os').getpid()}",
                                resend_after=1.0)
        confirmations.mark()
        client.send(Control(command=command, target=target, reason=args.reason))
        deadline = time.monotonic() + args.timeout
        while client.pending and time.monotonic() < deadline:
            for msg in client.poll(200):
                if isinstance(msg, Ack) and not msg.ok:
                    parser.exit(1, f"{parser.prog}: refused: {msg.error}\n")
        if client.pending:
            parser.exit(1, f"{parser.prog}: risk did not answer within {args.timeout:g}s; "
                           f"is the fleet up? (`ibfleet status`)\n")
        print(f"{command} acknowledged by risk", flush=True)
        confirmations.wait(EXPECTED[command], args.confirm_timeout)  # bounded
        print(confirmations.report(EXPECTED[command], args.confirm_timeout))
        confirmations.close()
    finally:
        ctx.destroy(linger=0)
    return 0


RISK_WAIT_S = 3.0  # s the kill waits for risk (and execution behind it) before the gateway


def kill(argv: list[str]) -> int:
    """The kill switch, which nothing in the fleet may block: through risk (which halts
    every strategy and forwards it to execution: execution's cancels, then IB's global
    cancel); if risk does not acknowledge within a few seconds (risk or execution down),
    straight to the gateway, which sends IB's global cancel itself. Then the gateway is
    asked what still works at the broker (every client of the account); the command exits
    non-zero if anything does after ``--timeout``."""
    parser = argparse.ArgumentParser(prog="ibfleet kill", description=(
        "The kill switch: halt every strategy and cancel every order of the account at IB, "
        "the fleet's and any other client's; with --flatten, then close every position at "
        "market. Works with risk or execution down (through the gateway)."))
    _common(parser)
    parser.add_argument("--flatten", action="store_true",
                        help="after cancelling, close every position at market (needs execution)")
    parser.add_argument("--reason", default="operator")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait until no order works at the broker")
    args = parser.parse_args(argv)
    config, _ = _load(parser, args)
    command = "flatten" if args.flatten else "kill"
    started = time.monotonic()
    deadline = started + args.timeout
    source = f"cli.{os.getpid()}"
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the operator's key
    try:
        confirmations = Confirmations(ctx, config)  # the strategies' word that they halted
        risk = ReliableClient(ctx, config.bus.endpoint("risk"), source, resend_after=1.0)
        risk.send(Control(command=command, reason=args.reason))
        via_risk, risk_error = False, ""
        risk_deadline = min(deadline, started + RISK_WAIT_S)
        while risk.pending and time.monotonic() < risk_deadline:
            for msg in risk.poll(100):
                if isinstance(msg, Ack) and msg.ref_src == source:
                    via_risk, risk_error = msg.ok, msg.error
        if via_risk:
            print(f"{command}: acknowledged by risk; execution sent its cancels and IB's "
                  f"global cancel", flush=True)
        else:
            why = f"refused: {risk_error}" if risk_error else \
                f"no answer within {RISK_WAIT_S:g}s"
            print(f"{command}: risk/execution {why}; sending the kill straight to the "
                  f"gateway (IB's global cancel)", file=sys.stderr, flush=True)
        risk.close()
        report = _broker_orders_after_kill(ctx, config, source, command, via_risk,
                                           started, deadline)
        if via_risk:  # risk halted every strategy: each one's confirmation (bounded)
            confirmations.wait(STOPPED_STATES, 3.0)
            print(confirmations.report(STOPPED_STATES, 3.0), flush=True)
        confirmations.close()
    finally:
        ctx.destroy(linger=0)
    if report is None:
        print(f"{command}: the gateway did not answer within {args.timeout:g}s: the orders "
              f"working at the broker are UNKNOWN; check TWS", file=sys.stderr)
        return 1
    if not report.connected:
        print(f"{command}: {report.text}: the orders working at the broker are UNKNOWN; "
              f"check TWS", file=sys.stderr)
        return 1
    print(f"orders working at the broker: {report.working} "
          f"({time.monotonic() - started:.1f}s after the command)")
    for line in report.orders:
        print(f"  still working: {line}")
    if report.working:
        print(f"{command}: {report.working} order(s) still working after {args.timeout:g}s",
              file=sys.stderr)
        return 1
    if args.flatten and not via_risk:
        print("flatten: positions were NOT closed: execution did not take the flatten "
              "(only the cancels went through the gateway)", file=sys.stderr)
        return 1
    return 0


def _broker_orders_after_kill(ctx, config, source: str, command: str, via_risk: bool,
                              started: float, deadline: float) -> BrokerOrders | None:
    """Ask the gateway until no order works at the broker or the deadline passes; the last
    answer (None if it never answered). Without risk, every question is a kill (a repeated
    global cancel); with risk, a question only, until half the time is gone: then the
    gateway's global cancel too, in case execution's cancels are stuck."""
    gateway = ReliableClient(ctx, config.bus.endpoint("gateway"), source, resend_after=1.0,
                             curve_dir=config.bus.curve_dir)
    escalate_at = started + (deadline - started) / 2
    last: BrokerOrders | None = None
    try:
        while time.monotonic() < deadline:
            kill_now = not via_risk or time.monotonic() >= escalate_at
            seq = gateway.send(Control(command=command if kill_now else "orders",
                                       reason="ibfleet kill"))
            answered = False
            while not answered and time.monotonic() < deadline:
                for msg in gateway.poll(100):
                    if isinstance(msg, BrokerOrders):
                        last, answered = msg, True
                    elif isinstance(msg, Ack) and msg.ref_seq == seq and not msg.ok:
                        print(f"{command}: the gateway refused: {msg.error}", file=sys.stderr)
                        answered = True
            if last is not None and last.connected and last.working == 0:
                return last
            gateway.pending.clear()  # a new question replaces an unanswered one
            time.sleep(0.5)
    finally:
        gateway.close()
    return last


def resume(argv: list[str]) -> int:
    return _control(argv, "resume_all", "Lift the kill switch.", "resume")


def pause(argv: list[str]) -> int:
    return _control(argv, "pause", "Halt one strategy (its open orders stay).", "pause")


def unpause(argv: list[str]) -> int:
    return _control(argv, "resume", "Resume one paused (or errored) strategy.", "unpause")


def flatten(argv: list[str]) -> int:
    """``ibfleet flatten NAME``: pause one strategy, cancel its orders and close its positions
    at market (execution does it); ``ibfleet flatten --all``: ``ibfleet kill --flatten``."""
    if "--all" in argv:
        return kill([a for a in argv if a != "--all"] + ["--flatten"])
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ibfleet flatten NAME | --all [options]\n\n"
              "NAME: pause the strategy, cancel its orders and close its positions at market "
              "(execution does it). --all: the kill switch, then every position closed at "
              "market (`ibfleet kill --flatten`). `ibfleet flatten NAME --help`: the options.")
        return 0 if argv else 2
    return _control(argv, "flatten", "Pause one strategy, cancel its orders and close its "
                                     "positions at market.", "flatten")


# -- strategies ---------------------------------------------------------------------------------
def _install_strategy(paths: sup.FleetPaths, source: Path) -> str:
    cfg = strategy_config.load(source)
    cfg.load_class()  # fail now, with the reason, rather than in a crash loop later
    target = paths.strategies / f"{cfg.name}.toml"
    if target.exists():
        raise ConfigError(f"a strategy named {cfg.name!r} is already in the fleet")
    shutil.copyfile(source, target)
    (paths.strategies / f"{cfg.name}.conf").write_text(sup.strategy_program(cfg.name, target))
    return cfg.name


def strategy(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        from services.strategy.runner import main as run_main
        return run_main(argv)
    parser = argparse.ArgumentParser(prog="ibfleet strategy", description=(
        "Run a strategy (`run CONFIG`), or add/remove one in the running fleet without "
        "touching the others."))
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("run", help="run one strategy in the foreground: ibfleet strategy run CONFIG")
    add = sub.add_parser("add", help="add a strategy to the running fleet")
    add.add_argument("strategy_config")
    _common(add)
    remove = sub.add_parser("remove", help="stop and remove a strategy from the running fleet")
    remove.add_argument("name")
    _common(remove)
    args = parser.parse_args(argv)
    config, paths = _load(parser, args)
    _need_running(parser, paths)
    server = sup.rpc(paths)
    try:
        if args.action == "add":
            try:
                name = _install_strategy(paths, Path(args.strategy_config))
            except ConfigError as exc:
                parser.exit(2, f"ibfleet strategy add: {exc}\n")
            if config.bus.auth:
                keys.ensure_keys(config.state_dir, [f"strategy.{name}"])
            added, _, _ = server.supervisor.reloadConfig()[0]
            for group in added:
                server.supervisor.addProcessGroup(group)
            print(f"strategy {name} added")
        else:
            group = f"strategy-{args.name}"
            server.supervisor.stopProcessGroup(group)
            server.supervisor.removeProcessGroup(group)
            for suffix in (".conf", ".toml"):
                (paths.strategies / f"{args.name}{suffix}").unlink(missing_ok=True)
            server.supervisor.reloadConfig()
            print(f"strategy {args.name} removed")
    except xmlrpc.client.Fault as exc:
        parser.exit(1, f"ibfleet strategy: supervisord refused: {exc.faultString}\n")
    return 0


def start_process(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet start",
                                     description="Start a stopped fleet process again.")
    _common(parser)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    _, paths = _load(parser, args)
    _need_running(parser, paths)
    try:
        sup.rpc(paths).supervisor.startProcess(args.name, True)
    except xmlrpc.client.Fault as exc:
        parser.exit(1, f"ibfleet start: {exc.faultString}\n")
    print(f"{args.name} started")
    return 0


def keys_command(argv: list[str]) -> int:
    """``ibfleet keys [list] | create | rotate ROLE...``: the per-role CURVE keys."""
    parser = argparse.ArgumentParser(prog="ibfleet keys", description=(
        "The fleet's per-role CURVE keys in STATE_DIR/keys: list them, create the missing "
        "ones, or rotate a role's pair (a new key pair; the services of that role pick it up "
        "when they restart, and the servers refuse the old key from then on)."))
    parser.add_argument("action", nargs="?", default="list", choices=("list", "create", "rotate"))
    parser.add_argument("roles", nargs="*", metavar="ROLE",
                        help="bus, gateway, execution, risk, operator, recorder, notify, "
                             "strategy.NAME")
    _common(parser)
    args = parser.parse_args(argv)
    config, _ = _load(parser, args)
    try:
        for role in args.roles:
            keys.check_role(role)
    except ValueError as exc:
        parser.exit(2, f"ibfleet keys: {exc}\n")
    if args.action == "create":
        keys.ensure_keys(config.state_dir, [*keys.FIXED_ROLES, *args.roles])
    elif args.action == "rotate":
        if not args.roles:
            parser.exit(2, "ibfleet keys rotate: name the role(s) to rotate\n")
        for role in args.roles:
            keys.create_keypair(keys.keys_dir(config.state_dir), role, replace=True)
            print(f"rotated {role}: restart its processes to use the new key")
    listed = keys.list_keys(config.state_dir)
    print(f"keys in {keys.keys_dir(config.state_dir)} "
          f"({'in use' if config.bus.auth else 'not in use: bus.auth is off'}):")
    for role, public in listed.items():
        print(f"  {role:<24} {public.decode()}")
    return 0
