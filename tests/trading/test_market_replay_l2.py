"""Market replay of the LOBSTER sample (issue 14, must-show): the L2 book a strategy holds,
through the real simulator, gateway bridge and bus, equals the orderbook file's levels after
every event, for every level the subscription carries (10 rows a side).

The simulator replays ``lobster/AAPL`` from a catalog the test imports from data/sample,
unpaced (``--speed 0``: as fast as the clients read), starting when the first depth
subscription arrives. The strategy (tests/support/depth_recorder.py) writes its book after
every depth row. IB's rows come one at a time; the test finds the event boundaries from the
file alone: each event's book (as the file has it) must be the next state the strategy
reaches, in order, with no more rows per event than price levels changed, and the last row
must leave the file's last book. The sequence numbers of the depth topic must have no gap,
and no update may be refused."""
from __future__ import annotations

import gzip
import json

from services.data.catalog import Catalog
from services.data.importers import read
from services.data.sample import SAMPLE, SAMPLE_DIR
from tests.support.fleet import Fleet

RECORDER = "tests.support.depth_recorder:DepthRecorder"
ROWS = 10
DUMMY = 9_999_999_999


def file_books(levels: int = ROWS) -> list[tuple[list, list]]:
    """(bids, asks) after every event, straight from the orderbook file: [price, size] rows,
    best first, empty levels left out."""
    name = next(f for f in SAMPLE[0][1] if "orderbook" in f)
    books = []
    with gzip.open(SAMPLE_DIR / name, "rt") as handle:
        for line in handle:
            cells = [int(c) for c in line.split(",")]
            asks, bids = [], []
            for i in range(min(levels, len(cells) // 4)):
                ap, az, bp, bz = cells[4 * i: 4 * i + 4]
                if abs(ap) != DUMMY:
                    asks.append([round(ap / 10_000, 2), float(az)])
                if abs(bp) != DUMMY:
                    bids.append([round(bp / 10_000, 2), float(bz)])
            books.append((bids, asks))
    return books


def _changes(old: list, new: list) -> int:
    """Price levels inserted, deleted or resized between two versions of one side."""
    a, b = dict(map(tuple, old)), dict(map(tuple, new))
    return sum(1 for p in a.keys() | b.keys() if a.get(p) != b.get(p))


def test_replayed_lobster_book_equals_the_file_after_every_event(procs, tmp_path):
    catalog = Catalog(tmp_path / "catalog")
    kind, files, options = SAMPLE[0]
    catalog.add(read(kind, [str(SAMPLE_DIR / f) for f in files], options))
    out = tmp_path / "depth.jsonl"
    out.touch()
    fleet = Fleet(procs, tmp_path)
    try:
        fleet.start_core(sim_args=("--market", "lobster/AAPL", "--catalog",
                                   str(tmp_path / "catalog"), "--speed", "0",
                                   "--market-wait", "depth"))
        fleet.add_strategy("l2", RECORDER, ["AAPL"], {"out": str(out)})
        fleet.start_strategy("l2")
        books = file_books()

        def records():
            return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        fleet.wait(lambda: '"replay_done"' in fleet.procs.log("simulator"), deadline=120,
                   what="the simulator to replay the whole file")
        fleet.wait(lambda: records() and records()[-1][5:] == list(books[-1]), deadline=60,
                   what="the strategy to hold the file's last book")
        got = records()
        refused = [r for r in got if isinstance(r, dict)]
        assert not refused, refused[:5]
        # every row delivered: one source, the depth topic's sequence numbers without a gap
        assert len({r[0] for r in got}) == 1
        tseqs = [r[1] for r in got]
        assert tseqs == list(range(tseqs[0], tseqs[0] + len(tseqs))), "a gap in md.depth"
        # the subscription's first rows are the book after the file's first event, as inserts
        first = len(books[0][0]) + len(books[0][1])
        assert all(r[3] == 0 for r in got[:first])
        assert (got[first - 1][5], got[first - 1][6]) == books[0]
        # then after every event the strategy's book is the file's row, all 10 levels a side:
        # IB's rows come one at a time, so each event's book must be the state the strategy
        # reaches next (an event that changes nothing in the top 10 rows sends no row)
        j = first - 1
        boundaries = [j]
        for k in range(1, len(books)):
            if books[k] != books[k - 1]:
                j += 1
                while j < len(got) and (got[j][5], got[j][6]) != books[k]:
                    j += 1
                assert j < len(got), (
                    f"event {k + 1} ({k + 1}th orderbook row): the strategy never held "
                    f"bids {books[k][0][:3]}... asks {books[k][1][:3]}... after event {k}'s book")
            boundaries.append(j)
        assert j == len(got) - 1, "rows after the last event"
        # no row between two events leaves the book in a state the data never had for longer
        # than one event: each event's rows are what IB's position semantics need at most
        # (rows per side <= inserts + deletes + updates of that side's price levels)
        for k in range(1, len(books)):
            sent = boundaries[k] - boundaries[k - 1]
            bound = sum(_changes(books[k - 1][s], books[k][s]) for s in (0, 1))
            assert sent <= bound, f"event {k + 1}: {sent} rows for {bound} level changes"
        changed = sum(1 for k in range(1, len(books)) if books[k] != books[k - 1])
        print(f"{len(books)} events, {changed} changing the top {ROWS} rows, {len(got)} depth "
              f"rows through gateway and bus, book equal to the file after every event")
        log = fleet.procs.log("simulator")
        assert '"replay_done"' in log
    finally:
        fleet.close()
