"""Structured log lines on stderr: one JSON object per line, easy to grep and to parse."""
from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


_make_record = logging.Logger.makeRecord


def _safe_make_record(self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None,
                      sinfo=None):
    """A log call must never take a service down: an ``extra`` key that LogRecord reserves
    (msg, process, name...) is renamed with a trailing underscore instead of raising."""
    if extra:
        extra = {(f"{k}_" if k in _RESERVED else k): v for k, v in extra.items()}
    return _make_record(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)


logging.Logger.makeRecord = _safe_make_record  # type: ignore[method-assign]


class JsonLineFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
                  f".{int(record.msecs):03d}Z",
            "lvl": record.levelname.lower(),
            "svc": self.service,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(service: str, level: str = "INFO") -> logging.Logger:
    """Route every logger to stderr as JSON lines tagged with ``service``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(service)


def get(name: str) -> logging.Logger:
    return logging.getLogger(name)
