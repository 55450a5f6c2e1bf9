"""Symbol -> IB Contract: how a bus symbol names an instrument, and the resolved-contract cache.

Bus symbols:
- ``AAPL``            a stock, SMART-routed, USD;
- ``EUR.USD``         a currency pair on IDEALPRO;
- ``ESZ6@CME``        a future (or anything else) by IB local symbol on an exchange.
Every symbol is resolved once with reqContractDetails; requests then use the conId, so a
contract is never ambiguous after resolution. The cache outlives reconnects (conIds are stable).

``ContractBook`` is the cache (pure); ``ContractResolver`` asks IB and tells the concerns
waiting on a symbol (market data, history, held orders) when it is resolved or unknown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ibapi.contract import Contract

from services.gateway import translate
from services.gateway.outbox import Outbox


def query_for(symbol: str) -> Contract:
    """The reqContractDetails query a bus symbol stands for."""
    c = Contract()
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


@dataclass
class Pending:
    symbol: str
    query: Contract
    found: list[Contract] = field(default_factory=list)


class ContractBook:
    """Resolved contracts by symbol, and the resolutions in flight by request id."""

    def __init__(self) -> None:
        self.resolved: dict[str, Contract] = {}
        self.pending: dict[int, Pending] = {}
        self.failed: dict[str, str] = {}

    def get(self, symbol: str) -> Contract | None:
        return self.resolved.get(symbol)

    def in_flight(self, symbol: str) -> bool:
        return any(p.symbol == symbol for p in self.pending.values())

    def start(self, req_id: int, symbol: str) -> Contract:
        query = query_for(symbol)
        self.pending[req_id] = Pending(symbol, query)
        return query

    def details(self, req_id: int, contract: Contract) -> None:
        pending = self.pending.get(req_id)
        if pending is not None:
            pending.found.append(contract)

    def end(self, req_id: int) -> tuple[str, Contract | None, str] | None:
        """contractDetailsEnd: (symbol, contract or None, error text)."""
        pending = self.pending.pop(req_id, None)
        if pending is None:
            return None
        if len(pending.found) == 1:
            contract = trading_contract(pending.found[0], pending.query)
            self.resolved[pending.symbol] = contract
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


class ContractResolver:
    """Resolves bus symbols at IB, once; names IB's contracts with our bus symbols."""

    def __init__(self, outbox: Outbox, socket_up: Callable[[], bool],
                 on_resolved: Callable[[str], None],
                 on_failed: Callable[[str, str], None]) -> None:
        self.outbox = outbox
        self.socket_up = socket_up
        self.on_resolved = on_resolved   # (symbol)
        self.on_failed = on_failed       # (symbol, text)
        self.book = ContractBook()
        self.known_symbols: dict[int, str] = {}  # conId -> bus symbol

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
        self.book.details(req_id, details.contract)

    def on_contract_details_end(self, req_id: int) -> None:
        result = self.book.end(req_id)
        if result is None:
            return
        symbol, contract, text = result
        if contract is None:
            self.on_failed(symbol, text)
            return
        self.known_symbols[contract.conId] = symbol
        self.on_resolved(symbol)

    def request_error(self, req_id: int, code: int, text: str) -> bool:
        """An IB error for a resolution request: True if it was one (the waiters are told)."""
        symbol = self.book.fail(req_id, f"{code}: {text}")
        if symbol is None:
            return False
        self.on_failed(symbol, f"cannot resolve {symbol!r}: {code} {text}")
        return True
