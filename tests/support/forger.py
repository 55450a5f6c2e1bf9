"""A forger, as its own process, for tests/bus/test_auth.py: it writes another service's name
in what it sends, with a key of its own making (one the fleet never issued), with no key at
all, or with a real key of another role (a compromised strategy).

    python -m tests.support.forger CONFIG TARGET KEY

TARGET: ``gateway`` (an order placed posing as execution), ``execution`` (an intent posing as
risk), ``risk`` (an intent posing as strategy ``victim``), ``resume`` (lifting the kill switch
at risk posing as a strategy), ``md`` (market data under the gateway's name).
KEY: ``none``, ``own`` or a role (``strategy.evil``). Prints one JSON line: what came back.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import zmq

from proto.schema import Ack, Control, OrderCommand, OrderIntent, Tick
from services.bus import keys
from services.bus.publisher import Publisher
from services.bus.reliable import ReliableClient
from services.runtime import config as fleet_config

CLAIMS = {"gateway": ("gateway", "execution.1"), "execution": ("execution", "risk.1"),
          "risk": ("risk", "strategy.victim"), "resume": ("risk", "strategy.victim"),
          "md": ("bus-in", "gateway.1")}


def _context(config, key: str, claimed_role: str) -> zmq.Context:
    ctx = zmq.Context()
    if key == "none":
        return ctx
    if key == "own":  # a pair the fleet never issued, trusting the servers' public keys
        tmp = Path(tempfile.mkdtemp(prefix="forger-"))
        (tmp / "keys").mkdir(mode=0o700)
        for public in keys.keys_dir(config.state_dir).glob("*.key"):
            shutil.copy(public, tmp / "keys" / public.name)
        keys.use(ctx, keys.Auth(tmp, claimed_role, config.bus))
        return ctx
    keys.use(ctx, keys.Auth(config.state_dir, key, config.bus))
    return ctx


def main(argv: list[str]) -> int:
    config_path, target, key = argv
    config = fleet_config.load(config_path)
    endpoint, source = CLAIMS[target]
    claimed_role = keys.role_from_source(source)
    ctx = _context(config, key, claimed_role)
    out: dict = {"target": target, "key": key, "acks": []}
    try:
        if target == "md":
            pub = Publisher(ctx, config.bus.endpoint(endpoint), source, ready_timeout=3.0)
            out["ready"] = pub.ready
            for _ in range(20):
                pub.publish(Tick(symbol="AAPL", bid=1.0, ask=1.01, bid_size=1, ask_size=1))
                time.sleep(0.05)
            pub.socket.linger = 1000
            pub.close()
        else:
            client = ReliableClient(ctx, config.bus.endpoint(endpoint), source,
                                    resend_after=60.0)
            client.socket.linger = 0
            stamp = f"forged-{target}-{key}".replace(".", "_")
            if target == "gateway":
                msg = OrderCommand(command="place", client_order_id=stamp, ib_order_id=900001,
                                   symbol="AAPL", side="BUY", quantity=1, order_type="MKT")
            elif target == "resume":
                msg = Control(command="resume", reason="forged")
            else:
                msg = OrderIntent(strategy="victim", client_order_id=stamp, action="new",
                                  symbol="AAPL", side="BUY", quantity=1, order_type="MKT")
            client.send(msg)
            deadline = time.monotonic() + 4.0
            while client.pending and time.monotonic() < deadline:
                for reply in client.poll(100):
                    if isinstance(reply, Ack):
                        out["acks"].append({"ok": reply.ok, "error": reply.error})
            client.close()
    finally:
        ctx.destroy(linger=0)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
