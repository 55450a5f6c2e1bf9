"""Per-role CURVE keys: who a peer is comes from the key its connection authenticated with,
never from what it writes in a message.

Every role (``bus``, ``gateway``, ``execution``, ``risk``, ``operator``, ``recorder``,
``notify`` and ``strategy.NAME`` for each strategy) has its own key pair in
``STATE_DIR/keys/`` (directory 0700, files 0600): ``ROLE.key`` (public) and ``ROLE.key_secret``. Every socket a service binds
is a CURVE server with its own role's key; every socket it connects is a CURVE client with its
own key, trusting the server key of the role that owns the endpoint (``ENDPOINT_ROLES``).
The ZAP handler (``RoleAuthenticator``, pyzmq's ThreadAuthenticator) admits a client only if
its public key is one of the key files, and sets the connection's ``User-Id`` to the role: a
server reads it on each message (``frame.get("User-Id")``) and decides by that.

Keys are made on first use (``ensure_keys``: by ``ibfleet up``, by the test fleet, and by a
service that finds its own key missing). ``ibfleet keys rotate ROLE`` replaces a pair: the
servers re-read the directory when a connection arrives, the processes that use the role pick
the new pair up on restart.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("bus.keys")

ZAP_DOMAIN = "ibfleet"
FIXED_ROLES = ("bus", "gateway", "execution", "risk", "operator", "recorder", "notify")

#: which role binds each named endpoint (its server key is that role's key)
ENDPOINT_ROLES = {"bus-in": "bus", "bus-out": "bus", "bus-snap": "bus", "risk": "risk",
                  "risk-snap": "risk", "execution": "execution", "execution-snap": "execution",
                  "gateway": "gateway", "recorder": "recorder"}

#: topics only one role may publish on the bus (checked by the broker); the rest: any role
GATEWAY_TOPICS = ("md.", "ord.status", "ord.open", "ord.exec", "ord.comm", "ord.completed",
                  "ord.recon", "acct.", "gw.", "ref.")
EXECUTION_TOPICS = ("ord.update.",)
#: who may publish what, first match wins (market data first: most frames are market data)
TOPIC_OWNERS: tuple[tuple[bytes, frozenset[str]], ...] = (
    (b"md.", frozenset({"gateway"})),
    (b"acct.pnl", frozenset({"gateway", "risk"})),  # risk: each strategy's PnL
    *((t.encode(), frozenset({"gateway"})) for t in GATEWAY_TOPICS if t != "md."),
    *((t.encode(), frozenset({"execution"})) for t in EXECUTION_TOPICS),
    (b"ord.decision", frozenset({"risk"})),
    (b"ctl", frozenset({"risk", "operator"})),  # what strategies take as controls
)
_RESTRICTED = tuple(prefix for prefix, _ in TOPIC_OWNERS)

_ROLE = re.compile(r"^(bus|gateway|execution|risk|operator|recorder|notify|strategy\.[A-Za-z0-9_.-]+)$")


def topic_allowed(role: str, topic: bytes) -> bool:
    """May a publisher authenticated as ``role`` publish on ``topic``?"""
    if not topic.startswith(_RESTRICTED):
        return True
    for prefix, roles in TOPIC_OWNERS:
        if topic.startswith(prefix):
            return role in roles
    return True


def topic_owners(topic: str) -> str:
    """Who may publish ``topic``, for a refusal's text."""
    for prefix, roles in TOPIC_OWNERS:
        if topic.encode().startswith(prefix):
            return " or ".join(sorted(roles))
    return "any role"


def check_role(role: str) -> str:
    if not _ROLE.match(role):
        raise ValueError(f"{role!r} is not a role: one of {', '.join(FIXED_ROLES)} or "
                         f"strategy.NAME")
    return role


def role_from_source(src: str) -> str:
    """The role a message's source *claims* (``risk.1`` -> ``risk``, ``cli.123`` ->
    ``operator``, ``strategy.NAME`` -> ``strategy.NAME``): only used without keys."""
    head, _, rest = src.partition(".")
    if head == "cli":
        return "operator"
    if head == "strategy":
        return f"strategy.{rest}"
    return head


def keys_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "keys"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def create_keypair(directory: Path, role: str, replace: bool = False) -> bool:
    """Write ``ROLE.key`` / ``ROLE.key_secret`` (0600); False if it exists and not
    ``replace``. Written aside and renamed in, so no reader sees half a pair, and two
    processes creating the same role at once leave one whole pair."""
    check_role(role)
    directory = _private_dir(Path(directory))
    public, secret = directory / f"{role}.key", directory / f"{role}.key_secret"
    if public.exists() and secret.exists() and not replace:
        return False
    old = os.umask(0o077)
    try:
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".new-"))
        zmq.auth.create_certificates(tmp, role)
        for path in tmp.iterdir():
            os.chmod(path, 0o600)
        # the secret first: a reader that sees the public key can load the pair
        os.replace(tmp / f"{role}.key_secret", secret)
        os.replace(tmp / f"{role}.key", public)
        tmp.rmdir()
    finally:
        os.umask(old)
    return True


def ensure_keys(state_dir: Path, roles=FIXED_ROLES) -> Path:
    """Create the missing key pairs of ``roles``; returns the keys directory."""
    directory = _private_dir(keys_dir(state_dir))
    for role in roles:
        create_keypair(directory, role)
    return directory


def _public_keys(directory: Path) -> dict[str, bytes]:
    """role -> z85 public key of every readable ``ROLE.key`` in ``directory``."""
    out: dict[str, bytes] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.key")):
        role = path.name[:-len(".key")]
        if not _ROLE.match(role):
            continue
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError):
            continue
        out[role] = public
    return out


def list_keys(state_dir: Path) -> dict[str, bytes]:
    """role -> z85 public key, for every pair in the directory."""
    return _public_keys(keys_dir(state_dir))


class RoleAuthenticator(ThreadAuthenticator):
    """ZAP: admits the keys of ``keys/``, as their role (the connection's User-Id).

    The directory is re-read when a key is not known or the cache is older than
    ``RELOAD_S`` (a connection is rare, the directory small): a new strategy's key is
    admitted without restarting the servers, a rotated-away key is refused."""

    RELOAD_S = 2.0

    def __init__(self, ctx: zmq.Context, directory: Path) -> None:
        super().__init__(ctx, log=logging.getLogger("bus.zap"))
        self.directory = Path(directory)
        self.roles: dict[bytes, str] = {}
        self.loaded = -1e9
        self.lock = threading.Lock()
        #: refusals not yet reported (the service's loop drains them: counted and alerted)
        self.refused: deque[str] = deque(maxlen=1000)
        self.counters: Counter[str] = Counter()

    def _reload(self) -> None:
        roles = {public: role for role, public in _public_keys(self.directory).items()}
        self.roles, self.loaded = roles, time.monotonic()

    def role_of(self, z85_key: bytes) -> str | None:
        with self.lock:
            if z85_key not in self.roles or time.monotonic() - self.loaded > self.RELOAD_S:
                self._reload()
            return self.roles.get(z85_key)

    # the CredentialsProvider protocol of configure_curve_callback
    def callback(self, domain: str, key: bytes) -> bool:
        role = self.role_of(key)
        if role is None:
            self.counters["refused_unknown_key"] += 1
            self.refused.append(f"a connection with an unknown CURVE key "
                                f"{key[:8].decode(errors='replace')}... was refused")
            return False
        self.counters["admitted"] += 1
        return True

    def curve_user_id(self, client_public_key: bytes) -> str:
        from zmq.utils import z85
        return self.role_of(z85.encode(client_public_key)) or ""


@dataclass
class Auth:
    """What one process needs to speak CURVE as ``role``."""

    state_dir: Path
    role: str
    bus: object  # BusConfig: the endpoint names
    public: bytes = b""
    secret: bytes = b""
    authenticator: RoleAuthenticator | None = None
    #: the server sockets bound with this role's key, and their endpoints (whose refused
    #: handshakes the service watches: a client with no key never reaches the ZAP handler)
    bound: list = field(default_factory=list)
    _servers: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_role(self.role)
        directory = _private_dir(keys_dir(self.state_dir))
        create_keypair(directory, self.role)  # first use: make our own pair
        self.public, self.secret = zmq.auth.load_certificate(
            directory / f"{self.role}.key_secret")

    @property
    def directory(self) -> Path:
        return keys_dir(self.state_dir)

    def endpoint_role(self, endpoint: str) -> str | None:
        for name, role in ENDPOINT_ROLES.items():
            try:
                if self.bus.endpoint(name) == endpoint:
                    return role
            except Exception:  # a name without a tcp port
                continue
        return None

    def server_key(self, role: str) -> bytes:
        if role not in self._servers:
            path = self.directory / f"{role}.key"
            if not path.exists():
                create_keypair(self.directory, role)  # its server makes the same on start
            self._servers[role], _ = zmq.auth.load_certificate(path)
        return self._servers[role]


_AUTH: "weakref.WeakKeyDictionary[zmq.Context, Auth]" = weakref.WeakKeyDictionary()


def use(ctx: zmq.Context, auth: Auth | None) -> Auth | None:
    """Every socket of ``ctx`` built by ``services.bus.sockets`` speaks CURVE as ``auth``."""
    if auth is None:
        _AUTH.pop(ctx, None)
    else:
        _AUTH[ctx] = auth
    return auth


def of(ctx: zmq.Context) -> Auth | None:
    return _AUTH.get(ctx)


def start_authenticator(ctx: zmq.Context, auth: Auth) -> RoleAuthenticator:
    if auth.authenticator is None:
        authenticator = RoleAuthenticator(ctx, auth.directory)
        authenticator.start()
        authenticator.configure_curve_callback(domain=ZAP_DOMAIN,
                                               credentials_provider=authenticator)
        auth.authenticator = authenticator
    return auth.authenticator


def peer_role(frame: zmq.Frame) -> str | None:
    """The role the ZAP handler gave the connection ``frame`` came on (None: no keys)."""
    try:
        role = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return None
    return role or None


def service_role(name: str, instance: str) -> str:
    """The role of a service process: its name, ``strategy.NAME`` for a strategy."""
    return f"strategy.{instance}" if name == "strategy" else name


def for_process(ctx: zmq.Context, config, role: str) -> Auth | None:
    """Turn role keys on for ``ctx`` if the fleet config says so (``bus.auth``)."""
    if not getattr(config.bus, "auth", False):
        return None
    return use(ctx, Auth(config.state_dir, role, config.bus))
