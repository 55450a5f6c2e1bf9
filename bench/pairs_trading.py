"""``bench_trading.py`` from two checkouts, side by side: alternate runs, medians, ratios.

Run: .venv/bin/python bench/pairs_trading.py BASE_TREE HEAD_TREE [PAIRS] [-- ARGS...]

Each tree is a checkout with its Cython core built (``git worktree add /tmp/base REV``, then
copy ``core/*.so`` or ``make build`` there). Runs alternate base, head, base, head, ... so a
machine whose speed drifts affects both alike; for each figure the medians of each side and
the median of the per-pair ratios head/base are printed. ARGS go to ``bench_trading.py``
(e.g. ``--auth``, ``--quick``). This is how docs/benchmarks.md's "Before and after one truth"
tables were made.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

FIGURES = {"p50": r"\(p50\) \| ([\d,]+)", "p99": r"\(p99\) \| ([\d,]+)",
           "pipelined": r"acknowledged.*?\| ([\d,]+) intents",
           "checks": r"in-process \| ([\d,]+)"}


def run(tree: str, args: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "bench/bench_trading.py", *args], cwd=tree,
                         capture_output=True, text=True, timeout=900, check=True).stdout
    figures = {}
    for name, pattern in FIGURES.items():
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"{tree}: no {name} figure in:\n{out}")
        figures[name] = float(found.group(1).replace(",", ""))
    return figures


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else []
    positional = argv[:argv.index("--")] if "--" in argv else argv
    if len(positional) < 2 or not all(Path(t, "bench").is_dir() for t in positional[:2]):
        print(__doc__)
        return 2
    base, head = positional[:2]
    pairs = int(positional[2]) if len(positional) > 2 else 9
    rows = []
    for i in range(pairs):
        rows.append((run(base, args), run(head, args)))
        print(f"pair {i + 1}: base {rows[-1][0]} head {rows[-1][1]}", flush=True)
    print("| figure | base (median) | head (median) | median ratio head/base |")
    print("|---|---|---|---|")
    for name in FIGURES:
        b = statistics.median(r[0][name] for r in rows)
        h = statistics.median(r[1][name] for r in rows)
        ratio = statistics.median(r[1][name] / r[0][name] for r in rows)
        print(f"| {name} | {b:,.0f} | {h:,.0f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
