"""The fleet config file's shape: one msgspec Struct per section, decoded strictly.

```toml
[bus]          # BusConfig: where the bus lives
[gateway]      # GatewayConfig: TWS / IB Gateway address, the live opt-in, the bridge's tuning
[fleet]        # FleetSection: state_dir
[risk]         # global limits + [risk.strategies.NAME]; shape in services/risk/limits.py
[instruments.SYMBOL]  # InstrumentSettings: reference data (services/runtime/instruments.py)
[trading]      # TradingSettings: the trading day (services/model/trading_day.py)
[simulator]    # SimulatorSection: the embedded simulator's own port
[notify]       # NotifySection: alerts sent by e-mail, Telegram, Slack... (apprise URLs)
```

Every section and key is optional; an unknown one is refused (``forbid_unknown_fields``),
as is a value of the wrong type (see ``services.runtime.decoding``). The rules that are not
about types (the live-port opt-in, loopback only, CURVE beyond loopback) are the
``validate`` methods, raising ``ConfigError`` with the key and what to do.
"""
from __future__ import annotations

import ipaddress
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from services.runtime.decoding import (ConfigError, Increment, NonNegativeInt, Port,
                                       PositiveFloat, PositiveInt)

LIVE_PORTS = frozenset({7496, 4001})  # TWS live, IB Gateway live
#: every port IB's own software listens on by default: the embedded simulator takes none
IB_PORTS = {7496: "TWS live", 7497: "TWS paper", 4001: "IB Gateway live",
            4002: "IB Gateway paper"}
#: the embedded simulator's own port (``[simulator] port``): not one of IB_PORTS, so a TWS
#: or IB Gateway left running is never mistaken for it, nor it for them
SIM_PORT = 17497

#: the tcp port offsets from ``bus.base_port`` of each named socket
TCP_OFFSETS = {"bus-in": 0, "bus-out": 1, "bus-snap": 2, "risk": 3, "execution": 4,
               "gateway": 5, "execution-snap": 6, "risk-snap": 7, "recorder": 8}


def is_loopback(host: str) -> bool:
    """``localhost``, or an address the ``ipaddress`` module calls loopback (127.0.0.0/8,
    ``::1``; IPv6 may be written in brackets). A name is not an address: ``127.x.example``
    is not loopback however it starts."""
    if host == "localhost":
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BusConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the bus lives. ipc:// under the private run directory by default.

    ``run_dir`` is always set by ``config.load`` (argument, file, environment, default)."""

    run_dir: Union[Path, None] = None
    transport: str = "ipc"  # "ipc" or "tcp"
    host: str = "127.0.0.1"
    #: tcp only: the sockets of TCP_OFFSETS at base_port + offset
    base_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    curve_dir: Union[Path, None] = None  # needed for any tcp host that is not loopback
    heartbeat_ms: Annotated[int, Meta(ge=50)] = 1000  # every service's heartbeat interval
    #: per-role CURVE keys on every bus socket, ipc:// as tcp:// (services/bus/keys.py):
    #: peers are known by the key their connection authenticated with. ``ibfleet up`` and
    #: the test fleet turn it on; off, only sockets built directly (unit tests) run without
    auth: bool = False

    def endpoint(self, name: str) -> str:
        """The endpoint of a named socket: ``bus-in``, ``bus-out``, ``bus-snap``, ``risk``..."""
        if self.transport == "ipc":
            return f"ipc://{self.run_dir / name}"
        if name not in TCP_OFFSETS:
            raise ConfigError(f"no tcp port is assigned to endpoint {name!r}")
        return f"tcp://{self.host}:{self.base_port + TCP_OFFSETS[name]}"

    def validate(self) -> None:
        if self.transport not in ("ipc", "tcp"):
            raise ConfigError(f"bus.transport must be 'ipc' or 'tcp', not {self.transport!r}")
        if self.transport == "tcp":
            if not 1024 <= self.base_port <= 65000:
                raise ConfigError("bus.base_port must be set (1024..65000) for tcp transport")
            if not is_loopback(self.host) and self.curve_dir is None:
                raise ConfigError(f"bus.host {self.host!r} is not loopback: listening beyond "
                                  f"loopback requires CURVE keys (set bus.curve_dir)")


MarketDataTypeName = Literal["auto", "live", "frozen", "delayed", "delayed_frozen"]


class GatewayConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """TWS / IB Gateway: loopback only, the paper port by default, live only by opt-in.

    The tuning keys (``TUNING``) are ``services.gateway.options.GatewayOptions`` fields, set
    here or on the gateway's command line (which wins); unset, GatewayOptions' defaults."""

    host: str = "127.0.0.1"
    port: Port = 7497  # the paper port; the simulator's default
    client_id: Annotated[int, Meta(ge=-2**31, le=2**31 - 1)] = 1  # IB's client id: an int32
    live: bool = False  # explicit opt-in to talk to a live account
    #: the account the bridge must land on (IB's managedAccounts): empty, any paper account
    #: (a code starting with "D", e.g. DU1234567) unless live = true; set, exactly this one
    account: str = ""
    # -- tuning (seconds unless said otherwise)
    backoff_base: Union[PositiveFloat, UnsetType] = UNSET     # first reconnect delay
    backoff_cap: Union[PositiveFloat, UnsetType] = UNSET      # longest reconnect delay
    connect_timeout: Union[PositiveFloat, UnsetType] = UNSET  # TCP + handshake + nextValidId
    probe_interval: Union[PositiveFloat, UnsetType] = UNSET   # silence before a probe
    probe_timeout: Union[PositiveFloat, UnsetType] = UNSET
    #: outgoing messages per second: IB disconnects a client above 50 (TWS API, "Message
    #: rate limitations")
    rate: Union[Annotated[float, Meta(gt=0, le=50)], UnsetType] = UNSET
    depth_rows: Union[PositiveInt, UnsetType] = UNSET
    mkt_data_lines: Union[PositiveInt, UnsetType] = UNSET  # the account's market data lines
    depth_subscriptions: Union[NonNegativeInt, UnsetType] = UNSET
    tick_by_tick_subscriptions: Union[NonNegativeInt, UnsetType] = UNSET
    account_updates: Union[bool, UnsetType] = UNSET
    completed_timeout: Union[PositiveFloat, UnsetType] = UNSET  # wait for completedOrdersEnd
    #: IB's market data type, asked with reqMarketDataType on every connection before any
    #: subscription: "live" (1), "frozen" (2), "delayed" (3), "delayed_frozen" (4), or "auto"
    #: (the default): live, falling back to delayed for good when IB says live data is not
    #: available (354 / 10089); IB sends live data anyway whenever the account has it
    market_data_type: Union[MarketDataTypeName, UnsetType] = UNSET

    TUNING = ("backoff_base", "backoff_cap", "connect_timeout", "probe_interval",
              "probe_timeout", "rate", "depth_rows", "mkt_data_lines", "depth_subscriptions",
              "tick_by_tick_subscriptions", "account_updates", "completed_timeout",
              "market_data_type")

    def tuning(self) -> dict[str, Any]:
        """The tuning keys the file sets, by GatewayOptions field name."""
        return {k: v for k in self.TUNING if (v := getattr(self, k)) is not UNSET}

    def validate(self) -> None:
        if self.port in LIVE_PORTS and not self.live:
            raise ConfigError(f"gateway.port {self.port} is a LIVE trading port; set "
                              f"gateway.live = true in the config (and pass --live) to use it")
        if not is_loopback(self.host):
            raise ConfigError(f"gateway.host {self.host!r} is not loopback; ibfleet only talks "
                              f"to a gateway on this machine (127.0.0.1, ::1 or localhost)")
        if self.account and not self.live and not self.account.startswith("D"):
            raise ConfigError(f"gateway.account {self.account!r} is not a paper account (those "
                              f"start with D); a live account needs gateway.live = true")


class FleetSection(Struct, forbid_unknown_fields=True):
    """``[fleet]``: durable state (journals, the IB order-id sequence), kept across reboots."""

    state_dir: str = ""  # empty: IBFLEET_STATE_DIR, else $XDG_STATE_HOME/ibfleet
    #: strategy code: on the strategy programs' PYTHONPATH (with the project's strategies/),
    #: where `ibfleet strategy new` writes; empty: the project's strategies/ folder
    strategies_dir: str = ""


#: a front-month roll rule (services/gateway/contracts.FrontMonth)
_ROLL = __import__("re").compile(r"volume|days_before_expiry=\d+")


class InstrumentSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    """``[instruments.SYMBOL]`` (services/runtime/instruments.py): with ``min_tick``, the
    reference data itself (runs without a gateway: backtests, tests; IB's replaces it live);
    ``sec_type``/``exchange``/``ib_symbol``/``roll``: how the gateway resolves the symbol at
    IB (``roll``: a front-month future, ``"volume"`` or ``"days_before_expiry=N"``)."""

    min_tick: Union[Increment, None] = None  # price increment; None: IB's
    lot_size: Increment = 1.0  # quantity increment
    multiplier: PositiveFloat = 1.0  # contract multiplier (ES: 50)
    currency: Annotated[str, Meta(min_length=1)] = "USD"
    price_bands: list[tuple[float, float]] = []  # IB's market rule: (low edge, increment)
    min_size: float = 0.0
    sec_type: Literal["", "STK", "FUT", "CASH", "IND", "CFD", "CONTFUT"] = ""
    exchange: str = ""
    primary_exchange: str = ""
    ib_symbol: str = ""  # IB's symbol when the fleet's name differs (ES_FRONT -> ES)
    roll: str = ""

    def __post_init__(self) -> None:
        # reference data without its tick is a mistake, not a resolution table
        if self.min_tick is None and (self.lot_size != 1.0 or self.multiplier != 1.0
                                      or self.price_bands or self.min_size):
            raise TypeError("Object missing required field `min_tick`")
        if self.roll and not _ROLL.fullmatch(self.roll.strip()):
            raise ValueError(f"roll {self.roll!r}: 'volume' or 'days_before_expiry=N'")


class TradingSettings(Struct, forbid_unknown_fields=True):
    """``[trading]``: ``day_roll`` a time ("17:00" or a TOML time), ``zone`` an IANA zone;
    their meaning is checked by services.model.trading_day.TradingDay.from_config."""

    day_roll: Any = "17:00"
    zone: str = "America/New_York"

    def __post_init__(self) -> None:
        if not isinstance(self.day_roll, (str, time)):
            raise TypeError('day_roll must be a time such as "17:00" (a string or a TOML time)')


class SimulatorSection(Struct, forbid_unknown_fields=True):
    """``[simulator]``: the embedded simulator ``ibfleet up`` runs without ``--gateway``.

    ``port``: where it listens on 127.0.0.1 (and the bridge connects): its own port, never
    one of IB_PORTS; ``ibfleet up`` refuses to start while anything else holds it.
    ``sessions``: ``"on"`` trades the exchanges' hours as IB does (orders outside them held,
    DAY orders cancelled at the close, no data while closed: docs/simulator.md, "Trading
    sessions"); ``"off"`` (default) trades around the clock, so a fleet shows trading at any
    hour of any day."""

    port: Port = SIM_PORT
    sessions: Literal["off", "on"] = "off"

    def validate(self) -> None:
        if self.port in IB_PORTS:
            raise ConfigError(f"simulator.port {self.port} is IB's {IB_PORTS[self.port]} port; "
                              f"the simulator takes a port of its own (default {SIM_PORT}), "
                              f"so it is never mistaken for TWS / IB Gateway")


Severity = Literal["info", "warning", "critical"]  # proto.schema.Alert's severities


class NotifySection(Struct, forbid_unknown_fields=True, kw_only=True):
    """``[notify]``: alerts sent out by the notifier (services/notify) through apprise.

    ``urls``: apprise URLs (``mailto://user:pass@host:port?to=ops@example.com``,
    ``tgram://TOKEN/CHAT``, ``slack://...``); empty, the notifier does not run.
    ``min_severity``: the lowest severity sent. ``repeat_s``: an alert (same source, code
    and text) sent again at most this often; its repeats meanwhile are counted and the
    count goes with the next one. ``max_per_minute``: every notification, all kinds."""

    urls: list[Annotated[str, Meta(min_length=1)]] = []
    min_severity: Severity = "warning"
    repeat_s: Annotated[float, Meta(ge=0, le=86400)] = 300.0
    max_per_minute: Annotated[int, Meta(ge=1, le=1000)] = 10

    def validate(self) -> None:
        for url in self.urls:
            if "://" not in url:
                raise ConfigError(f"notify.urls: {url.split(':', 1)[0]!r}... is not an apprise "
                                  f"URL (SCHEME://..., e.g. mailto://host?to=ops@example.com)")


class FleetFile(Struct, forbid_unknown_fields=True):
    """The whole file. ``risk`` and ``instruments`` are tables decoded by their owners (a
    named table at a time, so an error names the strategy or the symbol)."""

    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    fleet: FleetSection = msgspec.field(default_factory=FleetSection)
    risk: dict[str, Any] = {}
    instruments: dict[str, Any] = {}
    trading: TradingSettings = msgspec.field(default_factory=TradingSettings)
    simulator: SimulatorSection = msgspec.field(default_factory=SimulatorSection)
    notify: NotifySection = msgspec.field(default_factory=NotifySection)
