"""One IB API session on its own threads, with ibapi's EClient underneath.

``Session.start()`` runs ibapi's blocking ``connect()`` (TCP + handshake) and then the decoder
loop on a connector thread; ibapi's EReader thread feeds the decoder. The service thread never
waits on the socket: it only ever sees events on the queue. ``abort()`` closes the socket from
any thread, which also unblocks a handshake stuck on a silent peer.
"""
from __future__ import annotations

import logging
import queue
import threading

from ibapi.client import EClient
from ibapi.const import MAX_MSG_LEN
from ibapi.reader import EReader
from ibapi.server_versions import MIN_SERVER_VER_PROTOBUF
from ibapi.common import PROTOBUF_MSG_ID
from ibapi import comm

from services.gateway.wrapper import EventQueue, QueueWrapper

log = logging.getLogger("gateway.client")


class BadFrameLength(ValueError):
    """A length prefix no sound frame has: the stream's framing is lost."""

    def __init__(self, size: int) -> None:
        super().__init__(f"frame length {size} outside 1..{MAX_MSG_LEN}")
        self.size = size


def split_frame(buf: bytes) -> tuple[bytes | None, bytes]:
    """The first frame of ``buf`` and the rest, or ``(None, buf)`` until all of it is here.

    ibapi's ``comm.read_msg`` plus the check it lacks: a size of 0 or above ``MAX_MSG_LEN``
    (ibapi.const, 16 MiB - 1, the largest message ibapi itself accepts) raises
    ``BadFrameLength`` as soon as the 4-byte prefix is in. ibapi waits for any announced size
    (up to 4 GiB) and passes over an empty frame, but no TWS message is empty or that large:
    either means the framing is lost.
    """
    if len(buf) < 4:
        return None, buf
    size = int.from_bytes(buf[:4], "big")
    if not 0 < size <= MAX_MSG_LEN:
        raise BadFrameLength(size)
    if len(buf) - 4 < size:
        return None, buf
    return buf[4:4 + size], buf[4 + size:]


class FramingReader(EReader):
    """ibapi's EReader with ``split_frame`` for its framing.

    A bad length ends the session at once: a stream whose framing is lost cannot be
    resynchronised, and behind an oversized prefix ibapi's reader stalls until the hang probe
    gives up (about 15 s at the defaults).
    The error goes on the message queue *behind* the frames read before it, so the decoder
    thread hands those on first, then reports it; then the socket is closed.
    """

    def run(self) -> None:
        buf = b""
        try:
            while self.conn.isConnected():
                buf += self.conn.recvMsg()
                while True:
                    msg, buf = split_frame(buf)
                    if msg is None:
                        break
                    self.msg_queue.put(msg)
        except BadFrameLength as exc:
            self.msg_queue.put(exc)
            self.conn.disconnect()
        except Exception:  # noqa: BLE001 - as ibapi's reader: the session ends, logged
            log.exception("unhandled exception in the reader thread")


class BridgeClient(EClient):
    """EClient whose decoder loop survives a frame it cannot decode.

    The library's ``run()`` lets any decoding exception end the session; a garbage frame from
    the gateway should cost one frame (counted, reported), not the connection.
    """

    wrapper: QueueWrapper

    # EClient.connect() creates ibapi's EReader and starts it in one go; this setter swaps in a
    # FramingReader on the same connection and queue before it is started.
    @property
    def reader(self) -> EReader | None:
        return self._reader

    @reader.setter
    def reader(self, value: EReader | None) -> None:
        if value is not None and not isinstance(value, FramingReader):
            value = FramingReader(value.conn, value.msg_queue)
        self._reader = value

    def run(self) -> None:
        try:
            while self.isConnected() or not self.msg_queue.empty():
                try:
                    text = self.msg_queue.get(block=True, timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(text, BadFrameLength):  # the reader has closed the socket
                    self.wrapper.bad_frame_length(text.size)
                    continue
                try:
                    self._decode_one(text)
                except Exception as exc:  # noqa: BLE001 - one bad frame, keep the session
                    self.wrapper.bad_frame(f"{type(exc).__name__}: {exc}; frame={text[:80]!r}")
        finally:
            self.disconnect()

    def _decode_one(self, text: bytes) -> None:
        if self.serverVersion() >= MIN_SERVER_VER_PROTOBUF:
            msg_id = int.from_bytes(text[:4], "big")
            text = text[4:]
        else:
            cut = text.index(b"\0")
            msg_id = int(text[:cut])
            text = text[cut + 1:]
        if msg_id > PROTOBUF_MSG_ID:
            self.decoder.processProtoBuf(text, msg_id - PROTOBUF_MSG_ID)
        else:
            self.decoder.interpret(comm.read_fields(text), msg_id)


class Session:
    """One connection attempt and, if it succeeds, the life of that connection."""

    def __init__(self, events: EventQueue, generation: int, host: str, port: int,
                 client_id: int) -> None:
        self.generation = generation
        self.wrapper = QueueWrapper(events, generation)
        self.client = BridgeClient(self.wrapper)
        self.host, self.port, self.client_id = host, port, client_id
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"ib-session-{generation}")
        self._aborted = threading.Event()

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        detail = "closed"
        try:
            self.client.connect(self.host, self.port, self.client_id)
            if self._aborted.is_set():
                detail = "aborted"
            elif not self.client.isConnected():
                detail = "handshake failed (closed by peer or refused)"
            else:
                self.client.run()
        except Exception as exc:  # noqa: BLE001 - any failure ends this session, reported
            detail = f"{type(exc).__name__}: {exc}"
            try:
                self.client.disconnect()
            except Exception:  # noqa: BLE001
                pass
        finally:
            self.wrapper.session_ended(detail)

    def abort(self) -> None:
        """Close the socket now; the connector thread then ends and reports ``session_ended``."""
        self._aborted.set()
        conn = self.client.conn
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001
                pass

    @property
    def connection_time(self) -> str:
        """The handshake's connection time, 'yyyymmdd hh:mm:ss ZONE' in the gateway's zone."""
        try:
            text = self.client.twsConnectionTime() or ""
        except Exception:  # noqa: BLE001
            return ""
        return text.decode("latin-1") if isinstance(text, bytes) else str(text)

    @property
    def server_version(self) -> int:
        try:
            return int(self.client.serverVersion() or 0)
        except Exception:  # noqa: BLE001
            return 0
