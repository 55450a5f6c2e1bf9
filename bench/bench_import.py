"""Catalog import speed: every real data set, and a 10M-row synthetic trades file.

    python bench/bench_import.py [--quick] [--runs N] [--rows N] [--real DIR]

1. The full import of ``../shared/data/real`` (LOBSTER pair, AMZN executions, daily stock
   bars, CME minute bars, HistData quotes), each file with the options docs/data.md gives,
   into a fresh catalog: seconds in all and rows/s per file, median of ``--runs`` (3).
   Parse, Parquet write, read-back check and the atomic rename are all timed
   (``Catalog.add``); interpreter start-up is not.
2. A synthetic trades CSV of ``--rows`` rows (10,000,000; ``--quick`` 1,000,000): five New York
   trading days, nanosecond times, written once (not timed), then imported once with
   ``--zone America/New_York``: rows/s and the child's peak RSS.
Prints markdown tables.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.data.catalog import Catalog  # noqa: E402
from services.data.importers import Options, read  # noqa: E402

DEFAULT_REAL = ROOT.parent / "shared" / "data" / "real"
#: file -> (kind, options), as docs/data.md imports each real file
REAL = {
    "lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv": ("lobster", {}),
    "trades/AMZN_2012-06-21_executions.csv": (
        "trades", {"symbol": "AMZN", "zone": "America/New_York", "price_scale": 10_000,
                   "mapping": "Time=ts,Price=price,Volume=size"}),
    "bars/daily_stocks_2000-2013.csv.gz": ("bars", {"zone": "America/New_York"}),
    "bars/6EH4_CME_1min_2024-01.csv.gz": (
        "bars", {"symbol": "6EH4", "instrument": {"sec_type": "FUT", "exchange": "CME",
                                                  "min_tick": 0.00005,
                                                  "multiplier": 125_000.0}}),
    "ticks/EURUSD_2020-01_quotes_histdata.csv": ("histdata", {}),
}


def import_real(real: Path, catalog_dir: Path) -> dict[str, tuple[int, float]]:
    """file -> (rows, seconds) for one full import into a new catalog."""
    catalog = Catalog(catalog_dir)
    out = {}
    for name, (kind, options) in REAL.items():
        t0 = time.perf_counter()
        pieces = read(kind, [str(real / name)], Options(**options))
        catalog.add(pieces)
        out[name] = (sum(p.table.num_rows for p in pieces), time.perf_counter() - t0)
    return out


def write_trades(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` trades over five New York sessions, times in ns, in time order."""
    rng = random.Random(seed)
    days = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"]
    per_day = rows // len(days)
    session_ns = 390 * 60 * 10**9
    price = 100.0
    with open(path, "w", buffering=1 << 20) as out:
        out.write("ts,price,size\n")
        written = 0
        for i, day in enumerate(days):
            n = per_day if i < len(days) - 1 else rows - written
            step = session_ns // n
            t = 0
            for _ in range(n):
                t += rng.randint(1, 2 * step - 1)
                t = min(t, session_ns - 1)
                s, ns = divmod(t, 10**9)
                h, rem = divmod(s, 3600)
                m, sec = divmod(rem, 60)
                price = max(1.0, price + rng.choice((-0.01, 0.0, 0.0, 0.01)))
                out.write(f"{day} {9 + h + (30 + m) // 60:02d}:{(30 + m) % 60:02d}:{sec:02d}."
                          f"{ns:09d},{price:.2f},{rng.choice((1, 100, 100, 200, 500))}\n")
            written += n


def child_import(path: str, catalog_dir: str) -> None:
    """One import of the synthetic file (in a fresh process, for its peak RSS)."""
    t0 = time.perf_counter()
    pieces = read("trades", [path], Options(symbol="SYN", zone="America/New_York"))
    Catalog(catalog_dir).add(pieces)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": sum(p.table.num_rows for p in pieces), "seconds": seconds,
                      "rss_mib": rss}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_import(*args.child)
        return 0
    runs = args.runs or (1 if args.quick else 3)
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    work = Path(tempfile.mkdtemp(prefix="ibf-bench-import-"))
    try:
        if args.real.is_dir():
            results = [import_real(args.real, work / f"cat{i}") for i in range(runs)]
            print(f"full import of {args.real} into a fresh catalog, median of {runs}:\n")
            print("| file | rows | seconds | rows/s |")
            print("|---|--:|--:|--:|")
            for name in REAL:
                n = results[0][name][0]
                secs = statistics.median(r[name][1] for r in results)
                print(f"| `{name}` | {n:,} | {secs:.2f} | {n / secs:,.0f} |")
            total = statistics.median(sum(s for _, s in r.values()) for r in results)
            total_rows = sum(n for n, _ in results[0].values())
            print(f"| **all** | {total_rows:,} | **{total:.2f}** | {total_rows / total:,.0f} |\n")
        else:
            print(f"{args.real}: not found; the real data sets were not imported\n")
        csv_path = work / "trades.csv"
        write_trades(csv_path, rows)
        size_mb = csv_path.stat().st_size / 2**20
        proc = subprocess.run([sys.executable, __file__, "--child", str(csv_path),
                               str(work / "syn")], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return 1
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"synthetic trades CSV ({size_mb:,.0f} MiB, 5 New York days, ns times), one "
              f"import in a fresh process:\n")
        print("| rows | seconds | rows/s | peak RSS |")
        print("|--:|--:|--:|--:|")
        print(f"| {got['rows']:,} | {got['seconds']:.1f} | {got['rows'] / got['seconds']:,.0f} "
              f"| {got['rss_mib']:,.0f} MiB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
