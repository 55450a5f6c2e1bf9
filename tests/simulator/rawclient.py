"""A bare socket speaking the TWS framing, for what real clients cannot be made to send."""
from __future__ import annotations

import socket
import struct
import time


class RawClient:
    def __init__(self, port: int, versions: str = "v100..200", client_id: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        body = versions.encode()
        self.sock.sendall(b"API\0" + struct.pack(">I", len(body)) + body)
        self.buf = b""
        self.server_version = int(self.read_frame()[0])
        if client_id is not None:
            self.send("71", "2", str(client_id), "")

    def send(self, *fields: str) -> None:
        self.send_body(("\0".join(fields) + "\0").encode())

    def send_body(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def read_frame(self, timeout: float = 30.0) -> list[str]:
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return body.decode("latin-1").split("\0")[:-1]
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def read_until(self, pred, timeout: float = 30.0) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            f = self.read_frame(timeout=end - time.monotonic())
            if pred(f):
                return f
        raise TimeoutError("no matching frame")

    def close(self) -> None:
        self.sock.close()
