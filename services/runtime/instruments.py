"""Reference data the trading processes need about an instrument: tick (by price band), size
increment, multiplier, hours.

One owner: the gateway, because it is what IB said (contract details and market rules). It
publishes an ``Instrument`` message per symbol on ``ref.instrument.SYMBOL``; the bus's
last-value cache keeps them, so every process gets them by snapshot when it starts and live
afterwards. ``Instruments`` is each process's mirror of those messages (``apply``).

There is no built-in table. ``[instruments.SYMBOL]`` in the fleet config does two things:

- with ``min_tick``: the reference data itself, for runs without a gateway (backtests, unit
  tests), or an operator's deliberate override: it stays, and the gateway's message for that
  symbol is only compared with it (a difference is logged once);
- without ``min_tick``: how the gateway names the contract at IB (``sec_type``, ``exchange``,
  ``roll`` for a front-month future: ``[instruments.ES] sec_type = "FUT" exchange = "CME"
  roll = "volume"``); see ``services/gateway/contracts.py``.

A symbol the mirror does not know is refused by risk (``unknown_symbol``) and by the strategy
base class.
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from services.runtime.config import ConfigError

log = logging.getLogger("instruments")

#: the keys of ``[instruments.SYMBOL]`` that say how to resolve the symbol at IB (the
#: gateway's), not what the instrument is
RESOLUTION_KEYS = ("sec_type", "exchange", "ib_symbol", "roll", "primary_exchange")
#: the reference-data keys ``[instruments.SYMBOL]`` may give (``InstrumentInfo`` fields)
DATA_KEYS = ("min_tick", "lot_size", "multiplier", "currency", "price_bands", "min_size")


@dataclass(frozen=True)
class InstrumentInfo:
    symbol: str
    #: IB's ``minTick`` (the tick at usual prices; without a market rule, the only one)
    min_tick: float
    #: the size increment (IB's ``ContractDetails.sizeIncrement``): an order's quantity is a
    #: whole number of these; 1 share for a stock
    lot_size: float = 1.0
    multiplier: float = 1.0
    currency: str = "USD"
    #: IB's market rule: ``((low_edge, increment), ...)`` ascending by low edge; a price at or
    #: above a low edge (and below the next) is on that band's increment. Empty: ``min_tick``
    price_bands: tuple[tuple[float, float], ...] = ()
    min_size: float = 0.0
    sec_type: str = ""
    con_id: int = 0
    exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    trading_hours: str = ""
    liquid_hours: str = ""
    time_zone_id: str = ""
    last_trade_date: str = ""
    roll_rule: str = ""
    roll_date: str = ""
    #: where it came from: "ib" (the gateway's message) or "config"
    source: str = "config"
    _edges: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        bands = tuple(sorted((float(lo), float(inc)) for lo, inc in self.price_bands))
        object.__setattr__(self, "price_bands", bands)
        object.__setattr__(self, "_edges", tuple(lo for lo, _ in bands))

    def tick_at(self, price: float) -> float:
        """The price increment IB accepts at ``price`` (its market rule's band)."""
        if not self.price_bands:
            return self.min_tick
        i = bisect.bisect_right(self._edges, abs(price) + 1e-12) - 1
        return self.price_bands[max(i, 0)][1]

    def on_tick(self, price: float) -> bool:
        tick = self.tick_at(price)
        ratio = price / tick
        return math.isfinite(ratio) and abs(ratio - round(ratio)) < 1e-6

    def round_price(self, price: float) -> float:
        tick = self.tick_at(price)
        decimals = max(0, -int(math.floor(math.log10(tick))) + 1)
        return round(round(price / tick) * tick, decimals)

    @property
    def size_increment(self) -> float:
        return self.lot_size

    def on_size_increment(self, quantity: float) -> bool:
        """Is ``quantity`` a positive whole number of size increments, exactly as it goes to
        the broker (its shortest decimal form)? 5e-10 and 10.0000000001 shares are not."""
        if not (math.isfinite(quantity) and quantity > 0
                and math.isfinite(self.lot_size) and self.lot_size > 0):
            return False
        if self.lot_size == 1.0:  # whole shares, the usual case: exact for a float
            return quantity < 2.0 ** 53 and float(quantity).is_integer()
        try:
            return Decimal(repr(float(quantity))) % Decimal(repr(float(self.lot_size))) == 0
        except InvalidOperation:  # too many increments to count exactly: not an order size
            return False

    def round_lot(self, quantity: float) -> float:
        return math.floor(quantity / self.lot_size + 1e-9) * self.lot_size

    @classmethod
    def from_message(cls, msg: Any) -> "InstrumentInfo":
        """The mirror of a gateway's ``proto.schema.Instrument``."""
        bands = tuple((float(lo), float(inc)) for lo, inc in msg.price_bands)
        min_tick = msg.min_tick if msg.min_tick > 0 else \
            min((inc for _, inc in bands), default=0.01)
        return cls(symbol=msg.symbol, min_tick=min_tick, lot_size=msg.size_increment or 1.0,
                   multiplier=msg.multiplier or 1.0, currency=msg.currency,
                   price_bands=bands, min_size=msg.min_size, sec_type=msg.sec_type,
                   con_id=msg.con_id, exchange=msg.exchange, local_symbol=msg.local_symbol,
                   trading_class=msg.trading_class, trading_hours=msg.trading_hours,
                   liquid_hours=msg.liquid_hours, time_zone_id=msg.time_zone_id,
                   last_trade_date=msg.last_trade_date, roll_rule=msg.roll_rule,
                   roll_date=msg.roll_date, source="ib")


class UnknownInstrument(KeyError):
    pass


def data_overrides(overrides: dict | None) -> dict[str, dict]:
    """Of ``[instruments]``, the tables that give reference data (``min_tick`` set), with their
    reference-data keys only."""
    out = {}
    for symbol, values in (overrides or {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"[instruments.{symbol}] must be a table")
        if values.get("min_tick"):
            out[symbol] = {k: v for k, v in values.items() if k not in RESOLUTION_KEYS}
    return out


class Instruments:
    """A process's mirror of the fleet's reference data: ``[instruments.SYMBOL]`` tables that
    give it, then the gateway's ``Instrument`` messages (``apply``), which replace them.

    ``default``: for backtests over data without reference data, the template an unknown
    symbol gets (its symbol replaced); live processes have none, so an unknown symbol is an
    ``UnknownInstrument``."""

    def __init__(self, overrides: dict | None = None,
                 default: InstrumentInfo | None = None) -> None:
        self.by_symbol: dict[str, InstrumentInfo] = {}
        self.default = default
        #: symbols that got the default (a backtest reports them)
        self.defaulted: set[str] = set()
        self.overridden: set[str] = set()  # config overrides IB disagreed with (logged)
        for symbol, values in data_overrides(overrides).items():
            try:
                values = dict(values)
                if "price_bands" in values:
                    values["price_bands"] = tuple(tuple(b) for b in values["price_bands"])
                self.by_symbol[symbol] = InstrumentInfo(symbol=symbol, **values)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"[instruments.{symbol}]: {exc}") from None

    def apply(self, msg: Any) -> bool:
        """A gateway's ``Instrument`` message; True if it changed what this mirror knows.
        A ``[instruments.SYMBOL]`` override stays (a difference from IB is logged once)."""
        info = InstrumentInfo.from_message(msg)
        old = self.by_symbol.get(msg.symbol)
        if old is not None and old.source == "config" and msg.symbol not in self.defaulted:
            if (old.min_tick, old.multiplier, old.lot_size) != \
                    (info.min_tick, info.multiplier, info.lot_size) \
                    and msg.symbol not in self.overridden:
                self.overridden.add(msg.symbol)
                log.warning("[instruments] overrides IB's reference data", extra={
                    "symbol": msg.symbol, "config": (old.min_tick, old.multiplier, old.lot_size),
                    "ib": (info.min_tick, info.multiplier, info.lot_size)})
            return False
        if old == info:
            return False
        if old is not None and old.source == "ib" and (
                old.con_id != info.con_id or old.multiplier != info.multiplier):
            log.warning("instrument changed", extra={
                "symbol": msg.symbol, "was": old.local_symbol or old.con_id,
                "now": info.local_symbol or info.con_id, "multiplier": info.multiplier})
        self.by_symbol[msg.symbol] = info
        self.defaulted.discard(msg.symbol)
        return True

    def add(self, info: InstrumentInfo) -> None:
        self.by_symbol[info.symbol] = info

    def get(self, symbol: str) -> InstrumentInfo:
        try:
            return self.by_symbol[symbol]
        except KeyError:
            if self.default is None or not symbol:
                raise UnknownInstrument(symbol) from None
            info = self.by_symbol[symbol] = replace(self.default, symbol=symbol)
            self.defaulted.add(symbol)
            return info

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.by_symbol or (self.default is not None and bool(symbol))

    def symbols(self) -> list[str]:
        return sorted(self.by_symbol)


#: a backtest over data that carries no reference data: a US stock's (0.01, 1 share, x1)
STOCK_DEFAULT = InstrumentInfo("", 0.01)
