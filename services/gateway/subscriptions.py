"""Market-data subscriptions requested over the bus: reference-counted, de-duplicated, limited.

Two strategies asking for the same (symbol, kind) share one IB request; the last one to leave
cancels it at IB. IB's limits are enforced here, before IB refuses: ``limits`` maps a resource
to its cap and ``RESOURCES`` says which resources each kind consumes.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

KINDS = ("tick", "trade", "quote", "depth", "bar")

#: resources each kind uses at IB: market data lines, depth subscriptions, tick-by-tick
RESOURCES: dict[str, tuple[str, ...]] = {
    "tick": ("lines",),
    "trade": ("lines", "tick_by_tick"),
    "quote": ("lines", "tick_by_tick"),
    "bar": ("lines",),
    "depth": ("depth",),
}
DEFAULT_LIMITS = {"lines": 100, "depth": 3, "tick_by_tick": 5}


class Outcome(str, enum.Enum):
    NEW = "new"              # first requester: request it at IB
    JOINED = "joined"        # already subscribed for someone else: nothing to send
    ALREADY = "already"      # this requester already has it
    LIMIT = "limit"          # refused: an IB limit would be exceeded
    BAD_KIND = "bad_kind"


@dataclass
class Subscription:
    symbol: str
    kind: str
    requesters: set[str] = field(default_factory=set)
    req_id: int | None = None     # the live IB request id, None when not requested
    last_data: float | None = None  # monotonic time of the last data received
    updates: int = 0
    #: IB's market data type of what arrives (marketDataType: 1 live, 2 frozen, 3 delayed,
    #: 4 delayed frozen); 0 until IB says (tick-by-tick, depth and bars are always live)
    data_type: int = 0
    fell_back: bool = False  # re-requested as delayed after IB refused live data (auto)

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.kind)

    @property
    def name(self) -> str:
        return f"{self.symbol}.{self.kind}"


class SubscriptionBook:
    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = dict(DEFAULT_LIMITS, **(limits or {}))
        self.subs: dict[tuple[str, str], Subscription] = {}
        self.by_req_id: dict[int, Subscription] = {}

    def usage(self, resource: str) -> int:
        return sum(1 for s in self.subs.values() if resource in RESOURCES[s.kind])

    def add(self, requester: str, symbol: str, kind: str) -> tuple[Outcome, Subscription | None, str]:
        """Register interest; the outcome says whether IB must be asked. Third item: why refused."""
        if kind not in RESOURCES:
            return Outcome.BAD_KIND, None, f"unknown subscription kind {kind!r}"
        sub = self.subs.get((symbol, kind))
        if sub is not None:
            if requester in sub.requesters:
                return Outcome.ALREADY, sub, ""
            sub.requesters.add(requester)
            return Outcome.JOINED, sub, ""
        for resource in RESOURCES[kind]:
            cap = self.limits[resource]
            if self.usage(resource) >= cap:
                return Outcome.LIMIT, None, (f"IB limit reached: {cap} {resource.replace('_', '-')} "
                                             f"subscriptions in use; {symbol} {kind} refused")
        sub = Subscription(symbol, kind, {requester})
        self.subs[sub.key] = sub
        return Outcome.NEW, sub, ""

    def remove(self, requester: str, symbol: str, kind: str) -> Subscription | None:
        """Drop one requester's interest; the subscription if nobody is left (cancel it at IB)."""
        sub = self.subs.get((symbol, kind))
        if sub is None or requester not in sub.requesters:
            return None
        sub.requesters.discard(requester)
        if sub.requesters:
            return None
        self.drop(sub)
        return sub

    def drop(self, sub: Subscription) -> None:
        """Forget a subscription entirely (last requester gone, or IB refused it for good)."""
        self.subs.pop(sub.key, None)
        if sub.req_id is not None:
            self.by_req_id.pop(sub.req_id, None)

    def assign(self, sub: Subscription, req_id: int) -> None:
        """The subscription is (re)requested at IB under ``req_id``; the old id is retired."""
        if sub.req_id is not None:
            self.by_req_id.pop(sub.req_id, None)
        sub.req_id = req_id
        self.by_req_id[req_id] = sub

    def unassign_all(self) -> None:
        """The socket died: no request id is live at IB any more."""
        for sub in self.subs.values():
            sub.req_id = None
        self.by_req_id.clear()

    def owner(self, req_id: int) -> Subscription | None:
        return self.by_req_id.get(req_id)

    def __iter__(self):
        return iter(list(self.subs.values()))

    def __len__(self) -> int:
        return len(self.subs)
