"""The way out to IB: every client call of every concern queues here, behind IB's rate limit.

A call is a function of the ibapi client, queued with a label (``what``): a string, or the
``OrderCommand`` itself, so an order command that has not gone out when its socket dies can be
given back to the order desk instead of being lost. Data request ids are handed out here too:
far above order ids, because IB's ``error()`` shares one id space for both.
"""
from __future__ import annotations

from typing import Any, Callable

from services.gateway.pacing import RateLimiter

FIRST_REQ_ID = 1_000_000_000

Call = Callable[[Any], None]  # takes the ibapi client
Item = tuple[Any, Call]


class Outbox:
    def __init__(self, rate: float, first_req_id: int = FIRST_REQ_ID) -> None:
        self.limiter = RateLimiter(rate)
        self.first_req_id = first_req_id
        self._last_req_id = first_req_id
        self.sent = 0

    def req_id(self) -> int:
        """A fresh request id for a data request (never reused, never an order id)."""
        self._last_req_id += 1
        return self._last_req_id

    def is_req_id(self, req_id: int) -> bool:
        """True for ids this outbox handed out (a retired one included)."""
        return req_id >= self.first_req_id

    def submit(self, what: Any, call: Call, urgent: bool = False) -> None:
        """Queue a call; ``urgent`` ones (cancels, the probe) jump ahead of the others."""
        self.limiter.submit(what, call, urgent)  # type: ignore[arg-type]

    def pump(self, client: Any, now: float,
             alive: Callable[[], bool]) -> tuple[list[Item], Exception | None]:
        """Make every call the limiter lets go now.

        Returns what of this batch did *not* go out, in order, and the exception of a failed
        call (the socket is dead: the caller drops the session). ``alive`` is checked before
        each call: a call of this batch may itself have ended the session."""
        batch = self.limiter.ready(now)
        for i, (what, call) in enumerate(batch):
            if not alive():
                return batch[i:], None
            try:
                call(client)
            except Exception as exc:  # noqa: BLE001 - a send that fails means the socket died
                return batch[i:], exc
            self.sent += 1
        return [], None

    def take_all(self) -> list[Item]:
        """The socket died: everything still queued, urgent first (the order they'd have gone)."""
        items = list(self.limiter.urgent) + list(self.limiter.normal)
        self.limiter.clear()
        return items

    def queued(self) -> list[Any]:
        """The labels of every queued call, for reports (``in_flight_ids``)."""
        return [what for what, _ in self.limiter.urgent] + \
            [what for what, _ in self.limiter.normal]

    def __len__(self) -> int:
        return len(self.limiter)
