"""Market replay (services/simulator/replay.py), in process: the replayed market is the
LOBSTER sample's book and clock, orders fill against that book (marketable orders walk its
levels; a resting limit waits for its place in the queue), and a bad --market is refused."""
from __future__ import annotations

import gzip

import pytest

from services.data.catalog import Catalog
from services.data.importers import read
from services.data.sample import SAMPLE, SAMPLE_DIR
from services.simulator.__main__ import main
from services.simulator.broker import Broker
from services.simulator.config import SimConfig
from services.simulator.contracts import ContractQuery
from services.simulator.orders import OrderRequest
from services.simulator.replay import prepare


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    kind, files, options = SAMPLE[0]
    Catalog(root).add(read(kind, [str(SAMPLE_DIR / f) for f in files], options))
    return root


def _file():
    name = next(f for f in SAMPLE[0][1] if "message" in f)
    with gzip.open(SAMPLE_DIR / name, "rt") as h:
        messages = [line.split(",") for line in h]
    name = next(f for f in SAMPLE[0][1] if "orderbook" in f)
    with gzip.open(SAMPLE_DIR / name, "rt") as h:
        books = [[int(c) for c in line.split(",")] for line in h]
    return messages, books


def _broker(catalog):
    cfg, replay = prepare(SimConfig(market=("lobster/AAPL",), catalog=str(catalog)))
    broker = Broker(cfg)
    replay.attach(broker)
    return broker, replay


def _order(order_id, action, qty, price):
    return OrderRequest(order_id=order_id, contract=ContractQuery(symbol="AAPL", sec_type="STK",
                                                                  exchange="SMART", currency="USD"),
                        action=action, total_qty=qty, order_type="LMT", lmt_price=price,
                        aux_price=None)


def test_the_market_is_the_files_book_and_clock(catalog):
    broker, replay = _broker(catalog)
    messages, books = _file()
    aapl = next(i for i in broker.universe.instruments if i.symbol == "AAPL")
    proc = broker.market.processes[aapl.con_id]
    row = books[0]
    assert proc.book.asks[0] == (row[0] // 100, float(row[1]))
    assert proc.book.bids[0] == (row[2] // 100, float(row[3]))
    assert len(proc.book.asks) == len(proc.book.bids) == 10
    assert broker.market.now() == pytest.approx(1340285400.004241, abs=1e-6)  # 09:30 New York
    for k in range(1, len(books)):
        replay._apply(k, emit=True)
    row = books[-1]
    assert [p for p, _ in proc.book.asks] == [row[4 * i] // 100 for i in range(10)]
    assert [s for _, s in proc.book.bids] == [float(row[4 * i + 3]) for i in range(10)]
    assert broker.market.now() == pytest.approx(34249.086375027 - 34200.004241176
                                                + 1340285400.004241176, abs=1e-6)
    prints = [m for m in messages if m[1] in ("4", "5", "6")]
    assert replay.stats["prints"] == len(prints) - (messages[0][1] in ("4", "5", "6"))
    assert proc.volume == sum(float(m[3]) for m in prints[1 if messages[0][1] in "456" else 0:])
    # the executions are the 1-second buckets historical and real-time bars are built from
    assert sum(b.volume for b in broker.market.history[aapl.con_id].values()) == proc.volume


def test_a_marketable_order_walks_the_real_book(catalog):
    broker, replay = _broker(catalog)
    aapl = next(i for i in broker.universe.instruments if i.symbol == "AAPL")
    proc = broker.market.processes[aapl.con_id]
    (a1, s1), (a2, s2) = proc.book.asks[:2]
    broker.engine.place(7, _order(1, "BUY", s1 + 10, aapl.price(a2)), aapl)
    fills = [f for f in broker.ledger.fills if f.order_id == 1]
    assert [(f.price, f.qty) for f in fills] == [(aapl.price(a1), s1), (aapl.price(a2), 10)]
    # the shares taken stay taken while the level is in the book: not bought twice
    broker.engine.place(7, _order(2, "BUY", s1, aapl.price(a1)), aapl)
    assert not [f for f in broker.ledger.fills if f.order_id == 2]


def test_a_resting_limit_fills_only_after_the_queue_in_front_of_it(catalog):
    broker, replay = _broker(catalog)
    messages, books = _file()
    aapl = next(i for i in broker.universe.instruments if i.symbol == "AAPL")
    proc = broker.market.processes[aapl.con_id]
    # the price where resting buys traded most (LOBSTER direction 1, events 4 and 5)
    hit = [(k, int(m[4]) // 100, float(m[3])) for k, m in enumerate(messages)
           if m[1] in ("4", "5") and int(m[5]) == 1]
    price = max({p for _, p, _ in hit}, key=lambda p: sum(1 for _, q, _ in hit if q == p))
    k = 1
    while all(p != price for p, _ in proc.book.bids):
        replay._apply(k, emit=True)
        k += 1
    placed = k
    broker.engine.place(7, _order(1, "BUY", 100, aapl.price(price)), aapl)
    assert not broker.ledger.fills  # behind the book's shown size at its price
    fills_at = []
    for k in range(placed, len(books)):
        before = len(broker.ledger.fills)
        replay._apply(k, emit=True)
        if len(broker.ledger.fills) > before:
            fills_at.append(k)
    executed = [(k, size) for k, p, size in hit if k >= placed and p == price]
    assert fills_at, f"executions at {price} after event {placed}: {executed}"
    assert all(f.price == aapl.price(price) and f.liquidity == 1 for f in broker.ledger.fills)
    # every fill is an execution at our price, and the first comes only after executions there
    # ate into the queue that was in front of us (less, if that queue was cancelled)
    assert set(fills_at) <= {k for k, _ in executed}
    assert sum(f.qty for f in broker.ledger.fills) <= 100
    through = sum(size for k, size in executed if k <= fills_at[0])
    assert through > 0
    assert replay.stats["queue_fills"] == len(fills_at)


def test_a_dataset_that_is_not_there_is_refused(catalog, capsys):
    assert main(["--market", "lobster/NOPE", "--catalog", str(catalog)]) == 2
    assert "no dataset 'lobster/NOPE'" in capsys.readouterr().err
    assert main(["--market", "lobster/AAPL", "--catalog", str(catalog), "--speed", "-1"]) == 2
