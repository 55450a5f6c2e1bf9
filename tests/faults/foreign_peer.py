"""A peer of another uid, for the fault matrix: run as ``nobody`` by the system's Python (the
fleet's venv lives under /root, out of its reach), standard library only, so it cannot use the
fleet's code or its keys (0600 files in a 0700 state directory). It dials a bus endpoint and
speaks ZMTP 3.0 with the NULL mechanism, as a peer without a key would, then tries to send an
order command frame.

    python3 tests/faults/foreign_peer.py ENDPOINT

Prints one JSON line: whether it connected, the mechanism the server answered with, whether
the server closed the connection without completing a handshake."""
import json
import socket
import sys


def greeting(mechanism: bytes) -> bytes:
    return (b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + mechanism.ljust(20, b"\0")
            + b"\0" + b"\0" * 31)


def main(endpoint: str) -> dict:
    out = {"endpoint": endpoint, "connected": False, "server_mechanism": None,
           "closed_by_server": False, "error": None}
    if endpoint.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = endpoint[len("ipc://"):]
    else:
        host, port = endpoint[len("tcp://"):].rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host, int(port))
    sock.settimeout(5.0)
    try:
        sock.connect(address)
    except OSError as exc:
        out["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return out
    out["connected"] = True
    try:
        sock.sendall(greeting(b"NULL"))
        got = b""
        while len(got) < 64:
            chunk = sock.recv(64 - len(got))
            if not chunk:
                out["closed_by_server"] = True
                return out
            got += chunk
        out["server_mechanism"] = got[12:32].rstrip(b"\0").decode()
        # READY as a DEALER, then a frame posing as an order command
        props = b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
        body = b"\x05READY" + props
        sock.sendall(b"\x04" + bytes([len(body)]) + body)
        frame = b"ord.cmd forged place"
        sock.sendall(b"\x00" + bytes([len(frame)]) + frame)
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                out["closed_by_server"] = True
                break
    except socket.timeout:
        out["error"] = "timeout: the server kept the connection open without answering"
    except OSError as exc:
        out["closed_by_server"] = True
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
