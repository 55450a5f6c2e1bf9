"""The latency model (services/backtest/latency.py) over the real LOBSTER AAPL book: a market
order reaches the venue ``data + order (+ jitter)`` after the book it was decided on, and
fills against the book as it is then (the price moves inside the delay in this sample); a
seed gives the same bytes twice, another seed other bytes."""
from __future__ import annotations

import random

import pytest

from services.backtest.__main__ import main
from services.backtest.frames import read_frames
from services.data.catalog import Catalog
from services.data.sample import import_sample

PROBE = """name = "probe"
class = "tests.backtest.latency_probe:MarketProbe"
symbols = ["AAPL"]
timer_s = 60.0

[params]
qty = 100
every = {every}

[risk]
max_position = 100000
max_order_quantity = 1000
"""
MS = 1_000_000


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("lat") / "catalog")
    import_sample(cat)
    return cat


@pytest.fixture(scope="module")
def book(catalog):
    """The sample's rows: (ts, [(ask price, ask size) per level])."""
    table = catalog.read("lobster/AAPL")
    ts = table.column("ts").to_pylist()
    levels = sum(1 for c in table.column_names if c.startswith("ask_price_"))
    asks = list(zip(*[zip(table.column(f"ask_price_{i}").to_pylist(),
                          table.column(f"ask_size_{i}").to_pylist())
                      for i in range(1, levels + 1)]))
    return ts, asks


def _run(tmp_path, catalog, name, *flags, every=0):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(PROBE.format(every=every))
    out = tmp_path / name
    assert main([str(cfg), "--data", "lobster/AAPL", "--catalog", str(catalog.root),
                 "--out", str(out), "--no-plot", *flags]) == 0
    return out


def _fills(out):
    return [(u.last_fill_qty, u.last_fill_price) for u in read_frames(out / "fills.bin")]


def _walk(book, arrival_ns, qty=100.0):
    """A buy of ``qty`` at market walking the ask side of the book as it is when the order
    arrives: after every row before ``arrival_ns`` (events due at a row's time run first)."""
    ts, asks = book
    row = max(i for i, t in enumerate(ts) if t < arrival_ns)
    fills = []
    for price, size in asks[row]:
        take = min(qty, float(size))
        fills.append((take, float(price)))
        qty -= take
        if qty <= 0:
            break
    return fills, row


def test_a_market_order_fills_at_the_book_after_the_delay(tmp_path, catalog, book):
    ts, asks = book
    t0 = ts[0]  # the first row: both sides of the book, the probe decides on it
    instant = _fills(_run(tmp_path, catalog, "instant", "--latency-ms", "0"))
    assert instant == _walk(book, t0 + 1)[0]
    assert instant[0] == (100.0, 585.94)  # the ask of 09:30:00.004, 200 shares

    out = _run(tmp_path, catalog, "late", "--latency-ms", "50")
    expected, row = _walk(book, t0 + 50 * MS)
    assert asks[row][0][0] != asks[0][0][0]  # the ask moved inside the 50 ms
    assert _fills(out) == expected
    assert expected[0] == (18.0, 585.91)  # 18 at the new ask, the rest deeper
    fill_times = [u.ts for u in read_frames(out / "fills.bin")]
    assert fill_times == [t0 + 100 * MS] * len(expected)  # 50 there, 50 back

    # market data late too: the probe decides 100 ms after the book was true, its order
    # arrives 100 ms after that
    out = _run(tmp_path, catalog, "data", "--latency-ms", "100", "--data-latency-ms", "100",
               "--report-latency-ms", "0")
    intents = list(read_frames(out / "intents.bin"))
    assert intents[0].ts == t0 + 100 * MS
    assert _fills(out) == _walk(book, t0 + 200 * MS)[0]


def test_jitter_is_seeded(tmp_path, catalog, book):
    t0 = book[0][0]
    flags = ["--latency-ms", "50", "--jitter-ms", "300"]
    out = _run(tmp_path, catalog, "seed7", *flags, "--latency-seed", "7")
    # the documented draws: uniform integer ns in [0, jitter], random.Random(seed * 3 + k),
    # k = 0 orders, 1 reports, 2 data. The data stream draws once per message, in order: the
    # first row is 10 bid rows then the ask's best, on which the probe decides (FIFO: no
    # message overtakes the one before it)
    data = random.Random(7 * 3 + 2)
    decided = t0 + max(data.randint(0, 300 * MS) for _ in range(11))
    assert list(read_frames(out / "intents.bin"))[0].ts == decided
    arrival = decided + 50 * MS + random.Random(7 * 3).randint(0, 300 * MS)
    assert _fills(out) == _walk(book, arrival)[0]

    runs = [_run(tmp_path, catalog, f"busy{seed}-{n}", *flags, "--latency-seed", str(seed),
                 every=25)
            for seed, n in ((7, 0), (7, 1), (8, 0))]
    for name in ("fills.bin", "intents.bin", "report.json", "report.txt", "trades.csv"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    assert len(_fills(runs[0])) > 10
    assert _fills(runs[0]) != _fills(runs[2])  # another seed: other prices
