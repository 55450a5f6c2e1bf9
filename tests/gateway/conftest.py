"""Gateway fixtures: a real bus broker, a real simulator and the gateway as processes, plus bus
clients the tests drive (a Publisher for subscribe requests, a ReliableClient as execution, and
a background Subscriber that records everything the gateway publishes)."""
from __future__ import annotations

import contextlib
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import zmq

from proto.schema import GatewayState, Message, OrderCommand, SubscribeRequest
from services.bus.loadgen import wait_until_routed
from services.bus.publisher import Publisher
from services.bus.reliable import ReliableClient
from services.bus.subscriber import Subscriber
from services.simulator.control import SimControl
from tests.support.bus import short_run_dir, start_broker
from tests.support.processes import ProcessGroup, free_ports, port_open, wait_for

SIM_FAST = ("--step-ms", "10", "--mktdata-ms", "50", "--reset-repeat-seconds", "0.5")
GW_FAST = ("--backoff-base", "0.1", "--backoff-cap", "0.5", "--connect-timeout", "2",
           "--probe-interval", "0.5", "--probe-timeout", "1")


class BusRecorder:
    """Everything on the bus (or some topics), recorded by a background thread."""

    def __init__(self, endpoint: str, topics=("",)) -> None:
        self.ctx = zmq.Context.instance()
        self.sub = Subscriber(self.ctx, endpoint, topics)
        self.lock = threading.Lock()
        self.messages: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            got = self.sub.recv(50)
            if got:
                with self.lock:
                    self.messages.extend(got[1])
        self.sub.close()

    def of(self, cls, pred: Callable[[Message], bool] | None = None, since: int = 0) -> list:
        with self.lock:
            items = self.messages[since:]
        return [m for m in items if isinstance(m, cls) and (pred is None or pred(m))]

    def mark(self) -> int:
        with self.lock:
            return len(self.messages)

    def wait(self, cls, pred=None, count: int = 1, deadline: float = 60.0, since: int = 0,
             what: str = "") -> list:
        return wait_for(lambda: (lambda r: r if len(r) >= count else None)(
            self.of(cls, pred, since)), deadline, what=what or f"{count}x {cls.__name__}")

    def states(self, since: int = 0) -> list[str]:
        """State *changes* after ``since`` (the gateway also repeats its state with every
        heartbeat, for late subscribers; a repeat is not a change)."""
        with self.lock:
            before = [m for m in self.messages[:since] if isinstance(m, GatewayState)]
        previous = before[-1].state if before else None
        changes = []
        for msg in self.of(GatewayState, since=since):
            if msg.state != previous:
                changes.append(msg.state)
            previous = msg.state
        return changes

    def wait_state(self, state: str, since: int = 0, deadline: float = 60.0) -> GatewayState:
        return self.wait(GatewayState, lambda m: m.state == state, since=since,
                         deadline=deadline, what=f"gateway state {state}")[0]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@dataclass
class Fleet:
    procs: ProcessGroup
    run_dir: Path
    state_dir: Path
    cfg: object
    sim_port: int
    sim: SimControl
    bus: BusRecorder
    client_id: int = 7
    gateway: object = None
    gateway_args: tuple = ()
    pub: Publisher | None = None
    execution: ReliableClient | None = None
    replies: list = field(default_factory=list)

    def start_gateway(self, *extra: str) -> None:
        self.gateway_args = extra or self.gateway_args
        self.gateway = self.procs.start_python(
            "gateway", "services.gateway", "--run-dir", str(self.run_dir), "--state-dir",
            str(self.state_dir), "--port", str(self.sim_port), "--client-id",
            str(self.client_id), *GW_FAST, *self.gateway_args)

    def subscribe(self, symbol: str, kind: str, requester: str = "strat.a",
                  active: bool = True) -> None:
        if self.pub is None:
            self.pub = Publisher(zmq.Context.instance(), self.cfg.bus.endpoint("bus-in"),
                                 "strat.test")
            # PUB/SUB slow joiner: send nothing until our own heartbeat comes back round
            assert wait_until_routed(zmq.Context.instance(), self.pub,
                                     self.cfg.bus.endpoint("bus-out"), 60)
        self.pub.publish(SubscribeRequest(requester=requester, symbol=symbol, kind=kind,
                                          active=active))

    def command(self, **kw) -> int:
        if self.execution is None:
            self.execution = ReliableClient(zmq.Context.instance(),
                                            self.cfg.bus.endpoint("gateway"), "execution.test",
                                            resend_after=1.0)
        return self.execution.send(OrderCommand(**kw))

    def poll_replies(self) -> list:
        if self.execution is not None:
            self.replies.extend(self.execution.poll(10))
        return self.replies

    def wait_acked(self, seq: int, deadline: float = 60.0) -> list:
        """The Ack for ``seq`` and the replies that came with it."""
        def done():
            self.poll_replies()
            return self.execution is not None and seq not in self.execution.pending
        wait_for(done, deadline, what=f"ack of request {seq}")
        return self.replies


@contextlib.contextmanager
def running_fleet(procs, *sim_args: str):
    """Broker, simulator (``SIM_FAST`` plus ``sim_args``) and the test's bus recorder: the
    gateway tests' fleet; sockets and the recorder closed at the end, pass or fail."""
    run_dir = short_run_dir()
    _, cfg = start_broker(procs, run_dir)
    port, cport = free_ports(2)
    sim_proc = procs.start_python("sim", "services.simulator", "--port", str(port), "--seed", "1",
                                  "--control", f"tcp://127.0.0.1:{cport}", *SIM_FAST,
                                  *sim_args)
    wait_for(lambda: port_open(port) or sim_proc.poll() is not None, 60, what="simulator port")
    assert sim_proc.poll() is None, procs.log("sim")
    sim = SimControl(f"tcp://127.0.0.1:{cport}")
    sim.wait_ready(60)
    recorder = BusRecorder(cfg.bus.endpoint("bus-out"))
    state_dir = Path(tempfile.mkdtemp(prefix="ibf-gw-state-"))
    f = Fleet(procs, run_dir, state_dir, cfg, port, sim, recorder)
    try:
        yield f
    finally:
        recorder.close()
        sim.close()
        for sock in (f.pub, f.execution):
            if sock is not None:
                sock.close()


@pytest.fixture
def fleet(procs, tmp_path):
    with running_fleet(procs) as f:
        yield f
