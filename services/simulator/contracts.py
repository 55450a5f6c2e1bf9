"""The instrument universe and how a client's Contract description resolves against it."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import InstrumentSpec


@dataclass(frozen=True)
class ContractQuery:
    """The contract block most requests carry (conId .. tradingClass)."""
    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""

    def describe(self) -> str:
        return f"{self.symbol or self.con_id}/{self.sec_type}/{self.exchange}/{self.currency}"


class Instrument:
    """An instrument of the universe with its tick arithmetic."""

    def __init__(self, spec: InstrumentSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.con_id = spec.con_id
        self.symbol = spec.symbol
        self.sec_type = spec.sec_type
        self.min_tick = spec.min_tick
        self.decimals = max(0, -int(math.floor(math.log10(spec.min_tick) + 1e-9)))
        if round(spec.min_tick * 10 ** self.decimals) != spec.min_tick * 10 ** self.decimals:
            self.decimals += 1
        self.multiplier = float(spec.multiplier) if spec.multiplier else 1.0
        self.local_symbol = spec.local_symbol or spec.symbol
        self.trading_class = spec.trading_class or spec.symbol
        self.valid_exchanges = spec.valid_exchanges or spec.exchange

    def price(self, ticks: int) -> float:
        return round(ticks * self.min_tick, self.decimals)

    def fmt(self, ticks: int) -> str:
        return f"{ticks * self.min_tick:.{self.decimals}f}"

    def to_ticks(self, price: float) -> int:
        return int(round(price / self.min_tick))

    def on_tick(self, price: float) -> bool:
        ratio = price / self.min_tick
        return abs(ratio - round(ratio)) < 1e-6

    def matches(self, q: ContractQuery) -> bool:
        s = self.spec
        if q.con_id:
            return q.con_id == s.con_id
        if q.symbol and q.symbol.upper() != s.symbol.upper():
            # EUR.USD-style local symbol given as the symbol
            if q.symbol.upper() != self.local_symbol.upper():
                return False
        if not q.symbol and not q.local_symbol:
            return False
        if q.sec_type and q.sec_type.upper() != s.sec_type:
            return False
        if q.currency and q.currency.upper() != s.currency:
            return False
        if q.local_symbol and q.local_symbol.upper() != self.local_symbol.upper():
            return False
        if q.trading_class and q.trading_class.upper() != self.trading_class.upper():
            return False
        if q.last_trade_date and not (s.last_trade_date.startswith(q.last_trade_date)):
            return False
        if q.multiplier and s.multiplier and float(q.multiplier) != float(s.multiplier):
            return False
        if q.exchange:
            exchanges = {e.upper() for e in self.valid_exchanges.split(",")} | {s.exchange.upper()}
            if q.exchange.upper() not in exchanges:
                return False
        if q.primary_exchange and s.primary_exchange and q.primary_exchange.upper() != s.primary_exchange:
            return False
        return True


class Universe:
    def __init__(self, specs: tuple[InstrumentSpec, ...]) -> None:
        self.instruments = [Instrument(spec, i) for i, spec in enumerate(specs)]
        self.by_con_id = {i.con_id: i for i in self.instruments}

    def find(self, q: ContractQuery) -> list[Instrument]:
        return [i for i in self.instruments if i.matches(q)]

    def resolve(self, q: ContractQuery) -> Instrument | None:
        """The single instrument a trading or data request means, or None (unknown/ambiguous)."""
        found = self.find(q)
        return found[0] if len(found) == 1 else None
