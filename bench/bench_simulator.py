"""Sustained output of the simulator to one client, counted by a raw-socket reader that only
splits frames. Usage: python bench/bench_simulator.py [--seconds 10] [--runs 3] [--step-ms 0.1]"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.processes import free_port, port_open, wait_for  # noqa: E402

SYMS = ("AAPL", "MSFT", "SPY", "IBM")


def frame(*fields: str) -> bytes:
    body = ("\0".join(fields) + "\0").encode()
    return struct.pack(">I", len(body)) + body


def contract(sym: str) -> list[str]:
    return ["0", sym, "STK", "", "", "", "", "SMART", "", "USD", "", ""]


def run_once(seconds: float, step_ms: float) -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.simulator", "--port", str(port),
                             "--step-ms", str(step_ms), "--mktdata-ms", "50",
                             "--max-msgs-per-sec", "1000", "--tick-by-tick-subscriptions", "10"],
                            cwd=REPO, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: port_open(port), 30, what="simulator")
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"API\0" + struct.pack(">I", 9) + b"v100..200")
        s.sendall(frame("71", "2", "1", ""))
        for i, sym in enumerate(SYMS[:3]):   # 3 depth books (IB's limit), 20 rows
            s.sendall(frame("10", "5", str(100 + i), *contract(sym), "20", "0", ""))
        for i, sym in enumerate(SYMS):
            s.sendall(frame("97", str(200 + i), *contract(sym), "BidAsk", "0", "0"))
            s.sendall(frame("97", str(300 + i), *contract(sym), "AllLast", "0", "0"))
        buf = bytearray()
        count = 0
        warm = time.monotonic() + 1.0
        start = end = None
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            buf += data
            pos = 0
            n = len(buf)
            while n - pos >= 4:
                size = int.from_bytes(buf[pos:pos + 4], "big")
                if n - pos - 4 < size:
                    break
                pos += 4 + size
                count += 1
            del buf[:pos]
            now = time.monotonic()
            if start is None and now >= warm:
                start, count = now, 0
                end = start + seconds
            if end is not None and now >= end:
                break
        s.close()
        return count / (time.monotonic() - start)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--step-ms", type=float, default=0.1)
    a = p.parse_args()
    rates = [run_once(a.seconds, a.step_ms) for _ in range(a.runs)]
    for r in rates:
        print(f"run: {r:,.0f} msgs/s")
    print(f"median: {statistics.median(rates):,.0f} msgs/s over {a.runs} runs of {a.seconds:g}s "
          f"(step {a.step_ms:g} ms, 3 depth books x20 rows + 8 tick-by-tick streams)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
