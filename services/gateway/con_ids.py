"""Bus symbols for the contracts IB reports (positions, executions, open and completed orders).

A bus symbol names a future or an option by IB's local symbol on an exchange (``ESZ6@CME``,
contracts.py). IB's reports carry the contract without that exchange at times: a futures
position comes with an empty exchange (../shared/fixtures/tws/frames.jsonl, "position ES FUT":
``ES FUT 20250919 ... "" USD ESU5``), and naming it from that gives ``ESU5@``, a symbol nobody
subscribes to or trades. The exchange is filled, in this order, from:

1. the gateway's resolved contracts (``ContractResolver``: the conId -> bus symbol of
   everything subscribed, traded or looked up);
2. what this module learned earlier in the process: any report of the same conId that named
   its exchange, or IB's contract details asked by conId (3);
3. IB, asked by conId (``reqContractDetails``) when neither knows it: a position waits for the
   answer (``name``'s callback), the ones after it for the same conId queue behind it, so
   their order holds, and a reconciliation run ends only after them. An error answers with
   the symbol as IB wrote it (counted, logged); a lost connection drops the waiting positions
   (the next session's reconciliation reports them again).

Executions, open and completed orders are named at once (``known``, else as IB wrote them):
IB names the exchange in those (the execution venue, the order's exchange), and holding them
would reorder them with their commissions and statuses.

Stocks and currency pairs are named without an exchange (``AAPL``, ``EUR.USD``).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from ibapi.contract import Contract

from services.gateway import translate
from services.gateway.contracts import ContractResolver
from services.gateway.outbox import Outbox

NO_EXCHANGE_NEEDED = frozenset({"STK", "CASH"})


class ConIdNames:
    def __init__(self, outbox: Outbox, contracts: ContractResolver, counters: Counter,
                 log: logging.Logger, on_released: Callable[[], None] = lambda: None) -> None:
        self.on_released = on_released  # after the reports waiting for one answer went out
        self.outbox = outbox
        self.contracts = contracts
        self.counters = counters
        self.log = log
        self.exchanges: dict[int, str] = {}   # conId -> exchange learned (2)
        self.pending: dict[int, int] = {}     # req id -> conId asked at IB
        #: conId -> (the contract as IB reported it, the callbacks waiting for its name)
        self.waiting: dict[int, tuple[Contract, list[Callable[[str], None]]]] = {}

    def known(self, contract: Contract) -> str | None:
        """The bus symbol, if it can be told without asking IB."""
        con_id = int(contract.conId or 0)
        if con_id in self.contracts.known_symbols:
            return self.contracts.known_symbols[con_id]
        if con_id in self.waiting:
            return None  # a report of it is waiting for IB: this one queues behind it
        if contract.secType in NO_EXCHANGE_NEEDED or not con_id:
            return self.contracts.symbol_of(contract)
        if contract.exchange:
            self.exchanges.setdefault(con_id, contract.exchange)
            return self.contracts.symbol_of(contract)
        exchange = self.exchanges.get(con_id)
        if exchange:
            self.counters["exchange_filled"] += 1
            return self._named(contract, exchange)
        return None

    def name(self, contract: Contract, then: Callable[[str], None]) -> None:
        """Call ``then(symbol)`` now if the symbol is known, else once IB has said."""
        symbol = self.known(contract)
        if symbol is not None:
            then(symbol)
            return
        con_id = int(contract.conId)
        if con_id in self.waiting:
            self.waiting[con_id][1].append(then)
            return
        self.waiting[con_id] = (contract, [then])
        self.counters["exchange_lookups"] += 1
        rid = self.outbox.req_id()
        self.pending[rid] = con_id
        query = Contract()
        query.conId = con_id
        self.outbox.submit("contract by conId", lambda c: c.reqContractDetails(rid, query))

    @property
    def busy(self) -> bool:
        """Reports are waiting for IB's answer (a reconciliation run ends after them)."""
        return bool(self.waiting)

    # -- IB's answers (the gateway routes contractDetails / End / errors for our ids here) --
    def on_details(self, req_id: int, details) -> bool:
        con_id = self.pending.get(req_id)
        if con_id is None:
            return False
        exchange = getattr(details.contract, "exchange", "") or ""
        if exchange and int(details.contract.conId or 0) == con_id:
            self.exchanges[con_id] = exchange
        return True

    def on_end(self, req_id: int) -> bool:
        con_id = self.pending.pop(req_id, None)
        if con_id is None:
            return False
        exchange = self.exchanges.get(con_id, "")
        if not exchange:
            self.counters["exchange_unknown"] += 1
            self.log.warning("IB named no exchange for a contract it reported",
                             extra={"con_id": con_id})
        self._release(con_id, exchange)
        return True

    def request_error(self, req_id: int, code: int, text: str) -> bool:
        con_id = self.pending.pop(req_id, None)
        if con_id is None:
            return False
        self.counters["exchange_unknown"] += 1
        self.log.warning("contract by conId refused; reported as IB wrote it",
                         extra={"con_id": con_id, "code": code, "text": text})
        self._release(con_id, "")
        return True

    def now(self, contract: Contract) -> str:
        """The symbol without waiting: known, else as IB wrote it."""
        return self.known(contract) or self.contracts.symbol_of(contract)

    def on_lost(self) -> None:
        """The socket died: IB will not answer. The waiting reports are dropped: the next
        session's reconciliation reports them again (named then)."""
        self.pending.clear()
        self.counters["unnamed_reports_dropped"] += sum(len(c) for _, c in self.waiting.values())
        self.waiting.clear()

    def _release(self, con_id: int, exchange: str) -> None:
        contract, callbacks = self.waiting.pop(con_id, (None, []))
        if contract is None:
            return
        symbol = self._named(contract, exchange) if exchange else \
            self.contracts.symbol_of(contract)
        for then in callbacks:
            then(symbol)
        self.on_released()

    def _named(self, contract: Contract, exchange: str) -> str:
        named = Contract()
        named.conId, named.symbol, named.secType = contract.conId, contract.symbol, contract.secType
        named.currency, named.localSymbol = contract.currency, contract.localSymbol
        named.exchange = exchange
        return translate.symbol_of(named, {})
