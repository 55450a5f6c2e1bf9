"""The fault matrix's table for docs/reliability.md, from the JSON lines of
``$IBFLEET_FAULT_RESULTS`` (tests/faults/matrix.py writes one per scenario run).

    python -m tests.faults.table RESULTS.jsonl [MORE.jsonl ...]
"""
from __future__ import annotations

import json
import sys
from collections import OrderedDict


def rows(lines) -> list[str]:
    by: OrderedDict[str, list[dict]] = OrderedDict()
    for line in lines:
        line = line.strip()
        if line:
            r = json.loads(line)
            by.setdefault(r["scenario"], []).append(r)
    out = ["| scenario | runs | orders | fills | lost | duplicated | unapproved "
           "| recovery p50 / max | audit |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in by.items():
        rec = sorted(r["recovery_s"] for r in runs)
        audits = {r["audit"] for r in runs}
        out.append(f"| {name} | {len(runs)} | {sum(r['orders'] for r in runs)} "
                   f"| {sum(r['fills'] for r in runs)} | {sum(r['lost'] for r in runs)} "
                   f"| {sum(r['duplicated'] for r in runs)} "
                   f"| {sum(r['unapproved'] for r in runs)} "
                   f"| {rec[len(rec) // 2]:.2f} s / {rec[-1]:.2f} s "
                   f"| {'held' if audits == {'held'} else 'FAILED'} |")
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    lines: list[str] = []
    for path in argv:
        with open(path) as fh:
            lines.extend(fh)
    print("\n".join(rows(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
