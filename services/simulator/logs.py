"""One-line JSON log records on stderr: machine-readable for the fleet's log collection."""
from __future__ import annotations

import json
import sys
import time
from typing import Any


def log(event: str, **fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "svc": "simulator", "event": event, **fields}
    try:
        sys.stderr.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass   # stderr closed: logging must never take the simulator down
