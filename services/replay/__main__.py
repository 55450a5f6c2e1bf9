"""``ibfleet replay``: republish a recording, verbatim, on a bus of its own.

Frames go out exactly as recorded (original headers, so subscribers' gap detectors check the
original sequence numbers) on an XPUB bound at ipc://RUN_DIR/bus-out, where an ordinary
subscriber or ``ibfleet tap --run-dir RUN_DIR`` attaches unchanged. RUN_DIR must not be a live
bus's: replay refuses a directory whose bus sockets accept connections.

Nothing is dropped: a subscriber that falls behind makes the replay wait (ZMQ_XPUB_NODROP).
Use --wait-subscribers N so that the first frames are not sent before anyone listens.
Prints one JSON summary line on stdout when done.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import zmq

from services.recorder.reader import Recording
from services.replay.guard import RunDirBusy, RunDirClaim
from services.replay.outlet import DEFAULT_HWM, ReplayOutlet
from services.replay.pacing import Pacer, parse_speed
from services.replay.timespec import parse_time
from services.runtime import logging as jsonlog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibfleet replay",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__)
    parser.add_argument("recording", type=Path, help="recording directory (or one segment file)")
    parser.add_argument("--speed", default="max",
                        help="'realtime', a factor N (2 = twice as fast), or 'max' "
                             "(as fast as the slowest subscriber takes it; default)")
    parser.add_argument("--from", dest="start", metavar="T",
                        help="first receive time: epoch ns, +SECONDS after the recording's "
                             "start, or ISO 8601 (UTC unless an offset is given)")
    parser.add_argument("--to", dest="end", metavar="T", help="last receive time (inclusive)")
    parser.add_argument("--topic", action="append", default=[], metavar="PREFIX",
                        help="only topics starting with PREFIX (repeatable; default: all)")
    parser.add_argument("--run-dir", type=Path,
                        help="the replay's own run directory (default: a new temporary one, "
                             "printed on stderr)")
    parser.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                        help="start only once N subscribers have connected and subscribed")
    parser.add_argument("--wait-timeout", type=float, default=120.0, metavar="S",
                        help="give up (exit 3) if they have not come after S seconds")
    parser.add_argument("--hwm", type=int, default=DEFAULT_HWM,
                        help="frames queued per subscriber before the replay waits for it "
                             "(default: %(default)s)")
    parser.add_argument("--linger", type=float, default=5.0, metavar="S",
                        help="after the last frame, stay up until every subscriber has "
                             "disconnected, at most S seconds, so that a slow subscriber "
                             "still gets what is queued for it (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    log = jsonlog.setup("replay")
    try:
        speed = parse_speed(args.speed)
        recording = Recording(args.recording)
        span = recording.time_range()
        start = parse_time(args.start, span and span[0]) if args.start else None
        end = parse_time(args.end, span and span[0]) if args.end else None
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"ibfleet replay: {exc}\n")
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="ibf-replay-"))
    try:
        claim = RunDirClaim(run_dir)
    except RunDirBusy as exc:
        parser.exit(2, f"ibfleet replay: {exc}\n")
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    should_stop = lambda: stop  # noqa: E731
    ctx = zmq.Context()
    endpoint = f"ipc://{claim.run_dir / 'bus-out'}"
    outlet = ReplayOutlet(ctx, endpoint, hwm=args.hwm)
    log.info("replay bound", extra={"endpoint": endpoint, "recording": str(args.recording),
                                    "speed": args.speed})
    code = 0
    frames = messages = 0
    started = time.perf_counter()
    try:
        if args.wait_subscribers > 0:
            if not outlet.wait_for_subscribers(args.wait_subscribers, args.wait_timeout,
                                               should_stop=should_stop):
                log.error("subscribers did not come", extra={"wanted": args.wait_subscribers,
                                                             "peers": outlet.peers})
                return 3
            log.info("subscribers ready", extra={"peers": outlet.peers,
                                                 "subscriptions": outlet.subscriptions})
        pacer = Pacer(speed)
        started = time.perf_counter()
        send = outlet.send
        for record in recording.records(start, end, args.topic):
            if stop:
                code = 130
                break
            pacer.wait(record.recv_ns, should_stop)
            if not send(record.topic_bytes, record.payload, should_stop):
                code = 130
                break
            frames += 1
            messages += record.count
        elapsed = time.perf_counter() - started
        report = recording.report
        print(json.dumps({"summary": True, "frames": frames, "messages": messages,
                          "seconds": round(elapsed, 6),
                          "messages_per_s": round(messages / elapsed) if elapsed > 0 else None,
                          "stalls": outlet.stalls, "torn_bytes": report.torn_bytes,
                          "corrupt_records": report.corrupt_records,
                          "run_dir": str(claim.run_dir)}), flush=True)
        outlet.hold(args.linger, should_stop)
    finally:
        outlet.close(0 if stop else 1.0)
        ctx.term()
        claim.release()
    return code


if __name__ == "__main__":
    sys.exit(main())
