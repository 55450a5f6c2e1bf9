"""Run every benchmark in turn (`make bench`); each prints its own markdown table.

The figures quoted in docs/benchmarks.md come from these scripts. The machine is shared and
noisy: each script repeats its measurements and quotes medians and ratios.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_bus.py", "bench_core.py", "bench_simulator.py", "bench_gateway.py",
           "bench_trading.py", "bench_recorder.py"]


def main() -> int:
    here = Path(__file__).parent
    quick = ["--quick"] if "--quick" in sys.argv else []
    failed = []
    for name in BENCHES:
        print(f"\n## {name}\n", flush=True)
        extra = [] if name in ("bench_simulator.py", "bench_gateway.py") else quick
        if subprocess.run([sys.executable, str(here / name), *extra], cwd=here.parent).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
