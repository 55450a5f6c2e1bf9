"""Each importer on real files: counts, first and last rows, times converted to UTC by the
zone rules worked out by hand from the data's README."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from services.data.importers import Options, read
from services.data.sample import import_sample
from tests.data.conftest import shared

AAPL_MSG = "AAPL_2012-06-21_34200000_57600000_message_10.csv.gz"
AAPL_BOOK = "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv.gz"
DAY = 1340236800  # 2012-06-21 00:00 UTC, in seconds: 15512 days * 86400
NS = 1_000_000_000


def test_lobster_pair_round_trips(catalog, sample):
    # the orderbook file is found next to the message file
    (result,) = catalog.add(read("lobster", [str(sample / AAPL_MSG)], Options()))
    assert (result.name, result.status, result.rows) == ("lobster/AAPL", "imported", 999)
    table = catalog.read("lobster/AAPL")
    assert table.num_rows == 999
    assert len(table.column_names) == 6 + 4 * 10
    events = table["event"].to_pylist()
    assert [events.count(k) for k in (1, 3, 4, 5)] == [471, 369, 98, 61]
    first, last = table.slice(0, 1).to_pylist()[0], table.slice(998).to_pylist()[0]
    # 34200.004241176 s after midnight New York (EDT, UTC-4) = 13:30:00.004241176 UTC
    assert first["ts"] == (DAY + 13 * 3600 + 30 * 60) * NS + 4_241_176
    assert (first["event"], first["order_id"], first["size"], first["price"], first["side"]) \
        == (1, 16113575, 18, 585.33, 1)
    assert (first["ask_price_1"], first["ask_size_1"], first["bid_price_1"],
            first["bid_size_1"]) == (585.94, 200, 585.33, 18)
    # 34249.086375027 s after midnight
    assert last["ts"] == (DAY + 4 * 3600 + 34249) * NS + 86_375_027
    assert (last["order_id"], last["price"], last["bid_price_1"], last["bid_size_1"]) \
        == (18259338, 585.35, 585.35, 18)
    assert (last["ask_price_10"], last["ask_size_10"], last["bid_price_10"],
            last["bid_size_10"]) == (586.03, 100, 584.99, 2)
    meta = catalog.meta("lobster/AAPL")
    assert [p.key for p in meta.partitions] == ["date=2012-06-21"]
    assert meta.instrument.zone == "America/New_York" and meta.instrument.exchange == "NASDAQ"
    assert {p.source.rsplit("/", 1)[1] for p in meta.provenance} == {AAPL_MSG, AAPL_BOOK}


def test_lobster_any_level_count(catalog, sample, tmp_path):
    """A 2-level file (the first 8 orderbook columns of the real one) imports with 2 levels."""
    from tests.data.conftest import sample_text
    msg = tmp_path / "AAPL_2012-06-21_34200000_57600000_message_2.csv"
    book = tmp_path / "AAPL_2012-06-21_34200000_57600000_orderbook_2.csv"
    msg.write_text(sample_text(AAPL_MSG))
    book.write_text("\n".join(",".join(line.split(",")[:8])
                              for line in sample_text(AAPL_BOOK).splitlines()))
    catalog.add(read("lobster", [str(book)], Options()))
    table = catalog.read("lobster/AAPL")
    assert table.column_names[-4:] == ["ask_price_2", "ask_size_2", "bid_price_2", "bid_size_2"]
    assert table.num_rows == 999


def test_amzn_executions_new_york_to_utc(catalog, sample):
    pieces = read("trades", [str(sample / "AMZN_2012-06-21_executions.csv.gz")],
                  Options(symbol="AMZN", zone="America/New_York", price_scale=10_000,
                          mapping="Time=ts,Price=price,Volume=size"))
    catalog.add(pieces)
    table = catalog.read("trades/AMZN")
    assert table.column_names == ["ts", "price", "size"]
    assert table.num_rows == 11_419
    rows = table.to_pylist()
    # 09:30:00.017460000 New York (EDT, UTC-4) is 13:30:00.017460000 UTC
    assert rows[0] == {"ts": (DAY + 13 * 3600 + 30 * 60) * NS + 17_460_000, "price": 223.82,
                       "size": 1.0}
    # line 7 of the file: 2012-06-21 09:30:00.383971000,2238600,100
    assert rows[5] == {"ts": (DAY + 13 * 3600 + 30 * 60) * NS + 383_971_000, "price": 223.86,
                       "size": 100.0}
    # 15:59:59.545828000 New York is 19:59:59.545828000 UTC; equal times keep file order
    assert rows[-2] == {"ts": (DAY + 19 * 3600 + 59 * 60 + 59) * NS + 545_828_000,
                        "price": 220.51, "size": 9.0}
    assert rows[-1]["size"] == 51.0
    meta = catalog.meta("AMZN")
    assert (meta.first_ts, meta.last_ts) == (rows[0]["ts"], rows[-1]["ts"])
    assert meta.provenance[0].rows == 11_419 and len(meta.provenance[0].sha256) == 64


def test_amzn_default_mapping_by_header_names(catalog, sample):
    """Time, Price and Volume are known aliases: no --mapping needed."""
    catalog.add(read("trades", [str(sample / "AMZN_2012-06-21_executions.csv.gz")],
                     Options(symbol="AMZN", zone="America/New_York", price_scale=10_000)))
    assert catalog.meta("trades/AMZN").rows == 11_419


def test_daily_bars_split_by_ticker(catalog, sample):
    catalog.add(read("bars", [str(sample / "daily_stocks_2012.csv.gz")],
                     Options(zone="America/New_York")))
    assert catalog.names() == ["bars-1d/AAPL", "bars-1d/FB", "bars-1d/GOOG", "bars-1d/IBM",
                               "bars-1d/MSFT"]
    assert [catalog.meta(n).rows for n in catalog.names()] == [250, 155, 250, 250, 250]
    aapl = catalog.read("bars-1d/AAPL").to_pylist()
    # 2012-01-03 00:00 New York (EST, UTC-5) = 05:00 UTC; 15342 days after the epoch
    assert aapl[0] == {"ts": (15342 * 86400 + 5 * 3600) * NS, "open": 409.4, "high": 412.5,
                       "low": 409.0, "close": 411.23, "volume": 10793600.0,
                       "adj_close": 52.848786580038}
    assert aapl[-1]["close"] == 532.1729
    # FB's first day, 2012-05-18, is in daylight saving time: midnight is 04:00 UTC
    fb = catalog.read("bars-1d/FB").to_pylist()
    assert fb[0]["ts"] == (15478 * 86400 + 4 * 3600) * NS
    assert [p.key for p in catalog.meta("bars-1d/AAPL").partitions] == ["year=2012"]


def test_cme_minute_bars_utc(catalog):
    path = shared("bars/6EH4_CME_1min_2024-01.csv.gz")
    catalog.add(read("bars", [str(path)],
                     Options(symbol="6EH4", instrument={"sec_type": "FUT", "exchange": "CME",
                                                       "min_tick": 0.00005,
                                                       "multiplier": 125_000.0})))
    meta = catalog.meta("bars-1min/6EH4")
    assert meta.rows == 29_996
    assert meta.instrument.multiplier == 125_000.0 and meta.instrument.zone == "UTC"
    # 2024-01-01 23:01:00 UTC (19723 days) .. 2024-01-31 23:59:00 UTC
    assert meta.first_ts == (19723 * 86400 + 23 * 3600 + 60) * NS
    assert meta.last_ts == (19753 * 86400 + 23 * 3600 + 59 * 60) * NS
    assert meta.partitions[0].key == "date=2024-01-01"
    last = catalog.read("bars-1min/6EH4").slice(meta.rows - 1).to_pylist()[0]
    assert (last["open"], last["high"], last["low"], last["close"], last["volume"]) == \
        (1.08225, 1.0824, 1.08225, 1.0823, 36.0)


def test_histdata_est_is_fixed_utc_minus_5(catalog):
    path = shared("ticks/EURUSD_2020-01_quotes_histdata.csv")
    catalog.add(read("histdata", [str(path)], Options()))
    meta = catalog.meta("quotes/EUR.USD")
    assert meta.rows == 9_500
    assert (meta.instrument.sec_type, meta.instrument.currency, meta.instrument.zone) == \
        ("CASH", "USD", "EST")
    rows = catalog.read("quotes/EUR.USD").to_pylist()
    # 20200101 170000065 EST = 2020-01-01 22:00:00.065 UTC (18262 days)
    assert rows[0] == {"ts": (18262 * 86400 + 22 * 3600) * NS + 65_000_000, "bid": 1.1212,
                       "ask": 1.12172, "bid_size": None, "ask_size": None}
    # 20200101 230052125 EST = 2020-01-02 04:00:52.125 UTC: the second UTC day
    assert rows[-1]["ts"] == (18263 * 86400 + 4 * 3600 + 52) * NS + 125_000_000
    assert [p.key for p in meta.partitions] == ["date=2020-01-01", "date=2020-01-02"]


def test_import_sample_then_again_is_unchanged(catalog, sample):
    first = import_sample(catalog)
    assert [(r.name, r.status) for r in first] == [
        ("lobster/AAPL", "imported"), ("trades/AMZN", "imported"),
        ("bars-1d/AAPL", "imported"), ("bars-1d/FB", "imported"),
        ("bars-1d/GOOG", "imported"), ("bars-1d/IBM", "imported"),
        ("bars-1d/MSFT", "imported")]
    before = {p: p.stat().st_mtime_ns for p in catalog.root.rglob("*.parquet")}
    again = import_sample(catalog)
    assert {r.status for r in again} == {"unchanged"}
    assert {p: p.stat().st_mtime_ns for p in catalog.root.rglob("*.parquet")} == before
    assert "MIT" in catalog.meta("trades/AMZN").provenance[0].licence


def test_partitions_are_plain_parquet(catalog, sample):
    """Other tools read the files as they are: hive partitions of ordinary Parquet."""
    import pyarrow.dataset as ds
    import_sample(catalog)
    part = catalog.root / "trades" / "AMZN" / "date=2012-06-21" / "part.parquet"
    assert pq.read_table(part).num_rows == 11_419
    dataset = ds.dataset(catalog.root / "trades" / "AMZN", format="parquet",
                         partitioning="hive")
    assert dataset.count_rows() == 11_419


@pytest.mark.parametrize("kind", ["trades", "quotes", "bars"])
def test_mapping_names_unknown_field(kind, sample):
    from services.data.errors import DataError
    with pytest.raises(DataError, match="no field 'bogus'"):
        read(kind, [str(sample / "AMZN_2012-06-21_executions.csv.gz")],
             Options(symbol="AMZN", mapping="Time=bogus"))
