"""Control socket of the simulator, and `SimControl`, the client other services' tests use.

Transport: a ZeroMQ REP socket on `ipc://PATH` or `tcp://127.0.0.1:PORT`. A request is one
message, a JSON object or a msgpack map, e.g. {"cmd": "restart", "seconds": 5}; the reply comes
in the same encoding: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.

Every reply is sent after the account's changes are durable (`Broker.commit`), so what a test
read here survives a crash of the simulator.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import msgpack
import zmq
import zmq.asyncio

from .logs import log

if TYPE_CHECKING:
    from .broker import Broker
    from .faults import FaultController


def _check_endpoint(endpoint: str) -> None:
    if endpoint.startswith("tcp://"):
        host = endpoint[6:].rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the control socket binds to 127.0.0.1 only")
    elif not endpoint.startswith("ipc://"):
        raise ValueError("control endpoint must be ipc://PATH or tcp://127.0.0.1:PORT")


class ControlServer:
    def __init__(self, broker: "Broker", faults: "FaultController", endpoint: str) -> None:
        _check_endpoint(endpoint)
        self.broker = broker
        self.faults = faults
        self.endpoint = endpoint.replace("localhost", "127.0.0.1")
        self.ctx = zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self.sock.close(0)

    async def _serve(self) -> None:
        while True:
            raw = await self.sock.recv()
            as_json = raw[:1] == b"{"
            try:
                req = json.loads(raw) if as_json else msgpack.unpackb(raw, raw=False)
                if not isinstance(req, dict) or "cmd" not in req:
                    raise ValueError("request must be a map with a 'cmd'")
                reply = {"ok": True, "result": self.handle(str(req.pop("cmd")), req)}
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(reply, default=str).encode() if as_json else \
                msgpack.packb(reply, default=str, use_bin_type=True)
            await self.sock.send(data)

    def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        try:
            return self._handle(cmd, args)
        finally:
            self.broker.commit()

    def _handle(self, cmd: str, args: dict[str, Any]) -> Any:
        b = self.broker
        if cmd == "ping":
            return "pong"
        if cmd == "status":
            return b.status()
        if cmd == "clients":
            return b.clients()
        if cmd == "ledger":
            return b.ledger.snapshot()
        if cmd == "orders":
            return b.orders_view()
        if cmd == "fills":
            return b.ledger.snapshot()["fills"]
        if cmd == "positions":
            return b.ledger.snapshot()["positions"]
        if cmd == "account":
            return b.account_values()
        if cmd == "quote":
            inst = b.universe.by_con_id[int(args["con_id"])]
            proc = b.market.processes[inst.con_id]
            return {"bid": inst.price(proc.bid), "ask": inst.price(proc.ask), "last": inst.price(proc.last_ticks),
                    "volume": proc.volume, "steps": b.market.steps}
        if cmd == "depth":  # the book a depth subscriber of `rows` rows is shown: [price, size]
            inst = b.universe.by_con_id[int(args["con_id"])]
            book, rows = b.market.processes[inst.con_id].book, int(args.get("rows", 10))
            return {"bids": [[inst.price(t), float(q)] for t, q in book.bids[:rows]],
                    "asks": [[inst.price(t), float(q)] for t, q in book.asks[:rows]]}
        if cmd == "faults":
            return self.faults.history
        if cmd == "completed_orders":
            return b.completed_orders_view()
        # benchmark hooks: not logged (one every 30 ms)
        if cmd == "bench_freeze":
            return b.bench_freeze(bool(args.get("frozen", True)), bool(args.get("stamps", True)))
        if cmd == "inject_bid":
            return b.inject_bid(int(args["con_id"]), float(args["bid"]), int(args.get("tick_id", 0)))
        if cmd == "stamps":
            return b.take_stamps()
        log("control", cmd=cmd, args=args)
        # broker-side account events
        if cmd == "broker_cancel":
            return b.broker_cancel(int(args["order_id"]), int(args.get("client_id", 0)),
                                   str(args.get("by", "system")))
        if cmd == "expire_day_orders":
            return b.expire_day_orders()
        if cmd == "locate":   # shares located for a short sale held with whyHeld "locate" (F28)
            order = b.engine.locate(int(args.get("client_id", 0)), int(args["order_id"]))
            return {"order_id": order.order_id, "client_id": order.client_id, "perm_id": order.perm_id,
                    "status": order.status, "filled": order.filled,
                    "notified": order.client_id in b.sessions}
        if cmd == "shift_price":
            return b.shift_price(int(args["con_id"]), float(args["ticks"]))
        if cmd == "set_time_zone":
            return b.set_time_zone(args.get("time_zone"), args.get("host_zone"))
        if cmd == "clock":   # {"cmd": "clock", "at": epoch_s, "speed": 60}: either, both or neither
            at, speed = args.get("at"), args.get("speed")
            return b.set_clock(None if at is None else float(at), None if speed is None else float(speed))
        if cmd == "correct_execution":
            q, p = args.get("quantity"), args.get("price")
            return b.correct_execution(str(args["exec_id"]), None if q is None else float(q),
                                       None if p is None else float(p))
        return self.faults.run(cmd, args)


class SimControlError(RuntimeError):
    pass


class SimControl:
    """Synchronous client of the control socket. Every fault and ledger query is a method.

    >>> sim = SimControl("tcp://127.0.0.1:7600")
    >>> sim.restart(seconds=2); sim.fills()
    """

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self._ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
            s.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def call(self, cmd: str, **args: Any) -> Any:
        sock = self._socket()
        try:
            sock.send(msgpack.packb({"cmd": cmd, **args}, use_bin_type=True))
            reply = msgpack.unpackb(sock.recv(), raw=False)
        except zmq.Again:
            sock.close(0)          # a REQ socket is unusable after a lost reply: start afresh
            self._sock = None
            raise TimeoutError(f"simulator control {self.endpoint} did not answer {cmd!r}") from None
        if not reply.get("ok"):
            raise SimControlError(reply.get("error"))
        return reply.get("result")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                saved, self.timeout = self.timeout, 1.0
                try:
                    self.call("ping")
                    return
                finally:
                    self.timeout = saved
            except TimeoutError:
                if time.monotonic() > end:
                    raise

    # ---- queries
    def ping(self) -> str: return self.call("ping")
    def status(self) -> dict: return self.call("status")
    def clients(self) -> list[dict]: return self.call("clients")
    def ledger(self) -> dict: return self.call("ledger")
    def orders(self) -> list[dict]: return self.call("orders")
    def fills(self) -> list[dict]: return self.call("fills")
    def positions(self) -> dict: return self.call("positions")
    def account(self) -> dict: return self.call("account")
    def quote(self, con_id: int) -> dict: return self.call("quote", con_id=con_id)
    def depth(self, con_id: int, rows: int = 10) -> dict:
        """The book a depth subscriber of ``rows`` rows sees: {"bids": [[price, size]...],
        "asks": [...]}, best first."""
        return self.call("depth", con_id=con_id, rows=rows)
    def fault_history(self) -> list[dict]: return self.call("faults")
    def completed_orders(self) -> list[dict]: return self.call("completed_orders")

    # ---- broker-side account events
    def broker_cancel(self, order_id: int, client_id: int = 0, by: str = "system") -> dict:
        """Cancel a working order at the broker: 202 + Cancelled to its owner if connected;
        completedStatus "Cancelled by Trader" (``by="trader"``: the TWS user) or "Cancelled by
        System" (IB). Error if unknown or not working."""
        return self.call("broker_cancel", order_id=order_id, client_id=client_id, by=by)

    def locate(self, order_id: int, client_id: int = 0) -> dict:
        """Shares located: a short sale held PreSubmitted with whyHeld "locate" (a hard-to-borrow
        instrument, `hard_to_borrow` in its spec) is released and works. Error if the order is
        unknown or not held for a locate."""
        return self.call("locate", order_id=order_id, client_id=client_id)

    def expire_day_orders(self) -> dict:
        """The close: every working DAY order is cancelled by the system. {"expired": [...]}"""
        return self.call("expire_day_orders")

    def correct_execution(self, exec_id: str, quantity: float | None = None,
                          price: float | None = None) -> dict:
        """IB's execution correction: execId ...01 becomes ...02 with the corrected quantity
        and/or price, execDetails + commission report to the owner; the ledger's fill is replaced."""
        return self.call("correct_execution", exec_id=exec_id, quantity=quantity, price=price)

    # ---- faults
    def restart(self, seconds: float = 5.0, port_gone: bool = False) -> dict:
        return self.call("restart", seconds=seconds, port_gone=port_gone)
    def cold_restart(self) -> dict: return self.call("cold_restart")
    def login(self) -> dict: return self.call("login")
    def server_reset(self, seconds: float = 3.0, data_lost: bool = False) -> dict:
        return self.call("server_reset", seconds=seconds, data_lost=data_lost)
    def farm_flap(self, seconds: float = 1.0) -> dict: return self.call("farm_flap", seconds=seconds)
    def hang(self, seconds: float | None = None) -> dict: return self.call("hang", seconds=seconds)
    def resume(self) -> dict: return self.call("resume")
    def garbage(self, client_id: int | None = None) -> dict: return self.call("garbage", client_id=client_id)
    def bad_length(self, client_id: int | None = None, size: int = 0) -> dict:
        """A bare length prefix ``size`` on the session(s): 0, or oversized (0x7FFFFFFF)."""
        return self.call("bad_length", client_id=client_id, size=size)
    def lockout(self, client_id: int, seconds: float) -> dict:
        return self.call("lockout", client_id=client_id, seconds=seconds)
    def drop_client(self, client_id: int) -> dict: return self.call("drop_client", client_id=client_id)
    def competing_session(self, seconds: float = 2.0) -> dict: return self.call("competing_session", seconds=seconds)
    def late_replies(self, enabled: bool = True) -> dict: return self.call("late_replies", enabled=enabled)

    def shift_price(self, con_id: int, ticks: float) -> dict:
        """Move an instrument's market by ``ticks`` (resting orders it crosses fill)."""
        return self.call("shift_price", con_id=con_id, ticks=ticks)

    # ---- benchmarks
    def bench_freeze(self, frozen: bool = True, stamps: bool = True) -> dict:
        """Freeze the market (it moves only when injected) and stamp ticks and orders."""
        return self.call("bench_freeze", frozen=frozen, stamps=stamps)

    def inject_bid(self, con_id: int, bid: float, tick_id: int) -> dict:
        """Top of book to ``bid`` / bid + 1 tick, written at once, stamped as ``tick_id``."""
        return self.call("inject_bid", con_id=con_id, bid=bid, tick_id=tick_id)

    def stamps(self) -> dict:
        """{"ticks": [(tick_id, con_id, client_id, bid, t_ns)], "orders": [(client_id,
        order_id, symbol, lmt_price, order_ref, t_ns)]} since the last call (then cleared)."""
        return self.call("stamps")

    def set_time_zone(self, time_zone: str | None = None, host_zone: str | None = None) -> dict:
        """The account's zone (execution times) and/or the host's (connection time)."""
        return self.call("set_time_zone", time_zone=time_zone, host_zone=host_zone)

    def clock(self, at: float | None = None, speed: float | None = None) -> dict:
        """Jump the simulated clock to ``at`` (epoch seconds) and/or run it ``speed`` times the
        wall clock; neither: read it. With --sessions on every open, close and GTD expiry
        crossed is handled, in order, at its own time. {"sim_time", "speed", "before",
        "sessions", "events": [{"time", "kind", "symbols", "order"}], "hours": {conId: {"rth",
        "ext"}} (sessions on)}."""
        args: dict[str, Any] = {}
        if at is not None:
            args["at"] = at
        if speed is not None:
            args["speed"] = speed
        return self.call("clock", **args)
