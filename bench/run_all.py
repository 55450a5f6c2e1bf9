"""Run every benchmark in turn (`make bench`) and write their tables into docs/benchmarks.md.

    python bench/run_all.py [--quick] [--only bench_bus.py ...] [--write docs/benchmarks.md]

Each script prints its own markdown (medians, and each figure beside its baseline measured in
the same run: raw pyzmq for the bus, the pure-Python reference for the core, ib_async for
tick-to-order...). With ``--write``, each script's output replaces the block between
``<!-- generated: NAME -->`` and ``<!-- /generated: NAME -->`` in the file, under a line that
says when, at which commit and on which machine it was measured; a block whose script was not
run this time (``--only``, or it failed) keeps its old figures and its old line, so a figure
that was not re-measured says so. Prose outside the blocks (method, reading) is kept as is.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: script -> extra arguments of a full run; every script takes --quick too
BENCHES = {
    "bench_bus.py": [],
    "bench_core.py": [],
    "bench_simulator.py": [],
    "bench_gateway.py": [],
    "bench_trading.py": [],
    "bench_recorder.py": [],
    "bench_broker.py": [],
    "bench_tick_to_order.py": [],
    "bench_recovery.py": ["--full"],  # outages up to 120 s, as docs/benchmarks.md quotes
    "bench_backtest.py": [],
    "bench_import.py": [],
}
NO_QUICK = {"bench_simulator.py", "bench_gateway.py"}


def machine() -> str:
    """One line: cores, CPU model, memory, Python."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({model}){mem}, Python {platform.python_version()}"


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        return rev + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


def block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {re.escape(name)} -->\n).*?(<!-- /generated: "
                      rf"{re.escape(name)} -->)", re.S)


def write_block(doc: str, name: str, body: str) -> str:
    """``doc`` with NAME's generated block replaced by ``body``; a missing block is appended
    under a heading of its own."""
    pattern = block_pattern(name)
    if pattern.search(doc):
        return pattern.sub(lambda m: m.group(1) + body + m.group(2), doc, count=1)
    return (doc.rstrip("\n") + f"\n\n## `bench/{name}` (generated)\n\n"
            f"<!-- generated: {name} -->\n{body}<!-- /generated: {name} -->\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller runs")
    parser.add_argument("--only", nargs="+", metavar="SCRIPT", help="run only these scripts")
    parser.add_argument("--write", metavar="DOC", help="write the tables into this markdown file")
    args = parser.parse_args()
    names = args.only or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    stamp = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at "
             f"{commit()} on {machine()}, by `make bench`"
             f"{' (--quick)' if args.quick else ''}.")
    failed = []
    outputs: dict[str, str] = {}
    for name in names:
        print(f"\n## {name}\n", flush=True)
        argv = [sys.executable, str(HERE / name), *([] if args.quick else BENCHES[name])]
        if args.quick and name not in NO_QUICK:
            argv.append("--quick")
        proc = subprocess.run(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE)
        print(proc.stdout, flush=True)
        if proc.returncode:
            failed.append(name)
        else:
            outputs[name] = proc.stdout
    if args.write:
        doc_path = Path(args.write)
        doc = doc_path.read_text()
        for name, out in outputs.items():
            doc = write_block(doc, name, f"{stamp}\n\n{out.strip()}\n")
        doc_path.write_text(doc)
        print(f"wrote {len(outputs)} block(s) into {doc_path}", flush=True)
    if failed:
        print(f"\nfailed (their figures in the doc were left as they were): "
              f"{', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
