"""Faults a real gateway exhibits, injected on command (control socket, CLI, config schedule)."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .encoders import TextEncoder
from .logs import log
from .protocol import Code

if TYPE_CHECKING:
    from .broker import Broker


class FaultController:
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        broker.faults = self
        self.competing = False
        self._tasks: set[asyncio.Task] = set()
        self._hang_handle: asyncio.TimerHandle | None = None
        self.history: list[dict[str, Any]] = []
        self.server = None                 # the API listener (server.SimServer), attached
        self.awaiting_login = False        # a cold restart waits for `login`

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, name: str, **args: Any) -> None:
        self.history.append({"fault": name, "at": time.time(), **args})
        log("fault", fault=name, **args)

    def _broadcast(self, code: tuple[int, str]) -> None:
        for s in list(self.broker.sessions.values()):
            s.error(-1, code)

    # ---- gateway restart: every socket dropped, connections refused for N seconds
    def restart(self, seconds: float = 5.0, port_gone: bool = False) -> dict:
        """IB Gateway's daily restart: every socket dropped, then for ``seconds`` either
        accept-then-close (a socket proxy in front of the API port: the default) or, with
        ``port_gone``, nothing listening at all (connects refused), then back."""
        b = self.broker
        self._record("restart", seconds=seconds, port_gone=port_gone)
        if port_gone:
            self._need_server().close_port()
            self._spawn(self._reopen_after(seconds))
        else:
            b.reject_until = time.monotonic() + seconds
        return {"dropped": self._drop_all("gateway_restart"), "back_in": seconds}

    def cold_restart(self) -> dict:
        """The Sunday cold restart: IB Gateway restarts and waits at its login (the weekly
        re-authentication, two-factor included): every socket dropped and nothing listens on
        the API port until ``login``. The paper account (orders, fills, positions) is the
        server's and stays."""
        self._record("cold_restart")
        self._need_server().close_port()
        self.awaiting_login = True
        return {"dropped": self._drop_all("gateway_cold_restart"), "awaiting_login": True}

    def login(self) -> dict:
        """The operator logs in after a cold restart: the API port listens again."""
        if not self.awaiting_login:
            raise ValueError("no cold restart is waiting for a login")
        self._record("login")
        self.awaiting_login = False
        self._spawn(self._need_server().open_port())
        return {"listening": True}

    def _need_server(self):
        if self.server is None:
            raise ValueError("this simulator has no API listener attached")
        return self.server

    def _drop_all(self, reason: str) -> int:
        dropped = 0
        for s in list(self.broker.connections):
            s.abort(reason)
            dropped += 1
        return dropped

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.awaiting_login:  # a cold restart meanwhile waits for its login
            await self._need_server().open_port()

    # ---- IB server reset with the socket kept open
    def server_reset(self, seconds: float = 3.0, data_lost: bool = False) -> dict:
        self._record("server_reset", seconds=seconds, data_lost=data_lost)
        self._spawn(self._server_reset(seconds, data_lost))
        return {"ok": True}

    async def _server_reset(self, seconds: float, data_lost: bool) -> None:
        b = self.broker
        b.data_stopped += 1
        b.exec_delayed = True
        try:
            self._broadcast(Code.CONN_LOST)
            for code in (Code.MD_FARM_BROKEN, Code.HMDS_BROKEN, Code.SECDEF_BROKEN):
                self._broadcast(code)
            end = time.monotonic() + seconds
            repeat = max(0.2, b.cfg.reset_repeat_seconds)
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(repeat, left))
                if time.monotonic() < end - 1e-3:
                    self._broadcast(Code.CONN_LOST)
            if data_lost:
                b.drop_market_data()
            self._broadcast(Code.CONN_RESTORED_LOST if data_lost else Code.CONN_RESTORED_KEPT)
            for code in (Code.MD_FARM_OK, Code.HMDS_OK, Code.SECDEF_OK):
                self._broadcast(code)
        finally:
            b.data_stopped -= 1
            b.exec_delayed = False
            for s in list(b.connections):
                s.release_held()
            log("fault_end", fault="server_reset")

    # ---- market data farm flap: subscriptions die, as they do at IB
    def farm_flap(self, seconds: float = 1.0) -> dict:
        self._record("farm_flap", seconds=seconds)
        self._spawn(self._farm_flap(seconds))
        return {"ok": True}

    async def _farm_flap(self, seconds: float) -> None:
        b = self.broker
        b.data_stopped += 1
        try:
            self._broadcast(Code.MD_FARM_BROKEN)
            b.drop_market_data()
            await asyncio.sleep(seconds)
            self._broadcast(Code.MD_FARM_OK)
        finally:
            b.data_stopped -= 1
            log("fault_end", fault="farm_flap")

    # ---- silent hang: the socket stays open, nothing is read or written
    def hang(self, seconds: float | None = None) -> dict:
        b = self.broker
        self._record("hang", seconds=seconds)
        b.hung = True
        b.resumed.clear()
        if self._hang_handle:
            self._hang_handle.cancel()
        if seconds is not None:
            self._hang_handle = asyncio.get_running_loop().call_later(seconds, self.resume)
        return {"ok": True}

    def resume(self) -> dict:
        b = self.broker
        if self._hang_handle:
            self._hang_handle.cancel()
            self._hang_handle = None
        was = b.hung
        b.hung = False
        b.resumed.set()
        for s in list(b.connections):
            s.release_held()
        if was:
            log("fault_end", fault="hang")
        return {"resumed": was}

    # ---- garbage on the wire
    def garbage(self, client_id: int | None = None) -> dict:
        self._record("garbage", client_id=client_id)
        n = 0
        for s in list(self.broker.sessions.values()):
            if client_id is None or s.client_id == client_id:
                for junk in TextEncoder.garbage():
                    s.send_raw(junk)
                    n += 1
        return {"frames": n}

    # ---- a bad length prefix: from here on the stream's framing is lost (nothing else sent)
    def bad_length(self, client_id: int | None = None, size: int = 0) -> dict:
        """Send a bare 4-byte length prefix ``size`` (0, or e.g. 0x7FFFFFFF, beyond any message
        ibapi accepts) between two frames; the session goes on as if nothing happened."""
        size = int(size)
        if not 0 <= size <= 0xFFFFFFFF:
            raise ValueError(f"size {size} does not fit a 4-byte length prefix")
        self._record("bad_length", client_id=client_id, size=size)
        n = 0
        for s in list(self.broker.sessions.values()):
            if client_id is None or s.client_id == client_id:
                s.send_raw(size.to_bytes(4, "big"))
                n += 1
        return {"sessions": n}

    # ---- clientId lock-out
    def lockout(self, client_id: int, seconds: float) -> dict:
        b = self.broker
        self._record("lockout", client_id=client_id, seconds=seconds)
        b.locked_ids[client_id] = time.monotonic() + seconds
        s = b.sessions.get(client_id)
        if s is not None:
            s.abort("lockout")
        return {"ok": True, "was_connected": s is not None}

    def drop_client(self, client_id: int) -> dict:
        s = self.broker.sessions.get(client_id)
        self._record("drop_client", client_id=client_id)
        if s is not None:
            s.abort("dropped_by_control")
        return {"dropped": s is not None}

    # ---- competing live session: 10197 on every subscription, no data meanwhile
    def competing_session(self, seconds: float = 2.0) -> dict:
        self._record("competing_session", seconds=seconds)
        self._spawn(self._competing(seconds))
        return {"ok": True}

    async def _competing(self, seconds: float) -> None:
        b = self.broker
        b.data_stopped += 1
        self.competing = True
        try:
            for s in list(b.sessions.values()):
                for req_id in list(s.mkt) + list(s.tbt) + list(s.depth):
                    s.error(req_id, Code.COMPETING_SESSION)
            await asyncio.sleep(seconds)
        finally:
            self.competing = False
            b.data_stopped -= 1
            log("fault_end", fault="competing_session")

    def set_late_replies(self, enabled: bool = True) -> dict:
        self._record("late_replies", enabled=enabled)
        self.broker.late_replies = bool(enabled)
        return {"late_replies": self.broker.late_replies}

    # ---- dispatch by name (control socket and config schedule share this)
    COMMANDS = ("restart", "cold_restart", "login", "server_reset", "farm_flap", "hang", "resume", "garbage", "bad_length",
                "lockout", "drop_client", "competing_session", "late_replies")

    def run(self, cmd: str, args: dict[str, Any]) -> dict:
        if cmd == "late_replies":
            return self.set_late_replies(args.get("enabled", True))
        if cmd not in self.COMMANDS:
            raise ValueError(f"unknown fault {cmd!r}")
        return getattr(self, cmd)(**args)

    def schedule(self, items: tuple[dict[str, Any], ...]) -> None:
        loop = asyncio.get_running_loop()
        for item in items:
            item = dict(item)
            at = float(item.pop("at", 0.0))
            cmd = item.pop("cmd")
            loop.call_later(at, self._scheduled, cmd, item)

    def _scheduled(self, cmd: str, args: dict[str, Any]) -> None:
        try:
            self.run(cmd, args)
        except Exception as exc:
            log("fault_error", fault=cmd, error=repr(exc))
