"""Units behind tests/gateway/test_gateway_ib_behaviour.py: the depth shadow under IB's
full-book rule, the historical pacer and request journal across processes, the 326 lock-out's
alerts, the exchange of a futures position."""
from __future__ import annotations

import logging
import time
from collections import Counter

from ibapi.contract import Contract

from core.book import OrderBook
from proto.schema import Alert, HistoricalRequest
from services.gateway.con_ids import ConIdNames
from services.gateway.connection import LOCKOUT_CRITICAL_ATTEMPTS, Connection
from services.gateway.history import HistoryDesk
from services.gateway.options import GatewayOptions
from services.gateway.outbox import Outbox
from services.gateway.pacing import HistoricalPacer
from services.gateway.translate import DepthRows
from services.gateway.wrapper import EventQueue


class Pub:
    def __init__(self) -> None:
        self.messages: list = []

    def publish(self, msg) -> None:
        self.messages.append(msg)


def test_the_depth_shadow_counts_rows_as_a_consumers_book_does_under_the_full_book_rule():
    rows, book = DepthRows(5), OrderBook(5)
    for i in range(1, 200):  # inserts at the top of a full side: the last row falls off
        ops = [(0, 0)] if i % 7 or i < 7 else [(0, 0), (2, 3)]  # (operation, position)
        for op, position in ops:
            book.update_depth(position, op, 1, 100.0 + i, 1.0)
            rows.apply(op, 1, position)
    assert book.stale is False
    assert rows.rows[1] == len(book.bids()) == 5
    clear = rows.clear_messages("X")
    assert len(clear) == 5 and all(m.position == 0 and m.operation == 2 for m in clear)
    for m in clear:
        book.update_depth(m.position, m.operation, m.side, m.price, m.size)
    assert book.bids() == [] and rows.rows == [0, 0]


def test_the_historical_pacer_remembers_across_processes(tmp_path):
    path = tmp_path / "pacing.json"
    first = HistoricalPacer(path=path)
    now = time.monotonic()
    first.record(now, ("AAPL", "TRADES"), ("AAPL", "1 D", "1 hour", "TRADES", True, ""))
    second = HistoricalPacer(path=path)  # a new process
    wait, rule = second.decide(time.monotonic(), ("AAPL", "TRADES"),
                               ("AAPL", "1 D", "1 hour", "TRADES", True, ""))
    assert rule == "identical" and 14 < wait <= 15.5
    assert second.decide(time.monotonic(), ("AAPL", "TRADES"),
                         ("AAPL", "2 D", "1 hour", "TRADES", True, ""))[1] == ""
    (tmp_path / "bad.json").write_text("{not json")
    assert HistoricalPacer(path=tmp_path / "bad.json").log == type(first.log)()


def test_the_history_journal_keeps_unanswered_requests_for_the_next_process(tmp_path):
    path = tmp_path / "requests.json"
    desk = HistoryDesk(journal=path)
    desk.add(HistoricalRequest(requester="s", request="a", symbol="AAPL"))
    desk.add(HistoricalRequest(requester="s", request="b", symbol="MSFT", use_rth=False))
    (job,) = [j for j in desk.due(time.monotonic(), lambda s: s == "AAPL")]
    desk.sent(job, 41)
    desk.save()
    assert [j.request.request for j in HistoryDesk(journal=path).waiting] == ["a", "b"]
    desk.finish(41)
    desk.save()  # once its HistoricalEnd is out
    again = HistoryDesk(journal=path)
    assert [(j.request.request, j.request.use_rth) for j in again.waiting] == [("b", False)]
    assert again.restored == 1


def test_a_lasting_326_is_one_warning_then_one_critical_and_few_errors():
    pub, counters = Pub(), Counter()
    conn = Connection(GatewayOptions(client_id=7), EventQueue(), Outbox(45.0), pub, counters,
                      logging.getLogger("t"), on_up=lambda: None, on_down=lambda: None)
    published = [conn.client_id_in_use("in use") for _ in range(3 * LOCKOUT_CRITICAL_ATTEMPTS)]
    assert published[0] == "in use" and [p for p in published if p is not None] == ["in use"]
    assert [(a.severity, a.code) for a in pub.messages if isinstance(a, Alert)] == [
        ("warning", "gateway.client_id_in_use"), ("critical", "gateway.client_id_locked_out")]
    conn._lockout_over()
    assert pub.messages[-1].code == "gateway.client_id_accepted" and conn.lockout is None
    assert conn.client_id_in_use("in use") == "in use"  # a new lock-out: told again


class Resolver:
    def __init__(self) -> None:
        self.known_symbols: dict[int, str] = {}

    def symbol_of(self, contract: Contract) -> str:
        from services.gateway import translate
        return translate.symbol_of(contract, self.known_symbols)


def _fut(exchange: str = "") -> Contract:
    c = Contract()
    c.conId, c.symbol, c.secType, c.currency = 495512563, "ES", "FUT", "USD"
    c.localSymbol, c.exchange = "ESZ6", exchange
    return c


def test_a_futures_report_without_an_exchange_waits_for_ib_to_name_it():
    outbox, resolver, released = Outbox(45.0), Resolver(), []
    names = ConIdNames(outbox, resolver, Counter(), logging.getLogger("t"),
                       lambda: released.append(True))
    got: list[str] = []
    names.name(_fut(), got.append)
    names.name(_fut(), got.append)  # queued behind the first
    assert got == [] and names.busy and len(outbox) == 1
    (rid,) = names.pending

    class Details:
        contract = _fut("CME")
    assert names.on_details(rid, Details()) and names.on_end(rid)
    assert got == ["ESZ6@CME", "ESZ6@CME"] and released == [True] and not names.busy
    names.name(_fut(), got.append)  # learned: at once
    assert got[-1] == "ESZ6@CME" and len(outbox) == 1
    resolver.known_symbols[495512563] = "ESZ6@CME"  # a resolved contract wins, too
    assert names.now(_fut()) == "ESZ6@CME"
