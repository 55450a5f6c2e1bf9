"""The catalog: a second import, replace, append, the CLI, column mappings (hypothesis)."""
from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cli import main as ibfleet
from services.data.errors import DataError
from services.data.importers import Options, read
from services.data.times import LocalClock, zone
from tests.data.conftest import catalog_entries, sample_text

AMZN = "AMZN_2012-06-21_executions.csv.gz"
OPTS = dict(symbol="AMZN", zone="America/New_York", price_scale=10_000)


def test_same_files_again_is_a_no_op(catalog, sample):
    """Idempotent: the same bytes (sha256) give 'unchanged' and touch nothing, so an import
    (or import-sample) can be rerun after a partial session without a --replace."""
    catalog.add(read("trades", [str(sample / AMZN)], Options(**OPTS)))
    meta = catalog.meta("trades/AMZN")
    (again,) = catalog.add(read("trades", [str(sample / AMZN)], Options(**OPTS)))
    assert again.status == "unchanged"
    assert catalog.meta("trades/AMZN") == meta  # same imported_at: not rewritten


def test_other_data_for_a_dataset_is_refused(catalog, sample, tmp_path):
    """Other files for an existing dataset are refused (not merged): which rows would win
    on overlapping times, and whose provenance holds, is the user's choice (--replace or
    --append), not a guess."""
    catalog.add(read("trades", [str(sample / AMZN)], Options(**OPTS)))
    other = tmp_path / "AMZN_first_100.csv"
    other.write_text("\n".join(sample_text(AMZN).splitlines()[:101]) + "\n")
    with pytest.raises(DataError, match="already in the catalog.*--replace"):
        catalog.add(read("trades", [str(other)], Options(**OPTS)))
    assert catalog.meta("trades/AMZN").rows == 11_419
    (result,) = catalog.add(read("trades", [str(other)], Options(**OPTS)), replace=True)
    assert (result.status, result.rows) == ("replaced", 100)
    assert catalog.meta("trades/AMZN").provenance[0].source == str(other)


def test_append_other_dates_only(catalog, sample, tmp_path):
    catalog.add(read("trades", [str(sample / AMZN)], Options(**OPTS)))
    next_day = tmp_path / "AMZN_next.csv"
    next_day.write_text("Time,Price,Volume\n2012-06-22 09:30:00.5,2230000,10\n")
    (result,) = catalog.add(read("trades", [str(next_day)], Options(**OPTS)), append=True)
    assert (result.status, result.rows) == ("appended", 11_420)
    meta = catalog.meta("trades/AMZN")
    assert [p.key for p in meta.partitions] == ["date=2012-06-21", "date=2012-06-22"]
    assert len(meta.provenance) == 2
    same_day = tmp_path / "AMZN_same.csv"
    same_day.write_text("Time,Price,Volume\n2012-06-21 10:00:00,2230000,10\n")
    with pytest.raises(DataError, match="date=2012-06-21, which the dataset has already"):
        catalog.add(read("trades", [str(same_day)], Options(**OPTS)), append=True)
    assert catalog.meta("trades/AMZN").rows == 11_420


def test_cli_import_list_show(tmp_path, sample, capsys):
    root = str(tmp_path / "cat")
    assert ibfleet(["data", "import", "trades", str(sample / AMZN), "--symbol", "AMZN",
                    "--zone", "America/New_York", "--price-scale", "10000",
                    "--mapping", "Time=ts,Price=price,Volume=size", "--catalog", root]) == 0
    assert "imported  trades/AMZN" in capsys.readouterr().out
    assert ibfleet(["data", "list", "--catalog", root]) == 0
    out = capsys.readouterr().out
    assert "trades/AMZN" in out and "2012-06-21T13:30:00.017460000Z" in out
    assert ibfleet(["data", "show", "AMZN", "--catalog", root, "--head", "1"]) == 0
    out = capsys.readouterr().out
    assert "11419 rows" in out and "sha256" in out and "price=223.82" in out


def test_cli_import_sample_and_refusal(tmp_path, capsys):
    root = str(tmp_path / "cat")
    assert ibfleet(["data", "import-sample", "--catalog", root]) == 0
    assert ibfleet(["data", "show", "nothing", "--catalog", root]) == 1
    assert "no dataset 'nothing'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,Price,Volume\n2012-06-21 09:30:00,abc,1\n")
    assert ibfleet(["data", "import", "trades", str(bad), "--symbol", "X",
                    "--catalog", root]) == 1
    assert "row 2, column Price: not a number: 'abc'" in capsys.readouterr().err


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(["ts", "price", "size", "extra"]),
       names=st.lists(st.text("abcdefghijklmnopqrstuvwxyzXYZ_", min_size=3, max_size=8),
                      min_size=4, max_size=4, unique_by=str.lower))
def test_any_column_order_and_names_with_a_mapping(tmp_path_factory, sample, order, names):
    """The first 200 real AMZN rows, their columns renamed and shuffled (plus one column to
    ignore): with the matching --mapping, the same table as the original file."""
    rows = list(csv.reader(io.StringIO(sample_text(AMZN))))[1:201]
    original = {"ts": 0, "price": 1, "size": 2}
    out = io.StringIO()
    writer = csv.writer(out)
    header = [f"c_{n}" for n in names]  # "c_" keeps clear of the aliases
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[original[f]] if f != "extra" else "x" for f in order])
    path = tmp_path_factory.mktemp("map") / "shuffled.csv"
    path.write_text(out.getvalue())
    mapping = ",".join(f"{h}={f}" for h, f in zip(header, order) if f != "extra")
    (piece,) = read("trades", [str(path)], Options(mapping=mapping, **OPTS))
    expected = rows[0]
    clock = LocalClock(zone("America/New_York"))
    assert piece.table.num_rows == 200
    assert piece.table.slice(0, 1).to_pylist()[0] == {
        "ts": clock.parse(expected[0]), "price": int(expected[1]) / 10_000,
        "size": float(expected[2])}


def test_nothing_written_outside_the_root(catalog, sample):
    catalog.add(read("trades", [str(sample / AMZN)], Options(**OPTS)))
    assert catalog_entries(catalog) == ["trades", "trades/AMZN", "trades/AMZN/_dataset.json",
                                        "trades/AMZN/date=2012-06-21",
                                        "trades/AMZN/date=2012-06-21/part.parquet"]
