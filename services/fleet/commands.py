"""The fleet's operator commands: up, down, status, logs, kill, resume, strategy add/remove."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
import xmlrpc.client
from pathlib import Path

import zmq

from proto.schema import Ack, BrokerOrders, Control, OrderUpdate, StrategyPosition
from services.bus import keys, snapshot
from services.bus.reliable import ReliableClient
from services.bus.snapshot import SnapshotTimeout
from services.bus.subscriber import Subscriber
from services.fleet import ports
from services.fleet.confirm import EXPECTED, STOPPED_STATES, Confirmations
from services.fleet import supervisor as sup
from services.fleet.status import collect, render
from services.runtime import config as fleet_config
from services.model.owners import RESERVED_OWNERS
from services.runtime.config import LIVE_PORTS, ConfigError
from services.strategy import config as strategy_config

EXAMPLE_STRATEGIES = sup.REPO / "strategies"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="fleet config TOML (default: loopback defaults)")
    parser.add_argument("--run-dir", help="the fleet's private run directory")
    parser.add_argument("--state-dir", help="durable state (journals, recordings)")


def _load(parser, args, running_fleet: bool = True) -> tuple[fleet_config.FleetConfig,
                                                              sup.FleetPaths]:
    """``running_fleet``: the fleet ``ibfleet up`` started in the run directory decides how to
    reach it (``supervisor.load_for_fleet``)."""
    try:
        config = (sup.load_for_fleet if running_fleet else fleet_config.load)(
            args.config, args.run_dir, args.state_dir)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    return config, sup.FleetPaths(config)


def _need_running(parser, paths: sup.FleetPaths) -> None:
    if not sup.running(paths):
        parser.exit(1, f"{parser.prog}: no fleet is running in {paths.run_dir}; "
                       f"start one with `ibfleet up`\n")


# -- up / down ----------------------------------------------------------------------------------
class _Interruption:
    """SIGINT / SIGTERM while ``ibfleet up`` (or ``down``) runs, noted and never raised: no
    KeyboardInterrupt lands half way through a step (supervisord spawned, its pid not yet
    known). ``up`` checks it after each step and, once supervisord is spawned, while it
    waits for it; an interrupted ``up`` stops whatever it started (``_stop_started``), so it
    leaves a running fleet or nothing. Installed first thing in ``up``: a Ctrl-C before that
    (Python still loading ibfleet) has started nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, prog: str = "ibfleet up") -> None:
        self.prog = prog
        self.signum = 0
        for sig in self.SIGNALS:
            signal.signal(sig, self._note)

    def _note(self, signum, _frame) -> None:
        self.signum = self.signum or signum  # the first one; more change nothing

    def __bool__(self) -> bool:
        return bool(self.signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def exit(self, text: str) -> int:
        """One line, no traceback; the shell's code for a death by that signal."""
        print(f"{self.prog}: {self.name}: {text}", file=sys.stderr, flush=True)
        return 128 + self.signum


STOP_TIMEOUT_S = 120.0  # supervisord stops each program (stopwaitsecs 10), then itself


def _stop_started(paths: sup.FleetPaths, proc, timeout: float = STOP_TIMEOUT_S) -> int:
    """Stop the supervisord this ``up`` spawned and every process it started, whatever
    point its start reached; returns how many processes it found. Through its XML-RPC
    once it answers (``sup.stop``), else SIGTERM: supervisord then stops what it started
    (each program by process group) and exits; before it has installed its handlers it has
    started nothing, and the signal's default action ends it. Should it not exit in time,
    supervisord is killed and so is, by process group, each process it had started (each
    program runs in a group of its own): nothing of this fleet outlives the call."""
    import subprocess

    import psutil

    def started() -> list:
        try:
            return psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    seen = {p.pid: p for p in started()}
    if proc.poll() is None and sup.running(paths):
        try:
            seen.update((p["pid"], psutil.Process(p["pid"]))
                        for p in sup.rpc(paths).supervisor.getAllProcessInfo() if p["pid"])
        except (OSError, xmlrpc.client.Fault, psutil.Error):
            pass
        try:
            sup.stop(paths, timeout)
        except (sup.FleetError, OSError, xmlrpc.client.Fault):
            pass
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # supervisord is stuck
        seen.update((p.pid, p) for p in started())
        proc.kill()
        proc.wait()
    for child in seen.values():  # the leftovers of a supervisord that died or was killed
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE \
                    and os.getpgid(child.pid) != os.getpgrp():
                os.killpg(os.getpgid(child.pid), signal.SIGKILL)
        except (psutil.Error, OSError):
            pass
    return len(seen)


def up(argv: list[str]) -> int:
    interrupted = _Interruption()  # before anything starts: see its docstring
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
                        help="strategy configs to run (default: the strategies the fleet had when "
                             "it last ran, as `strategy add`/`remove` left them; the first "
                             "time, the three examples in strategies/)")
    parser.add_argument("--no-record", action="store_true", help="do not run the recorder")
    parser.add_argument("--seed", type=int, default=1, help="the simulator's seed")
    parser.add_argument("--market", metavar="DATASET[,DATASET...]",
                        help="market replay: the embedded simulator's market is these catalog "
                             "datasets (`ibfleet sim --market`), at --speed")
    parser.add_argument("--speed", type=float, help="replay speed factor (default 1, 0 = unpaced)")
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
    names = []
    try:
        configs = _fleet_strategy_configs(paths, args.strategies)
        for path in configs:
            names.append(_install_strategy(paths, Path(path), config))
    except ConfigError as exc:
        if interrupted:  # the check was cut short by the signal, not by the file
            return interrupted.exit("interrupted before the fleet started; nothing was started")
        parser.exit(2, f"ibfleet up: {exc}\n")
    _remember_fleet_strategies(paths, {n: str(Path(c).resolve()) for n, c in zip(names, configs)})
    sup.write_fleet_config(paths, config)
    if config.bus.auth:  # every role's key pair, made on first use (services/bus/keys.py)
        keys.ensure_keys(config.state_dir,
                         [*keys.FIXED_ROLES, *(f"strategy.{name}" for name in names)])
    env = sup.environment(paths, config, simulate, not args.no_record, args.crash_max,
                          args.crash_window_s, args.seed)
    if simulate and args.market:  # read by the simulator (services/simulator/__main__.py)
        env.update(IBFLEET_SIM_MARKET=args.market, IBFLEET_SIM_SPEED=str(1.0 if args.speed is None else args.speed))
        # another market, another paper account (fresh each time), its own recording folder
        replay_state = paths.replay_sim_state(args.market)
        shutil.rmtree(replay_state, ignore_errors=True)
        env.update(IBFLEET_SIM_STATE_DIR=str(replay_state),
                   IBFLEET_REC_DIR=str(paths.session_recordings(f"replay-{args.market}")))
    if interrupted:
        return interrupted.exit("interrupted before the fleet started; nothing was started")
    try:
        proc = sup.start(paths, env, interrupted=lambda: bool(interrupted))
    except sup.FleetError as exc:
        parser.exit(1, f"ibfleet up: {exc}\n")
    if interrupted:  # a fleet half up is stopped whole: `up` leaves a fleet or nothing
        _stop_started(paths, proc)
        return interrupted.exit("interrupted while the fleet started; it was stopped, "
                                "no process is left")
    print(f"fleet up in {paths.run_dir} (logs in {paths.logs}); "
          f"{'simulator' if simulate else config.gateway.host}:{config.gateway.port}",
          flush=True)
    if args.detach:
        return 0
    return _watch_until_interrupted(config, paths, proc, interrupted)


def _watch_until_interrupted(config, paths, proc, interrupted: _Interruption) -> int:
    """The live status until SIGINT / SIGTERM (noted by ``interrupted``, installed by
    ``up`` before supervisord was spawned) or supervisord's end; then the fleet is stopped
    whole, whatever else happens (a second Ctrl-C does not cut the stop short)."""
    try:
        while not interrupted and proc.poll() is None:
            text = render(collect(config, paths, timeout=1.0))
            print("\033[2J\033[H" + text + "\n\nCtrl-C stops the fleet.", flush=True)
            for _ in range(20):
                if interrupted or proc.poll() is not None:
                    break
                time.sleep(0.1)
    finally:
        print("\nstopping the fleet...", flush=True)
        _stop_started(paths, proc)
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
    # from here the stop is seen through: a Ctrl-C is noted, not raised, so it cannot leave
    # the stop half done and unreported
    _Interruption("ibfleet down")
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
    if command == "flatten":
        parser.add_argument("--wait", type=float, default=60.0,
                            help="seconds to wait until execution shows the strategy flat "
                                 "with no order working (exit 1 if not)")
    args = parser.parse_args(argv)
    config, _ = _load(parser, args)
    target = getattr(args, "strategy", "")
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the operator's key
    try:
        # what a flatten is about to close, to say so afterwards (None: execution is silent)
        held = _strategy_holdings(ctx, config, target) if command == "flatten" else None
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
        print(f"{name} acknowledged by risk", flush=True)
        if target in RESERVED_OWNERS:  # a book, not a process: nothing to confirm
            print(f"{target} is a book, not a strategy process: execution acts on it alone")
        else:
            confirmations.wait(EXPECTED[command], args.confirm_timeout)  # bounded
            print(confirmations.report(EXPECTED[command], args.confirm_timeout))
        confirmations.close()
        if command == "flatten":
            _report_flatten(parser, ctx, config, target, held, args.wait)
    finally:
        ctx.destroy(linger=0)
    return 0


def _report_flatten(parser, ctx, config, target: str, held, wait: float) -> None:
    """After an acknowledged ``flatten NAME``: wait until execution shows NAME flat with no
    order working, then say what was closed and cancelled (exit 1 if not flat in time)."""
    left = _wait_flat(ctx, config, target, wait)
    if held is None:
        print(f"what {target} held before is unknown (execution did not answer)")
    for line in _describe(held):
        print(("closed " if line.startswith("a position") else "cancelled ") + line)
    if held is not None and not _describe(held):
        print(f"{target} held nothing: no position, no working order")
    if left:
        parser.exit(1, f"{parser.prog}: {target} is not flat after {wait:g}s: "
                       f"{'; '.join(left)}. It stays paused; run the command again\n")
    print(f"{target} is flat, no order working" + ("" if target in RESERVED_OWNERS else
          f"; paused until `ibfleet unpause {target}`"), flush=True)


RISK_WAIT_S = 3.0  # s the kill waits for risk (and execution behind it) before the gateway
KEPT_STATES = ("submitted", "partially_filled")  # a kept exit: working, no cancel asked
_BROKER_LINE = re.compile(r"^clientId (\d+) order (-?\d+) ")


def kill(argv: list[str]) -> int:
    """The kill switch, which nothing in the fleet may block: through risk (which halts
    every strategy and forwards it to execution with each strategy's ``on_kill`` mode:
    entries cancelled, protective exits kept under ``keep_exits``, then IB's global cancel
    if no exit was kept); if risk does not acknowledge within a few seconds (risk or
    execution down), straight to the gateway, which sends IB's global cancel itself (every
    order, exits included: safety first). Then the gateway is asked what still works at the
    broker (every client of the account): the protective exits execution kept are expected
    and reported (``kept: N protective exits``); anything else still working (another
    client's order, a cancel stuck) gets the gateway's global cancel (exits included, said
    so); the command exits non-zero if anything but the kept exits works after
    ``--timeout``."""
    parser = argparse.ArgumentParser(prog="ibfleet kill", description=(
        "The kill switch: halt every strategy and cancel the orders of the account at IB, "
        "the fleet's and any other client's, but the protective exits of strategies whose "
        "on_kill is keep_exits (the default; cancel_all and flatten: everything); with "
        "--flatten, cancel everything, then close every position at market. Works with risk "
        "or execution down (through the gateway: IB's global cancel, exits included)."))
    _common(parser)
    parser.add_argument("--flatten", action="store_true",
                        help="after cancelling, close every position at market (needs execution)")
    parser.add_argument("--reason", default="operator")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait until no order but the kept exits works at the "
                             "broker")
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
            print(f"{command}: acknowledged by risk; execution cancelled "
                  + ("every order and sent IB's global cancel" if args.flatten else
                     "the entries (and every order of on_kill = cancel_all / flatten "
                     "strategies), keeping protective exits (on_kill = keep_exits)"),
                  flush=True)
        else:
            why = f"refused: {risk_error}" if risk_error else \
                f"no answer within {RISK_WAIT_S:g}s"
            print(f"{command}: risk/execution {why}; sending the kill straight to the "
                  f"gateway: IB's global cancel of EVERY order, protective exits included "
                  f"(safety first: positions are left without exits)", file=sys.stderr,
                  flush=True)
        risk.close()
        report, kept, escalated = _broker_orders_after_kill(ctx, config, source, command,
                                                            via_risk, started, deadline)
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
    if escalated:
        print(f"{command}: orders not kept by the fleet still worked: the gateway sent IB's "
              f"global cancel, which cancels the protective exits too (safety first): "
              f"positions may be left without exits", file=sys.stderr)
    print(f"orders working at the broker: {report.working} "
          f"({time.monotonic() - started:.1f}s after the command)")
    print(f"kept: {len(kept)} protective exits")
    for line in kept:
        print(f"  kept: {line}")
    unexpected = [line for line in report.orders if line not in kept]
    for line in unexpected:
        print(f"  still working: {line}")
    if unexpected:
        print(f"{command}: {len(unexpected)} order(s) still working after {args.timeout:g}s",
              file=sys.stderr)
        return 1
    if args.flatten and not via_risk:
        print("flatten: positions were NOT closed: execution did not take the flatten "
              "(only the cancels went through the gateway)", file=sys.stderr)
        return 1
    return 0


def _execution_orders(ctx, config, timeout: float = 2.0) -> list[OrderUpdate] | None:
    """Every owner's open orders in execution's snapshot (None: execution did not answer)."""
    sub = Subscriber(ctx, config.bus.endpoint("bus-out"), ["no-live-data-needed"])
    try:
        state, _ = snapshot.join(ctx, sub, config.bus.endpoint("execution-snap"),
                                 "ord.update.", timeout=timeout)
    except SnapshotTimeout:
        return None
    finally:
        sub.close()
    return [m for _, m in state if isinstance(m, OrderUpdate)]


def _kept_exits(ctx, config) -> set[tuple[int, int]]:
    """(IB client id, IB order id) of the orders execution keeps working after a kill: open
    in its snapshot, working, no cancel asked, not a flatten's closing order. Execution not
    answering: none (everything working is then unexpected: safety first)."""
    orders = _execution_orders(ctx, config)
    if orders is None:
        return set()
    return {(config.gateway.client_id, o.ib_order_id) for o in orders
            if o.state in KEPT_STATES and o.ib_order_id
            and not o.client_order_id.startswith("flatten-")}


def _broker_orders_after_kill(ctx, config, source: str, command: str, via_risk: bool,
                              started: float, deadline: float
                              ) -> tuple[BrokerOrders | None, list[str], bool]:
    """Ask the gateway until nothing but the exits execution kept works at the broker, or
    the deadline passes: (the last answer, None if it never answered; its lines that are
    kept exits; whether the gateway's global cancel was sent because something else still
    worked). Without risk, every question is a kill (a repeated global cancel: every order,
    exits included); with risk, a question only, until another client's order is seen
    working (execution cannot cancel it: only IB's global cancel can) or half the time is
    gone with an order of ours neither kept nor cancelled: then the gateway's global cancel
    too (it cancels the kept exits as well)."""
    gateway = ReliableClient(ctx, config.bus.endpoint("gateway"), source, resend_after=1.0,
                             curve_dir=config.bus.curve_dir)
    escalate_at = started + (deadline - started) / 2
    last: BrokerOrders | None = None
    kept_lines: list[str] = []
    escalate = escalated = not via_risk
    try:
        while time.monotonic() < deadline:
            kill_now = escalate or time.monotonic() >= escalate_at and bool(
                last is None or not last.connected or [ln for ln in last.orders
                                                        if ln not in kept_lines])
            escalated = escalated or kill_now
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
            if last is not None and last.connected:
                kept = _kept_exits(ctx, config) if via_risk and not escalated else set()
                kept_lines = []
                for line in last.orders:
                    match = _BROKER_LINE.match(line)
                    ids = (int(match.group(1)), int(match.group(2))) if match else None
                    if ids in kept:
                        kept_lines.append(line)
                    elif ids is not None and ids[0] != config.gateway.client_id:
                        escalate = True  # another client's: only a global cancel reaches it
                if len(kept_lines) == len(last.orders):
                    return last, kept_lines, escalated and via_risk
            gateway.pending.clear()  # a new question replaces an unanswered one
            time.sleep(0.5)
    finally:
        gateway.close()
    return last, kept_lines, escalated and via_risk


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
#: what the very first `ibfleet up` runs (later ones run what the fleet had: see below)
EXAMPLES = ("imbalance.toml", "mean_reversion.toml", "sma_cross.toml")


def _fleet_strategy_configs(paths: sup.FleetPaths, given: list[str] | None) -> list[str]:
    """The strategy TOMLs `up` starts: ``--strategies`` if given; else those the fleet had
    when it last ran (`up`, `strategy add` and `remove` keep that list, by source path, in
    the state directory: a removed strategy stays removed, a file ``strategy new`` wrote does
    not go live until it is added, and an edited TOML is read afresh); else, the first time,
    the examples."""
    if given is not None:
        return list(given)
    known = _fleet_strategies(paths)
    if known is not None:
        return sorted(known.values())
    return [str(EXAMPLE_STRATEGIES / name) for name in EXAMPLES]


def _fleet_strategies(paths: sup.FleetPaths) -> dict[str, str] | None:
    """name -> source TOML path of the fleet's strategies; None before the first `up`."""
    try:
        return dict(json.loads(paths.fleet_strategies.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{paths.fleet_strategies}: unreadable ({exc}); delete it to start "
                          f"the examples, or pass --strategies") from None


def _remember_fleet_strategies(paths: sup.FleetPaths, names: dict[str, str]) -> None:
    """Write the fleet's strategy list (name -> source path), atomically."""
    paths.fleet_strategies.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.fleet_strategies.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(names.items())), indent=1))
    os.replace(tmp, paths.fleet_strategies)


def _install_strategy(paths: sup.FleetPaths, source: Path,
                      config: fleet_config.FleetConfig | None = None,
                      symbols_at_ib: bool = False) -> str:
    """Check the strategy as the fleet would run it, then put it in the fleet's run
    directory (its TOML, which risk reads its budget from, and its supervisord program).
    Nothing is written unless every check passed (services/fleet/strategies.py): the file
    decoded strictly, the class and its typed [params] loaded by the fleet's own Python and
    environment, and (``symbols_at_ib``, a running fleet) the symbols resolved at IB."""
    from services.fleet import strategies

    config = config or fleet_config.load(None)
    cfg = strategy_config.load(source)
    target = paths.strategies / f"{cfg.name}.toml"
    if target.exists():
        raise ConfigError(f"a strategy named {cfg.name!r} is already in the fleet")
    # a running fleet's programs get supervisord's environment; before `up` starts it, ours
    env = sup.fleet_environment(paths) if sup.running(paths) else dict(os.environ)
    strategies.validate(source, config, env, symbols_at_ib)
    shutil.copyfile(source, target)
    (paths.strategies / f"{cfg.name}.conf").write_text(
        sup.strategy_program(cfg.name, target, sup.strategy_pythonpath(config)))
    return cfg.name


def strategy(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        from services.strategy.runner import main as run_main
        return run_main(argv)
    if argv and argv[0] == "check":
        from services.fleet.strategies import check_main
        return check_main(argv[1:])
    parser = argparse.ArgumentParser(prog="ibfleet strategy", description=(
        "Run a strategy (`run CONFIG`), or add/remove one in the running fleet without "
        "touching the others. Strategy code lives in the fleet's strategies folder (the "
        "project's strategies/, or [fleet] strategies_dir), which is on every strategy's "
        "PYTHONPATH: `new NAME` writes a skeleton there; `add` checks it first."))
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("run", help="run one strategy in the foreground: ibfleet strategy run CONFIG")
    sub.add_parser("check", help="check that a strategy loads in this environment: "
                                 "ibfleet strategy check CONFIG")
    add = sub.add_parser("add", help="add a strategy to the running fleet, once it is checked: "
                                     "its TOML (strictly), its class and typed [params] loaded "
                                     "by the fleet's own Python, its symbols known at IB")
    add.add_argument("strategy_config")
    add.add_argument("--no-symbol-check", action="store_true",
                     help="do not ask IB about the symbols (the gateway is not connected)")
    _common(add)
    new = sub.add_parser("new", help="write a working strategy skeleton, NAME.py (typed "
                                     "Params) and NAME.toml, in the fleet's strategies folder "
                                     "([fleet] strategies_dir, else the project's strategies/)")
    new.add_argument("name")
    new.add_argument("--symbol", default="AAPL", help="the symbol its TOML names (AAPL)")
    _common(new)
    remove = sub.add_parser("remove", help=(
        "stop and remove a strategy from the running fleet; refused while it has a position "
        "or working orders, unless --flatten or --keep"))
    remove.add_argument("name")
    how = remove.add_mutually_exclusive_group()
    how.add_argument("--flatten", action="store_true",
                     help="first cancel its orders and close its positions at market, wait "
                          "(--timeout) until it is flat with no order, then remove it")
    how.add_argument("--keep", action="store_true",
                     help="hand its positions and working orders to the 'unowned' book "
                          "(execution keeps them, risk watches them, status shows them; no "
                          "strategy may trade them), then remove it")
    remove.add_argument("--timeout", type=float, default=60.0,
                        help="seconds --flatten waits for the strategy to be flat")
    _common(remove)
    args = parser.parse_args(argv)
    config, paths = _load(parser, args)
    if args.action == "new":
        return _new_strategy(parser, config, args.name, args.symbol)
    _need_running(parser, paths)
    server = sup.rpc(paths)
    try:
        if args.action == "add":
            try:
                name = _install_strategy(paths, Path(args.strategy_config), config,
                                         symbols_at_ib=not args.no_symbol_check)
            except (ConfigError, sup.FleetError) as exc:
                parser.exit(2, f"ibfleet strategy add: {exc}\n")
            if config.bus.auth:
                keys.ensure_keys(config.state_dir, [f"strategy.{name}"])
            added, _, _ = server.supervisor.reloadConfig()[0]
            for group in added:
                server.supervisor.addProcessGroup(group)
            known = _fleet_strategies(paths) or {}
            known[name] = str(Path(args.strategy_config).resolve())
            _remember_fleet_strategies(paths, known)  # the next `up` starts it too
            print(f"strategy {name} added")
        else:
            return _remove_strategy(parser, args, config, paths, server)
    except xmlrpc.client.Fault as exc:
        parser.exit(1, f"ibfleet strategy: supervisord refused: {exc.faultString}\n")
    return 0


def _new_strategy(parser, config, name: str, symbol: str) -> int:
    """``ibfleet strategy new NAME``: a working skeleton in the fleet's strategies folder."""
    from services.fleet.strategies import write_skeleton
    directory = sup.strategy_code_dirs(config)[0]
    try:
        code, toml = write_skeleton(name, directory, symbol)
    except ConfigError as exc:
        parser.exit(2, f"ibfleet strategy new: {exc}\n")
    print(f"wrote {code} and {toml}\nadd it to the running fleet with: "
          f"ibfleet strategy add {toml}")
    return 0


REMOVE_ACK_TIMEOUT_S = 10.0  # s to wait for risk's (and execution's) acknowledgement


def _remove_strategy(parser, args, config, paths: sup.FleetPaths, server) -> int:
    """``ibfleet strategy remove NAME [--flatten | --keep]``.

    Execution's snapshot says what NAME holds (non-flat positions, working orders). With
    something and neither option: refused (exit 1, listing them), nothing changed.
    ``--flatten``: risk pauses NAME and execution cancels its orders and closes its
    positions at market; the command waits (``--timeout``) until execution shows it flat
    with no order (else exit 1: NAME stays, paused). Then NAME's process is stopped, and a
    ``remove`` control goes to risk, which has execution hand whatever NAME still has (its
    position, its orders, its PnL: ``--keep``) to the reserved ``unowned`` book, journalled,
    and then forgets NAME (no longer listed, its intents refused). Only then are its
    supervisord group and files removed. A failure after the stop leaves NAME stopped, not
    removed, its book its own: the command says so and can be run again."""
    from services.model.owners import RESERVED_OWNERS, UNOWNED

    prog, name = "ibfleet strategy remove", args.name
    group = f"strategy-{name}"
    if name in RESERVED_OWNERS:
        parser.exit(2, f"{prog}: {name!r} is not a strategy (a reserved book)\n")
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the operator's key
    try:
        held = _strategy_holdings(ctx, config, name)
        if held is None:
            parser.exit(1, f"{prog}: execution did not answer: whether {name} has a position "
                           f"or working orders is unknown; nothing was changed\n")
        groups = {info["group"] for info in server.supervisor.getAllProcessInfo()}
        if group not in groups and not _describe(held):
            parser.exit(1, f"{prog}: no strategy named {name!r} in the fleet\n")
        if _describe(held) and not (args.flatten or args.keep):
            parser.exit(1, f"{prog}: refused: strategy {name} has "
                           + "; ".join(_describe(held)) + ". Nothing was changed. Close "
                           f"them first (--flatten: cancel its orders, close at market, "
                           f"then remove) or hand them to the {UNOWNED} book (--keep)\n")
        if args.flatten and _describe(held):
            ok, error = _ask_risk(ctx, config, Control(
                command="flatten", target=name, reason="ibfleet strategy remove --flatten"))
            if not ok:
                parser.exit(1, f"{prog}: the flatten was not taken: {error}; nothing was "
                               f"removed\n")
            print(f"flatten {name}: acknowledged by risk; waiting (up to {args.timeout:g}s) "
                  f"for its orders to end and its positions to close", flush=True)
            left = _wait_flat(ctx, config, name, args.timeout)
            if left:
                parser.exit(1, f"{prog}: {name} is not flat after {args.timeout:g}s: "
                               f"{'; '.join(left)}. It stays in the fleet, paused; run the "
                               f"command again, or use --keep\n")
            print(f"{name} is flat, no order working", flush=True)
        try:  # from here on it sends nothing
            server.supervisor.stopProcessGroup(group)
        except xmlrpc.client.Fault as exc:
            if "BAD_NAME" not in exc.faultString:  # already gone from supervisord: go on
                raise
        held = _strategy_holdings(ctx, config, name) or held  # what is handed over now
        if _describe(held) and not (args.flatten or args.keep):  # it traded meanwhile
            server.supervisor.startProcessGroup(group)
            parser.exit(1, f"{prog}: refused: strategy {name} traded while it was being "
                           f"removed and now has " + "; ".join(_describe(held))
                           + ". It was started again; nothing else was changed\n")
        ok, error = _ask_risk(ctx, config, Control(command="remove", target=name,
                                                   reason="ibfleet strategy remove"))
        if not ok:
            parser.exit(1, f"{prog}: {name} is stopped but NOT removed ({error}): its orders "
                           f"and positions are still its own; run the command again\n")
    finally:
        ctx.destroy(linger=0)
    try:
        server.supervisor.removeProcessGroup(group)
    except xmlrpc.client.Fault as exc:
        if "BAD_NAME" not in exc.faultString:
            raise
    for suffix in (".conf", ".toml"):
        (paths.strategies / f"{name}{suffix}").unlink(missing_ok=True)
    server.supervisor.reloadConfig()
    known = _fleet_strategies(paths) or {}
    if known.pop(name, None) is not None:
        _remember_fleet_strategies(paths, known)  # the next `up` does not start it again
    handed = _describe(held)
    print(f"strategy {name} removed"
          + (f"; handed to the {UNOWNED} book: " + "; ".join(handed) if handed else ""))
    return 0


def _strategy_holdings(ctx, config, name: str
                       ) -> tuple[dict[str, float], list[OrderUpdate]] | None:
    """Execution's snapshot for strategy ``name``: (its non-flat positions by symbol, its
    working orders); None if execution did not answer."""
    sub = Subscriber(ctx, config.bus.endpoint("bus-out"), ["no-live-data-needed"])
    try:
        state, _ = snapshot.join(ctx, sub, config.bus.endpoint("execution-snap"),
                                 f"ord.update.{name}", timeout=5.0, exact=True)
    except SnapshotTimeout:
        return None
    finally:
        sub.close()
    positions = {m.symbol: m.quantity for _, m in state
                 if isinstance(m, StrategyPosition) and m.strategy == name
                 and abs(m.quantity) > 1e-9}
    orders = [m for _, m in state if isinstance(m, OrderUpdate) and m.strategy == name]
    return positions, orders


def _wait_flat(ctx, config, name: str, timeout: float) -> list[str]:
    """Poll execution's snapshot until strategy ``name`` has no position and no working
    order, for up to ``timeout`` s; what it still has (``_describe``), [] once flat."""
    limit = time.monotonic() + timeout
    while True:
        held = _strategy_holdings(ctx, config, name)
        if held is not None and not _describe(held):
            return []
        if time.monotonic() > limit:
            return _describe(held) if held else ["unknown (execution did not answer)"]
        time.sleep(0.5)


def _describe(held) -> list[str]:
    """``["a position of SPY 199", "1 working order: SELL 199 SPY STP stop 480 (...)"]``."""
    if not held:
        return []
    positions, orders = held
    out = [f"a position of {s} {q:g}" for s, q in sorted(positions.items())]
    if orders:
        out.append(f"{len(orders)} working order(s): " + ", ".join(
            f"{o.side} {o.quantity - o.filled:g} {o.symbol} {o.order_type}"
            + (f" stop {o.stop_price:g}" if o.stop_price == o.stop_price else "")
            + (f" limit {o.limit_price:g}" if o.limit_price == o.limit_price else "")
            + f" ({o.client_order_id}, {o.state})" for o in orders))
    return out


def _ask_risk(ctx, config, control: Control, timeout: float = REMOVE_ACK_TIMEOUT_S
              ) -> tuple[bool, str]:
    """Send ``control`` to risk on its reliable socket; (acknowledged, why not)."""
    client = ReliableClient(ctx, config.bus.endpoint("risk"), f"cli.{os.getpid()}",
                            resend_after=1.0)
    try:
        client.send(control)
        deadline = time.monotonic() + timeout
        while client.pending and time.monotonic() < deadline:
            for msg in client.poll(200):
                if isinstance(msg, Ack) and not msg.ok:
                    return False, f"refused: {msg.error}"
        if client.pending:
            return False, f"risk did not answer within {timeout:g}s"
        return True, ""
    finally:
        client.close()


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
