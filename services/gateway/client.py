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
from ibapi.server_versions import MIN_SERVER_VER_PROTOBUF
from ibapi.common import PROTOBUF_MSG_ID
from ibapi import comm

from services.gateway.wrapper import EventQueue, QueueWrapper

log = logging.getLogger("gateway.client")


class BridgeClient(EClient):
    """EClient whose decoder loop survives a frame it cannot decode.

    The library's ``run()`` lets any decoding exception end the session; a garbage frame from
    the gateway should cost one frame (counted, reported), not the connection.
    """

    wrapper: QueueWrapper

    def run(self) -> None:
        try:
            while self.isConnected() or not self.msg_queue.empty():
                try:
                    text = self.msg_queue.get(block=True, timeout=0.2)
                except queue.Empty:
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
