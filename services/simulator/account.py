"""The paper account as it persists: its identity, and its image in a state directory.

An account is created once, with a random execId token and permId range, so no two accounts
(two state directories, or two runs without one) ever hand out the same execId. Without a state
directory the account lives and dies with the process, as it always did.

With one, `AccountJournal` keeps the account in a `StateStore`: `commit()` journals what changed
since the last commit (orders touched, fills/requests/cancels appended, fills rewritten by a
correction, and the few scalars: cash, realized P&L, commissions, positions, order-id
high-water marks, permId and execId counters) as one fsync'd record. The broker commits before
any bytes reach a client socket and before any control reply, so nothing a client or a test was
told can be lost by a crash, and an execId that might be reused after a crash was never seen.

Record (and snapshot) map, every key optional in a record:
  orders    [order, ...]        upsert by (client_id, order_id), full state of each
  inactive  [order, ...]        rejected orders appended (status Inactive)
  fills     [fill, ...]         appended
  fix       [[index, fill] ...] fills replaced in place (execution corrections)
  requests  [map, ...]          ledger order requests appended
  cancels   [map, ...]          ledger cancels appended
  ledger    {cash, commissions, realized, positions: [[con_id, qty, avg_cost, realized]...]}
  counters  {max_id: [[client_id, order_id]...], next_perm, exec_seq}
A snapshot is the same map holding everything, plus `identity`.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .contracts import ContractQuery, Universe
from .ledger import Fill, Ledger, Position
from .logs import log
from .orders import OrderEngine, OrderRequest, SimOrder
from .store import StateError, StateStore

if TYPE_CHECKING:
    from .config import SimConfig


@dataclass(frozen=True)
class Identity:
    account: str
    token: int              # the first field of every execId of this account
    perm_start: int         # permIds of this account start above this
    initial_cash: float
    created: float          # wall-clock epoch seconds

    @classmethod
    def new(cls, cfg: "SimConfig") -> "Identity":
        # permIds stay below 2**31 (TWS's int): a random block of 10 million ids per account
        return cls(account=cfg.account, token=secrets.randbits(32),
                   perm_start=secrets.randbelow(190) * 10_000_000 + 100_000_000,
                   initial_cash=float(cfg.cash), created=time.time())


# ---- (de)serialization
def order_to_map(o: SimOrder) -> dict[str, Any]:
    return {"client_id": o.client_id, "perm_id": o.perm_id, "con_id": o.inst.con_id, "req": asdict(o.req),
            "status": o.status, "filled": o.filled, "avg_fill_price": o.avg_fill_price,
            "last_fill_price": o.last_fill_price, "why_held": o.why_held, "triggered": o.triggered,
            "transmitted": o.transmitted, "fills": o.fills, "commission_paid": o.commission_paid,
            "completed_time": o.completed_time, "completed_status": o.completed_status}


def _unknown(con_id: int) -> StateError:
    return StateError(f"the account trades conId {con_id}, which the configured universe lacks; "
                      f"start with the same [[instruments]], or with a new state directory")


def order_from_map(m: dict[str, Any], universe: Universe) -> SimOrder:
    inst = universe.by_con_id.get(m["con_id"])
    if inst is None:
        raise _unknown(m["con_id"])
    req_map = dict(m["req"])
    req = OrderRequest(**{**req_map, "contract": ContractQuery(**req_map["contract"])})
    fields = {k: v for k, v in m.items() if k not in ("client_id", "perm_id", "con_id", "req")}
    return SimOrder(req=req, client_id=m["client_id"], perm_id=m["perm_id"], inst=inst, **fields)


def fill_to_map(f: Fill) -> dict[str, Any]:
    return asdict(f)


class AccountJournal:
    """Keeps one account (engine + ledger) in a state directory."""

    def __init__(self, store: StateStore, engine: OrderEngine, ledger: Ledger, universe: Universe,
                 identity: Identity) -> None:
        self.store = store
        self.engine = engine
        self.ledger = ledger
        self.universe = universe
        self.identity = identity
        self._n_inactive = len(engine.inactive)
        self._n_fills = len(ledger.fills)
        self._n_requests = len(ledger.order_requests)
        self._n_cancels = len(ledger.cancels)
        self.commit_seconds = 0.0

    # ---- restore
    def apply(self, rec: dict[str, Any]) -> None:
        e, lg, u = self.engine, self.ledger, self.universe
        for m in rec.get("orders", ()):
            o = order_from_map(m, u)
            e.orders[o.key] = o
        for m in rec.get("inactive", ()):
            e.inactive.append(order_from_map(m, u))
        for m in rec.get("fills", ()):
            if m["con_id"] not in u.by_con_id:
                raise _unknown(m["con_id"])
            lg.fills.append(Fill(**m))
        for index, m in rec.get("fix", ()):
            lg.fills[index] = Fill(**m)
        lg.order_requests.extend(rec.get("requests", ()))
        lg.cancels.extend(rec.get("cancels", ()))
        if "ledger" in rec:
            m = rec["ledger"]
            lg.cash, lg.commissions, lg.realized = m["cash"], m["commissions"], m["realized"]
            lg.positions = {int(c): Position(q, a, r) for c, q, a, r in m["positions"]}
        if "counters" in rec:
            m = rec["counters"]
            e.max_id = {int(c): int(i) for c, i in m["max_id"]}
            e.next_perm = int(m["next_perm"])
            e.exec_seq = int(m["exec_seq"])

    def restore(self, snapshot: dict[str, Any] | None, records: list[dict[str, Any]]) -> None:
        if snapshot is not None:
            self.apply(snapshot)
        for rec in records:
            self.apply(rec)
        self.engine.dirty.clear()
        self.ledger.replaced.clear()
        self._mark_all_written()

    def _mark_all_written(self) -> None:
        self._n_inactive = len(self.engine.inactive)
        self._n_fills = len(self.ledger.fills)
        self._n_requests = len(self.ledger.order_requests)
        self._n_cancels = len(self.ledger.cancels)

    # ---- write
    def _scalars(self) -> dict[str, Any]:
        e, lg = self.engine, self.ledger
        return {"ledger": {"cash": lg.cash, "commissions": lg.commissions, "realized": lg.realized,
                           "positions": [[c, p.qty, p.avg_cost, p.realized] for c, p in lg.positions.items()]},
                "counters": {"max_id": [[c, i] for c, i in e.max_id.items()], "next_perm": e.next_perm,
                             "exec_seq": e.exec_seq}}

    def commit(self) -> bool:
        """Journal what changed since the last commit; durable on return. False if nothing did."""
        e, lg = self.engine, self.ledger
        rec: dict[str, Any] = {}
        if e.dirty:
            rec["orders"] = [order_to_map(o) for o in e.dirty.values()]
        if len(e.inactive) > self._n_inactive:
            rec["inactive"] = [order_to_map(o) for o in e.inactive[self._n_inactive:]]
        if len(lg.fills) > self._n_fills:
            rec["fills"] = [fill_to_map(f) for f in lg.fills[self._n_fills:]]
        fix = sorted(i for i in lg.replaced if i < self._n_fills)
        if fix:
            rec["fix"] = [[i, fill_to_map(lg.fills[i])] for i in fix]
        if len(lg.order_requests) > self._n_requests:
            rec["requests"] = lg.order_requests[self._n_requests:]
        if len(lg.cancels) > self._n_cancels:
            rec["cancels"] = lg.cancels[self._n_cancels:]
        e.dirty.clear()
        lg.replaced.clear()
        if not rec:
            return False
        t0 = time.perf_counter()
        rec.update(self._scalars())
        self.store.append(rec)
        self._mark_all_written()
        if self.store.wants_snapshot():
            self.snapshot()
        self.commit_seconds += time.perf_counter() - t0
        return True

    def full_state(self) -> dict[str, Any]:
        e, lg = self.engine, self.ledger
        state: dict[str, Any] = {
            "identity": asdict(self.identity),
            "orders": [order_to_map(o) for o in e.orders.values()],
            "inactive": [order_to_map(o) for o in e.inactive],
            "fills": [fill_to_map(f) for f in lg.fills],
            "requests": list(lg.order_requests),
            "cancels": list(lg.cancels),
        }
        state.update(self._scalars())
        return state

    def snapshot(self) -> None:
        """Everything into a new snapshot; the journal starts empty. Commit first."""
        self.store.write_snapshot(self.full_state())
        log("state_snapshot", dir=str(self.store.dir), bytes=self.store.snapshot_bytes,
            orders=len(self.engine.orders), fills=len(self.ledger.fills), seq=self.store.seq)

    def stats(self) -> dict[str, Any]:
        s = self.store
        return {"dir": str(s.dir), "seq": s.seq, "journal_bytes": s.journal_bytes,
                "snapshot_bytes": s.snapshot_bytes, "torn_bytes": s.torn_bytes,
                "commit_ms_total": round(self.commit_seconds * 1000, 3), **s.stats}
