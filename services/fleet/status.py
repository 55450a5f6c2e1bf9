"""What the fleet is doing: processes from supervisord, everything else from the bus.

Heartbeats, the gateway's state, positions, open orders and PnL come from the snapshots the bus
broker, execution and risk serve (the Clone pattern), so ``status`` is a read-only observer.
The latest alerts come from the bus broker's alert log (``services.bus.broker.AlertLog``).
Besides the strategies, execution's reserved books are listed with their positions and
orders: ``unowned`` (what ``ibfleet strategy remove --keep`` handed over) and ``external``
(orders and positions the fleet did not make); a removed strategy is not listed.
"""
from __future__ import annotations

import json
import math
import time
import xmlrpc.client
from dataclasses import dataclass, field

import zmq

from proto.schema import (Alert, GatewayState, Heartbeat, OrderUpdate, PnL, Position,
                          StrategyPosition)
from services.bus import keys
from services.bus import snapshot
from services.bus.broker import alert_count
from services.bus.snapshot import SnapshotTimeout
from services.bus.subscriber import Subscriber
from services.fleet.supervisor import FleetPaths, rpc
from services.model.owners import EXTERNAL, RESERVED_OWNERS, UNOWNED
from services.runtime.config import FleetConfig


@dataclass
class FleetStatus:
    processes: list[dict] = field(default_factory=list)
    heartbeats: dict[str, dict] = field(default_factory=dict)
    gateway: dict = field(default_factory=dict)
    positions: dict[str, dict[str, float]] = field(default_factory=dict)  # strategy -> sym -> q
    open_orders: list[dict] = field(default_factory=list)
    pnl: dict[str, dict[str, float]] = field(default_factory=dict)
    risk: dict[str, str] = field(default_factory=dict)
    broker_positions: dict[str, float] = field(default_factory=dict)
    risk_positions: dict[str, dict[str, float]] = field(default_factory=dict)  # risk's mirror
    unreachable: list[str] = field(default_factory=list)
    #: symbol -> kind -> IB's market data type ("live", "delayed"...), from the gateway's
    #: heartbeat (market_data.py: md_type / md_refused counters)
    market_data: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the bus's alert log, latest first: severity, code, text, src, age_s, count
    alerts: list[dict] = field(default_factory=list)
    #: programs supervisord has never started (disabled: ibgateway without IBC, the
    #: simulator with --gateway...): not listed among the processes
    not_started: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(vars(self))

    def to_json(self) -> str:
        """Strict JSON: a number that is not finite (an order's absent price is NaN on the
        bus) is ``null``."""
        return json.dumps(_finite(self.as_dict()), allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def collect(config: FleetConfig, paths: FleetPaths, timeout: float = 2.0) -> FleetStatus:
    status = FleetStatus()
    now = time.time()
    try:
        for info in rpc(paths).supervisor.getAllProcessInfo():
            if info["statename"] == "STOPPED" and not info["start"]:  # never started
                status.not_started.append(info["name"])
                continue
            uptime = now - info["start"] if info["statename"] == "RUNNING" else 0
            status.processes.append({"name": info["name"], "group": info["group"],
                                     "state": info["statename"], "pid": info["pid"],
                                     "uptime_s": round(uptime, 1),
                                     "description": info["description"]})
    except (OSError, xmlrpc.client.Fault) as exc:
        status.unreachable.append(f"supervisord: {exc}")
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the operator's key
    try:
        bus = config.bus
        for owner, endpoint in (("bus", bus.endpoint("bus-snap")),
                                ("execution", bus.endpoint("execution-snap")),
                                ("risk", bus.endpoint("risk-snap"))):
            sub = Subscriber(ctx, bus.endpoint("bus-out"), ["no-live-data-needed"])
            try:
                state, _ = snapshot.join(ctx, sub, endpoint, "", timeout=timeout)
            except SnapshotTimeout:
                status.unreachable.append(f"{owner}: no snapshot within {timeout:g}s")
                continue
            finally:
                sub.close()
            for topic, msg in state:
                _apply(status, owner, topic, msg, now)
    finally:
        ctx.destroy(linger=0)
    status.alerts.sort(key=lambda a: a["age_s"])
    return status


def _apply(status: FleetStatus, owner: str, topic: str, msg, now: float) -> None:
    if isinstance(msg, Heartbeat):
        status.heartbeats[msg.src] = {"age_s": round(now - msg.ts / 1e9, 1),
                                      "state": msg.state, "counters": dict(msg.counters)}
        if msg.src.startswith("gateway."):
            status.market_data = market_data_types(msg.counters)
    elif isinstance(msg, GatewayState):
        status.gateway = {"state": msg.state, "reason": msg.reason,
                          "reconnects": msg.reconnects, "server_version": msg.server_version}
    elif isinstance(msg, Position) and owner == "bus":
        status.broker_positions[msg.symbol] = msg.quantity
    elif isinstance(msg, StrategyPosition) and owner == "execution":
        status.positions.setdefault(msg.strategy, {})[msg.symbol] = msg.quantity
        status.pnl.setdefault(msg.strategy, {})
        pnl = status.pnl[msg.strategy]
        pnl["realized_net"] = round(pnl.get("realized_net", 0.0) + msg.realized, 2)
        pnl["realized_day"] = round(pnl.get("realized_day", 0.0) + msg.realized_day, 2)
        pnl["commissions"] = round(pnl.get("commissions", 0.0) + msg.commissions, 2)
    elif isinstance(msg, StrategyPosition) and owner == "risk":
        status.risk_positions.setdefault(msg.strategy, {})[msg.symbol] = msg.quantity
    elif isinstance(msg, PnL) and owner == "risk":
        status.pnl.setdefault(msg.strategy, {}).update(
            {"realized": round(msg.realized, 2), "unrealized": round(msg.unrealized, 2)})
        status.risk[msg.strategy] = topic.rsplit(".", 1)[-1]
    elif isinstance(msg, Alert) and owner == "risk" and msg.code == "global_state":
        status.risk["*"] = msg.text
    elif isinstance(msg, Alert) and owner == "bus":
        status.alerts.append({"severity": msg.severity, "code": msg.code, "text": msg.text,
                              "src": msg.src, "age_s": round(now - msg.ts / 1e9, 1),
                              "count": alert_count(topic)})
    elif isinstance(msg, OrderUpdate) and owner == "execution":
        status.open_orders.append({"strategy": msg.strategy, "id": msg.client_order_id,
                                   "symbol": msg.symbol, "side": msg.side,
                                   "quantity": msg.quantity, "filled": msg.filled,
                                   "type": msg.order_type, "price": _price(msg.limit_price),
                                   "stop": _price(msg.stop_price), "state": msg.state})


def _price(value: float) -> float | None:
    """An order's limit or stop price; None where the order has none (NaN on the bus)."""
    return value if math.isfinite(value) else None


def order_price(order: dict) -> str:
    """``@ 101.5``, ``stop 99``, ``stop 99 limit 98.5``, ``@ market``."""
    parts = []
    if order.get("stop") is not None:
        parts.append(f"stop {order['stop']:g}")
    if order.get("price") is not None:
        parts.append(f"limit {order['price']:g}" if parts else f"@ {order['price']:g}")
    return " ".join(parts) or f"@ {order.get('type', 'MKT').lower().replace('mkt', 'market')}"


OWNER_LABELS = {UNOWNED: "(removed strategies' book)", EXTERNAL: "(not the fleet's orders)"}

MARKET_DATA_TYPE_NAMES = {0: "pending", 1: "live", 2: "frozen", 3: "delayed",
                          4: "delayed_frozen"}


def market_data_types(counters: dict[str, int]) -> dict[str, dict[str, str]]:
    """The gateway's ``md_type.SYMBOL.KIND`` (IB's type of each subscription) and
    ``md_refused.SYMBOL.KIND`` (IB's code when it refused one) counters, by symbol and kind."""
    out: dict[str, dict[str, str]] = {}
    for key, value in counters.items():
        for prefix in ("md_type.", "md_refused."):
            if key.startswith(prefix):
                symbol, _, kind = key[len(prefix):].rpartition(".")
                name = (MARKET_DATA_TYPE_NAMES.get(value, str(value)) if prefix == "md_type."
                        else f"refused ({value})")
                out.setdefault(symbol, {})[kind] = name
    return out


def render(status: FleetStatus) -> str:
    lines = ["PROCESSES"]
    for p in status.processes:
        lines.append(f"  {p['name']:<28} {p['state']:<9} pid {p['pid']:<7} "
                     f"up {p['uptime_s']:>8.0f}s")
    gw = status.gateway
    lines.append(f"GATEWAY  {gw.get('state', 'unknown')}  {gw.get('reason', '')}  "
                 f"reconnects {gw.get('reconnects', 0)}")
    if status.market_data:
        lines.append("MARKET DATA  " + "  ".join(
            f"{symbol} {'/'.join(f'{k} {t}' for k, t in sorted(kinds.items()))}"
            for symbol, kinds in sorted(status.market_data.items())))
    lines.append("HEARTBEATS (age, gaps)")
    for src, hb in sorted(status.heartbeats.items()):
        gaps = hb["counters"].get("gaps", 0)
        lines.append(f"  {src:<28} {max(0.0, hb['age_s']):>6.1f}s  {hb['state']:<9} gaps {gaps}")
    lines.append(f"RISK  global {status.risk.get('*', 'unknown')}")
    # each strategy: risk's state, then the strategy's own (its heartbeat: what it applied).
    # The bus keeps a removed strategy's last heartbeat: the strategies listed are risk's
    # (it knows each running one from its first heartbeat, and forgets a removed one) and
    # execution's owners; only without risk's snapshot are the heartbeats' names listed
    own = {src.partition(".")[2]: hb["state"] for src, hb in status.heartbeats.items()
           if src.startswith("strategy.")}
    risk_seen = not any(p.startswith("risk:") for p in status.unreachable)
    heard = set() if risk_seen else set(own)
    for name in sorted((set(status.pnl) | set(status.positions) | heard) - RESERVED_OWNERS):
        pnl = status.pnl.get(name, {})
        pos = ", ".join(f"{s} {q:g}" for s, q in status.positions.get(name, {}).items()) or "flat"
        lines.append(f"  {name:<20} {status.risk.get(name, '?'):<9} "
                     f"strategy {own.get(name, '?'):<9} "
                     f"realized {pnl.get('realized', 0):>10.2f} "
                     f"unrealized {pnl.get('unrealized', 0):>10.2f}  {pos}")
    for name in sorted(RESERVED_OWNERS & (set(status.pnl) | set(status.positions))):
        pnl = status.pnl.get(name, {})
        pos = ", ".join(f"{s} {q:g}" for s, q in status.positions.get(name, {}).items()) or "flat"
        lines.append(f"  {name:<20} {OWNER_LABELS[name]:<28} "
                     f"realized {pnl.get('realized', 0):>10.2f} "
                     f"unrealized {pnl.get('unrealized', 0):>10.2f}  {pos}")
    lines.append(f"OPEN ORDERS ({len(status.open_orders)})")
    for o in status.open_orders[:20]:
        lines.append(f"  {o['strategy']:<12} {o['id']:<28} {o['side']:<4} {o['quantity']:g} "
                     f"{o['symbol']} {order_price(o)}  {o['state']} filled {o['filled']:g}")
    if status.alerts:
        lines.append(f"ALERTS ({len(status.alerts)}, latest first)")
    for a in status.alerts[:10]:
        repeats = f" (x{a['count']})" if a["count"] > 1 else ""
        lines.append(f"  {_age(a['age_s']):>7} ago  {a['severity']:<8} {a['code']:<24} "
                     f"{a['text']}{repeats}")
    for problem in status.unreachable:
        lines.append(f"! {problem}")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
