"""Shared by the fuzz tests: example budgets, a time bound for the long runs, and a tally.

Each target runs in two forms: a bounded hypothesis test in the default run (``QUICK``
examples) and a ``@pytest.mark.fuzz`` long run (``IBFLEET_FUZZ_EXAMPLES`` examples, default
20,000, stopped early after ``IBFLEET_FUZZ_SECONDS`` seconds per target, default 600: the
remaining examples then return at once). ``pytest -m fuzz tests/fuzz`` runs the long ones.

With ``IBFLEET_FUZZ_REPORT=path`` each long run appends one JSON line (target, examples
tried, seconds, findings) to ``path``: docs/fuzzing.md's table is filled from it.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter

from hypothesis import HealthCheck, settings

QUICK = int(os.environ.get("IBFLEET_FUZZ_QUICK", "200"))
LONG = int(os.environ.get("IBFLEET_FUZZ_EXAMPLES", "20000"))
LONG_SECONDS = float(os.environ.get("IBFLEET_FUZZ_SECONDS", "600"))

# no example database: the checkout is shared, and a found failure is kept as a regression
# test in the module instead
_common = dict(deadline=None, database=None, derandomize=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much,
                                      HealthCheck.function_scoped_fixture])
quick = settings(max_examples=QUICK, **_common)
long = settings(max_examples=LONG, **_common)


class Tally:
    """Counts one long run's examples (and what they found) and stops it at its deadline."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.tried = 0
        self.findings: Counter[str] = Counter()
        self.started = time.monotonic()
        self.deadline = self.started + LONG_SECONDS

    def go(self) -> bool:
        """False once the time budget is spent (the example is then skipped)."""
        if time.monotonic() > self.deadline:
            return False
        self.tried += 1
        return True

    def note(self, what: str) -> None:
        self.findings[what] += 1

    def report(self) -> None:
        path = os.environ.get("IBFLEET_FUZZ_REPORT")
        if not path:
            return
        with open(path, "a") as out:
            out.write(json.dumps({"target": self.target, "examples": self.tried,
                                  "seconds": round(time.monotonic() - self.started, 1),
                                  "findings": dict(self.findings)}) + "\n")
