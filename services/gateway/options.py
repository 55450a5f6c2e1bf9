"""The gateway's tuning: defaults suit a real TWS / IB Gateway; tests make them fast.

Precedence: the command line, then the fleet config's ``[gateway]`` (host, port, client_id,
live, account and the tuning keys of services.runtime.settings.GatewayConfig.TUNING, which are this
class's fields), then the defaults below. ``validate`` holds the result to the config file's
rules: types and ranges, loopback only, a live port only with ``gateway.live = true``.
"""
from __future__ import annotations

import dataclasses

from services.runtime.config import ConfigError, FleetConfig, GatewayConfig
from services.runtime.decoding import decode


@dataclasses.dataclass
class GatewayOptions:
    host: str = "127.0.0.1"
    port: int = 7497
    client_id: int = 1
    live: bool = False
    #: the account the bridge must land on ("" : any paper account unless live); accounts.py
    account: str = ""
    #: the reconnect backoff, after a failed handshake and 326 only: while the gateway is
    #: gone its port is probed every 150 ms instead (connection.py, ``PortProbe``)
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    connect_timeout: float = 10.0   # TCP + handshake + nextValidId
    probe_interval: float = 10.0    # inbound silence before a reqCurrentTime probe
    probe_timeout: float = 5.0
    rate: float = 45.0              # outgoing messages per second (IB: 50)
    depth_rows: int = 10
    mkt_data_lines: int = 100
    depth_subscriptions: int = 3
    tick_by_tick_subscriptions: int = 5
    account_updates: bool = True
    #: a reconciliation waits this long for completedOrdersEnd (older servers never send
    #: it), then ends with ``completed_included=False``; counted from the request's send
    completed_timeout: float = 10.0
    #: reqMarketDataType on every connection: auto (live, falling back to delayed when IB
    #: refuses live data), live, frozen, delayed, delayed_frozen (market_data.py)
    market_data_type: str = "auto"

    @classmethod
    def from_config(cls, cfg: FleetConfig, **overrides) -> "GatewayOptions":
        """The config's [gateway] (tuning included), then the ``overrides`` that are not None."""
        g = cfg.gateway
        base = cls(host=g.host, port=g.port, client_id=g.client_id, live=g.live,
                   account=g.account, **g.tuning())
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self, source: str = "gateway options (config file and command line)"
                 ) -> "GatewayOptions":
        """These options, or ConfigError: the config file's rules applied to the result."""
        checked = decode(dataclasses.asdict(self), GatewayConfig, source=source, at="gateway")
        try:
            checked.validate()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        return self
