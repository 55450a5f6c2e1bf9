"""The fleet's configuration: one TOML file, decoded once into typed structures, with
loopback-only defaults.

A bad config is refused at start with a ``ConfigError`` naming the file, the key and what to
do, never half-applied: the shape of each section is in ``services.runtime.settings`` (decoded
strictly by msgspec: no string is taken as a number or a boolean, no unknown key or section is
ignored); the rules beyond types are the sections' ``validate`` methods, and the [risk],
[instruments] and [trading] tables are checked by their owners at load as well.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.runtime.decoding import ConfigError, decode, decode_map, read_toml
from services.runtime.settings import (IB_PORTS, LIVE_PORTS, SIM_PORT, BusConfig, FleetFile,
                                       GatewayConfig, InstrumentSettings, NotifySection,
                                       SimulatorSection, is_loopback)

__all__ = ["IB_PORTS", "LIVE_PORTS", "SIM_PORT", "BusConfig", "ConfigError", "FleetConfig",
           "GatewayConfig", "NotifySection", "SimulatorSection",
           "default_run_dir", "default_state_dir", "ensure_private_dir", "is_loopback", "load"]


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
    #: the embedded simulator ``ibfleet up`` runs without --gateway: its own port
    simulator: SimulatorSection = field(default_factory=SimulatorSection)
    #: where alerts are sent (services/notify): apprise URLs, a minimum severity, rate limits
    notify: NotifySection = field(default_factory=NotifySection)

    def validate(self) -> "FleetConfig":
        self.bus.validate()
        self.gateway.validate()
        self.simulator.validate()
        self.notify.validate()
        return self

    def service_state_dir(self, name: str) -> Path:
        """A private directory for one service's durable state."""
        return ensure_private_dir(self.state_dir / name)


def load(path: str | Path | None = None, run_dir: str | Path | None = None,
         state_dir: str | Path | None = None) -> FleetConfig:
    """Load and validate the fleet config; without a file, the loopback defaults.

    Precedence for the directories: the argument, the file, the environment
    (IBFLEET_RUN_DIR, IBFLEET_STATE_DIR), the default. Raises ConfigError (never anything
    else for a bad file), its message opening with ``config file PATH``.
    """
    raw: dict[str, Any] = read_toml(path, "config file") if path is not None else {}
    source = f"config file {path}" if path is not None else "the default config"
    parsed = decode(raw, FleetFile, source=source)
    bus, gateway = parsed.bus, parsed.gateway
    # the file's text, not Path(text): an empty string counts as unset, as before
    chosen = run_dir or raw.get("bus", {}).get("run_dir") or os.environ.get("IBFLEET_RUN_DIR")
    bus.run_dir = Path(chosen) if chosen else default_run_dir()
    chosen_state = (state_dir or parsed.fleet.state_dir
                    or os.environ.get("IBFLEET_STATE_DIR"))
    fleet = FleetConfig(bus=bus, gateway=gateway, raw=raw, simulator=parsed.simulator,
                        notify=parsed.notify,
                        state_dir=Path(chosen_state) if chosen_state else default_state_dir())
    try:
        fleet.validate()
        _check_owned_sections(raw, source)
    except ConfigError as exc:
        if str(exc).startswith(source):
            raise
        raise ConfigError(f"{source}: {exc}") from None
    return fleet


def _check_owned_sections(raw: dict[str, Any], source: str) -> None:
    """[risk], [instruments] and [trading] are read by the trading processes through their
    owners; refuse a bad one here, in every process, rather than later in one of them."""
    # imported here: these modules import ConfigError from this one
    from services.model.trading_day import TradingDay
    from services.risk.limits import LimitBook
    from services.runtime.instruments import Instruments

    decode_map(raw.get("instruments", {}), InstrumentSettings, source=source,
               at="instruments")
    Instruments(raw.get("instruments"))
    LimitBook.from_config(raw, source=source)
    TradingDay.from_config(raw)
