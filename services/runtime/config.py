"""The fleet's configuration: one TOML file, validated once, with loopback-only defaults.

A bad config is refused at start with a message that names the key and says what to do,
never half-applied.
"""
from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIVE_PORTS = frozenset({7496, 4001})  # TWS live, IB Gateway live


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which key and why."""


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        return Path(base) / "ibfleet"
    return Path(f"/tmp/ibfleet-{os.getuid()}")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, or refuse one that others can reach into."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ConfigError(f"run directory {path} belongs to uid {info.st_uid}, not to us; "
                          f"choose another run_dir")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


@dataclass
class BusConfig:
    """Where the bus lives. ipc:// under the private run directory by default."""

    run_dir: Path
    transport: str = "ipc"  # "ipc" or "tcp"
    host: str = "127.0.0.1"
    base_port: int = 0  # tcp only: publish-in, subscribe-out, snapshot at base_port+0..2
    curve_dir: Path | None = None  # needed for any tcp host that is not loopback
    heartbeat_ms: int = 1000

    def endpoint(self, name: str) -> str:
        """The endpoint of a named socket: ``bus-in``, ``bus-out``, ``bus-snap``, ``risk``..."""
        if self.transport == "ipc":
            return f"ipc://{self.run_dir / name}"
        offsets = {"bus-in": 0, "bus-out": 1, "bus-snap": 2, "risk": 3, "execution": 4,
                   "gateway": 5, "execution-snap": 6, "risk-snap": 7, "recorder": 8}
        if name not in offsets:
            raise ConfigError(f"no tcp port is assigned to endpoint {name!r}")
        return f"tcp://{self.host}:{self.base_port + offsets[name]}"

    def validate(self) -> None:
        if self.transport not in ("ipc", "tcp"):
            raise ConfigError(f"bus.transport must be 'ipc' or 'tcp', not {self.transport!r}")
        if self.transport == "tcp":
            if not 1024 <= self.base_port <= 65000:
                raise ConfigError("bus.base_port must be set (1024..65000) for tcp transport")
            if not is_loopback(self.host) and self.curve_dir is None:
                raise ConfigError(f"bus.host {self.host!r} is not loopback: listening beyond "
                                  f"loopback requires CURVE keys (set bus.curve_dir)")
        if self.heartbeat_ms < 50:
            raise ConfigError("bus.heartbeat_ms must be at least 50")


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1" or host == "[::1]"


@dataclass
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 7497  # the paper port; the simulator's default
    client_id: int = 1
    live: bool = False  # explicit opt-in to talk to a live account

    def validate(self) -> None:
        if self.port in LIVE_PORTS and not self.live:
            raise ConfigError(f"gateway.port {self.port} is a LIVE trading port; set "
                              f"gateway.live = true in the config (and pass --live) to use it")
        if not is_loopback(self.host):
            raise ConfigError(f"gateway.host {self.host!r} is not loopback; ibfleet only talks "
                              f"to a gateway on this machine")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ibfleet"


@dataclass
class FleetConfig:
    bus: BusConfig
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    #: durable state (journals, the IB order-id sequence): must survive a reboot, unlike run_dir
    state_dir: Path = field(default_factory=default_state_dir)
    raw: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "FleetConfig":
        self.bus.validate()
        self.gateway.validate()
        return self

    def service_state_dir(self, name: str) -> Path:
        """A private directory for one service's durable state."""
        return ensure_private_dir(self.state_dir / name)


def _section(raw: dict, name: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _build(cls, values: dict, section: str):
    known = set(cls.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from None


def load(path: str | Path | None = None, run_dir: str | Path | None = None,
         state_dir: str | Path | None = None) -> FleetConfig:
    """Load and validate the fleet config; without a file, the loopback defaults.

    Precedence for the directories: the argument, the file, the environment
    (IBFLEET_RUN_DIR, IBFLEET_STATE_DIR), the default.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    bus_raw = dict(_section(raw, "bus"))
    chosen = run_dir or bus_raw.pop("run_dir", None) or os.environ.get("IBFLEET_RUN_DIR")
    bus_raw.pop("run_dir", None)
    bus_raw["run_dir"] = Path(chosen) if chosen else default_run_dir()
    if "curve_dir" in bus_raw:
        bus_raw["curve_dir"] = Path(bus_raw["curve_dir"])
    bus = _build(BusConfig, bus_raw, "bus")
    gateway = _build(GatewayConfig, dict(_section(raw, "gateway")), "gateway")
    fleet = _section(raw, "fleet")
    unknown = set(fleet) - {"state_dir"}
    if unknown:
        raise ConfigError(f"unknown key(s) in [fleet]: {', '.join(sorted(unknown))}")
    chosen_state = state_dir or fleet.get("state_dir") or os.environ.get("IBFLEET_STATE_DIR")
    return FleetConfig(bus=bus, gateway=gateway, raw=raw,
                       state_dir=Path(chosen_state) if chosen_state else default_state_dir()
                       ).validate()
