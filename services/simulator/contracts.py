"""The instrument universe and how a client's Contract description resolves against it.

Contract details as IB sends them: trading and liquid hours for the week ahead in the
exchange's zone (``YYYYMMDD:HHMM-YYYYMMDD:HHMM;YYYYMMDD:CLOSED``), one market rule id per valid
exchange, and the rules' price bands (``MARKET_RULES``, served by reqMarketRule)."""
from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import Callable
from zoneinfo import ZoneInfo

from .config import InstrumentSpec

#: market rule id -> IB's price bands [(low edge, increment)]: US stocks tick 0.0001 below
#: $1 and 0.01 from $1 (SEC rule 612); other rules have one band of the instrument's tick
MARKET_RULES: dict[int, list[tuple[float, float]]] = {
    26: [(0.0, 0.0001), (1.0, 0.01)],
    67: [(0.0, 0.25)],
    239: [(0.0, 0.00005)],
}
_RULE_BY_TICK = {0.25: 67, 0.00005: 239}


def market_rule_of(spec: InstrumentSpec) -> int:
    """The market rule of an instrument of the universe (a new tick gets a rule of its own)."""
    if spec.sec_type == "STK" and spec.currency == "USD" and spec.min_tick == 0.01:
        return 26
    rule = _RULE_BY_TICK.get(spec.min_tick)
    if rule is None:
        rule = 1000 + len(MARKET_RULES)
        MARKET_RULES[rule] = [(0.0, spec.min_tick)]
        _RULE_BY_TICK[spec.min_tick] = rule
    return rule


#: sessions by instrument type: (trading open, trading close, liquid open, liquid close) in
#: the exchange's zone; an open after the close starts the evening before (CME Globex)
SESSIONS = {"STK": ("0400", "2000", "0930", "1600"),
            "FUT": ("1700", "1600", "0830", "1500"),
            "CASH": ("1715", "1700", "1715", "1700")}


#: contract details' orderTypes by instrument type, IB's own strings. US stocks: what a paper IB
#: Gateway sent at server version 200 for AAPL (April 2026; ../shared/fixtures/tws/frames.jsonl,
#: source G200, "contractDetails AAPL STK", field 16). CME futures: what TWS sent at server
#: version 176 for a CME future (DA, March 2024; frames.jsonl, source P176, "msg 10
#: (test_request_contract_details_returns_expected)", field 15). FX (IDEALPRO): no capture; the
#: simulator's earlier short list stands (docs/simulator.md, F20).
ORDER_TYPES: dict[str, str] = {
    "STK": ("ACTIVETIM,AD,ADDONT,ADJUST,ALERT,ALGO,ALLOC,AON,AVGCOST,BASKET,BENCHPX,CASHQTY,COND,"
            "CONDORDER,DARKONLY,DARKPOLL,DAY,DEACT,DEACTDIS,DEACTEOD,DIS,DUR,GAT,GTC,GTD,GTT,HID,"
            "IBKRATS,ICE,IMB,IOC,LIT,LMT,LOC,MIDPX,MIT,MKT,MOC,MTL,NGCOMB,NODARK,NONALGO,OCA,OPG,"
            "OPGREROUT,PEGBENCH,PEGMID,POSTATS,POSTONLY,PREOPGRTH,PRICECHK,REL,REL2MID,RELPCTOFS,RPI,"
            "RTH,SCALE,SCALEODD,SCALERST,SIZECHK,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,SWEEP,TRAIL,"
            "TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"),
    "FUT": ("ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,BENCHPX,COND,CONDORDER,DAY,DEACT,"
            "DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,LTH,MIT,MKT,MTL,NGCOMB,NONALGO,"
            "OCA,PEGBENCH,SCALE,SCALERST,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,"
            "TRAILMIT,WHATIF"),
}
OTHER_ORDER_TYPES = "ACTIVETIM,ADJUST,ALERT,GTC,IOC,LMT,MKT,STP,STPLMT,DAY"
#: contract details' (minSize, sizeIncrement, suggestedSizeIncrement) by secType, as IB sends
#: them (server version 164+): a US stock 0.0001 / 0.0001 / 100 (the G200 AAPL frame: IB
#: trades fractions of a share, though not through the API: ``whole_shares_only``), a
#: future 1 / 1 / 1 (the P176 frame); others (FX, no capture) 1 / 1 / 1
SIZE_RULES = {"STK": ("0.0001", "0.0001", "100")}
OTHER_SIZE_RULES = ("1", "1", "1")


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

    def __init__(self, spec: InstrumentSpec, index: int,
                 clock: list[Callable[[], float]] | None = None,
                 calendars: list[bool] | None = None) -> None:
        self.spec = spec
        self.clock = clock or [time.time]
        self.calendars = calendars or [False]  # hours from sessions.py's calendars
        rule = market_rule_of(spec)
        self.market_rule = rule
        self.market_rule_ids = ",".join(
            str(rule) for _ in (spec.valid_exchanges or spec.exchange).split(","))
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
        self.order_types = ORDER_TYPES.get(spec.sec_type, OTHER_ORDER_TYPES)
        self.size_rules = SIZE_RULES.get(spec.sec_type, OTHER_SIZE_RULES)
        #: an API order for a fraction of a share is refused with 321 "Order size does not
        #: conform to market rule" (vnpy/vnpy_ib issue 75, 2026: 0.1003 shares), though the
        #: contract details say 0.0001 (fractional trading is not offered through the API:
        #: QuantConnect/Documentation issue 1106)
        self.whole_shares_only = spec.sec_type == "STK"
        #: contract details' secIdList: [(tag, value)], IB's "ISIN" for a stock (G200 AAPL:
        #: one entry, ISIN US0378331005)
        isin = getattr(spec, "isin", "")
        self.sec_ids: list[tuple[str, str]] = [("ISIN", isin)] if isin else []

    def _hours(self, liquid: bool) -> str:
        """IB's hours string for the seven days from today in the exchange's zone."""
        t_open, t_close, l_open, l_close = SESSIONS.get(self.sec_type, SESSIONS["STK"])
        start, end = (l_open, l_close) if liquid else (t_open, t_close)
        try:
            zone = ZoneInfo(self.spec.time_zone)
        except Exception:  # noqa: BLE001 - an unknown zone: UTC, as a bad config would
            zone = dt.timezone.utc
        today = dt.datetime.fromtimestamp(self.clock[0](), zone).date()
        if self.calendars[0]:  # --sessions on: the exchange's real calendar (holidays too)
            return self._calendar_hours(today, liquid, zone)
        out = []
        for n in range(7):
            day = today + dt.timedelta(days=n)
            if day.weekday() >= 5:  # a Sunday-evening open is Monday's session
                out.append(f"{day:%Y%m%d}:CLOSED")
                continue
            first = day - dt.timedelta(days=1) if start > end else day
            out.append(f"{first:%Y%m%d}:{start}-{day:%Y%m%d}:{end}")
        return ";".join(out)

    def _calendar_hours(self, today: dt.date, liquid: bool, zone) -> str:
        from .sessions import calendar_for  # pandas-backed: loaded only with sessions on
        cal = calendar_for(self)
        i = cal.since_day(today)
        by_day = {s.day: s for s in cal.sessions[i:i + 8]}
        out = []
        for n in range(7):
            day = today + dt.timedelta(days=n)
            s = by_day.get(day)
            if s is None:
                out.append(f"{day:%Y%m%d}:CLOSED")
                continue
            a, b = s.bounds(liquid)
            a_, b_ = (dt.datetime.fromtimestamp(t, zone) for t in (a, b))
            out.append(f"{a_:%Y%m%d:%H%M}-{b_:%Y%m%d:%H%M}")
        return ";".join(out)

    def trading_hours(self) -> str:
        return self._hours(False)

    def liquid_hours(self) -> str:
        return self._hours(True)

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
        #: the clock contract details' hours are written from (the broker sets the market's)
        self.clock: list[Callable[[], float]] = [time.time]
        #: [True] with ``sessions = "on"``: hours from the exchange calendars (the broker sets it)
        self.calendars: list[bool] = [False]
        self.instruments = [Instrument(spec, i, self.clock, self.calendars)
                            for i, spec in enumerate(specs)]
        self.by_con_id = {i.con_id: i for i in self.instruments}

    def find(self, q: ContractQuery) -> list[Instrument]:
        return [i for i in self.instruments if i.matches(q)]

    def resolve(self, q: ContractQuery) -> Instrument | None:
        """The single instrument a trading or data request means, or None (unknown/ambiguous)."""
        found = self.find(q)
        return found[0] if len(found) == 1 else None
