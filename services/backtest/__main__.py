"""``ibfleet backtest CONFIG RECORDING``: run a strategy over a recording, deterministically."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.backtest.engine import BacktestEngine, BacktestResult, Settings
from services.backtest.frames import write_frames
from services.backtest.matching import QUEUE_MODELS, CommissionModel
from services.backtest.report import summarize, to_json, to_text
from services.recorder.reader import Recording
from services.replay.timespec import parse_time
from services.runtime.config import ConfigError
from services.strategy import config as strategy_config

DESCRIPTION = """\
Run the strategy in CONFIG (its TOML file) over RECORDING (a directory written by
`ibfleet record`, or one segment file) through the live risk and execution engines; only the
venue (the exchange, matched on the recorded market) and the clock (the recording's) are
simulated.

Orders reach the simulated exchange after --latency-ms; its reports (order states, fills,
commissions) reach execution after --report-latency-ms. Fills come from the recorded market:
depth if the recording has it, else top-of-book ticks. Market orders and marketable limits
walk the book; resting limits fill when the market crosses them, at their price subject to
--queue-model; stops trigger on the recorded price. The same recording and config always
give the same bytes in intents.bin, fills.bin, report.txt and report.json.

Writes to --out: report.txt (also printed), report.json, report.png, intents.bin, fills.bin.
"""

EPILOG = """\
times for --from/--to: epoch nanoseconds, +SECONDS after the recording's start, or ISO 8601
(UTC unless an offset is given).  Queue models: none = a resting limit fills as soon as a trade
touches its price; proportional = it first waits for the size displayed ahead of it when it
arrived to trade or be cancelled (cancellations taken pro rata). See docs/backtest.md.

example:  ibfleet backtest strategies/mr1.toml recordings/2024-05-01 --out bt/mr1 --latency-ms 5
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibfleet backtest", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", metavar="CONFIG", help="the strategy's TOML file")
    parser.add_argument("recording", metavar="RECORDING", help="recording directory or segment")
    parser.add_argument("--out", default="backtest-out", metavar="DIR",
                        help="where the report and the binary logs go (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=5.0, metavar="MS",
                        help="one-way delay from an intent to the exchange, also for cancels "
                             "and modifies (default: %(default)s)")
    parser.add_argument("--report-latency-ms", type=float, default=None, metavar="MS",
                        help="one-way delay of the exchange's reports (fills, order states) "
                             "back to execution (default: the same as --latency-ms)")
    parser.add_argument("--queue-model", choices=QUEUE_MODELS, default="proportional",
                        help="how a resting limit waits its turn at its price "
                             "(default: %(default)s)")
    parser.add_argument("--from", dest="start", metavar="T", help="start at this time")
    parser.add_argument("--to", dest="end", metavar="T", help="stop after this time")
    parser.add_argument("--commission-per-share", type=float, default=0.005, metavar="USD",
                        help="commission a share (default: %(default)s)")
    parser.add_argument("--commission-min", type=float, default=1.0, metavar="USD",
                        help="minimum commission an order (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="skip report.png")
    return parser


def run(cfg: strategy_config.StrategyConfig, recording: Recording, settings: Settings,
        start_ns: int | None = None, end_ns: int | None = None) -> BacktestResult:
    engine = BacktestEngine(cfg, settings)
    messages = ((record.recv_ns, msg)
                for record, msg in recording.messages(start_ns, end_ns, topics=("md.",)))
    return engine.run(messages)


def write_outputs(result: BacktestResult, out: Path, plot: bool = True) -> str:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    text = to_text(summary)
    (out / "report.txt").write_text(text)
    (out / "report.json").write_text(to_json(summary))
    write_frames(out / "intents.bin", result.intents)
    write_frames(out / "fills.bin", result.fills)
    if plot:
        from services.backtest.plot import plot as draw  # matplotlib only when asked for
        draw(result, out / "report.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = strategy_config.load(args.config)
        recording = Recording(args.recording)
    except (ConfigError, FileNotFoundError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    try:
        span = recording.time_range()
        first = span[0] if span else None
        start_ns = parse_time(args.start, first) if args.start else None
        end_ns = parse_time(args.end, first) if args.end else None
    except ValueError as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    report_latency = args.latency_ms if args.report_latency_ms is None \
        else args.report_latency_ms
    if args.latency_ms < 0 or report_latency < 0:
        parser.exit(2, "ibfleet backtest: latencies cannot be negative\n")
    settings = Settings(latency_ns=int(round(args.latency_ms * 1e6)),
                        report_latency_ns=int(round(report_latency * 1e6)),
                        queue_model=args.queue_model,
                        commission=CommissionModel(args.commission_per_share,
                                                   args.commission_min))
    try:
        result = run(cfg, recording, settings, start_ns, end_ns)
    except (ConfigError, TypeError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    if not recording.report.clean:
        print(f"ibfleet backtest: the recording is damaged; read what was readable "
              f"({recording.report})", file=sys.stderr)
    sys.stdout.write(write_outputs(result, Path(args.out), plot=not args.no_plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
