"""``ibfleet backtest CONFIG RECORDING``: run a strategy over a recording, deterministically."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from services.backtest import fast_depth
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
    parser.add_argument("paths", nargs="+", metavar="CONFIG [RECORDING]",
                        help="the strategy's TOML file and the recording; with --data, one "
                             "or more strategies' TOML files")
    catalog = parser.add_argument_group(
        "over the data catalog (`ibfleet data`; docs/backtest.md \"Over the catalog\")")
    catalog.add_argument("--data", action="append", metavar="DATASET",
                         help="a catalog dataset (bars-1d/AAPL, bars-1min/6EH4, trades/AMZN, "
                              "quotes/EUR.USD, lobster/AAPL, or a symbol alone); repeat for "
                              "several, merged by time")
    catalog.add_argument("--catalog", metavar="DIR",
                         help="the catalog (default: $IBFLEET_CATALOG or STATE_DIR/catalog)")
    catalog.add_argument("--pricing", choices=("fixed", "tiered"), default="fixed",
                         help="IB's commission schedule: stocks fixed (0.005/share, min 1.00, "
                              "max 1%% of value) or tiered (0.0035..0.0005/share by the month's "
                              "volume, min 0.35, max 1%%, + clearing 0.0002/share); futures "
                              "0.85/contract (tiered: 0.85..0.25) (default: %(default)s)")
    catalog.add_argument("--fees-per-contract", type=float, default=0.0, metavar="USD",
                         help="futures: exchange and regulatory fees a contract, added to IB's "
                              "commission (default: %(default)s)")
    catalog.add_argument("--exchange-fee-per-share", type=float, default=0.0, metavar="USD",
                         help="stocks, tiered: exchange fee a share (default: %(default)s)")
    catalog.add_argument("--cash", type=float, default=1_000_000.0, metavar="USD",
                         help="initial cash of the account the strategies share: the base "
                              "of returns and buy-and-hold (default: %(default)s)")
    catalog.add_argument("--data-latency-ms", type=float, default=None, metavar="MS",
                         help="market data's delay from the venue to the strategies and risk "
                              "(default: 0)")
    catalog.add_argument("--jitter-ms", type=float, default=None, metavar="MS",
                         help="a seeded jitter, uniform in [0, MS], added to every delay of "
                              "each direction, order kept (default: 0)")
    catalog.add_argument("--latency-seed", type=int, default=None, metavar="N",
                         help="the jitter's seed (default: 0)")
    catalog.add_argument("--run-config", metavar="TOML",
                         help="the run's settings: [backtest.latency] (order_ms, report_ms, "
                              "data_ms, jitter_ms, seed; flags win) and [risk] (the account's "
                              "limits, as the fleet config's)")
    parser.add_argument("--out", default="backtest-out", metavar="DIR",
                        help="where the report and the binary logs go (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=None, metavar="MS",
                        help="one-way delay from an intent to the exchange, also for cancels "
                             "and modifies (default: 5)")
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
    parser.add_argument("--warmup", type=float, default=0.0, metavar="S",
                        help="seconds of the data before the strategy starts: the market and "
                             "the bars that Strategy.history returns (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="skip report.png")
    return parser


#: the project's strategy code, on every strategy program's PYTHONPATH (``class =
#: "sma_cross:SmaCross"``): importable here too
STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"


def run(cfg: strategy_config.StrategyConfig, recording: Recording, settings: Settings,
        start_ns: int | None = None, end_ns: int | None = None,
        fast: bool = True) -> BacktestResult:
    if str(STRATEGIES) not in sys.path:
        sys.path.append(str(STRATEGIES))
    engine = BacktestEngine(cfg, settings)
    if fast and fast_depth.usable(engine):  # depth updates in a Cython loop, same result
        return engine.run(fast_depth.messages(engine, recording, start_ns, end_ns))
    messages = ((record.recv_ns, msg)
                for record, msg in recording.messages(start_ns, end_ns, topics=("md.", "ref.")))
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
    if args.data:
        return catalog_main(parser, args)
    if len(args.paths) != 2:
        parser.exit(2, "ibfleet backtest: give CONFIG RECORDING, or CONFIG... --data DATASET\n")
    args.config, args.recording = args.paths
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
    try:
        latency, account_risk = run_config(args)
    except (ConfigError, ValueError, OSError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    if args.warmup < 0:
        parser.exit(2, "ibfleet backtest: latencies and the warm-up cannot be negative\n")
    if span and args.warmup:
        left = ((end_ns or span[1]) - max(start_ns or span[0], span[0])) / 1e9
        if args.warmup >= left:  # nothing would be left to trade on: say so, not a blank report
            parser.exit(2, f"ibfleet backtest: the warm-up ({args.warmup:g} s) is not shorter "
                           f"than the recording it would use ({left:.0f} s, "
                           f"{_iso(span[0])} .. {_iso(span[1])}): nothing would be left to "
                           f"trade on; give a shorter --warmup\n")
    settings = Settings(latency_ns=latency.order_ns, report_latency_ns=latency.report_ns,
                        queue_model=args.queue_model, warmup_ns=int(args.warmup * 1e9),
                        commission=CommissionModel(args.commission_per_share,
                                                   args.commission_min),
                        latency=latency, account_risk=account_risk)
    try:
        result = run(cfg, recording, settings, start_ns, end_ns)
    except (ConfigError, TypeError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    if not recording.report.clean:
        print(f"ibfleet backtest: the recording is damaged; read what was readable "
              f"({recording.report})", file=sys.stderr)
    if not result.messages:  # a report of zeros would look like a strategy that did nothing
        parser.exit(2, f"ibfleet backtest: the recording has no market data for "
                       f"{', '.join(cfg.symbols)}"
                       + (f" after the {args.warmup:g} s warm-up" if args.warmup else "")
                       + " in the time asked: nothing was tested\n")
    sys.stdout.write(write_outputs(result, Path(args.out), plot=not args.no_plot))
    return 0


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))


def catalog_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Strategies over catalog datasets (services/backtest/catalog_run.py)."""
    from services.backtest import catalog_run
    from services.backtest.matching import IBCommissions
    from services.data.catalog import Catalog
    from services.data.cli import default_catalog
    from services.data.errors import DataError

    catalog = Catalog(args.catalog) if args.catalog else Catalog(default_catalog())
    try:
        cfgs = [strategy_config.load(path) for path in args.paths]
        names = [c.name for c in cfgs]
        if len(set(names)) != len(names):
            raise ConfigError(f"two strategies named alike: {', '.join(names)}")
        probe = catalog_run.CatalogSource(catalog, args.data)
        start_ns = parse_time(args.start, probe.start_ns) if args.start else None
        end_ns = parse_time(args.end, probe.start_ns) if args.end else None
    except (ConfigError, FileNotFoundError, ValueError, DataError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    try:
        latency, account_risk = run_config(args)
    except (ConfigError, ValueError, OSError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    if args.warmup < 0 or args.cash <= 0:
        parser.exit(2, "ibfleet backtest: the warm-up cannot be negative, the cash must be "
                       "positive\n")
    commission = IBCommissions(
        pricing=args.pricing, sec_types=probe.sec_types(),
        stock_fixed=CommissionModel(args.commission_per_share, args.commission_min),
        exchange_per_share=args.exchange_fee_per_share,
        fees_per_contract=args.fees_per_contract)
    settings = Settings(latency_ns=latency.order_ns, report_latency_ns=latency.report_ns,
                        queue_model=args.queue_model, commission=commission,
                        initial_cash=args.cash, latency=latency, account_risk=account_risk)
    try:
        source, runs = catalog_run.run_all(cfgs, catalog, args.data, start_ns, end_ns,
                                           args.warmup or None, settings)
    except (ConfigError, TypeError, ValueError, DataError) as exc:
        parser.exit(2, f"ibfleet backtest: {exc}\n")
    sys.stdout.write(catalog_run.write(source, runs, Path(args.out), settings,
                                       plot=not args.no_plot))
    return 0


def run_config(args: argparse.Namespace):
    """The latency model and the account's ``[risk]`` from ``--run-config`` and the flags
    (a flag given wins over the file). ValueError / ConfigError naming the file and key."""
    from services.backtest.latency import LatencyModel, from_table
    from services.runtime.decoding import read_toml
    values: dict = {}
    account_risk = None
    if args.run_config:
        raw = read_toml(Path(args.run_config), "backtest run config")
        unknown = sorted(set(raw) - {"backtest", "risk"})
        if unknown or set(raw.get("backtest", {})) - {"latency"}:
            raise ValueError(f"{args.run_config}: only [backtest.latency] and [risk] are read "
                             f"(found {', '.join(unknown or sorted(raw['backtest']))})")
        values = from_table(raw.get("backtest", {}).get("latency", {}), args.run_config)
        account_risk = raw.get("risk")
        if account_risk is not None:
            from services.risk.limits import Limits, build_limits
            build_limits(account_risk, args.run_config, Limits())  # refuse a bad one here
    flags = {"order_ms": args.latency_ms, "report_ms": args.report_latency_ms,
             "data_ms": args.data_latency_ms, "jitter_ms": args.jitter_ms,
             "seed": args.latency_seed}
    values.update({k: v for k, v in flags.items() if v is not None})
    return LatencyModel.from_ms(**values), account_risk


if __name__ == "__main__":
    raise SystemExit(main())
