"""Reader of the scenario transcripts in ../shared/fixtures/tws/transcripts (captured from a live
paper IB Gateway at server version 200; see that directory's README).

Line forms (``#`` comments and blank lines are skipped):

    handshake {"server_version":200,"connection_time":"..."}   a new connection (a reconnect)
    client VERB {json}                                          what the client sent
    server VERB {json}                                          what the gateway answered, in order
    raw server BASE64                                           a whole frame (4-byte length + body)
    sleep 100ms                                                 the client waited
    disconnect                                                  the client closed the connection

A transcript is split into legs (one per handshake); a leg into its greeting (the server lines
before the first client line) and steps: one or more client lines and the server lines that
follow them, up to the next client line.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Line:
    kind: str                 # handshake | client | server | raw | sleep | disconnect
    verb: str = ""
    payload: Any = None       # dict for json lines; bytes (the frame) for raw; seconds for sleep
    lineno: int = 0

    def __repr__(self) -> str:  # short, for assertion messages
        return f"L{self.lineno}:{self.kind} {self.verb}".rstrip()


@dataclass
class Step:
    clients: list[Line] = field(default_factory=list)   # requests, with the sleeps between them
    server: list[Line] = field(default_factory=list)    # answers: server and raw lines

    @property
    def verbs(self) -> list[str]:
        return [c.verb for c in self.clients if c.kind == "client"]


@dataclass
class Leg:
    handshake: dict[str, Any]
    greeting: list[Line] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @property
    def connection_zone(self) -> str:
        """The zone name the gateway wrote in the connection time ('yyyymmdd hh:mm:ss ZONE')."""
        return self.handshake["connection_time"].split(" ", 2)[2]

    def greeting_value(self, verb: str) -> dict[str, Any] | None:
        return next((line.payload for line in self.greeting if line.verb == verb), None)


@dataclass
class Transcript:
    name: str
    comments: list[str]
    lines: list[Line]
    legs: list[Leg]

    @property
    def account(self) -> str:
        return self.legs[0].greeting_value("managed_accounts")["accounts"][0]


_SLEEP = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s)")


def parse_line(text: str, lineno: int = 0) -> Line | None:
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    if text == "disconnect":
        return Line("disconnect", lineno=lineno)
    head, _, rest = text.partition(" ")
    if head == "handshake":
        return Line("handshake", "handshake", json.loads(rest), lineno)
    if head == "sleep":
        m = _SLEEP.fullmatch(rest.strip())
        if not m:
            raise ValueError(f"line {lineno}: bad sleep {rest!r}")
        return Line("sleep", "sleep", float(m.group(1)) / (1000 if m.group(2) == "ms" else 1), lineno)
    if head == "raw":
        who, _, data = rest.partition(" ")
        if who != "server":
            raise ValueError(f"line {lineno}: raw lines are server frames, not {who!r}")
        return Line("raw", "raw", base64.b64decode(data.strip()), lineno)
    if head in ("client", "server"):
        verb, _, js = rest.partition(" ")
        return Line(head, verb, json.loads(js) if js.strip() else {}, lineno)
    raise ValueError(f"line {lineno}: unknown line {text[:40]!r}")


def split_legs(lines: list[Line]) -> list[Leg]:
    legs: list[Leg] = []
    step: Step | None = None
    for line in lines:
        if line.kind == "handshake":
            legs.append(Leg(line.payload))
            step = None
            continue
        if not legs:
            raise ValueError(f"{line!r} before the first handshake")
        leg = legs[-1]
        if line.kind == "disconnect":
            step = None
        elif line.kind == "client":
            if step is None or step.server:
                step = Step()
                leg.steps.append(step)
            step.clients.append(line)
        elif line.kind == "sleep":
            if step is not None and not step.server:
                step.clients.append(line)       # the client waited before its next request
        elif line.kind in ("server", "raw"):
            if step is None:
                leg.greeting.append(line)
            else:
                step.server.append(line)
    return legs


def load(path: str | Path) -> Transcript:
    path = Path(path)
    lines: list[Line] = []
    comments: list[str] = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if text.startswith("#"):
            comments.append(text[1:].strip())
        line = parse_line(text, n)
        if line is not None:
            lines.append(line)
    return Transcript(path.name, comments, lines, split_legs(lines))


def raw_fields(frame: bytes) -> tuple[int, list[bytes]]:
    """A raw frame (length prefix + NUL-separated fields) -> (message id, the other fields)."""
    size = int.from_bytes(frame[:4], "big")
    body = frame[4:4 + size]
    parts = body.split(b"\0")[:-1]
    return int(parts[0]), parts[1:]
