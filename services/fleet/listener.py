"""supervisord event listener: every process state change onto the bus, and crash loops stopped.

supervisord's own rule leaves a gap: a process that crashes after ``startsecs`` is restarted
forever. Here, a process that starts more than ``--max-restarts`` times within ``--window-s``
seconds is stopped through XML-RPC and an Alert goes out. stdout is the event protocol's
channel; logs go to stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import xmlrpc.client
from collections import defaultdict, deque

import zmq
from supervisor import childutils

from proto.schema import Alert, ProcessState
from services.bus import keys
from services.bus.publisher import Publisher
from services.runtime import logging as jsonlog
from services.runtime.cli import add_common_args, load_config


class CrashLoopDetector:
    def __init__(self, max_restarts: int, window_s: float) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.starts: dict[str, deque[float]] = defaultdict(deque)

    def started(self, name: str, now: float) -> int:
        """Record a (re)start; returns how many starts fall within the window."""
        starts = self.starts[name]
        starts.append(now)
        while starts and now - starts[0] > self.window_s:
            starts.popleft()
        return len(starts)

    def looping(self, name: str) -> bool:
        return len(self.starts[name]) > self.max_restarts

    def forget(self, name: str) -> None:
        self.starts.pop(name, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet-listener", description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--max-restarts", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    log = jsonlog.setup("fleetwatch")
    config = load_config(parser, args)
    ctx = zmq.Context()
    keys.for_process(ctx, config, "operator")  # bus.auth: the operator's key
    publisher = Publisher(ctx, config.bus.endpoint("bus-in"), "fleetwatch.1")
    detector = CrashLoopDetector(args.max_restarts, args.window_s)
    supervisor = childutils.getRPCInterface(os.environ)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            event = headers.get("eventname", "")
            fields, _ = childutils.eventdata(payload + "\n")
            name = fields.get("processname", "")
            state = event.replace("PROCESS_STATE_", "")
            restarts = 0
            if state == "STARTING":
                restarts = detector.started(name, time.monotonic())
            publisher.publish(ProcessState(name=name, state=state,
                                           from_state=fields.get("from_state", ""),
                                           pid=int(fields.get("pid", 0) or 0),
                                           restarts=restarts))
            log.info("process state", extra={"proc": name, "state": state,
                                              "from": fields.get("from_state", "")})
            if state == "STARTING" and detector.looping(name):
                text = (f"{name} restarted {restarts} times within {args.window_s:g}s: "
                        f"stopped; fix it, then `ibfleet start {name}`")
                log.error("crash loop", extra={"proc": name, "restarts": restarts})
                publisher.publish(Alert(severity="critical", code="crash_loop", text=text))
                group = fields.get("groupname", name)
                try:
                    supervisor.supervisor.stopProcess(f"{group}:{name}", False)
                except (OSError, xmlrpc.client.Fault) as exc:
                    log.error("could not stop crash-looping process", extra={"error": str(exc)})
                detector.forget(name)
        except Exception:  # never let a bad event take the listener (and its protocol) down
            log.exception("event handling failed")
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
