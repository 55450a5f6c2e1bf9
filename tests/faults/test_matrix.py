"""The standing fault matrix (issue 12, item 7), real processes, the simulator's ledger as the
truth, the audit as the check: see tests/faults/matrix.py for the harness and the scenarios.

CI runs each scenario once (short form), the scenarios of one transport sharing a fleet;
``-m soak`` repeats them at random (seeded; the seed is printed) for $IBFLEET_SOAK_MINUTES
(default 10). Results go to $IBFLEET_FAULT_RESULTS (JSON lines) when it is set;
``python -m tests.faults.table FILE`` makes the table of docs/reliability.md from them."""
from __future__ import annotations

import os
import random
import time

import pytest

from tests.faults.matrix import SCENARIOS, Rig, can_mount, run_scenario


class Rigs:
    """One fleet per transport, started on first use and closed at the end of the module."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.rigs: dict[str, Rig] = {}

    def get(self, transport: str) -> Rig:
        rig = self.rigs.get(transport)
        if rig is None:
            rig = Rig(self.factory.mktemp(f"faults-{transport}"), transport)
            self.rigs[transport] = rig
            rig.start()
        return rig

    def discard(self, transport: str) -> None:
        """A scenario failed on this fleet: the next one starts a fresh fleet, so one failure
        stays one failure (and costs one timeout, not one per remaining scenario)."""
        rig = self.rigs.pop(transport, None)
        if rig is not None:
            rig.close()

    def close(self) -> None:
        for rig in self.rigs.values():
            rig.close()


@pytest.fixture(scope="module")
def rigs(tmp_path_factory):
    if not can_mount():
        pytest.skip("cannot mount a tmpfs here (the matrix's full disks are real)")
    r = Rigs(tmp_path_factory)
    try:
        yield r
    finally:
        r.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault(rigs, scenario):
    try:
        result = run_scenario(rigs.get(scenario.transport), scenario)
    except BaseException:
        rigs.discard(scenario.transport)
        raise
    print(f"\n{result}")


MINUTES = float(os.environ.get("IBFLEET_SOAK_MINUTES", "10"))


@pytest.mark.soak
@pytest.mark.timeout(int(MINUTES * 60) + 900)
def test_the_matrix_at_random(rigs):
    seed = int(os.environ.get("IBFLEET_SOAK_SEED", str(time.time_ns() % 2**32)))
    print(f"\nfault matrix soak: seed {seed} (IBFLEET_SOAK_SEED={seed} repeats the order)")
    rng = random.Random(seed)
    end = time.monotonic() + MINUTES * 60
    runs = 0
    while time.monotonic() < end:
        scenario = rng.choice(SCENARIOS)
        try:
            result = run_scenario(rigs.get(scenario.transport), scenario)
        except BaseException:
            rigs.discard(scenario.transport)
            raise
        runs += 1
        print(f"{runs}: {result}", flush=True)
