"""Socket construction in one place: endpoint checks, high-water marks, CURVE."""
from __future__ import annotations

import re
from pathlib import Path

import zmq
import zmq.auth

from services.bus import keys
from services.runtime.config import ConfigError, is_loopback

# Reliable sockets never drop: no high-water mark at all, memory is the limit (and the
# sender's unacknowledged window bounds it in practice).
UNLIMITED = 0
MARKET_DATA_HWM = 200_000  # frames; PUB drops beyond this, the sequence numbers show it

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d+|\*)$")


def check_bind_endpoint(endpoint: str, curve_dir: Path | None = None) -> None:
    """Refuse to listen beyond loopback unless CURVE keys are configured."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return
    match = _TCP.match(endpoint)
    if not match:
        raise ConfigError(f"endpoint {endpoint!r} is neither ipc://, inproc:// nor tcp://HOST:PORT")
    host = match["host"]
    if not is_loopback(host) and curve_dir is None:
        raise ConfigError(f"refusing to bind {endpoint}: it listens beyond loopback and no "
                          f"CURVE keys are configured")


def check_connect_endpoint(endpoint: str) -> None:
    """Nothing here sends traffic to another machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return
    match = _TCP.match(endpoint)
    if not match or not is_loopback(match["host"]):
        raise ConfigError(f"refusing to connect to {endpoint}: ibfleet only talks over loopback "
                          f"or ipc://")


def bind(sock: zmq.Socket, endpoint: str, curve_dir: Path | None = None) -> None:
    """With role keys on the socket's context (``keys.use``), a CURVE server with the
    process's own role key whose clients the ZAP handler admits by key (ipc:// as tcp://),
    which also satisfies the beyond-loopback rule; otherwise as before."""
    auth = keys.of(sock.context)
    if auth is not None and auth.endpoint_role(endpoint) is not None:
        check_bind_endpoint(endpoint, auth.directory)
        keys.start_authenticator(sock.context, auth)
        sock.curve_secretkey = auth.secret
        sock.curve_publickey = auth.public
        sock.curve_server = True
        sock.zap_domain = keys.ZAP_DOMAIN.encode()
        sock.zap_enforce_domain = True  # no ZAP handler answering: refuse, never admit
        sock.bind(endpoint)
        auth.bound.append((sock, endpoint))
        return
    check_bind_endpoint(endpoint, curve_dir)
    if curve_dir is not None:
        enable_curve_server(sock, curve_dir)
    sock.bind(endpoint)


def connect(sock: zmq.Socket, endpoint: str, curve_dir: Path | None = None) -> None:
    check_connect_endpoint(endpoint)
    auth = keys.of(sock.context)
    server_role = auth.endpoint_role(endpoint) if auth is not None else None
    if server_role is not None:
        sock.curve_secretkey = auth.secret
        sock.curve_publickey = auth.public
        sock.curve_serverkey = auth.server_key(server_role)
        sock.connect(endpoint)
        return
    if curve_dir is not None:
        enable_curve_client(sock, curve_dir)
    sock.connect(endpoint)


def enable_curve_server(sock: zmq.Socket, curve_dir: Path) -> None:
    """Server side: our long-term key; clients must present a key the authenticator allows."""
    public, secret = zmq.auth.load_certificate(Path(curve_dir) / "server.key_secret")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True  # must be set before bind


def enable_curve_client(sock: zmq.Socket, curve_dir: Path) -> None:
    public, secret = zmq.auth.load_certificate(Path(curve_dir) / "client.key_secret")
    server_public, _ = zmq.auth.load_certificate(Path(curve_dir) / "server.key")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


def start_authenticator(ctx: zmq.Context, curve_dir: Path):
    """ZAP handler: only client keys found in ``curve_dir/clients`` may connect."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(Path(curve_dir) / "clients"))
    return auth


def create_keys(curve_dir: Path) -> None:
    """Make a server and a client key pair; authorised client keys go in ``curve_dir/clients``."""
    curve_dir = Path(curve_dir)
    clients = curve_dir / "clients"
    clients.mkdir(parents=True, exist_ok=True, mode=0o700)
    zmq.auth.create_certificates(curve_dir, "server")
    zmq.auth.create_certificates(curve_dir, "client")
    (clients / "client.key").write_bytes((curve_dir / "client.key").read_bytes())
