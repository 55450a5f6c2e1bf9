"""Recorder and replay benchmarks.

Run: .venv/bin/python bench/bench_recorder.py [--quick] [--repeats N]

1. Recorder, end to end: a publisher process sends pre-encoded frames of 100 depth messages as
   fast as it can -> broker -> recorder process. Rate = messages recorded / (last - first
   receive time) from the recording itself; the recording is then checked complete (per-source
   sequence numbers). This is bounded by the slowest of publisher, broker and recorder, all on
   the same 2 shared cores.
2. Recorder write path alone (in process): pre-encoded frames through ``RecordingWriter``
   (header summary, CRC, buffered write, index, rotation with fsync): the recorder's ceiling.
3. Replay -> consumer: a recording of valid depth and tick streams (4 symbols, 90% depth) is
   replayed with ``ibfleet replay --speed max`` into a strategy-like consumer process that
   decodes every frame with ``proto.codec`` and applies it to ``core.book.OrderBook``s;
   rate = messages / (first to last message) in the consumer, which also checks tseq gaps.

Every figure is the median of several runs; the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zmq  # noqa: E402

from proto import codec  # noqa: E402
from proto.schema import DepthUpdate, Tick  # noqa: E402
from services.bus.publisher import Stamper  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = ("AAPL", "MSFT", "NVDA", "SPY")
BATCH = 100


# -- synthetic streams ------------------------------------------------------------------------
def depth_frames(n_messages: int, source: str = "bench.1", seed: int = 7) -> list[tuple[bytes, bytes, int]]:
    """(topic, payload, count) frames of a valid IB-like depth stream (and 10% ticks)."""
    rng = random.Random(seed)
    stamper = Stamper(source)
    frames = []
    made = 0
    started = set()
    k = 0
    while made < n_messages:
        symbol = SYMBOLS[k % len(SYMBOLS)]
        k += 1
        if k % 10 == 0:
            topic = f"md.tick.{symbol}"
            msgs = [Tick(symbol=symbol, bid=100.0 + i * 1e-4, ask=100.01 + i * 1e-4,
                         bid_size=100.0, ask_size=200.0) for i in range(BATCH)]
        else:
            topic = f"md.depth.{symbol}"
            msgs = []
            if symbol not in started:  # fill 10 rows per side first
                started.add(symbol)
                for pos in range(10):
                    msgs.append(DepthUpdate(symbol=symbol, position=pos, operation=0, side=0,
                                            price=100.01 + pos * 0.01, size=100.0))
                    msgs.append(DepthUpdate(symbol=symbol, position=pos, operation=0, side=1,
                                            price=100.00 - pos * 0.01, size=100.0))
            while len(msgs) < BATCH:
                pos, side = rng.randrange(10), rng.randrange(2)
                price = 100.01 + pos * 0.01 if side == 0 else 100.00 - pos * 0.01
                msgs.append(DepthUpdate(symbol=symbol, position=pos, operation=1, side=side,
                                        price=price, size=float(rng.randrange(1, 500))))
        for m in msgs:
            stamper.stamp(m, topic)
        frames.append((topic.encode(), codec.encode(msgs), len(msgs)))
        made += len(msgs)
    return frames


# -- child processes --------------------------------------------------------------------------
def publisher_main(run_dir: str, messages: int) -> int:
    """Send pre-encoded depth frames through the broker as fast as possible."""
    from services.bus.loadgen import wait_until_routed
    from services.bus.publisher import Publisher
    from services.runtime import config as fleet_config
    cfg = fleet_config.load(run_dir=run_dir)
    frames = depth_frames(messages, source="benchpub.1")
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), "benchwarm.1")
    if not wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60):
        return 1
    send = pub.socket.send_multipart
    t0 = time.perf_counter()
    for topic, payload, _ in frames:
        send((topic, payload), copy=False)
    print(json.dumps({"sent": sum(f[2] for f in frames),
                      "seconds": time.perf_counter() - t0}), flush=True)
    ctx.destroy(linger=60_000)
    return 0


def consumer_main(endpoint: str, messages: int, ready: str) -> int:
    """A strategy-like consumer: decode every frame, apply depth and ticks to books."""
    from core.book import OrderBook
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.rcvhwm = 200_000
    sock.subscribe(b"md.")
    sock.connect(endpoint)
    Path(ready).touch()
    depth_books = {s: OrderBook(10) for s in SYMBOLS}
    top_books = {s: OrderBook(1) for s in SYMBOLS}
    next_tseq: dict[tuple[str, bytes], int] = {}
    gaps = got = 0
    recv = sock.recv_multipart
    decode = codec.decode
    first = None
    while got < messages:
        if not sock.poll(60_000):
            break
        topic, payload = recv()
        if first is None:
            first = time.perf_counter()
        msgs = decode(payload)
        head = msgs[0]
        key = (head.src, topic)
        if next_tseq.get(key, head.tseq) != head.tseq or \
                msgs[-1].tseq - head.tseq != len(msgs) - 1:
            gaps += 1
        next_tseq[key] = msgs[-1].tseq + 1
        if topic.startswith(b"md.depth."):
            update = depth_books[head.symbol].update_depth
            for m in msgs:
                update(m.position, m.operation, m.side, m.price, m.size)
        else:
            update = top_books[head.symbol].update_top
            for m in msgs:
                update(m.bid, m.bid_size, m.ask, m.ask_size)
        got += len(msgs)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    print(json.dumps({"messages": got, "seconds": elapsed, "gaps": gaps}), flush=True)
    ctx.destroy(linger=0)
    return 0


# -- measurements -----------------------------------------------------------------------------
def recorder_end_to_end(messages: int) -> dict:
    from services.recorder.check import check_recording
    from services.recorder.reader import Recording
    from tests.support.bus import start_broker
    from tests.support.processes import ProcessGroup, wait_for
    work = Path(tempfile.mkdtemp(prefix="ibf-bench-"))
    run_dir = Path(tempfile.mkdtemp(prefix="ibf-"))
    procs = ProcessGroup(work / "logs")
    out = work / "rec"
    try:
        start_broker(procs, run_dir)
        procs.start("recorder", [sys.executable, "-m", "services.recorder", "--run-dir",
                                 str(run_dir), "--out", str(out)])
        wait_for(lambda: out.exists() and any(True for _ in Recording(out).records()),
                 deadline=60, what="recorder")
        pub = procs.start("pub", [sys.executable, __file__, "--publisher", str(run_dir),
                                  str(messages)])
        assert pub.wait(600) == 0, procs.log("pub")

        def recorded():
            result = check_recording(out)
            src = result.sources.get("benchpub.1")
            return src is not None and src.last_seq >= messages and result
        result = wait_for(recorded, deadline=300, interval=0.2, what="the recording")
        times = [r.recv_ns for r in Recording(out).records() if r.src == "benchpub.1"]
        seconds = (times[-1] - times[0]) / 1e9
        pub_line = json.loads(procs.log("pub").strip().splitlines()[-1])
        return {"rate": messages / seconds, "publish_rate": messages / pub_line["seconds"],
                "missing": result.sources["benchpub.1"].missing,
                "bytes": sum(p.stat().st_size for p in out.glob("*.ibrec"))}
    finally:
        procs.stop_all()


def writer_in_process(frames) -> float:
    from services.recorder.writer import RecordingWriter, WriterPolicy
    out = Path(tempfile.mkdtemp(prefix="ibf-bench-w-"))
    writer = RecordingWriter(out, WriterPolicy(rotate_bytes=64 * 1024 * 1024))
    append = writer.append
    clock = time.time_ns
    t0 = time.perf_counter()
    for topic, payload, _ in frames:
        append(clock(), topic, payload)
    writer.close()
    return sum(f[2] for f in frames) / (time.perf_counter() - t0)


def replay_consumer(recording: Path, messages: int) -> dict:
    from tests.support.processes import ProcessGroup, wait_for
    work = Path(tempfile.mkdtemp(prefix="ibf-bench-r-"))
    run_dir = Path(tempfile.mkdtemp(prefix="ibf-"))
    procs = ProcessGroup(work / "logs")
    ready = work / "ready"
    try:
        consumer = procs.start("consumer", [sys.executable, __file__, "--consumer",
                                            f"ipc://{run_dir}/bus-out", str(messages),
                                            str(ready)])
        wait_for(ready.exists, what="consumer")
        replay = procs.start("replay", [sys.executable, "-m", "services.replay", str(recording),
                                        "--run-dir", str(run_dir), "--wait-subscribers", "1",
                                        "--speed", "max"])
        assert consumer.wait(600) == 0, procs.log("consumer")
        assert replay.wait(120) == 0, procs.log("replay")
        line = json.loads([ln for ln in procs.log("consumer").splitlines()
                           if ln.startswith('{"messages"')][-1])
        summary = json.loads([ln for ln in procs.log("replay").splitlines()
                              if ln.startswith('{"summary"')][-1])
        return {"rate": line["messages"] / line["seconds"], "lost": messages - line["messages"],
                "gaps": line["gaps"], "replay_rate": summary["messages_per_s"],
                "stalls": summary["stalls"]}
    finally:
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--publisher", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--consumer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        return publisher_main(args.publisher[0], int(args.publisher[1]))
    if args.consumer:
        return consumer_main(args.consumer[0], int(args.consumer[1]), args.consumer[2])
    from services.recorder.writer import RecordingWriter
    repeats = 2 if args.quick else args.repeats
    messages = 300_000 if args.quick else 1_000_000
    frames = depth_frames(messages)
    recording = Path(tempfile.mkdtemp(prefix="ibf-bench-rec-"))
    writer = RecordingWriter(recording)
    for i, (topic, payload, _) in enumerate(frames):
        writer.append(1_700_000_000_000_000_000 + i * 100_000, topic, payload)
    writer.close()

    e2e = [recorder_end_to_end(messages) for _ in range(repeats)]
    inproc = [writer_in_process(frames) for _ in range(repeats)]
    replay = [replay_consumer(recording, messages) for _ in range(repeats)]
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    print(f"{messages:,} messages in frames of {BATCH}, {repeats} runs, medians\n")
    print("| measurement | median msgs/s | target | met | loss |")
    print("|---|---:|---:|:-:|---|")
    rate = med(e2e, "rate")
    print(f"| recorder, end to end (publisher -> broker -> recorder -> disk) | {rate:,.0f} "
          f"| 500,000 | {'yes' if rate >= 5e5 else 'no'} | missing {sum(r['missing'] for r in e2e)} |")
    print(f"| publisher send rate in those runs (into its socket buffers) "
          f"| {med(e2e, 'publish_rate'):,.0f} | | | |")
    rate = statistics.median(inproc)
    print(f"| recorder write path alone (summary + CRC + buffered write + index) | {rate:,.0f} "
          f"| 500,000 | {'yes' if rate >= 5e5 else 'no'} | |")
    rate = med(replay, "rate")
    print(f"| replay -> consumer (decode + apply to core books) | {rate:,.0f} | 1,000,000 "
          f"| {'yes' if rate >= 1e6 else 'no'} | lost {sum(r['lost'] for r in replay)}, "
          f"gaps {sum(r['gaps'] for r in replay)} |")
    print(f"| replay send rate in those runs | {med(replay, 'replay_rate'):,.0f} | | | "
          f"stalls (waits for the consumer) {med(replay, 'stalls'):,.0f} |")
    print(f"\nrecording size: {med(e2e, 'bytes') / messages:.1f} bytes per message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
