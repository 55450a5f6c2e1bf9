"""Symbol -> IB Contract: how a bus symbol names an instrument, and the resolved-contract cache.

Bus symbols:
- ``AAPL``            a stock, SMART-routed, USD;
- ``EUR.USD``         a currency pair on IDEALPRO;
- ``ESZ6@CME``        a future (or anything else) by IB local symbol on an exchange;
- ``ES`` with ``[instruments.ES] sec_type = "FUT" exchange = "CME" roll = "..."``: the front
  month of a future by a roll rule (``FrontMonth``): IB lists every expiry, the rule picks one
  and names the day it moves to the next (the roll date), when it is resolved again. A bare
  ``ES`` without that table is IB's stock ``ES`` (Eversource Energy), never a future.
Every symbol is resolved once with reqContractDetails; requests then use the conId, so a
contract is never ambiguous after resolution. The cache outlives reconnects (conIds are stable).

What IB said about it (contract details, and the price bands of its market rule from
reqMarketRule) becomes an ``Instrument`` message on ``ref.instrument.SYMBOL``: the fleet's
reference data (``services/runtime/instruments.py`` mirrors it), published at resolution,
when a market rule arrives, and again on every re-synchronisation and every
``REPUBLISH_S``.

``ContractBook`` is the cache (pure); ``ContractResolver`` asks IB and tells the concerns
waiting on a symbol (market data, history, held orders) when it is resolved or unknown.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ibapi.contract import Contract

from proto.schema import Instrument
from services.gateway import translate
from services.gateway.outbox import Outbox

#: how often every resolved instrument is published again (a restarted bus lost its cache)
REPUBLISH_S = 30.0
#: ``roll = "volume"``: IB gives no volumes with contract details, so the volume roll is
#: approximated by the equity-index convention (volume moves to the next quarter about eight
#: days before expiry, the Thursday before the third Friday's week)
VOLUME_ROLL_DAYS = 8


@dataclass(frozen=True)
class FrontMonth:
    """A front-month rule: ``days_before_expiry=N`` (roll N calendar days before the last
    trade date) or ``volume`` (see ``VOLUME_ROLL_DAYS``)."""

    rule: str
    days: int

    @classmethod
    def parse(cls, rule: str) -> "FrontMonth":
        rule = (rule or "volume").strip()
        if rule == "volume":
            return cls(rule, VOLUME_ROLL_DAYS)
        name, _, value = rule.partition("=")
        if name.strip() == "days_before_expiry":
            try:
                days = int(value)
            except ValueError:
                days = -1
            if days >= 0:
                return cls(f"days_before_expiry={days}", days)
        raise ValueError(f"roll {rule!r}: 'volume' or 'days_before_expiry=N' (N >= 0)")

    def roll_date(self, last_trade_date: str) -> dt.date:
        return _date(last_trade_date) - dt.timedelta(days=self.days)

    def pick(self, contracts: list, today: dt.date) -> tuple[Any, dt.date] | None:
        """Of IB's expiries (anything with ``lastTradeDateOrContractMonth``), the front one
        today and its roll date: the earliest whose roll date is after today."""
        dated = sorted((c for c in contracts if _has_date(c.lastTradeDateOrContractMonth)),
                       key=lambda c: c.lastTradeDateOrContractMonth)
        for c in dated:
            roll = self.roll_date(c.lastTradeDateOrContractMonth)
            if roll > today:
                return c, roll
        return None


def _has_date(text: str) -> bool:
    return len(text or "") >= 8 and text[:8].isdigit()


def _date(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def query_for(symbol: str, spec: dict | None = None) -> Contract:
    """The reqContractDetails query a bus symbol stands for (``spec``: its
    ``[instruments.SYMBOL]`` table, if any)."""
    c = Contract()
    spec = spec or {}
    if spec.get("sec_type") and "@" not in symbol:
        c.symbol = spec.get("ib_symbol") or symbol
        c.secType = spec["sec_type"]
        c.exchange = spec.get("exchange") or ("SMART" if spec["sec_type"] == "STK" else "")
        c.currency = spec.get("currency") or "USD"
        c.primaryExchange = spec.get("primary_exchange") or ""
        if c.secType == "CASH":
            c.exchange = spec.get("exchange") or "IDEALPRO"
        return c
    if "@" in symbol:
        local, _, exchange = symbol.partition("@")
        c.localSymbol, c.exchange = local, exchange
    elif "." in symbol:
        base, _, quote = symbol.partition(".")
        c.symbol, c.secType, c.currency, c.exchange = base, "CASH", quote, "IDEALPRO"
    else:
        c.symbol, c.secType, c.currency, c.exchange = symbol, "STK", "USD", "SMART"
    return c


def trading_contract(details_contract: Contract, query: Contract) -> Contract:
    """The contract to trade and subscribe with: the conId plus the routing exchange we asked."""
    c = Contract()
    c.conId = details_contract.conId
    c.symbol = details_contract.symbol
    c.secType = details_contract.secType
    c.currency = details_contract.currency
    c.localSymbol = details_contract.localSymbol
    c.exchange = query.exchange or details_contract.exchange
    c.lastTradeDateOrContractMonth = details_contract.lastTradeDateOrContractMonth
    c.multiplier = details_contract.multiplier
    return c


def canonical_symbol(symbol: str, contract: Contract) -> str:
    """The one fleet name of a contract in IB's reports (positions, executions of orders
    the fleet did not make): a future is ``LOCAL@EXCHANGE`` even when a front-month alias
    (``ES``) resolved it, so two names of one contract never make two positions."""
    if contract.secType in ("STK", "CASH") or not contract.localSymbol:
        return symbol
    return f"{contract.localSymbol}@{contract.exchange}"


def _float(value: Any, default: float) -> float:
    try:
        out = float(str(value)) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) and 0 < out < 1e300 else default


def rule_for(details: Any, exchange: str) -> int | None:
    """The market rule of ``exchange`` (IB lists one rule id per valid exchange, in order)."""
    ids = [x.strip() for x in (getattr(details, "marketRuleIds", "") or "").split(",")]
    exchanges = [x.strip() for x in (getattr(details, "validExchanges", "") or "").split(",")]
    pick = ids[exchanges.index(exchange)] if exchange in exchanges \
        and exchanges.index(exchange) < len(ids) else (ids[0] if ids else "")
    try:
        return int(pick)
    except ValueError:
        return None


def api_size(sec_type: str, value: Any) -> float:
    """An order-size rule (minSize, sizeIncrement) as it holds for API orders: a stock's
    contract details say 0.0001 (IB trades fractions of a share; captured, G200 AAPL), but an
    API order for a fraction is refused with 321 "Order size does not conform to market
    rule" (vnpy/vnpy_ib issue 75), so a stock trades whole shares here; others as IB says."""
    size = _float(value, 1.0)
    return max(size, 1.0) if sec_type == "STK" else size


def instrument_message(symbol: str, details: Any, contract: Contract,
                       bands: list[tuple[float, float]] | None,
                       front: tuple[FrontMonth, dt.date] | None = None) -> Instrument:
    """The fleet's reference data for ``symbol`` from IB's contract details."""
    c = details.contract
    return Instrument(
        symbol=symbol, con_id=int(c.conId), sec_type=c.secType, exchange=contract.exchange,
        primary_exchange=c.primaryExchange or "", currency=c.currency or "USD",
        local_symbol=c.localSymbol or "", trading_class=c.tradingClass or "",
        multiplier=_float(c.multiplier, 1.0), min_tick=_float(details.minTick, 0.01),
        price_bands=list(bands or []), market_rule_ids=details.marketRuleIds or "",
        size_increment=api_size(c.secType, getattr(details, "sizeIncrement", None)),
        min_size=api_size(c.secType, getattr(details, "minSize", None)),
        trading_hours=details.tradingHours or "", liquid_hours=details.liquidHours or "",
        time_zone_id=details.timeZoneId or "",
        last_trade_date=c.lastTradeDateOrContractMonth or "", long_name=details.longName or "",
        roll_rule=front[0].rule if front else "",
        roll_date=front[1].strftime("%Y%m%d") if front else "",
    )


@dataclass
class Pending:
    symbol: str
    query: Contract
    found: list[Contract] = field(default_factory=list)
    details: list[Any] = field(default_factory=list)
    front: FrontMonth | None = None


class ContractBook:
    """Resolved contracts by symbol, and the resolutions in flight by request id."""

    def __init__(self, specs: dict | None = None,
                 today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.timezone.utc).date(),
                 ) -> None:
        self.resolved: dict[str, Contract] = {}
        self.pending: dict[int, Pending] = {}
        self.failed: dict[str, str] = {}
        #: ``[instruments.SYMBOL]`` tables: how a symbol is named at IB
        self.specs = {k: v for k, v in (specs or {}).items() if isinstance(v, dict)}
        self.today = today
        #: symbol -> (IB's contract details, the front-month rule and roll date if any)
        self.details: dict[str, tuple[Any, tuple[FrontMonth, dt.date] | None]] = {}

    def get(self, symbol: str) -> Contract | None:
        return self.resolved.get(symbol)

    def in_flight(self, symbol: str) -> bool:
        return any(p.symbol == symbol for p in self.pending.values())

    def start(self, req_id: int, symbol: str) -> Contract:
        spec = self.specs.get(symbol) or {}
        query = query_for(symbol, spec)
        front = None
        if query.secType == "FUT" and "@" not in symbol:  # IB lists every expiry: a rule picks
            front = FrontMonth.parse(spec.get("roll") or "volume")
        self.pending[req_id] = Pending(symbol, query, front=front)
        return query

    def add_details(self, req_id: int, details: Any) -> None:
        pending = self.pending.get(req_id)
        if pending is not None:
            pending.found.append(details.contract)
            pending.details.append(details)

    def end(self, req_id: int) -> tuple[str, Contract | None, str] | None:
        """contractDetailsEnd: (symbol, contract or None, error text)."""
        pending = self.pending.pop(req_id, None)
        if pending is None:
            return None
        if pending.front is not None and pending.found:
            today = self.today()
            picked = pending.front.pick([d.contract for d in pending.details], today)
            if picked is None:
                text = (f"no front month for {pending.symbol!r}: every expiry IB lists rolls "
                        f"on or before {today:%Y%m%d} ({pending.front.rule})")
                self.failed[pending.symbol] = text
                return pending.symbol, None, text
            chosen, roll = picked
            index = pending.found.index(chosen)
            pending.found, pending.details = [chosen], [pending.details[index]]
            front = (pending.front, roll)
        else:
            front = None
        if len(pending.found) == 1:
            contract = trading_contract(pending.found[0], pending.query)
            self.resolved[pending.symbol] = contract
            if pending.details:
                self.details[pending.symbol] = (pending.details[0], front)
            self.failed.pop(pending.symbol, None)
            return pending.symbol, contract, ""
        if not pending.found:
            text = f"unknown symbol {pending.symbol!r}: IB has no such contract"
        else:
            names = ", ".join(sorted(c.localSymbol or c.symbol for c in pending.found))
            text = (f"ambiguous symbol {pending.symbol!r}: IB has {len(pending.found)} contracts "
                    f"({names}); name one as LOCAL@EXCHANGE")
        self.failed[pending.symbol] = text
        return pending.symbol, None, text

    def fail(self, req_id: int, text: str) -> str | None:
        """An error for a resolution request: the symbol it was for, if any."""
        pending = self.pending.pop(req_id, None)
        if pending is None:
            return None
        self.failed[pending.symbol] = text
        return pending.symbol

    def abandon_in_flight(self) -> list[str]:
        """The socket died with resolutions outstanding: the symbols to ask again."""
        symbols = sorted({p.symbol for p in self.pending.values()})
        self.pending.clear()
        return symbols

    def due_to_roll(self) -> list[str]:
        """Front-month symbols whose roll date has come: forgotten, to be resolved again."""
        today = self.today()
        due = [s for s, (_, front) in self.details.items() if front and front[1] <= today]
        for symbol in due:
            self.resolved.pop(symbol, None)
            self.details.pop(symbol, None)
        return due


class ContractResolver:
    """Resolves bus symbols at IB, once; names IB's contracts with our bus symbols."""

    def __init__(self, outbox: Outbox, socket_up: Callable[[], bool],
                 on_resolved: Callable[[str], None],
                 on_failed: Callable[[str, str], None],
                 publish: Callable[[Instrument], None] | None = None,
                 specs: dict | None = None, book: ContractBook | None = None) -> None:
        self.outbox = outbox
        self.socket_up = socket_up
        self.on_resolved = on_resolved   # (symbol)
        self.on_failed = on_failed       # (symbol, text)
        self.publish = publish or (lambda msg: None)
        self.book = book or ContractBook(specs)
        self.known_symbols: dict[int, str] = {}  # conId -> bus symbol
        #: IB's market rules: id -> [(low edge, increment)], and the ids asked for
        self.rules: dict[int, list[tuple[float, float]]] = {}
        self.rules_asked: set[int] = set()

    def configured_symbols(self) -> list[str]:
        """The symbols ``[instruments]`` names (resolved at every connection)."""
        return sorted(self.book.specs)

    # -- REFERENCE DATA ----------------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument | None:
        entry = self.book.details.get(symbol)
        contract = self.book.get(symbol)
        if entry is None or contract is None:
            return None
        details, front = entry
        rule = rule_for(details, contract.exchange)
        bands = self.rules.get(rule, []) if rule is not None else []
        return instrument_message(symbol, details, contract, bands, front)

    def publish_instrument(self, symbol: str) -> None:
        msg = self.instrument(symbol)
        if msg is not None:
            self.publish(msg)
        entry = self.book.details.get(symbol)
        contract = self.book.get(symbol)
        if entry is not None and contract is not None:
            rule = rule_for(entry[0], contract.exchange)
            if rule is not None and rule not in self.rules and rule not in self.rules_asked \
                    and self.socket_up():
                self.rules_asked.add(rule)
                self.outbox.submit("contract", lambda c, r=rule: c.reqMarketRule(r))

    def republish(self) -> None:
        """Every resolved instrument again (a re-synchronisation, a timer); a market rule
        not answered yet is asked again."""
        self.rules_asked &= set(self.rules)
        for symbol in sorted(self.book.details):
            self.publish_instrument(symbol)

    def check_rolls(self) -> list[str]:
        """Front-month symbols past their roll date: resolved again (the next expiry)."""
        due = self.book.due_to_roll()
        for symbol in due:
            self.resolve(symbol)
        return due

    def on_market_rule(self, rule_id: int, increments) -> None:
        bands = sorted((float(p.lowEdge), float(p.increment)) for p in increments)
        if self.rules.get(rule_id) == bands:
            return
        self.rules[rule_id] = bands
        for symbol, (details, _) in sorted(self.book.details.items()):
            contract = self.book.get(symbol)
            if contract is not None and rule_for(details, contract.exchange) == rule_id:
                self.publish_instrument(symbol)

    def get(self, symbol: str) -> Contract | None:
        return self.book.get(symbol)

    def resolve(self, symbol: str) -> None:
        """Ask IB (once at a time) unless known; without a socket the next connect asks."""
        if self.book.get(symbol) is not None or self.book.in_flight(symbol):
            return
        if not self.socket_up():
            return
        rid = self.outbox.req_id()
        query = self.book.start(rid, symbol)
        self.outbox.submit("contract", lambda c: c.reqContractDetails(rid, query))

    def symbol_of(self, contract: Contract) -> str:
        return translate.symbol_of(contract, self.known_symbols)

    def on_lost(self) -> None:
        self.book.abandon_in_flight()  # asked again by the re-synchronisation

    # -- CALLBACKS -------------------------------------------------------------------------
    def on_contract_details(self, req_id: int, details) -> None:
        self.book.add_details(req_id, details)

    def on_contract_details_end(self, req_id: int) -> None:
        result = self.book.end(req_id)
        if result is None:
            return
        symbol, contract, text = result
        if contract is None:
            self.on_failed(symbol, text)
            return
        self.known_symbols.setdefault(contract.conId, canonical_symbol(symbol, contract))
        self.publish_instrument(symbol)
        self.on_resolved(symbol)

    def request_error(self, req_id: int, code: int, text: str) -> bool:
        """An IB error for a resolution request: True if it was one (the waiters are told)."""
        symbol = self.book.fail(req_id, f"{code}: {text}")
        if symbol is None:
            return False
        self.on_failed(symbol, f"cannot resolve {symbol!r}: {code} {text}")
        return True
