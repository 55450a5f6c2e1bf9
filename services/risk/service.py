"""The risk process: the only way from a strategy to execution.

Sockets:
- ``risk`` ROUTER (reliable): OrderIntent from ``strategy.NAME`` (for strategy NAME only) and
  Control (kill switch, pause/resume, flatten) from anyone local. An approved intent is
  acknowledged only after execution has acknowledged it (durably journaled), so an
  acknowledgement to a strategy always means "in execution's hands".
- ``execution`` DEALER (reliable): approved intents and kill/flatten controls.
- bus SUB: ``md.tick.``, ``md.quote.`` (marks), ``ord.update.`` (fills and open orders),
  ``gw.state``, ``acct.pos`` (the gateway's positions, checked after every reconciliation).
- ``risk-snap`` ROUTER: per-strategy trading state and PnL (for ``ibfleet status``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import tomllib
from pathlib import Path

from proto.schema import (Ack, Alert, Control, GatewayState, Message, OrderIntent, OrderUpdate, PnL,
                          Position, QuoteTick, RiskDecision, SubscribeRequest, Tick)
from services.bus import snapshot
from services.bus.reliable import DEFER, Refused, ReliableClient, ReliableServer, Token
from services.bus.snapshot import SnapshotServer, SnapshotTimeout
from services.bus.subscriber import Subscriber
from services.risk.engine import ACTIVE, HALTED, REDUCING, RiskEngine
from services.risk.limits import LimitBook
from services.runtime.cli import add_common_args, load_config
from services.runtime.config import ConfigError, FleetConfig
from services.runtime.instruments import Instruments
from services.runtime.service import Service

TOPICS = ("md.tick.", "md.quote.", "ord.update.", "gw.state", "acct.pos")
CONTROL_STATES = {"kill": HALTED, "resume_all": ACTIVE, "pause": HALTED, "resume": ACTIVE}


class RiskService(Service):
    def __init__(self, config: FleetConfig, strategies_dir: Path | None = None) -> None:
        super().__init__("risk", config)
        self.engine = RiskEngine(LimitBook.from_config(config.raw, strategies_dir),
                                 Instruments(config.raw.get("instruments")))
        self.state_file = config.service_state_dir("risk") / "trading_state.json"
        self._load_trading_state()
        bus = config.bus
        self.server = ReliableServer(self.ctx, bus.endpoint("risk"), self.source,
                                     self._on_request)
        self.execution = ReliableClient(self.ctx, bus.endpoint("execution"), self.source,
                                        resend_after=5.0)
        self.feed = self.track(Subscriber(self.ctx, bus.endpoint("bus-out"), TOPICS))
        self.snapshots = SnapshotServer(self.ctx, bus.endpoint("risk-snap"), self.source,
                                        self._snapshot)
        # marks for every symbol a strategy trades, whatever data the strategy itself uses
        self.strategies_dir = strategies_dir
        self.strategies_seen = _listing(strategies_dir)
        self.watched: set[str] = set(_strategy_symbols(strategies_dir))
        self.waiting: dict[int, tuple[Token, RiskDecision]] = {}  # execution seq -> strategy
        self.gateway_positions: dict[str, float] = {}
        self.check_positions_at = 0.0
        self.on_socket(self.server.socket, self.server.process_ready)
        self.on_socket(self.execution.socket, self._on_execution_reply)
        self.on_socket(self.feed.socket, self._on_feed)
        self.on_socket(self.snapshots.socket, self.snapshots.process_ready)
        self.every(1.0, self._housekeeping)
        self.every(2.0, self._subscribe_marks)

    def _subscribe_marks(self) -> None:
        """Subscription requests ride PUB/SUB: repeat them; the gateway de-duplicates.
        A strategy added to the running fleet brings its budget and symbols: pick them up."""
        listing = _listing(self.strategies_dir)
        if listing != self.strategies_seen:
            self.strategies_seen = listing
            try:
                self.engine.limits.load_strategy_budgets(self.strategies_dir)
            except ConfigError as exc:
                self.log.error("strategy risk budget refused", extra={"error": str(exc)})
            self.watched |= set(_strategy_symbols(self.strategies_dir))
            self.log.info("strategy budgets reloaded", extra={"symbols": sorted(self.watched)})
        for symbol in sorted(self.watched):
            self.publisher.publish(SubscribeRequest(requester=self.source, symbol=symbol,
                                                    kind="tick"))

    def on_start(self) -> None:
        self._restore_from_execution()

    # -- STATE THAT MUST SURVIVE A RESTART ----------------------------------------------------
    def _load_trading_state(self) -> None:
        """The kill switch stays thrown across a restart of risk."""
        try:
            saved = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.log.error("trading state unreadable; starting halted", extra={"error": str(exc)})
            self.engine.global_state = HALTED
            return
        self.engine.global_state = saved.get("global", ACTIVE)
        for name, state in saved.get("strategies", {}).items():
            self.engine.book(name).state = state

    def _save_trading_state(self) -> None:
        data = {"global": self.engine.global_state,
                "strategies": {n: b.state for n, b in self.engine.strategies.items()}}
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def _restore_from_execution(self) -> None:
        """Positions and open orders from execution's snapshot, not from memory."""
        bus = self.config.bus
        for owner, endpoint, prefix in (("execution", bus.endpoint("execution-snap"),
                                         "ord.update."),
                                        ("bus", bus.endpoint("bus-snap"), "gw.state")):
            try:
                state, live = snapshot.join(self.ctx, self.feed, endpoint, prefix, timeout=3.0)
            except SnapshotTimeout:
                self.log.warning("no snapshot yet; continuing from live data",
                                 extra={"owner": owner})
                continue
            for _, msg in state + live:
                self._apply(msg, restoring=True)

    # -- REQUESTS -----------------------------------------------------------------------------
    def _on_request(self, msg: Message, peer: str):
        if isinstance(msg, Control):
            return self._control(msg, peer)
        if not isinstance(msg, OrderIntent):
            raise Refused(f"risk does not take {type(msg).__name__}")
        if not peer.startswith("strategy.") or peer.split(".", 1)[1] != msg.strategy:
            raise Refused(f"{peer!r} may not send intents for strategy {msg.strategy!r}")
        self.counters["checks"] += 1
        if msg.symbol and msg.symbol not in self.watched and msg.symbol in self.engine.instruments:
            self.watched.add(msg.symbol)
            self._subscribe_marks()
        decision = self.engine.check(msg)
        reply = RiskDecision(strategy=msg.strategy, client_order_id=msg.client_order_id,
                             approved=decision.approved, reason=decision.reason,
                             text=decision.text)
        if not decision.approved:
            self.counters[f"rejected_{decision.reason}"] += 1
            self.publisher.publish(reply)
            return [reply]
        self.engine.approved(msg)
        seq = self.execution.send(msg)
        self.waiting[seq] = (self.server.current, reply)
        return DEFER

    def _control(self, msg: Control, peer: str) -> list[Message]:
        self.log.warning("control", extra={"command": msg.command, "target": msg.target,
                                           "peer": peer, "reason": msg.reason})
        state = CONTROL_STATES.get(msg.command)
        if state is not None:
            self.engine.set_state(msg.target if msg.command in ("pause", "resume") else "",
                                  state)
            self._save_trading_state()
        if msg.command in ("kill", "flatten"):
            self.execution.send(Control(command=msg.command, target=msg.target,
                                        reason=msg.reason))
        self.publisher.publish(Alert(severity="critical" if msg.command == "kill" else "info",
                                     code=f"control_{msg.command}",
                                     text=f"{msg.command} {msg.target or 'all'} by {peer}"))
        return []

    def _on_execution_reply(self) -> None:
        """An intent execution acknowledged is in its hands: now acknowledge the strategy."""
        for msg in self.execution.poll():
            if not isinstance(msg, Ack) or msg.ref_src != self.source:
                continue
            waiting = self.waiting.pop(msg.ref_seq, None)
            if waiting is None:
                continue
            token, reply = waiting
            if msg.ok:
                self.counters["approved"] += 1
            else:
                reply.approved, reply.reason, reply.text = (False, "execution_refused",
                                                            msg.error)
            self.publisher.publish(reply)
            self.server.complete(token, [reply])
        self.execution.nacked.clear()

    # -- BUS ----------------------------------------------------------------------------------
    def _on_feed(self) -> None:
        for msg in self.feed.drain(1000):
            self._apply(msg)

    def _apply(self, msg: Message, restoring: bool = False) -> None:
        if isinstance(msg, (Tick, QuoteTick)):
            self.engine.on_mark(msg.symbol, msg.bid, msg.ask)
        elif isinstance(msg, OrderUpdate):
            self.engine.on_update(msg)
        elif isinstance(msg, PnL) and restoring and msg.strategy:
            self.engine.restore_position(msg)
        elif isinstance(msg, GatewayState):
            if msg.state in ("disconnected", "connecting"):
                self.gateway_positions.clear()  # the reconciliation will publish them afresh
            elif msg.state == "synchronised" and self.engine.gateway_state != "synchronised":
                self.check_positions_at = time.monotonic() + 3.0
            self.engine.gateway_state = msg.state
        elif isinstance(msg, Position):
            self.gateway_positions[msg.symbol] = msg.quantity

    def _housekeeping(self) -> None:
        self.execution.resend_stale()
        for name in list(self.engine.strategies):
            self.engine.evaluate_loss(name)
        for strategy, text in self.engine.breaches:
            self.log.error("daily loss limit breached", extra={"strategy": strategy})
            self.publisher.publish(Alert(severity="critical", code="daily_loss",
                                         text=f"{strategy}: {text}"))
            self._save_trading_state()
            if self.engine.limits.for_strategy(strategy).flatten_on_loss:
                self.execution.send(Control(command="flatten", target=strategy,
                                            reason="daily loss limit"))
        self.engine.breaches.clear()
        if self.check_positions_at and time.monotonic() >= self.check_positions_at:
            self.check_positions_at = 0.0
            self._check_positions()
        for name in self.engine.strategies:
            realized, unrealized = self.engine.pnl(name)
            book = self.engine.book(name)
            position = sum(abs(h.quantity) for h in book.holdings.values())
            self.publisher.publish(PnL(strategy=name, realized=realized, unrealized=unrealized,
                                       daily=realized + unrealized, position=position))
        self.counters["global_halted"] = int(self.engine.global_state == HALTED)
        self.counters["reducing"] = sum(b.state == REDUCING
                                        for b in self.engine.strategies.values())
        self.counters["waiting_on_execution"] = len(self.waiting)

    def _check_positions(self) -> None:
        """After a reconciliation, what we believe against what the gateway reports."""
        ours: dict[str, float] = {}
        for book in self.engine.strategies.values():
            for symbol, h in book.holdings.items():
                ours[symbol] = ours.get(symbol, 0.0) + h.quantity
        for symbol in set(ours) | set(self.gateway_positions):
            theirs = self.gateway_positions.get(symbol, 0.0)
            if abs(ours.get(symbol, 0.0) - theirs) > 1e-9:
                text = f"{symbol}: risk holds {ours.get(symbol, 0.0):g}, gateway reports {theirs:g}"
                self.counters["position_mismatches"] += 1
                self.log.error("position mismatch", extra={"symbol": symbol, "detail": text})
                self.publisher.publish(Alert(severity="critical", code="position_mismatch",
                                             text=text))

    def _snapshot(self, prefix: str):
        items = []
        for name, book in self.engine.strategies.items():
            realized, unrealized = self.engine.pnl(name)
            msg = PnL(strategy=name, realized=realized, unrealized=unrealized,
                      daily=realized + unrealized,
                      position=sum(abs(h.quantity) for h in book.holdings.values()))
            msg.src, msg.ts = self.source, time.time_ns()
            items.append((f"risk.{name}.{book.state}", msg))
        msg = Alert(severity="info", code="global_state", text=self.engine.global_state)
        msg.src, msg.ts = self.source, time.time_ns()
        items.append(("risk.global", msg))
        return items, {}


def _listing(strategies_dir: Path | None) -> dict[str, float]:
    if strategies_dir is None:
        return {}
    return {p.name: p.stat().st_mtime for p in Path(strategies_dir).glob("*.toml")}


def _strategy_symbols(strategies_dir: Path | None) -> list[str]:
    if strategies_dir is None:
        return []
    symbols: list[str] = []
    for path in sorted(Path(strategies_dir).glob("*.toml")):
        try:
            symbols += list(tomllib.loads(path.read_text()).get("symbols", []))
        except (OSError, tomllib.TOMLDecodeError):
            pass  # LimitBook reports an unreadable strategy file
    return symbols


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet risk", description="Run the risk service.")
    add_common_args(parser)
    parser.add_argument("--strategies-dir", help="directory of strategy TOML files whose "
                                                 "[risk] tables set per-strategy limits")
    args = parser.parse_args(argv)
    config = load_config(parser, args)
    try:
        service = RiskService(config, Path(args.strategies_dir) if args.strategies_dir else None)
    except ConfigError as exc:
        parser.exit(2, f"ibfleet risk: {exc}\n")
    return service.run()
