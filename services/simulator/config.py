"""Simulator configuration: defaults, a TOML file, then command-line overrides."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from . import protocol


@dataclass(frozen=True)
class InstrumentSpec:
    symbol: str
    sec_type: str
    con_id: int
    exchange: str
    currency: str
    min_tick: float
    price: float
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: str = ""
    last_trade_date: str = ""      # lastTradeDateOrContractMonth for futures
    long_name: str = ""
    valid_exchanges: str = ""
    time_zone: str = "US/Eastern"
    spread_ticks: int = 1          # typical spread in ticks
    volatility_ticks: float = 1.0  # std-dev of the mid's move per step, in ticks
    level_size: int = 300          # mean displayed size per book level
    trade_probability: float = 0.3 # chance per step that a trade prints
    commission_per_unit: float = 0.005
    commission_min: float = 1.0
    # the trading calendar (sessions.py): "" = by market (XNYS for US stocks, CMES for CME
    # futures, FX for IDEALPRO cash), or XNYS, CMES, FX, NONE (around the clock)
    calendar: str = ""
    # the ISIN IB lists in contract details' secIdList (tag "ISIN"); "" = none (IB sends none
    # for futures and FX: the P176 future in ../shared/fixtures/tws/frames.jsonl has an empty list)
    isin: str = ""
    # hard to borrow: a short sale (a SELL beyond the account's long position) is held,
    # orderStatus PreSubmitted with whyHeld "locate", until the control command `locate`
    # releases it or it is cancelled (docs/simulator.md, F28)
    hard_to_borrow: bool = False


DEFAULT_UNIVERSE: tuple[InstrumentSpec, ...] = (
    # NASDAQ-listed stocks have IB's trading class (and market name) "NMS" (contract details,
    # openOrder and completedOrder in the transcripts of ../shared/fixtures/tws)
    InstrumentSpec("AAPL", "STK", 265598, "SMART", "USD", 0.01, 190.00, primary_exchange="NASDAQ",
                   trading_class="NMS", long_name="APPLE INC",
                   valid_exchanges="SMART,NASDAQ,ARCA,BATS,IEX", isin="US0378331005"),
    InstrumentSpec("MSFT", "STK", 272093, "SMART", "USD", 0.01, 410.00, primary_exchange="NASDAQ",
                   trading_class="NMS", long_name="MICROSOFT CORP",
                   valid_exchanges="SMART,NASDAQ,ARCA,BATS,IEX", isin="US5949181045"),
    # MS (Morgan Stanley) next to MSFT: a symbol that is another's prefix
    InstrumentSpec("MS", "STK", 4948, "SMART", "USD", 0.01, 95.00, primary_exchange="NYSE",
                   long_name="MORGAN STANLEY", valid_exchanges="SMART,NYSE,ARCA,BATS,IEX",
                   isin="US6174464486"),
    InstrumentSpec("SPY", "STK", 756733, "SMART", "USD", 0.01, 500.00, primary_exchange="ARCA",
                   long_name="SPDR S&P 500 ETF TRUST", valid_exchanges="SMART,ARCA,NASDAQ,BATS,IEX",
                   isin="US78462F1030"),
    InstrumentSpec("IBM", "STK", 8314, "SMART", "USD", 0.01, 180.00, primary_exchange="NYSE",
                   long_name="INTL BUSINESS MACHINES CORP", valid_exchanges="SMART,NYSE,ARCA,BATS",
                   isin="US4592001014"),
    InstrumentSpec("ES", "FUT", 495512563, "CME", "USD", 0.25, 5200.00, local_symbol="ESZ6",
                   trading_class="ES", multiplier="50", last_trade_date="20261218",
                   long_name="E-mini S&P 500", valid_exchanges="CME", time_zone="US/Central",
                   level_size=40, commission_per_unit=2.25, commission_min=2.25),
    InstrumentSpec("ES", "FUT", 495512564, "CME", "USD", 0.25, 5250.00, local_symbol="ESH7",
                   trading_class="ES", multiplier="50", last_trade_date="20270319",
                   long_name="E-mini S&P 500", valid_exchanges="CME", time_zone="US/Central",
                   level_size=20, commission_per_unit=2.25, commission_min=2.25),
    InstrumentSpec("EUR", "CASH", 12087792, "IDEALPRO", "USD", 0.00005, 1.08500, local_symbol="EUR.USD",
                   trading_class="EUR.USD", long_name="European Monetary Union Euro",
                   valid_exchanges="IDEALPRO", level_size=1_000_000, commission_per_unit=0.00002,
                   commission_min=2.0),
)


@dataclass(frozen=True)
class SimConfig:
    port: int = 7497
    seed: int = 1
    server_version: int = protocol.DEFAULT_VERSION
    account: str = "DU1234567"
    cash: float = 1_000_000.0
    start_time: float | None = None      # epoch seconds of the simulated clock's start; None = now
    control: str | None = None           # ZeroMQ endpoint of the control socket
    state_dir: str | None = None         # keep the account here across restarts; None = in memory
    # the account's zone: execution and completed-order times are written in it, as a real
    # gateway does (a US paper account: US/Eastern or America/New_York)
    time_zone: str = "America/New_York"
    # the gateway host's zone, written in the handshake's connection time and used for zone-less
    # ExecutionFilter times (a Windows-hosted gateway writes e.g. "Central European Standard
    # Time"); "" = time_zone
    host_zone: str = ""
    # the account's market-data permission: "live" (a paid API subscription), "delayed" (only
    # IB's free delayed data: reqMktData needs reqMarketDataType(3/4)), "none" (no data at all)
    market_data: str = "live"
    # market
    step_ms: float = 100.0               # one step of every price process
    mktdata_ms: float = 250.0            # reqMktData sampling interval (IB: 250 ms for stocks)
    pnl_ms: float = 1000.0
    depth_levels: int = 10
    mean_reversion: float = 0.0         # per-step pull of every mid towards its opening price
    rtb_seconds: int = 5
    history_delay_ms: float = 0.0        # historical answers are sent after this delay
    # when a fill's commissionReport goes out (docs/simulator.md, fidelity row F26):
    # "normal" right after the fill's orderStatus, "early" right after its execDetails (before
    # the orderStatus), "late" commission_delay seconds after the fill, "missing" never (not in
    # a reqExecutions answer either)
    commission_timing: str = "normal"
    commission_delay: float = 3.0        # seconds, for commission_timing "late"
    # trading sessions (sessions.py): "off" = the market trades around the clock and historical
    # bars cover every hour of every day (the test suite's default); "on" = the exchange
    # calendars: historical bars honour useRTH and leave out weekends and holidays, orders
    # outside RTH without outsideRth are held, DAY orders are cancelled at the close.
    # whatToShow=SCHEDULE always answers from the calendar.
    sessions: str = "off"
    # limits
    max_msgs_per_sec: int = 50
    pacing_strikes: int = 3              # consecutive violating seconds before a disconnect
    mkt_data_lines: int = 100
    depth_subscriptions: int = 3
    tick_by_tick_subscriptions: int = 5
    hist_identical_seconds: float = 15.0
    hist_burst_count: int = 6             # requests for one contract ...
    hist_burst_seconds: float = 2.0       # ... within this window are a violation
    hist_total_count: int = 60
    hist_total_seconds: float = 600.0
    # faults
    reset_repeat_seconds: float = 2.0     # how often 1100 is repeated during a server reset
    schedule: tuple[dict[str, Any], ...] = ()
    instruments: tuple[InstrumentSpec, ...] = DEFAULT_UNIVERSE
    # market replay (replay.py): catalog datasets that drive the market instead of the walk
    market: tuple[str, ...] = ()
    catalog: str | None = None           # the catalog's root; None = `ibfleet data`'s default
    speed: float = 1.0                   # replay speed factor on event times; 0 = unpaced
    market_wait: str = "subscriber"      # replay starts: now, at the first subscriber, at depth

    def with_overrides(self, **kw: Any) -> "SimConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


COMMISSION_TIMINGS = ("normal", "early", "late", "missing")
_SECTIONS = ("server", "market", "limits", "faults", "account")


def load(path: str | Path | None) -> SimConfig:
    """Read a TOML file. Top-level keys or [server]/[market]/[limits]/[faults]/[account] tables
    map onto SimConfig fields (``[account] market_data = "delayed"``; a top-level ``account``
    string is still the account code); [[instruments]] replaces the universe; [[schedule]] lists timed faults."""
    cfg = SimConfig()
    if path is None:
        return cfg
    data = tomllib.loads(Path(path).read_text())
    known = {f.name for f in fields(SimConfig)}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS and isinstance(value, dict):
            flat.update(value)
        elif key not in ("instruments", "schedule"):
            flat[key] = value
    unknown = set(flat) - known
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    if "instruments" in data:
        flat["instruments"] = tuple(InstrumentSpec(**spec) for spec in data["instruments"])
    if "schedule" in data:
        flat["schedule"] = tuple(dict(item) for item in data["schedule"])
    return replace(cfg, **flat)


def validate(cfg: SimConfig) -> None:
    if not protocol.MIN_SERVED <= cfg.server_version <= protocol.MAX_SERVED:
        raise ValueError(f"server version must be {protocol.MIN_SERVED}..{protocol.MAX_SERVED} "
                         f"(201+: protobuf, docs/simulator.md)")
    from .encoders import zone_info
    for name in (cfg.time_zone, cfg.host_zone or cfg.time_zone):
        zone_info(name)  # ValueError: unknown time zone
    if cfg.market_data not in protocol.MARKET_DATA_PERMISSIONS:
        raise ValueError(f"market_data must be one of {', '.join(protocol.MARKET_DATA_PERMISSIONS)}, "
                         f"not {cfg.market_data!r}")
    if cfg.step_ms <= 0 or cfg.mktdata_ms <= 0:
        raise ValueError("step_ms and mktdata_ms must be positive")
    if cfg.speed < 0 or cfg.speed != cfg.speed:
        raise ValueError("speed must be >= 0 (0: as fast as the clients read)")
    if cfg.commission_timing not in COMMISSION_TIMINGS:
        raise ValueError(f"commission_timing must be one of {', '.join(COMMISSION_TIMINGS)}")
    if not cfg.commission_delay >= 0:
        raise ValueError("commission_delay must be >= 0 seconds")
    if cfg.sessions not in ("off", "on"):
        raise ValueError("sessions must be off or on")
    for spec in cfg.instruments:
        if spec.calendar and spec.calendar.upper() not in ("XNYS", "CMES", "FX", "NONE"):
            raise ValueError(f"{spec.symbol}: calendar must be XNYS, CMES, FX or NONE, not {spec.calendar!r}")
    if cfg.market_wait not in ("now", "subscriber", "depth"):
        raise ValueError("market_wait must be now, subscriber or depth")
    ids = [i.con_id for i in cfg.instruments]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate conId in the instrument universe")
