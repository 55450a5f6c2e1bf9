"""``ibfleet data``: the data catalog's command line.

    ibfleet data import KIND PATH... [--symbol S] [--zone Z] [--mapping COL=FIELD,...]
    ibfleet data import-sample
    ibfleet data list
    ibfleet data show DATASET
    ibfleet data remove DATASET
    ibfleet data download SYMBOL --from DATE --to DATE [--bar-size "1 min"] [--what TRADES]
                          [--ticks TRADES|BID_ASK|MIDPOINT] [--rth | --all-hours]
                          [--config FLEET.toml]

Every subcommand takes ``--catalog DIR`` (default: $IBFLEET_CATALOG, else the fleet's state
directory's ``catalog/``). Refusals print one ``ibfleet data: ...`` line and exit 1.
``download`` asks the running fleet's gateway for IB historical bars, or with ``--ticks`` IB
historical ticks into trades/quotes (services/data/download.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import msgspec

from services.data.catalog import Catalog
from services.data.errors import DataError
from services.data.importers import KINDS, Options, read
from services.data.times import format_ns

__all__ = ["default_catalog", "main"]


def default_catalog() -> Path:
    if os.environ.get("IBFLEET_CATALOG"):
        return Path(os.environ["IBFLEET_CATALOG"])
    from services.runtime.config import default_state_dir
    return default_state_dir() / "catalog"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibfleet data",
                                     description="The data catalog: Parquet datasets by kind, "
                                                 "instrument and date, with provenance. "
                                                 "See docs/data.md.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalog", metavar="DIR", type=Path, default=None,
                        help="the catalog's root (default: $IBFLEET_CATALOG or "
                             "STATE_DIR/catalog)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    imp = sub.add_parser("import", parents=[common], help="import files (all or nothing)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="kinds:\n" + "\n".join(f"  {k:<9} {v}" for k, v in
                                                       KINDS.items()) +
                         "\n\nexample:\n  ibfleet data import trades AMZN_2012-06-21_"
                         "executions.csv --symbol AMZN \\\n      --zone America/New_York "
                         "--price-scale 10000 --mapping Time=ts,Price=price,Volume=size")
    imp.add_argument("kind", choices=sorted(KINDS), metavar="KIND")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--symbol", help="the instrument (default: from the file or its name)")
    imp.add_argument("--zone", help="zone of local times in the files: IANA name, UTC, EST "
                                    "(fixed UTC-5) or UTC-5 (default: per kind)")
    imp.add_argument("--mapping", metavar="COL=FIELD,...",
                     help="which column holds which field (trades/quotes/bars)")
    imp.add_argument("--price-scale", type=float, default=1.0, metavar="N",
                     help="divide prices by N (LOBSTER-derived CSV: 10000)")
    imp.add_argument("--bar-size", help="bars: 1d, 1min, ... (default: inferred)")
    imp.add_argument("--date", help="lobster: the day, if the file name lacks it")
    imp.add_argument("--licence", default="", help="the provenance / licence line to keep")
    imp.add_argument("--sec-type")
    imp.add_argument("--exchange")
    imp.add_argument("--currency")
    imp.add_argument("--min-tick", type=float)
    imp.add_argument("--multiplier", type=float)
    mode = imp.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true",
                      help="replace a dataset that holds other files")
    mode.add_argument("--append", action="store_true",
                      help="add dates a dataset does not have yet")
    sample = sub.add_parser("import-sample", parents=[common],
                            help="import the real sample that ships in data/sample/")
    sample.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    lst = sub.add_parser("list", parents=[common], help="the datasets")
    lst.add_argument("--json", action="store_true")
    show = sub.add_parser("show", parents=[common],
                          help="one dataset: rows, time range, columns, provenance")
    show.add_argument("dataset", metavar="DATASET", help="KIND/SYMBOL, or SYMBOL if unique")
    show.add_argument("--json", action="store_true")
    show.add_argument("--head", type=int, default=0, metavar="N", help="print the first N rows")
    rm = sub.add_parser("remove", parents=[common], help="remove one dataset")
    rm.add_argument("dataset", metavar="DATASET")
    dl = sub.add_parser("download", parents=[common],
                        help="IB historical bars through the running fleet's gateway, one UTC "
                             "day per partition (resumable)",
                        description="Ask the running fleet's gateway for IB historical bars "
                                    "(paced there by IB's rules, with everything else the "
                                    "fleet asks) and store each complete UTC day in "
                                    "bars-SIZE/SYMBOL. Days the catalog has are skipped: "
                                    "run the same command again to continue.")
    dl.add_argument("symbol", metavar="SYMBOL", help="the fleet's symbol (as in its config)")
    dl.add_argument("--from", dest="from_day", required=True, metavar="DATE",
                    help="first UTC day, YYYY-MM-DD")
    dl.add_argument("--to", dest="to_day", required=True, metavar="DATE",
                    help="last UTC day, YYYY-MM-DD (included)")
    dl.add_argument("--bar-size", default="1 min", help="IB's bar size: '1 min' (default), "
                                                        "'5 secs', '5 mins', '1 hour'...")
    dl.add_argument("--what", default="TRADES", choices=("TRADES", "MIDPOINT", "BID_ASK"),
                    help="IB's whatToShow (default TRADES)")
    dl.add_argument("--ticks", choices=("TRADES", "BID_ASK", "MIDPOINT"), default=None,
                    help="IB historical ticks instead of bars, this whatToShow: TRADES into "
                         "trades/SYMBOL, BID_ASK and MIDPOINT into quotes/SYMBOL (pages of "
                         "1000 ticks, one UTC day per partition, resumable)")
    rth = dl.add_mutually_exclusive_group()
    rth.add_argument("--rth", dest="rth", action="store_true", default=True,
                     help="regular trading hours only (default)")
    rth.add_argument("--all-hours", dest="rth", action="store_false",
                     help="outside regular trading hours too (useRTH=0)")
    dl.add_argument("--wait", type=float, default=10.0, metavar="S",
                    help="seconds to wait for the gateway's state on the bus (default 10)")
    from services.runtime.cli import add_common_args
    add_common_args(dl)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    catalog = Catalog(args.catalog or default_catalog())
    try:
        if args.command == "import":
            return _import(catalog, args)
        if args.command == "import-sample":
            from services.data.sample import import_sample
            start = time.perf_counter()
            return _report(import_sample(catalog, args.dir), catalog, start)
        if args.command == "list":
            return _list(catalog, args.json)
        if args.command == "show":
            return _show(catalog, args.dataset, args.json, args.head)
        if args.command == "download":
            return _download(args)
        if args.command == "remove":
            catalog.remove(args.dataset)
            print(f"removed {args.dataset}")
            return 0
    except DataError as exc:
        print(f"ibfleet data: {exc}", file=sys.stderr)
        return 1
    return 2


def _download(args) -> int:
    from services.data import download
    from services.fleet.supervisor import load_for_fleet
    from services.runtime import config as fleet_config
    try:  # the running fleet's bus, as status and the controls reach it (its keys included)
        config = load_for_fleet(args.config, args.run_dir, args.state_dir)
    except fleet_config.ConfigError as exc:
        raise DataError(str(exc)) from None
    if args.catalog is None and not os.environ.get("IBFLEET_CATALOG") and (
            args.config or args.state_dir):
        args.catalog = config.state_dir / "catalog"  # the fleet's own state directory
    args.catalog_obj = Catalog(args.catalog or default_catalog())
    return download.main(args, config)


def _import(catalog: Catalog, args) -> int:
    instrument = {k: v for k, v in (("sec_type", args.sec_type), ("exchange", args.exchange),
                                    ("currency", args.currency), ("min_tick", args.min_tick),
                                    ("multiplier", args.multiplier)) if v is not None}
    options = Options(symbol=args.symbol, zone=args.zone, mapping=args.mapping,
                      price_scale=args.price_scale, bar_size=args.bar_size, date=args.date,
                      licence=args.licence, instrument=instrument)
    start = time.perf_counter()
    try:
        pieces = read(args.kind, args.paths, options)
    except (TypeError, msgspec.ValidationError) as exc:  # instrument fields out of range
        raise DataError(str(exc)) from None
    return _report(catalog.add(pieces, replace=args.replace, append=args.append), catalog,
                   start)


def _report(results, catalog: Catalog, start: float) -> int:
    seconds = time.perf_counter() - start
    for result in results:
        print(f"{result.status:<9} {result.name:<24} {result.rows:>9} rows")
    print(f"catalog {catalog.root} ({seconds:.2f} s)")
    return 0


def _list(catalog: Catalog, as_json: bool) -> int:
    metas = catalog.datasets()
    if as_json:
        print(msgspec.json.encode([{"name": m.name, "rows": m.rows, "first_ts": m.first_ts,
                                    "last_ts": m.last_ts, "partitions": len(m.partitions)}
                                   for m in metas]).decode())
        return 0
    if not metas:
        print(f"no datasets in {catalog.root}")
        return 0
    print(f"{'DATASET':<24} {'ROWS':>9} {'PARTS':>5}  {'FIRST (UTC)':<30} LAST (UTC)")
    for m in metas:
        print(f"{m.name:<24} {m.rows:>9} {len(m.partitions):>5}  {format_ns(m.first_ts):<30} "
              f"{format_ns(m.last_ts)}")
    return 0


def _show(catalog: Catalog, name: str, as_json: bool, head: int) -> int:
    meta = catalog.meta(name)
    if as_json:
        print(msgspec.json.encode(meta).decode())
        return 0
    ref = meta.instrument
    lines = [f"dataset     {meta.name} ({catalog.path(name)})",
             f"instrument  {ref.symbol} {ref.sec_type} {ref.exchange or '-'} {ref.currency}, "
             f"min tick {ref.min_tick if ref.min_tick is not None else '-'}, multiplier "
             f"{ref.multiplier:g}, source zone {ref.zone}",
             f"rows        {meta.rows} in {len(meta.partitions)} partitions "
             f"({meta.partitions[0].key} .. {meta.partitions[-1].key})",
             f"time        {format_ns(meta.first_ts)} .. {format_ns(meta.last_ts)}",
             "columns     " + ", ".join(f"{c.name} {c.type}" + (f" [{c.unit}]" if c.unit else "")
                                        for c in meta.columns[:12])
             + (f", ... ({len(meta.columns)} in all)" if len(meta.columns) > 12 else ""),
             "provenance"]
    for p in meta.provenance:
        lines.append(f"  {p.source}")
        lines.append(f"    sha256 {p.sha256}, {p.bytes} bytes, {p.rows} rows, imported "
                     f"{p.imported_at} as {p.importer}")
        if p.options:
            lines.append("    " + ", ".join(f"{k}={v}" for k, v in sorted(p.options.items())))
        if p.licence:
            lines.append(f"    {p.licence}")
    print("\n".join(lines))
    if head > 0:
        table = catalog.read(meta.name).slice(0, head)
        for row in table.to_pylist():
            print("  " + format_ns(row["ts"]) + "  " +
                  " ".join(f"{k}={v}" for k, v in list(row.items())[1:8]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
