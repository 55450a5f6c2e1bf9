# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the Cython hot path (core.book, core.signals) against two baselines.

Baselines, measured in the same run on the same inputs:

* the plain-Python reference in tests/core/reference.py (loaded by path);
* a small price-keyed book on sortedcontainers.SortedDict (below), which maps
  IB positions to prices with peekitem/popitem.

Every figure is the median of several repeats (7 by default, 3 with --quick).
Prints a markdown table. Run: ``.venv/bin/python bench/bench_core.py [--quick]``
after ``setup.py build_ext --inplace``.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from array import array
from pathlib import Path

from sortedcontainers import SortedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.book import OrderBook, pack_records  # noqa: E402
from core.signals import EMA, VWAP, Imbalance, Microprice, RealizedVolatility, RollingMean, RollingStd, ZScore  # noqa: E402


def _load_reference():
    spec = importlib.util.spec_from_file_location("core_reference", ROOT / "tests" / "core" / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()


# -- sortedcontainers baseline -----------------------------------------------------

class SortedBook:
    """Price-keyed book: bids keyed by -price so both sides iterate best first."""

    def __init__(self, depth: int = 10) -> None:
        self.depth = depth
        self.sides = (SortedDict(), SortedDict())  # 0 = ask (key price), 1 = bid (key -price)

    def update_depth(self, position, operation, side, price, size):
        d = self.sides[side]
        key = -price if side == 1 else price
        if operation == 0:
            d[key] = size
            if len(d) > self.depth:
                d.popitem(-1)
        elif operation == 1:
            old = d.peekitem(position)[0]
            if old != key:
                del d[old]
            d[key] = size
        else:
            d.popitem(position)

    def update_level(self, side, price, size):
        d = self.sides[side]
        key = -price if side == 1 else price
        if size == 0:
            d.pop(key, None)
        else:
            d[key] = size
            if len(d) > self.depth:
                d.popitem(-1)


# -- inputs ----------------------------------------------------------------------------

def depth_stream(n: int, depth: int = 10, seed: int = 7) -> list[tuple]:
    """A valid IB-like stream on near-full books: ~70% updates, ~15% inserts, ~15% deletes.

    Rows are distances d >= 1 ticks from 100.00 (bid = 100 - d*0.01, ask = 100 + d*0.01),
    ascending, so position order and price order agree for every book under test.
    """
    rng = random.Random(seed)
    rows = ([], [])
    out = []

    def price(side, d):
        return 100.0 + (d if side == 0 else -d) * 0.01

    while len(out) < n:
        side = rng.randrange(2)
        r = rows[side]
        u = rng.random()
        # Below full depth inserts outnumber deletes, so books sit at or near `depth` rows.
        insert_p = 0.15 if len(r) == depth else 0.3
        if not r or u < insert_p:
            p = rng.randint(0, min(len(r), depth - 1))
            lo = r[p - 1] if p > 0 else 0
            hi = r[p] if p < len(r) else lo + 20
            if hi - lo >= 2:
                d = rng.randint(lo + 1, hi - 1)
                r.insert(p, d)
                del r[depth:]
                out.append((p, 0, side, price(side, d), float(rng.randint(1, 500))))
                continue
            if not r:
                continue
        p = rng.randrange(len(r))
        if u > 0.85 and len(r) > 1:
            out.append((p, 2, side, price(side, r[p]), 0.0))
            del r[p]
        else:
            out.append((p, 1, side, price(side, r[p]), float(rng.randint(1, 500))))
    return out


def level_stream(n: int, seed: int = 11) -> list[tuple]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        side = rng.randrange(2)
        d = rng.randint(1, 14)
        size = 0.0 if rng.random() < 0.2 else float(rng.randint(1, 500))
        out.append((side, 100.0 + (d if side == 0 else -d) * 0.01, size))
    return out


# -- timing ----------------------------------------------------------------------------

def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return statistics.median(times)


def rate(n: int, fn, repeats: int) -> float:
    return n / median_seconds(fn, repeats)


def per_call_depth(make, stream):
    def run():
        upd = make().update_depth
        for p, o, s, px, sz in stream:
            upd(p, o, s, px, sz)
    return run


def per_call_level(make, stream):
    def run():
        upd = make().update_level
        for s, px, sz in stream:
            upd(s, px, sz)
    return run


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:,.2f} M/s"
    return f"{x / 1e3:,.1f} k/s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:,.0f}x"


# -- memory -----------------------------------------------------------------------------

def traced_bytes(build) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = build()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return used, keep


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def filled(book_factory, n_books: int, depth: int = 10):
    snap_b = [(100.0 - 0.01 * (i + 1), 100.0) for i in range(depth)]
    snap_a = [(100.0 + 0.01 * (i + 1), 100.0) for i in range(depth)]

    def build():
        books = []
        for _ in range(n_books):
            b = book_factory()
            if isinstance(b, SortedBook):
                for px, sz in snap_b:
                    b.update_level(1, px, sz)
                for px, sz in snap_a:
                    b.update_level(0, px, sz)
            else:
                b.apply_snapshot(snap_b, snap_a)
            books.append(b)
        return books
    return build


# -- main -------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run: fewer inputs and 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss0 = rss_bytes()
        keep = filled(lambda: OrderBook(10), args.rss_child)()
        print(rss_bytes() - rss0)
        return 0 if keep else 1
    repeats = args.repeats or (3 if args.quick else 7)
    n_call = 200_000 if args.quick else 1_000_000
    n_batch = 1_000_000 if args.quick else 5_000_000
    n_ref = 50_000 if args.quick else 200_000
    n_sig = 1_000_000 if args.quick else 5_000_000
    n_sig_ref = 5_000 if args.quick else 20_000

    rows = []  # (measurement, core, reference, sorted, target)

    # Position-based depth, one Python call per update.
    stream = depth_stream(n_call)
    core_call = rate(n_call, per_call_depth(lambda: OrderBook(10), stream), repeats)
    ref_call = rate(n_ref, per_call_depth(lambda: ref.RefBook(10), stream[:n_ref]), repeats)
    srt_call = rate(n_ref, per_call_depth(lambda: SortedBook(10), stream[:n_ref]), repeats)
    rows.append(("depth update, per call (`update_depth`)", core_call, ref_call, srt_call, 5e6))

    # Loop overhead alone bounds the per-call figure: the same loop calling a no-op.
    class Noop:
        def update_depth(self, p, o, s, px, sz):
            pass
    noop_call = rate(n_call, per_call_depth(Noop, stream), repeats)

    # Batch path: the same stream, packed.
    big = depth_stream(n_batch) if n_batch != n_call else stream
    buf = pack_records(big)
    core_batch = rate(n_batch, lambda: OrderBook(10).apply_batch(buf), repeats)
    ref_batch = rate(n_ref, lambda: ref.RefBook(10).apply_batch(stream[:n_ref]), repeats)
    rows.append(("depth update, batch (`apply_batch`)", core_batch, ref_batch, srt_call, 50e6))

    # Price-level updates, one Python call per update.
    lstream = level_stream(n_call)
    core_lvl = rate(n_call, per_call_level(lambda: OrderBook(10), lstream), repeats)
    ref_lvl = rate(n_ref, per_call_level(lambda: ref.RefBook(10), lstream[:n_ref]), repeats)
    srt_lvl = rate(n_ref, per_call_level(lambda: SortedBook(10), lstream[:n_ref]), repeats)
    rows.append(("price-level update, per call (`update_level`)", core_lvl, ref_lvl, srt_lvl, None))

    # Queries, per call, on a full 10-level book.
    qbook, rbook = OrderBook(10), ref.RefBook(10)
    snap = ([(100 - 0.01 * i, 10.0 + i) for i in range(1, 11)], [(100 + 0.01 * i, 10.0 + i) for i in range(1, 11)])
    qbook.apply_snapshot(*snap)
    rbook.apply_snapshot(*snap)

    def queries(book, n):
        def run():
            mp, im, fill = book.microprice, book.imbalance, book.avg_fill_price
            for _ in range(n):
                mp()
                im(5)
                fill(True, 50.0)
        return run
    core_q = rate(3 * n_call // 2, queries(qbook, n_call // 2), repeats)
    ref_q = rate(3 * n_ref // 4, queries(rbook, n_ref // 4), repeats)
    rows.append(("queries per call (microprice, imbalance(5), avg_fill_price)", core_q, ref_q, None, None))

    # Signals, batch path, vs the reference per update.
    rng = random.Random(3)
    px = [100.0]
    for _ in range(n_sig - 1):
        px.append(px[-1] * math.exp(rng.gauss(0.0, 1e-4)))
    vol = [float(rng.randint(1, 500)) for _ in range(n_sig)]
    a_px, a_vol = array("d", px), array("d", vol)
    a_px2 = array("d", [p + 0.01 for p in px])
    out = array("d", bytes(8 * n_sig))
    w = 50
    signals = [
        ("EMA(span=50)", lambda: EMA(span=w), lambda: ref.RefEMA(span=w), (a_px,)),
        ("RollingMean(50)", lambda: RollingMean(w), lambda: ref.RefRollingMean(w), (a_px,)),
        ("RollingStd(50)", lambda: RollingStd(w), lambda: ref.RefRollingStd(w), (a_px,)),
        ("ZScore(50)", lambda: ZScore(w), lambda: ref.RefZScore(w), (a_px,)),
        ("VWAP session", lambda: VWAP(), lambda: ref.RefVWAP(), (a_px, a_vol)),
        ("VWAP(50) rolling", lambda: VWAP(w), lambda: ref.RefVWAP(w), (a_px, a_vol)),
        ("RealizedVolatility(50)", lambda: RealizedVolatility(w), lambda: ref.RefRealizedVolatility(w), (a_px,)),
        ("Imbalance", Imbalance, ref.RefImbalance, (a_vol, a_vol[::-1])),
        ("Microprice", Microprice, ref.RefMicroprice, (a_px, a_vol, a_px2, a_vol[::-1])),
    ]
    sig_rows = []
    for name, make, make_ref, cols in signals:
        core_rate = rate(n_sig, lambda: make().update_batch(*cols, out), repeats)
        ref_cols = [list(c[:n_sig_ref]) for c in cols]

        def run_ref(make_ref=make_ref, ref_cols=ref_cols):
            upd = make_ref().update
            for vals in zip(*ref_cols):
                upd(*vals)
        ref_rate = rate(n_sig_ref, run_ref, repeats)
        sig_rows.append((f"signal batch: {name}", core_rate, ref_rate, None, 10e6))
    # One scalar figure for the per-call Python path.
    xs = px[:n_call]

    def ema_scalar():
        upd = EMA(span=w).update
        for x in xs:
            upd(x)
    ema_call = rate(n_call, ema_scalar, repeats)

    # Memory.
    one = OrderBook(10)
    one_total = sys.getsizeof(one)
    one_obj = one_total - one.nbytes
    n_books = 10_000
    core_traced, keep = traced_bytes(filled(lambda: OrderBook(10), n_books))
    del keep
    ref_traced, keep = traced_bytes(filled(lambda: ref.RefBook(10), n_books))
    del keep
    srt_traced, keep = traced_bytes(filled(lambda: SortedBook(10), n_books))
    del keep
    # RSS in a fresh interpreter: here, memory freed by earlier measurements would be reused.
    core_rss = int(subprocess.run([sys.executable, __file__, "--rss-child", str(n_books)], check=True,
                                  capture_output=True, text=True).stdout)

    def met(value, target, higher_is_better=True):
        if target is None:
            return ""
        return "yes" if (value >= target if higher_is_better else value <= target) else "**no**"

    print(f"ibfleet core benchmark: Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, repeats={repeats}, medians{' (quick)' if args.quick else ''}\n")
    print("| measurement | core | reference | sortedcontainers | core / reference | core / sorted | target | met |")
    print("|---|---:|---:|---:|---:|---:|---:|:-:|")
    for name, c, r, s, target in rows + sig_rows:
        print(f"| {name} | {fmt_rate(c)} | {fmt_rate(r)} | {fmt_rate(s)} | {fmt_ratio(c, r)} | {fmt_ratio(c, s)} "
              f"| {fmt_rate(target) if target else ''} | {met(c, target)} |")
    print()
    print(f"Per-call context: the same Python loop calling a no-op method runs at {fmt_rate(noop_call)}; "
          f"`EMA.update` called per input from Python: {fmt_rate(ema_call)}.")
    print("The sortedcontainers column for the batch row repeats its per-call figure (it has no batch path).\n")
    print("| memory | core | reference | sortedcontainers | target | met |")
    print("|---|---:|---:|---:|---:|:-:|")
    print(f"| one 10-level book (sys.getsizeof: object {one_obj} B + rows {one.nbytes} B) | {one_total} B | | | "
          f"< 1024 B | {met(one_total, 1024, False)} |")
    print(f"| 10,000 full 10-level books (tracemalloc) | {core_traced / 2**20:.2f} MiB | {ref_traced / 2**20:.2f} MiB "
          f"| {srt_traced / 2**20:.2f} MiB | < 10 MiB | {met(core_traced, 10 * 2**20, False)} |")
    print(f"| 10,000 full 10-level books (RSS delta) | {core_rss / 2**20:.2f} MiB | | | < 10 MiB "
          f"| {met(core_rss, 10 * 2**20, False)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
