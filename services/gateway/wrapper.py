"""EWrapper -> queue: every IB callback becomes an ``Event`` on a thread-safe queue.

ibapi calls these methods on its decoder thread. Nothing here touches service state: the
service loop drains the queue, so all state lives on one thread. Each event carries the
generation (connection attempt) it came from, so a late callback from a dead socket can be
recognised and dropped. A pipe wakes the service's poller when the queue goes non-empty.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, NamedTuple

from ibapi.wrapper import EWrapper


class Event(NamedTuple):
    generation: int
    name: str
    args: tuple


class EventQueue:
    """A queue plus a self-pipe the zmq poller can watch (``fd``)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._signalled = threading.Event()

    @property
    def fd(self) -> int:
        return self._read_fd

    def put(self, event: Event) -> None:
        self.queue.put(event)
        if not self._signalled.is_set():
            self._signalled.set()
            try:
                os.write(self._write_fd, b"x")
            except BlockingIOError:  # pipe full: the reader is already awake
                pass

    def drain(self, budget: int) -> list[Event]:
        """Up to ``budget`` events, without blocking."""
        # Empty the pipe, *then* clear the flag: a put after the clear writes a new byte, and
        # a put before it is already in the queue we are about to read. (The other order can
        # leave the flag set with the pipe empty, and the loop is never woken again.)
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._signalled.clear()
        out: list[Event] = []
        get = self.queue.get_nowait
        for _ in range(budget):
            try:
                out.append(get())
            except queue.Empty:
                break
        if len(out) == budget:  # more left: make sure the poller wakes us again
            self._signalled.set()
            try:
                os.write(self._write_fd, b"x")
            except BlockingIOError:
                pass
        return out

    def qsize(self) -> int:
        return self.queue.qsize()

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


# callbacks forwarded as-is; the names are EWrapper's. Everything IB sends us for a request we
# make is here, so all inbound traffic reaches the loop (counted, and proof of life for the hang
# probe); the gateway's dispatch table handles each one or lists it as deliberately ignored.
# Not forwarded: callbacks for requests we never make (their EWrapper defaults only log, and
# ibapi's loggers are muted), and the ``...ProtoBuf`` twins ibapi calls besides the plain
# callback at newer server versions.
FORWARDED = (
    # connection
    "connectAck", "connectionClosed", "nextValidId", "managedAccounts", "currentTime",
    # contracts
    "contractDetails", "contractDetailsEnd", "marketRule",
    # market data (reqMktData also sends tickString, tickGeneric, tickReqParams, marketDataType)
    "tickPrice", "tickSize", "tickString", "tickGeneric", "tickReqParams", "marketDataType",
    "tickByTickAllLast", "tickByTickBidAsk", "updateMktDepth", "updateMktDepthL2",
    "realtimeBar", "historicalData", "historicalDataEnd",
    "historicalTicks", "historicalTicksBidAsk", "historicalTicksLast",
    # orders and fills
    "openOrder", "openOrderEnd", "orderStatus", "execDetails", "execDetailsEnd",
    "commissionAndFeesReport", "completedOrder", "completedOrdersEnd",
    # account (reqAccountUpdates also sends updatePortfolio, updateAccountTime)
    "position", "positionEnd", "updateAccountValue", "updatePortfolio", "updateAccountTime",
    "accountDownloadEnd", "pnl", "pnlSingle",
)

#: every event name the queue can carry: the forwarded callbacks, ``error`` (reshaped: ibapi's
#: errorTime is dropped) and the three the session thread reports itself
EVENT_NAMES = FORWARDED + ("error", "bad_frame", "bad_frame_length", "session_ended")


#: the integers a bus message can carry (msgpack: int64 and uint64)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class QueueWrapper(EWrapper):
    """One per connection attempt; ``generation`` tags its events."""

    def __init__(self, events: EventQueue, generation: int) -> None:
        super().__init__()
        self._events = events
        self.generation = generation

    def _put(self, name: str, *args: Any) -> None:
        for arg in args:
            # ibapi's int() takes any number of digits; the bus carries 64 bits. A bigger one
            # is a bad frame, reported as such, not an event whose handler fails to publish
            if type(arg) is int and not _INT_MIN <= arg <= _INT_MAX:
                self._events.put(Event(self.generation, "bad_frame", (
                    f"{name}: integer {arg} out of range",)))
                return
        self._events.put(Event(self.generation, name, args))

    def error(self, reqId, errorTime, errorCode, errorString, advancedOrderRejectJson=""):
        self._put("error", reqId, errorCode, errorString, advancedOrderRejectJson)

    def bad_frame(self, detail: str) -> None:
        """Not an EWrapper callback: our client reports a frame it could not decode."""
        self._put("bad_frame", detail)

    def bad_frame_length(self, size: int) -> None:
        """Not an EWrapper callback: the reader refused a length prefix and closed the socket."""
        self._put("bad_frame_length", size)

    def session_ended(self, detail: str) -> None:
        """Not an EWrapper callback: the connector thread is done (cleanly or not)."""
        self._put("session_ended", detail)


def _forwarder(name: str):
    def method(self: QueueWrapper, *args: Any) -> None:
        self._put(name, *args)
    method.__name__ = name
    return method


for _name in FORWARDED:
    setattr(QueueWrapper, _name, _forwarder(_name))
