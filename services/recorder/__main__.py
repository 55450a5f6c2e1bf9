"""``ibfleet record``: record every bus message to checksummed segment files.

Run the recorder:   ibfleet record --out DIR [--run-dir RUN_DIR]
Check a recording:  ibfleet record --check DIR [--deep]   (JSON report; exit 1 if incomplete)
Rebuild indexes:    ibfleet record --reindex DIR

The format is described in docs/recording.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.runtime import config as fleet_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibfleet record", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0] + "\n\n" + __doc__.split("\n\n")[1])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, metavar="DIR",
                      help="record into this directory (created if missing; new segments are "
                           "numbered after any already there)")
    mode.add_argument("--check", type=Path, metavar="RECORDING",
                      help="verify checksums and per-source sequence numbers, print a JSON "
                           "report, exit 1 if anything is missing or damaged")
    mode.add_argument("--reindex", type=Path, metavar="RECORDING",
                      help="rebuild every segment's time index from the segment itself")
    parser.add_argument("--deep", action="store_true",
                        help="with --check: decode every message, not only the frame summaries")
    run = parser.add_argument_group("recording options")
    run.add_argument("--config", help="fleet config TOML (default: loopback defaults)")
    run.add_argument("--run-dir", help="run directory of the bus to record (ipc:// endpoints)")
    run.add_argument("--rotate-mb", type=float, default=256.0,
                     help="start a new segment after this many MiB (default: %(default)s)")
    run.add_argument("--rotate-seconds", type=float, default=3600.0,
                     help="start a new segment after this many seconds (default: %(default)s)")
    run.add_argument("--flush-ms", type=int, default=50,
                     help="hand buffered records to the kernel this often; bounds what a "
                          "kill -9 loses (default: %(default)s)")
    run.add_argument("--fsync-seconds", type=float, default=1.0,
                     help="fsync this often (and on rotation and stop); bounds what a power "
                          "loss loses; 0 = only on rotation and stop (default: %(default)s)")
    run.add_argument("--retry-seconds", type=float, default=5.0,
                     help="after a write error (disk full...), retry with a new segment this "
                          "often (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.check is not None:
        from services.recorder.check import check_recording
        try:
            result = check_recording(args.check, deep=args.deep)
        except FileNotFoundError as exc:
            parser.exit(2, f"ibfleet record: {exc}\n")
        print(json.dumps(result.as_dict(), indent=2))
        return 0 if result.complete else 1
    if args.reindex is not None:
        return _reindex(parser, args.reindex)
    from services.recorder.service import Recorder, RecorderSettings
    from services.recorder.writer import WriterPolicy
    try:
        cfg = fleet_config.load(args.config, args.run_dir)
    except fleet_config.ConfigError as exc:
        parser.exit(2, f"ibfleet record: {exc}\n")
    if args.rotate_mb <= 0 or args.rotate_seconds <= 0 or args.flush_ms <= 0 \
            or args.retry_seconds <= 0 or args.fsync_seconds < 0:
        parser.exit(2, "ibfleet record: rotation, flush and retry settings must be positive\n")
    settings = RecorderSettings(
        out_dir=args.out,
        policy=WriterPolicy(rotate_bytes=int(args.rotate_mb * 1024 * 1024),
                            rotate_seconds=args.rotate_seconds),
        flush_ms=args.flush_ms, fsync_seconds=args.fsync_seconds,
        retry_seconds=args.retry_seconds)
    return Recorder(cfg, settings).run()


def _reindex(parser: argparse.ArgumentParser, path: Path) -> int:
    from services.recorder import format as fmt
    from services.recorder.index import rebuild_index
    from services.recorder.writer import segment_numbers
    if path.is_dir():
        segments = [path / fmt.segment_name(n) for n in segment_numbers(path)]
    elif path.is_file():
        segments = [path]
    else:
        parser.exit(2, f"ibfleet record: no recording at {path}\n")
    for segment in segments:
        try:
            print(rebuild_index(segment))
        except fmt.FormatError as exc:
            print(f"skipped {segment}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
