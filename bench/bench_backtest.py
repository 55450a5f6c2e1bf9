"""Backtest over 1,000,000 IB-shaped L2 depth updates: events/s and peak RSS, side by side.

    python bench/bench_backtest.py [--quick] [--runs N] [--events N] [--base /work/base]
                                   [--nautilus PYTHON]

The events: the real LOBSTER sample (``data/sample``: NASDAQ AAPL, 2012-06-21, 10 levels)
turned into IB's position-based depth rows (``updateMktDepth``: insert shifts down, delete
shifts up, update in place, the row pushed off a full 10-row book dropped without a delete:
``services.simulator.market.depth_ops``), one frame per LOBSTER event, looped (the book
carried over from the end of the sample to its start, the clock going on) until there are
N updates; prices are the sample's. They are written as a bus recording with the recorder's
writer and backtested by the real ``services.backtest`` (``run``: the live ``Strategy``
class, real risk and execution engines, the simulated venue) with two Python strategies
(``bench/bt_strategies.py``): ``TopOfBook`` (best bid/ask on every update) and
``Imbalance5`` (size imbalance over 5 levels on every update). Each run is a fresh
subprocess; events/s is depth messages processed / wall time of ``run`` (imports and set-up
excluded, reading the recording included), peak RSS the child's ``ru_maxrss`` (``wait4``).
Medians of N runs, the code under test and the baseline worktree interleaved, then
nautilus_trader (if a Python with it is given) on the same events.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE = ROOT / "data" / "sample"
STEM = "AAPL_2012-06-21_34200000_57600000"
MIDNIGHT_NY_NS = 1_340_251_200 * 1_000_000_000  # 2012-06-21 00:00 America/New_York (EDT)
ROWS = 10
WORKLOADS = {"top_of_book": "TopOfBook", "imbalance_5": "Imbalance5"}
DEFAULT_BASE = Path("/work/base")
DEFAULT_NAUTILUS = Path("/work/tools/nautilus312/bin/python")
EVENT = struct.Struct("<qbbidd")
NAUTILUS_REF = {"top_of_book": (85_500, 750), "imbalance_5": (42_300, 750)}


# -- the events -------------------------------------------------------------------------------
def lobster_books() -> tuple[list[int], list[tuple[list, list]]]:
    """(times ns, books) of the sample: each book (bids best first, asks best first) of
    (price x 10000, size) levels."""
    with gzip.open(SAMPLE / f"{STEM}_message_10.csv.gz", "rt") as f:
        times = [MIDNIGHT_NY_NS + round(float(line.split(",", 1)[0]) * 1e9)
                 for line in f.read().split()]
    books = []
    with gzip.open(SAMPLE / f"{STEM}_orderbook_10.csv.gz", "rt") as f:
        for line in f.read().split():
            v = [int(x) for x in line.split(",")]
            asks = [(v[i], v[i + 1]) for i in range(0, 40, 4) if abs(v[i]) < 9_999_999_999]
            bids = [(v[i + 2], v[i + 3]) for i in range(0, 40, 4)
                    if abs(v[i + 2]) < 9_999_999_999]
            books.append((bids, asks))
    n = min(len(times), len(books))
    return times[:n], books[:n]


def depth_frames(n_events: int):
    """Yield (recv_ns, [(position, operation, side, price, size), ...]) until n_events."""
    from services.simulator.market import depth_ops
    times, books = lobster_books()
    span = times[-1] - times[0] + 1_000_000
    old = ([], [])
    done = 0
    loop = 0
    while done < n_events:
        for t, (bids, asks) in zip(times, books):
            ops = [(pos, op, 1, lvl) for pos, op, lvl in depth_ops(old[0], bids, ROWS, True)]
            ops += [(pos, op, 0, lvl) for pos, op, lvl in depth_ops(old[1], asks, ROWS, False)]
            old = (bids[:ROWS], asks[:ROWS])
            if not ops:
                continue
            ops = ops[:n_events - done]
            done += len(ops)
            yield t + loop * span, [(pos, op, side, lvl[0] / 10_000, float(lvl[1]))
                                    for pos, op, side, lvl in ops]
            if done >= n_events:
                return
        loop += 1


def build(directory: Path, n_events: int) -> Path:
    """The recording (and events.bin for other engines), cached by event count."""
    from proto import codec
    from proto.schema import DepthUpdate
    from services.recorder.writer import RecordingWriter
    done = directory / "done.json"
    if done.exists() and json.loads(done.read_text()).get("events") == n_events:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    rec = directory / "recording"
    rec.mkdir()
    writer = None
    seq = 0
    with open(directory / "events.bin", "wb") as out:
        for recv_ns, ops in depth_frames(n_events):
            if writer is None:
                writer = RecordingWriter(rec, clock=lambda: recv_ns)
            msgs = []
            for pos, op, side, price, size in ops:
                seq += 1
                msgs.append(DepthUpdate(symbol="AAPL", position=pos, operation=op, side=side,
                                        price=price, size=size, src="lobster.1", seq=seq,
                                        tseq=seq, ts=recv_ns))
                out.write(EVENT.pack(recv_ns, side, op, pos, price, size))
            writer.append(recv_ns, b"md.depth.AAPL", codec.encode(msgs))
    writer.close()
    done.write_text(json.dumps({"events": n_events}))
    return directory


# -- one run, in a child process ------------------------------------------------------------
def child(root: Path, workload: str, recording: Path, fast: bool) -> None:
    sys.path.insert(0, str(root))
    sys.path.insert(1, str(HERE))
    os.chdir(root)
    import bt_strategies
    from services.backtest import __main__ as bt
    from services.backtest.engine import Settings
    from services.recorder.reader import Recording
    from services.strategy.config import StrategyConfig
    cls = getattr(bt_strategies, WORKLOADS[workload])
    cfg = StrategyConfig(name="bench", class_path=f"bt_strategies:{cls.__name__}",
                         symbols=["AAPL"], timer_s=float(os.environ.get("BENCH_TIMER_S", "1")))
    kwargs = {} if fast else {"fast": False}
    t0, c0 = time.perf_counter(), time.process_time()
    result = bt.run(cfg, Recording(recording), Settings(), **kwargs)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"messages": result.messages, "seconds": elapsed, "cpu": cpu,
                      "errors": result.callback_errors}))


def measure(python: str, root: Path, workload: str, recording: Path, fast: bool = True
            ) -> tuple[float, float, float]:
    """(events/s, events per CPU second, peak RSS MiB) of one run in a fresh process."""
    argv = [python, str(HERE / "bench_backtest.py"), "--child", workload, "--root", str(root),
            "--recording", str(recording)] + ([] if fast else ["--general"])
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=root, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{root} {workload}: child failed ({proc.returncode})")
    res = json.loads(out.strip().splitlines()[-1])
    if res["errors"]:
        raise RuntimeError(f"{root} {workload}: {res['errors']} strategy callback errors")
    return res["messages"] / res["seconds"], res["messages"] / res["cpu"], usage.ru_maxrss / 1024


def measure_nautilus(python: str, workload: str, events: Path) -> tuple[float, float, float]:
    argv = [python, "-W", "ignore", str(HERE / "bt_nautilus.py"), workload, str(events)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd="/tmp")
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"nautilus {workload}: child failed")
    res = json.loads(out.strip().splitlines()[-1])
    return res["events"] / res["seconds"], res["events"] / res["cpu"], usage.ru_maxrss / 1024


def nautilus_version(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import nautilus_trader; print(nautilus_trader.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100,000 events, 3 runs")
    p.add_argument("--runs", type=int)
    p.add_argument("--events", type=int)
    p.add_argument("--base", type=Path, default=DEFAULT_BASE, help="baseline worktree")
    p.add_argument("--nautilus", default=str(DEFAULT_NAUTILUS),
                   help="a Python with nautilus_trader installed ('' to skip)")
    p.add_argument("--general", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--recording", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.root, args.child, args.recording, not args.general)
        return 0
    n_events = args.events or (100_000 if args.quick else 1_000_000)
    runs = args.runs or (3 if args.quick else 5)
    data = build(Path(os.environ.get("TMPDIR", "/tmp")) / f"ibfleet-bench-backtest-{n_events}",
                 n_events)
    recording = data / "recording"
    python = sys.executable
    impls = [("this code", ROOT, True), ("this code, general path (no fast path)", ROOT, False)]
    base_note = ""
    if args.base and (args.base / "services" / "backtest").is_dir():
        try:
            measure(python, args.base, "top_of_book", recording)
            impls.append((f"baseline {_rev(args.base)} ({args.base})", args.base, True))
        except Exception as exc:  # noqa: BLE001 - said in the output
            base_note = f"The baseline at {args.base} could not run the workload: {exc}."
    else:
        base_note = f"No baseline worktree at {args.base}: not measured."
    naut_version = nautilus_version(args.nautilus) if args.nautilus else None
    naut_name = f"nautilus_trader {naut_version} (Python 3.12), same events" if naut_version else ""
    naut_note = ("" if naut_version else "nautilus_trader is not installed here (give --nautilus "
                 "PYTHON): only the issue's figures, not re-measured.")
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for i in range(runs):  # interleaved, so that the machine's load hits all alike
        for workload in WORKLOADS:
            for name, root, fast in impls:
                results.setdefault((name, workload), []).append(
                    measure(python, root, workload, recording, fast))
            if naut_version and not naut_note:
                try:
                    results.setdefault((naut_name, workload), []).append(
                        measure_nautilus(args.nautilus, workload, data / "events.bin"))
                except Exception as exc:  # noqa: BLE001
                    naut_note = f"nautilus_trader did not run: {exc}."
        print(f"run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    names = [name for name, _, _ in impls] + ([naut_name] if (naut_name, "top_of_book")
                                              in results else [])

    def med(name: str, workload: str, j: int) -> float:
        return statistics.median(r[j] for r in results[(name, workload)])

    print(f"{n_events:,} IB depth updates from the LOBSTER AAPL sample (looped), one Python "
          f"strategy call per update; median of {runs} runs, each in a fresh process, engines "
          f"interleaved; events/s on the wall clock (2 shared cores: noisy) and per CPU "
          f"second of the run.\n")
    print("| engine | top of book: events/s | per CPU s | peak RSS | imbalance-5: events/s "
          "| per CPU s | peak RSS |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name in names:
        cells = []
        for w in WORKLOADS:
            cells += [f"{med(name, w, 0):,.0f}", f"{med(name, w, 1):,.0f}",
                      f"{max(r[2] for r in results[(name, w)]):.0f} MiB"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| nautilus_trader 1.231, issue 14's figures (not re-measured) | 85,500 | - | ~750 MiB "
          "| 42,300 | - | ~750 MiB |")
    print()
    rss = max(r[2] for w in WORKLOADS for r in results[("this code", w)])
    for w, label in (("top_of_book", "top of book"), ("imbalance_5", "imbalance-5")):
        ours = med("this code", w, 0)
        goal = 10 * NAUTILUS_REF[w][0]
        line = (f"- {label}: {ours:,.0f} events/s, {ours / NAUTILUS_REF[w][0]:.1f}x the issue's "
                f"nautilus figure (goal 10x = {goal:,}: {'met' if ours >= goal else 'not met'})")
        for name in names[1:]:
            line += f"; {ours / med(name, w, 0):.1f}x {name.split(' (')[0]}"
        print(line)
    print(f"- peak RSS of this code, worst run: {rss:.0f} MiB (goal < 200 MiB: "
          f"{'met' if rss < 200 else 'not met'})")
    for note in (base_note, naut_note):
        if note:
            print(f"- {note}")
    return 0


def _rev(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True).stdout.strip() or "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
