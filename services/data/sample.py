"""The real sample that ships in ``data/sample/`` (see its PROVENANCE file) and the one
command that imports it: ``ibfleet data import-sample``.

Rerunning it changes nothing (the same files give ``unchanged``).
"""
from __future__ import annotations

from pathlib import Path

from services.data.catalog import Catalog, ImportResult
from services.data.errors import DataError
from services.data.importers import Options, read

__all__ = ["SAMPLE_DIR", "SAMPLE", "import_sample", "sample_pieces"]

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"

LOBSTER = ("LOBSTER free sample (lobsterdata.com) via YileZheng/OrderBook_HLS (MIT); "
           "see data/sample/PROVENANCE")
FMLPY = ("derived from the LOBSTER free sample, kept in crazywiden/fmlpy tests (MIT); "
         "see data/sample/PROVENANCE")
BOKEH = ("bokeh-sampledata 2026.1 (BSD-3), 2012 rows; data from Quandl WIKI prices "
         "(public domain); see data/sample/PROVENANCE")

#: (kind, files, options): what `import-sample` runs, as `ibfleet data import` would
SAMPLE = [
    ("lobster", ["AAPL_2012-06-21_34200000_57600000_message_10.csv.gz",
                 "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv.gz"],
     Options(licence=LOBSTER)),
    ("trades", ["AMZN_2012-06-21_executions.csv.gz"],
     Options(symbol="AMZN", zone="America/New_York", price_scale=10_000,
             mapping="Time=ts,Price=price,Volume=size", licence=FMLPY,
             instrument={"sec_type": "STK", "exchange": "NASDAQ", "currency": "USD",
                         "min_tick": 0.01})),
    ("bars", ["daily_stocks_2012.csv.gz"],
     Options(zone="America/New_York", licence=BOKEH,
             instrument={"sec_type": "STK", "currency": "USD", "min_tick": 0.01})),
]


def sample_pieces(directory: Path | None = None):
    directory = Path(directory or SAMPLE_DIR)
    if not (directory / "PROVENANCE").is_file():
        raise DataError(f"no sample in {directory} (its PROVENANCE file is missing)")
    pieces = []
    for kind, files, options in SAMPLE:
        pieces.extend(read(kind, [str(directory / f) for f in files], options))
    return pieces


def import_sample(catalog: Catalog, directory: Path | None = None) -> list[ImportResult]:
    """All the sample's datasets in one all-or-nothing import."""
    return catalog.add(sample_pieces(directory))
