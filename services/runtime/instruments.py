"""Reference data the trading processes need about an instrument: tick, size increment,
multiplier.

The defaults match the simulator's default universe; a fleet config can add or override
instruments under ``[instruments.SYMBOL]``. An unknown symbol is an error the caller reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.runtime.config import ConfigError


@dataclass(frozen=True)
class InstrumentInfo:
    symbol: str
    min_tick: float
    #: the size increment (IB's ``ContractDetails.sizeIncrement``): an order's quantity is a
    #: whole number of these; 1 share for a stock
    lot_size: float = 1.0
    multiplier: float = 1.0
    currency: str = "USD"

    def on_tick(self, price: float) -> bool:
        ratio = price / self.min_tick
        return math.isfinite(ratio) and abs(ratio - round(ratio)) < 1e-6

    def round_price(self, price: float) -> float:
        decimals = max(0, -int(math.floor(math.log10(self.min_tick))) + 1)
        return round(round(price / self.min_tick) * self.min_tick, decimals)

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


DEFAULTS: dict[str, InstrumentInfo] = {
    info.symbol: info for info in (
        InstrumentInfo("AAPL", 0.01),
        InstrumentInfo("MSFT", 0.01),
        InstrumentInfo("SPY", 0.01),
        InstrumentInfo("ES", 0.25, multiplier=50.0),
        InstrumentInfo("EUR.USD", 0.00005, lot_size=1000.0),
    )
}


class UnknownInstrument(KeyError):
    pass


class Instruments:
    def __init__(self, overrides: dict | None = None) -> None:
        self.by_symbol = dict(DEFAULTS)
        for symbol, values in (overrides or {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"[instruments.{symbol}] must be a table")
            try:
                self.by_symbol[symbol] = InstrumentInfo(symbol=symbol, **values)
            except TypeError as exc:
                raise ConfigError(f"[instruments.{symbol}]: {exc}") from None

    def get(self, symbol: str) -> InstrumentInfo:
        try:
            return self.by_symbol[symbol]
        except KeyError:
            raise UnknownInstrument(symbol) from None

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.by_symbol
