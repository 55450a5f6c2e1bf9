"""Port safety for ``ibfleet up``: before anything starts, every TCP port the fleet must bind
is free, or ``up`` refuses, naming the port and (best effort) the process that holds it.

The ports: the embedded simulator's (``[simulator] port``, when ``up`` runs it, i.e. without
``--gateway``) and, with ``bus.transport = "tcp"``, every bus endpoint. A port held by
something else would otherwise be fatal in the worst way: the simulator cannot bind, and the
gateway bridge connects to whatever listens there (a TWS, another fleet's simulator) and
sends it our orders. The check binds, it never connects: a foreign listener gets no
connection from us.
"""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from services.runtime.config import FleetConfig
from services.runtime.settings import TCP_OFFSETS


@dataclass(frozen=True)
class Need:
    """A port the fleet binds: ``what`` says whose, in the config's words."""

    what: str
    host: str
    port: int


def needed(config: FleetConfig, simulate: bool) -> list[Need]:
    """The TCP ports this fleet will bind (the ipc:// bus binds none)."""
    out: list[Need] = []
    if simulate:
        out.append(Need("the embedded simulator ([simulator] port)", "127.0.0.1",
                        config.simulator.port))
    if config.bus.transport == "tcp":
        for name, offset in TCP_OFFSETS.items():
            out.append(Need(f"the bus endpoint {name} (bus.base_port + {offset})",
                            config.bus.host, config.bus.base_port + offset))
    return out


def bind_error(host: str, port: int) -> OSError | None:
    """None if ``host:port`` can be bound now, else why not. SO_REUSEADDR as the simulator
    (asyncio) and the bus (ZeroMQ) set it: a TIME_WAIT left by an earlier run is no conflict,
    a listener is."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}: {exc}")
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc
    return None


def holder(port: int) -> str:
    """Who listens on TCP ``port`` (any address), as "pid N (command line)"; best effort:
    "" when it cannot tell (another user's process, no /proc)."""
    try:
        import psutil
        listeners = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except Exception:  # noqa: BLE001 - AccessDenied, no /proc: we just cannot tell
        return ""
    found = []
    for conn in listeners:
        if not conn.pid:
            continue
        try:
            cmdline = " ".join(" ".join(psutil.Process(conn.pid).cmdline()).split()) or "?"
        except Exception:  # noqa: BLE001 - gone meanwhile, or not ours to read
            cmdline = "?"
        if len(cmdline) > 160:
            cmdline = cmdline[:157] + "..."
        found.append(f"pid {conn.pid} ({cmdline})")
    return ", ".join(sorted(set(found)))


def problems(config: FleetConfig, simulate: bool) -> list[str]:
    """What stops the fleet from binding its ports, one sentence each ([] if nothing)."""
    out: list[str] = []
    seen: dict[int, Need] = {}
    for need in needed(config, simulate):
        if need.port in seen:
            out.append(f"port {need.port} is both {seen[need.port].what} and {need.what}; "
                       f"give them different ports")
            continue
        seen[need.port] = need
        error = bind_error(need.host, need.port)
        if error is None:
            continue
        if error.errno == errno.EADDRINUSE:
            who = holder(need.port)
            out.append(f"port {need.port} ({need.what}) on {need.host} is already in use"
                       + (f" by {who}" if who else " (by a process we cannot see)")
                       + "; stop it, or choose another port in the config")
        else:
            out.append(f"port {need.port} ({need.what}) on {need.host} cannot be bound: "
                       f"{error.strerror or error}")
    return out
