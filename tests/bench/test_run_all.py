"""`make bench` writes each script's tables into its own block of docs/benchmarks.md."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "run_all", Path(__file__).resolve().parents[2] / "bench" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

DOC = """# Benchmarks

## Bus
Method: prose that stays.

<!-- generated: bench_bus.py -->
Measured 2026-01-01 at abc on old.

| old | table |
<!-- /generated: bench_bus.py -->

## Core
<!-- generated: bench_core.py -->
Measured 2026-01-01 at abc on old.
<!-- /generated: bench_core.py -->
"""


def test_a_block_is_replaced_and_the_rest_of_the_page_kept():
    doc = run_all.write_block(DOC, "bench_bus.py", "Measured today.\n\n| new |\n")
    assert "| new |" in doc and "| old | table |" not in doc
    assert "Method: prose that stays." in doc
    # a script that was not re-run keeps its figures and says when they were measured
    core = doc.split("<!-- generated: bench_core.py -->")[1]
    assert core.startswith("\nMeasured 2026-01-01 at abc on old.\n")


def test_a_script_without_a_block_gets_one_at_the_end():
    doc = run_all.write_block(DOC, "bench_recovery.py", "Measured today.\n")
    assert doc.endswith("<!-- generated: bench_recovery.py -->\nMeasured today.\n"
                        "<!-- /generated: bench_recovery.py -->\n")
    assert run_all.write_block(doc, "bench_recovery.py", "again\n").count("again") == 1


def test_the_machine_line_names_cores_and_python():
    line = run_all.machine()
    assert "cores" in line and "Python 3." in line
