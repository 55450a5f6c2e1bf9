"""Loopback only: nothing listens beyond loopback without CURVE, nothing connects elsewhere."""
from __future__ import annotations

import pytest
import zmq

from services.bus import sockets
from services.runtime.config import ConfigError
from tests.support.processes import free_port


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555",
                                      "tcp://192.168.1.5:5555"])
def test_binding_beyond_loopback_without_curve_is_refused(endpoint):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    try:
        with pytest.raises(ConfigError, match="CURVE"):
            sockets.bind(sock, endpoint)
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("endpoint", ["tcp://10.0.0.1:5555", "tcp://example.com:5555",
                                      "udp://127.0.0.1:5"])
def test_connecting_anywhere_but_loopback_is_refused_before_any_traffic(endpoint):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    try:
        with pytest.raises(ConfigError):
            sockets.connect(sock, endpoint)
    finally:
        ctx.destroy(linger=0)


def test_a_curve_server_talks_to_an_authorised_client_and_not_to_a_plain_one(tmp_path):
    sockets.create_keys(tmp_path / "keys")
    ctx = zmq.Context()
    auth = sockets.start_authenticator(ctx, tmp_path / "keys")
    try:
        port = free_port()
        server = ctx.socket(zmq.REP)
        sockets.bind(server, f"tcp://127.0.0.1:{port}", tmp_path / "keys")
        client = ctx.socket(zmq.REQ)
        client.linger = 0
        sockets.connect(client, f"tcp://127.0.0.1:{port}", tmp_path / "keys")
        client.send(b"ping")
        assert server.poll(30_000), "the authorised CURVE client was not heard"
        assert server.recv() == b"ping"
        server.send(b"pong")
        assert client.poll(30_000) and client.recv() == b"pong"

        plain = ctx.socket(zmq.REQ)
        plain.linger = 0
        plain.connect(f"tcp://127.0.0.1:{port}")
        plain.send(b"let me in")
        assert not server.poll(1000), "a client without CURVE keys got through"
    finally:
        auth.stop()
        ctx.destroy(linger=0)
