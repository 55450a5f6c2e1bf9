"""Bad files: one DataError naming the file, the row (line) and the column; the catalog is
left as it was (nothing half-imported)."""
from __future__ import annotations

import pytest

from services.data import catalog as catalog_module
from services.data.errors import DataError
from services.data.importers import Options, read
from services.data.sample import import_sample
from tests.data.conftest import catalog_entries, sample_text

AMZN = "AMZN_2012-06-21_executions.csv.gz"
AAPL_MSG = "AAPL_2012-06-21_34200000_57600000_message_10.csv.gz"
AAPL_BOOK = "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv.gz"
AMZN_OPTIONS = dict(symbol="AMZN", zone="America/New_York", price_scale=10_000)


def amzn_with(tmp_path, line: int, text: str, name: str = "AMZN_bad.csv"):
    """The real AMZN file with line ``line`` (1-based) replaced."""
    lines = sample_text(AMZN).splitlines()
    lines[line - 1] = text
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def refused(catalog, kind, paths, **options) -> DataError:
    with pytest.raises(DataError) as info:
        catalog.add(read(kind, [str(p) for p in paths], Options(**options)))
    assert catalog_entries(catalog) == [], "a refused import left files behind"
    return info.value


@pytest.mark.parametrize("text, column, reason", [
    ("2012-06-21 09:30:00.383971000,22x3860,100", "Price", "not a number: '22x3860'"),
    ("2012-06-21 09:30:00.383971000,2238600", "Volume", "expected 3 fields, found 2"),
    ("2012-06-21 9h30,2238600,100", "Time", "not a time"),
    ("2012-06-31 09:30:00.383971000,2238600,100", "Time", "day is out of range"),
    ("2012-06-21 09:30:00.383971000,2238600,-5", "Volume", "must not be negative"),
    ("2012-06-21 09:30:00.383971000,0,100", "Price", "price must be positive"),
    ("2012-06-21 09:30:00.383971000,nan,100", "Price", "not a finite number"),
])
def test_broken_row_names_row_and_column(catalog, tmp_path, text, column, reason):
    bad = amzn_with(tmp_path, 7, text)
    error = refused(catalog, "trades", [bad], **AMZN_OPTIONS)
    assert (error.row, error.column) == (7, column)
    assert reason in str(error)
    assert str(error).startswith(f"{bad}: row 7, column {column}: ")


def test_missing_column(catalog, tmp_path):
    bad = amzn_with(tmp_path, 1, "Time,Cost,Volume")
    error = refused(catalog, "trades", [bad], **AMZN_OPTIONS)
    assert error.row == 1 and "missing column for field 'price'" in str(error)
    assert "--mapping COLUMN=price" in str(error)


def test_mapping_to_a_column_the_file_lacks(catalog, sample):
    error = refused(catalog, "trades", [sample / AMZN], mapping="Stamp=ts", **AMZN_OPTIONS)
    assert "missing column 'Stamp'" in str(error)


def test_nonexistent_local_time(catalog, tmp_path):
    """02:30 on 2012-03-11 never happened in New York (clocks went from 02:00 to 03:00)."""
    bad = amzn_with(tmp_path, 4, "2012-03-11 02:30:00.000000000,2238600,100")
    error = refused(catalog, "trades", [bad], **AMZN_OPTIONS)
    assert (error.row, error.column) == (4, "Time") and "does not exist" in str(error)


def test_ambiguous_local_time(catalog, tmp_path):
    """01:30 on 2012-11-04 happened twice in New York."""
    bad = amzn_with(tmp_path, 3, "2012-11-04 01:30:00,2238600,100")
    error = refused(catalog, "trades", [bad], **AMZN_OPTIONS)
    assert error.row == 3 and "ambiguous" in str(error)


def test_second_file_bad_first_file_not_imported(catalog, sample, tmp_path):
    """All files of one import or none: the good first file is not kept."""
    bad = amzn_with(tmp_path, 11_420, "2012-06-21 15:59:59.545828000,2205100,5x1")
    error = refused(catalog, "trades", [sample / AMZN, bad], **AMZN_OPTIONS)
    assert (error.row, error.column) == (11_420, "Volume")


def test_lobster_broken_message_row(catalog, tmp_path):
    lines = sample_text(AAPL_MSG).splitlines()
    cells = lines[41].split(",")
    cells[1] = "9"  # line 42: event type 9
    lines[41] = ",".join(cells)
    msg = tmp_path / AAPL_MSG.removesuffix(".gz")
    msg.write_text("\n".join(lines))
    (tmp_path / AAPL_BOOK.removesuffix(".gz")).write_text(sample_text(AAPL_BOOK))
    error = refused(catalog, "lobster", [msg])
    assert (error.row, error.column) == (42, "event") and "1..7" in str(error)


def test_lobster_book_shorter_than_messages(catalog, tmp_path):
    msg = tmp_path / AAPL_MSG.removesuffix(".gz")
    msg.write_text(sample_text(AAPL_MSG))
    book = tmp_path / AAPL_BOOK.removesuffix(".gz")
    book.write_text("\n".join(sample_text(AAPL_BOOK).splitlines()[:-1]))
    error = refused(catalog, "lobster", [msg, book])
    assert error.row == 999 and "998 orderbook rows for 999 messages" in str(error)


def test_lobster_book_bad_cell(catalog, tmp_path):
    msg = tmp_path / AAPL_MSG.removesuffix(".gz")
    msg.write_text(sample_text(AAPL_MSG))
    lines = sample_text(AAPL_BOOK).splitlines()
    cells = lines[9].split(",")
    cells[6] = "abc"  # bid_price_2
    lines[9] = ",".join(cells)
    book = tmp_path / AAPL_BOOK.removesuffix(".gz")
    book.write_text("\n".join(lines))
    error = refused(catalog, "lobster", [msg])
    assert (error.row, error.column) == (10, "bid_price_2")


def test_lobster_without_its_orderbook(catalog, tmp_path):
    msg = tmp_path / AAPL_MSG.removesuffix(".gz")
    msg.write_text(sample_text(AAPL_MSG))
    error = refused(catalog, "lobster", [msg])
    assert "no orderbook file next to it" in str(error)


def test_histdata_bad_time(catalog, tmp_path):
    path = tmp_path / "EURUSD_ticks.csv"
    path.write_text("20200101 170000065,1.121200,1.121720,0\n"
                    "20200101 17000,1.121200,1.121920,0\n")
    error = refused(catalog, "histdata", [path])
    assert (error.row, error.column) == (2, "time") and "HHMMSSmmm" in str(error)


def test_bars_high_below_close(catalog, tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text("Ticker,Date,Open,High,Low,Close,Volume,Adj Close\n"
                    "AAPL,2012-01-03,409.4,412.5,409.0,411.23,10793600,52.8\n"
                    "AAPL,2012-01-04,410.0,411.0,408.0,414.47,9286500,53.2\n")
    error = refused(catalog, "bars", [path])
    assert (error.row, error.column) == (3, "High") and "close 414.47 above high" in str(error)


def test_failure_while_writing_leaves_nothing(catalog, sample, monkeypatch):
    """A failure after some partitions were written (here: reading one back) removes them."""
    def broken(*args, **kwargs):
        raise DataError("injected read-back failure")
    monkeypatch.setattr(catalog_module, "_validate", broken)
    with pytest.raises(DataError, match="injected"):
        import_sample(catalog)
    assert catalog_entries(catalog) == []


def test_failure_during_the_renames_puts_everything_back(catalog, sample, monkeypatch):
    """The sample is 7 datasets, moved into place one rename each: the 4th rename fails, the
    3 already moved go back, and the catalog holds what it held before (nothing)."""
    real_rename = catalog_module.os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 4:
            raise OSError("injected rename failure")
        return real_rename(src, dst)
    monkeypatch.setattr(catalog_module.os, "rename", rename)
    with pytest.raises(OSError, match="injected"):
        import_sample(catalog)
    monkeypatch.setattr(catalog_module.os, "rename", real_rename)
    assert catalog_entries(catalog) == []


def test_failed_replace_keeps_the_old_dataset(catalog, sample, tmp_path, monkeypatch):
    catalog.add(read("trades", [str(sample / AMZN)], Options(**AMZN_OPTIONS)))
    before = catalog.read("trades/AMZN")
    other = amzn_with(tmp_path, 2, "2012-06-21 09:30:00.017460000,2238300,1")
    real_rename = catalog_module.os.rename
    calls = []

    def rename(src, dst):
        calls.append(1)
        if len(calls) == 2:  # the old one moved aside, the new one fails to move in
            raise OSError("injected rename failure")
        return real_rename(src, dst)
    monkeypatch.setattr(catalog_module.os, "rename", rename)
    with pytest.raises(OSError):
        catalog.add(read("trades", [str(other)], Options(**AMZN_OPTIONS)), replace=True)
    monkeypatch.setattr(catalog_module.os, "rename", real_rename)
    assert catalog.read("trades/AMZN").equals(before)
    assert catalog.names() == ["trades/AMZN"]
    assert not (catalog.root / ".tmp").exists()
