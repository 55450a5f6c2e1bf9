"""The bus process: where publishers and subscribers meet, and where late joiners catch up.

- XSUB (``bus-in``) <- every publisher's PUB; XPUB (``bus-out``) -> every subscriber's SUB.
  The forwarding runs in libzmq (``zmq.proxy_steerable``) on its own thread; with role keys
  (``bus.auth``) it is a thin Python loop instead, which drops (counts, alerts) each frame on
  a topic its publisher's key may not publish (``keys.topic_allowed``: market data and IB
  events from the gateway only, ``ord.update.*`` from execution only).
- A last-value cache subscribes to the state topics (not to high-rate depth and trades) and
  answers snapshot requests on ``bus-snap`` (the Clone pattern).
- The alert log (``AlertLog``) keeps the fleet's latest alerts, bounded, in the same snapshot:
  ``ibfleet status`` shows alerts published while nobody was watching.

Run: ``python -m services.bus.broker`` or ``ibfleet bus``.
"""
from __future__ import annotations

import argparse
import threading
from collections import Counter, OrderedDict, deque

import zmq

from proto import codec
from proto.schema import (AccountValue, Alert, GatewayState, Heartbeat, Instrument, Message,
                          OpenOrder, OrderStatus, PnL, Position, Tick)
from services.bus import keys, sockets
from services.bus.snapshot import SnapshotServer
from services.bus.subscriber import Subscriber
from services.runtime import config as fleet_config
from services.runtime.cli import add_common_args, load_config
from services.runtime.service import Service

# state topics kept as last values, and the key that makes one value replace another
STATE_KEYS = {
    Tick: lambda m: m.symbol,
    GatewayState: lambda m: m.src,
    Heartbeat: lambda m: m.src,
    Position: lambda m: (m.account, m.symbol),
    AccountValue: lambda m: (m.account, m.key, m.currency),
    PnL: lambda m: (m.account, m.symbol, m.strategy),
    OpenOrder: lambda m: m.ib_order_id,
    OrderStatus: lambda m: m.ib_order_id,
    Instrument: lambda m: m.symbol,  # the gateway's reference data (ref.instrument.SYMBOL)
}
STATE_TOPICS = ("md.tick", "gw.state", "hb.", "acct.", "ord.open", "ord.status", Alert.TOPIC,
                Instrument.TOPIC)

#: how many distinct alerts the alert log keeps (the oldest go first)
ALERT_LOG_SIZE = 200
#: the snapshot topic of a logged alert: ``alert.log.COUNT``, COUNT its repeats (>= 1)
ALERT_LOG_TOPIC = "alert.log"


class AlertLog:
    """The fleet's latest alerts, for ``ibfleet status``: the one place they are kept.

    An alert repeated (same source, code and text) is one entry: its latest message and how
    many times it came, so a flapping alert cannot push the others out. At most ``size``
    entries, the least recently seen dropped first. In memory: a restart of the bus
    empties it (the alerts stay in each service's log and in the recordings)."""

    def __init__(self, size: int = ALERT_LOG_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, str, str], tuple[Alert, int]] = OrderedDict()

    def add(self, alert: Alert) -> None:
        key = (alert.src, alert.code, alert.text)
        _, count = self.entries.pop(key, (None, 0))
        self.entries[key] = (alert, count + 1)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def items(self) -> list[tuple[str, Alert]]:
        """Oldest first, as snapshot items: ``(alert.log.COUNT, alert)``."""
        return [(f"{ALERT_LOG_TOPIC}.{count}", alert) for alert, count in self.entries.values()]


def alert_count(topic: str) -> int:
    """How many times a logged alert came, from its snapshot topic (``alert.log.COUNT``)."""
    try:
        return max(1, int(topic.rsplit(".", 1)[-1]))
    except ValueError:
        return 1


class LastValueCache:
    def __init__(self) -> None:
        self.values: dict[tuple, tuple[str, Message]] = {}
        self.last_seq: dict[str, int] = {}
        self.alerts = AlertLog()

    def apply(self, topic: str, msg: Message) -> None:
        if isinstance(msg, Alert):
            self.alerts.add(msg)
            self.last_seq[f"{msg.src}|{topic}"] = msg.tseq
            return
        key_of = STATE_KEYS.get(type(msg))
        if key_of is None:
            return
        self.values[(type(msg).__name__, key_of(msg))] = (topic, msg)
        self.last_seq[f"{msg.src}|{topic}"] = msg.tseq

    def snapshot(self, prefix: str):
        return [*self.values.values(), *self.alerts.items()], dict(self.last_seq)


class Broker(Service):
    PUBLISHER_READY_TIMEOUT = 0.0  # its own frontend is not bound yet when the base starts

    def __init__(self, config: fleet_config.FleetConfig) -> None:
        super().__init__("bus", config)
        bus = config.bus
        self.frontend = self.ctx.socket(zmq.XSUB)
        self.backend = self.ctx.socket(zmq.XPUB)
        self.frontend.rcvhwm = sockets.MARKET_DATA_HWM
        self.backend.sndhwm = sockets.MARKET_DATA_HWM
        sockets.bind(self.frontend, bus.endpoint("bus-in"), bus.curve_dir)
        sockets.bind(self.backend, bus.endpoint("bus-out"), bus.curve_dir)
        self.control = self.ctx.socket(zmq.PAIR)
        self.control.bind("inproc://broker-control")
        self.lvc = LastValueCache()
        self.cache_feed = self.track(Subscriber(self.ctx, bus.endpoint("bus-out"), STATE_TOPICS))
        self.snapshots = SnapshotServer(self.ctx, bus.endpoint("bus-snap"), self.source,
                                        self.lvc.snapshot, bus.curve_dir)
        self.on_socket(self.cache_feed.socket, self._on_state)
        self.on_socket(self.snapshots.socket, self.snapshots.process_ready)
        #: role keys on: publishers are known by key, and each frame's topic is checked
        #: against its publisher's role (``keys.topic_allowed``) in a Python forwarding loop;
        #: without keys the C proxy forwards as before
        self.filtering = self.auth is not None
        self.dropped: Counter[tuple[str, str]] = Counter()  # (role, topic) -> frames
        self._drops: deque[tuple[str, str]] = deque(maxlen=10_000)  # to alert, loop thread
        self._alerted: dict[tuple[str, str], int] = {}
        self.every(0.2, self._report_drops)
        self._proxy = threading.Thread(
            target=self._filter if self.filtering else self._forward, name="bus-proxy",
            daemon=True)

    def _filter(self) -> None:
        """XSUB -> XPUB frames whose topic the publisher's role may publish; subscriptions
        XPUB -> XSUB as they come. Drops are counted here and alerted by the service loop."""
        peer = self.ctx.socket(zmq.PAIR)
        peer.connect("inproc://broker-control")
        frontend, backend = self.frontend, self.backend
        poller = zmq.Poller()
        poller.register(frontend, zmq.POLLIN)
        poller.register(backend, zmq.POLLIN)
        poller.register(peer, zmq.POLLIN)
        allowed = keys.topic_allowed
        peer_role = keys.peer_role
        try:
            while True:
                events = dict(poller.poll())
                if peer in events:
                    return
                if backend in events:
                    for _ in range(1000):
                        try:
                            frontend.send_multipart(backend.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if frontend in events:
                    for _ in range(1000):
                        try:
                            frames = frontend.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        topic = frames[0].bytes
                        role = peer_role(frames[0]) or ""
                        if allowed(role, topic):
                            backend.send_multipart(frames, copy=False)
                        else:
                            self._drops.append((role, topic.decode(errors="replace")))
        except zmq.ContextTerminated:
            pass
        finally:
            peer.close(0)

    def _report_drops(self) -> None:
        """Frames on topics their publisher's role may not publish: counted, logged and
        alerted (the first of each role and topic prefix, then every 1000th)."""
        while self._drops:
            role, topic = self._drops.popleft()
            key = (role, ".".join(topic.split(".")[:2]))
            self.dropped[key] += 1
            self.counters["topic_refused"] += 1
            seen = self._alerted.get(key, 0)
            self._alerted[key] = seen + 1
            if seen % 1000 == 0:
                owner = keys.topic_owners(topic)
                self.refuse_peer(f"the bus dropped {topic!r} from a publisher keyed "
                                 f"{role or 'unknown'!r}: only {owner} may publish it "
                                 f"({self.dropped[key]} dropped)", role=role, topic=topic)

    def _forward(self) -> None:
        peer = self.ctx.socket(zmq.PAIR)
        peer.connect("inproc://broker-control")
        try:
            zmq.proxy_steerable(self.frontend, self.backend, None, peer)
        except zmq.ContextTerminated:
            pass
        finally:
            peer.close(0)

    def on_start(self) -> None:
        self._proxy.start()

    def _on_state(self) -> None:
        """Apply what the state feed holds (up to 1000 frames per call). Quotes are conflated:
        of each ``md.tick.SYMBOL`` topic only the latest frame waiting is decoded, since the
        cache keeps only the last value and one publisher (the gateway, ``keys.topic_allowed``)
        owns those topics; decoding every quote of a burst halved the bus's throughput on two
        cores (docs/benchmarks.md, "Bus"). Every other state message is applied in order."""
        latest_ticks: dict[bytes, list[bytes]] = {}
        recv = self.cache_feed.socket.recv_multipart
        for _ in range(1000):
            try:
                parts = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) == 2 and parts[0].startswith(b"md.tick."):
                latest_ticks[parts[0]] = parts
                continue
            self._apply(parts)
        for topic, frame in latest_ticks.values():  # skipped frames are no loss: no gap check
            try:
                msgs = codec.decode(frame)
            except codec.FrameError as exc:
                self.cache_feed.errors[exc.kind] += 1
                continue
            for msg in msgs:
                self.lvc.apply(topic.decode("utf-8", "replace"), msg)

    def _apply(self, parts: list[bytes]) -> None:
        decoded = self.cache_feed.decode_parts(parts)
        if decoded:
            topic, msgs = decoded
            for msg in msgs:
                self.lvc.apply(topic, msg)

    def heartbeat(self) -> None:
        self.counters["snapshots"] = self.snapshots.served
        super().heartbeat()

    def on_stop(self) -> None:
        self.control.send(b"TERMINATE")
        self._proxy.join(timeout=5)
        for sock in (self.frontend, self.backend, self.control):
            sock.close(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ibfleet bus", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    return Broker(load_config(parser, args)).run()


if __name__ == "__main__":
    raise SystemExit(main())
