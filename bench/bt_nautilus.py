"""nautilus_trader's BacktestEngine on the events of ``bench_backtest.py`` (run by it, with a
Python that has nautilus_trader: it needs Python 3.12).

    python3.12 bench/bt_nautilus.py top_of_book|imbalance_5 EVENTS_BIN

The IB position rows (``events.bin``) are turned into nautilus's price-level L2 deltas, one
``OrderBookDeltas`` per IB row (an insert is an ADD; a delete a DELETE; an update in place an
UPDATE, or a DELETE and an ADD when its price changed; the row an insert pushes off the
10-row book a DELETE), so the strategy is called once per IB event, as ibfleet's is, and
holds the same 10 rows. A Python ``Strategy`` subscribed to the deltas reads the managed book
from the cache on every event: best bid and ask (top of book), or the size imbalance over
5 levels. Timed: ``engine.run()`` only (the deltas are built and added before); printed as
JSON: events, seconds.
"""
from __future__ import annotations

import json
import struct
import sys
import time

from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import BookOrder, OrderBookDelta, OrderBookDeltas
from nautilus_trader.model.enums import (AccountType, BookAction, BookType, OmsType,
                                         OrderSide, RecordFlag)
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

EVENT = struct.Struct("<qbbidd")
ROWS = 10


class TopOfBook(Strategy):
    def __init__(self, instrument_id) -> None:
        super().__init__()
        self.iid = instrument_id
        self.updates = 0
        self.spread_sum = 0.0

    def on_start(self) -> None:
        self.subscribe_order_book_deltas(self.iid, BookType.L2_MBP)

    def on_order_book_deltas(self, deltas) -> None:
        book = self.cache.order_book(self.iid)
        bid = book.best_bid_price()
        ask = book.best_ask_price()
        self.top = (bid, book.best_bid_size(), ask, book.best_ask_size())
        self.updates += 1
        if bid is not None and ask is not None:
            self.spread_sum += ask.as_double() - bid.as_double()


class Imbalance5(Strategy):
    def __init__(self, instrument_id) -> None:
        super().__init__()
        self.iid = instrument_id
        self.updates = 0
        self.imbalance_sum = 0.0

    def on_start(self) -> None:
        self.subscribe_order_book_deltas(self.iid, BookType.L2_MBP)

    def on_order_book_deltas(self, deltas) -> None:
        book = self.cache.order_book(self.iid)
        b = a = 0.0
        for level in book.bids()[:5]:
            b += level.size()
        for level in book.asks()[:5]:
            a += level.size()
        self.updates += 1
        if b + a:
            self.imbalance_sum += (b - a) / (b + a)


def deltas_from(path: str, iid) -> list[OrderBookDeltas]:
    rows = {0: [], 1: []}  # side -> [(price, size)], IB's rows
    out = []
    seq = 0
    with open(path, "rb") as f:
        data = f.read()
    for t, side, op, pos, price, size in EVENT.iter_unpack(data):
        nside = OrderSide.BUY if side == 1 else OrderSide.SELL
        book = rows[side]
        acts = []
        if op == 0:
            book.insert(pos, (price, size))
            acts.append((BookAction.ADD, price, size))
            if len(book) > ROWS:
                p, s = book.pop()
                acts.append((BookAction.DELETE, p, s))
        elif op == 1:
            old = book[pos]
            book[pos] = (price, size)
            if old[0] == price:
                acts.append((BookAction.UPDATE, price, size))
            else:
                acts.append((BookAction.DELETE, old[0], old[1]))
                acts.append((BookAction.ADD, price, size))
        else:
            p, s = book.pop(pos)
            acts.append((BookAction.DELETE, p, s))
        batch = []
        for j, (action, p, s) in enumerate(acts):
            seq += 1
            flags = RecordFlag.F_LAST if j == len(acts) - 1 else 0
            batch.append(OrderBookDelta(iid, action,
                                        BookOrder(nside, Price(p, 2), Quantity(s, 0), 0),
                                        flags, seq, t, t))
        out.append(OrderBookDeltas(iid, batch))
    return out


def main() -> int:
    workload, path = sys.argv[1], sys.argv[2]
    instrument = TestInstrumentProvider.equity(symbol="AAPL", venue="XNAS")
    iid = instrument.id
    deltas = deltas_from(path, iid)
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR",
                                                                       bypass_logging=True)))
    engine.add_venue(venue=Venue("XNAS"), oms_type=OmsType.NETTING,
                     account_type=AccountType.CASH, base_currency=USD,
                     starting_balances=[Money(1_000_000, USD)], book_type=BookType.L2_MBP)
    engine.add_instrument(instrument)
    engine.add_data(deltas)
    strategy = (TopOfBook if workload == "top_of_book" else Imbalance5)(iid)
    engine.add_strategy(strategy)
    t0 = time.perf_counter()
    c0 = time.process_time()
    engine.run()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"events": strategy.updates, "seconds": elapsed, "cpu": cpu}))
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
