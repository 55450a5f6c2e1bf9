"""The TCP listener: accepts API clients on 127.0.0.1 and hands each to a Session."""
from __future__ import annotations

import asyncio
import time

from .broker import Broker
from .logs import log
from .session import Session


class SimServer:
    def __init__(self, broker: Broker, port: int) -> None:
        self.broker = broker
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, host="127.0.0.1", port=self.port,
                                                  reuse_address=True, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        log("listening", host="127.0.0.1", port=self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.broker.reject_until:
            # a restarting gateway behind a socket proxy: the connect succeeds, then drops at once
            log("connection_refused_restarting", peer=str(writer.get_extra_info("peername")))
            writer.transport.abort()
            return
        session = Session(self.broker, reader, writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    # -- the API port gone and back (faults.py: restart with port_gone, cold_restart/login) --
    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def close_port(self) -> None:
        """Stop listening: a connect is refused (ECONNREFUSED), as while IB Gateway restarts
        with nothing in front of its API port."""
        if self._server is not None:
            self._server.close()
            log("port_closed", port=self.port)

    async def open_port(self) -> None:
        """Listen again on the same port."""
        if not self.listening:
            await self.start()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
