"""Order identity: the IB order-id sequence and the client-order-id -> IB-order-id map.

Both are durable in the gateway's state directory, written before the order leaves:
- ``order_ids.json`` holds the highest id *reserved*. Ids are handed out from blocks; a block
  is reserved (fsync'd) before its first id is used, so a restart (even after SIGKILL)
  continues above the block and never reuses an id. IB accepts gaps.
- ``orders.jsonl`` maps execution's client order id to the IB order id. A place for a client
  order id already in the map is not placed again; the existing mapping is the answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import msgspec
from ibapi.order import Order

from proto.schema import OrderCommand
from services.gateway.durable import Journal, read_json, write_json


class OrderIdSequence:
    def __init__(self, state_dir: Path, block: int = 100) -> None:
        self.path = Path(state_dir) / "order_ids.json"
        self.block = block
        self.reserved_through = int(read_json(self.path, {}).get("reserved_through", 0))
        self.next_id = self.reserved_through + 1  # never below anything a past run may have used

    def observe_next_valid_id(self, ib_next: int) -> None:
        """IB's nextValidId: never go below it (ids used by another session of ours, or by TWS)."""
        if ib_next > self.next_id:
            self.next_id = ib_next

    def allocate(self) -> int:
        order_id = self.next_id
        if order_id > self.reserved_through:
            self.reserved_through = order_id + self.block - 1
            write_json(self.path, {"reserved_through": self.reserved_through})
        self.next_id += 1
        return order_id


@dataclass
class OrderRecord:
    client_order_id: str
    ib_order_id: int
    symbol: str
    side: str
    quantity: float
    status: str = "PendingSubmit"  # last status seen (in memory; reconciliation refreshes it)
    filled: float = 0.0
    remaining: float = 0.0
    perm_id: int = 0
    parent_id: int = 0
    final: bool = False
    avg_price: float = 0.0
    live_this_run: bool = False  # sent, or reported by IB, since this process started


class OrderMap:
    """client_order_id <-> ib_order_id, journalled before the order is sent."""

    def __init__(self, state_dir: Path) -> None:
        self.journal = Journal(Path(state_dir) / "orders.jsonl")
        self.by_client: dict[str, OrderRecord] = {}
        self.by_ib: dict[int, OrderRecord] = {}
        for rec in self.journal.records():
            if "coid" not in rec:  # a "sent" marker
                continue
            self._index(OrderRecord(rec["coid"], int(rec["ib"]), rec.get("symbol", ""),
                                    rec.get("side", ""), float(rec.get("qty", 0.0)),
                                    remaining=float(rec.get("qty", 0.0)),
                                    parent_id=int(rec.get("parent", 0))))

    def _index(self, rec: OrderRecord) -> None:
        self.by_client[rec.client_order_id] = rec
        self.by_ib[rec.ib_order_id] = rec

    def get(self, client_order_id: str) -> OrderRecord | None:
        return self.by_client.get(client_order_id)

    def by_ib_id(self, ib_order_id: int) -> OrderRecord | None:
        return self.by_ib.get(ib_order_id)

    def add(self, cmd: OrderCommand, ib_order_id: int) -> OrderRecord:
        rec = OrderRecord(cmd.client_order_id, ib_order_id, cmd.symbol, cmd.side, cmd.quantity,
                          remaining=cmd.quantity, parent_id=cmd.parent_ib_id)
        self.journal.append({"coid": rec.client_order_id, "ib": ib_order_id, "symbol": cmd.symbol,
                             "side": cmd.side, "qty": cmd.quantity, "parent": cmd.parent_ib_id,
                             "cmd": msgspec.to_builtins(cmd)})
        self._index(rec)
        return rec

    def learn(self, client_order_id: str, ib_order_id: int, symbol: str, side: str,
              quantity: float) -> OrderRecord:
        """An order we did not place in this map (an older run, or reconciliation found it)."""
        rec = self.by_ib.get(ib_order_id)
        if rec is None:
            rec = OrderRecord(client_order_id, ib_order_id, symbol, side, quantity,
                              remaining=quantity)
            if client_order_id and client_order_id not in self.by_client:
                self.journal.append({"coid": client_order_id, "ib": ib_order_id,
                                     "symbol": symbol, "side": side, "qty": quantity,
                                     "learned": True})
            self.by_ib[ib_order_id] = rec
            if client_order_id:
                self.by_client.setdefault(client_order_id, rec)
        return rec

    def close(self) -> None:
        self.journal.close()


def _price(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def build_order(cmd: OrderCommand, ib_order_id: int) -> Order:
    """An ibapi Order from execution's command; ``orderRef`` carries the client order id."""
    o = Order()
    o.orderId = ib_order_id
    o.action = cmd.side
    o.totalQuantity = cmd.quantity
    o.orderType = cmd.order_type
    o.tif = cmd.tif
    lmt, stp = _price(cmd.limit_price), _price(cmd.stop_price)
    if cmd.order_type in ("LMT", "STP LMT") and lmt is not None:
        o.lmtPrice = lmt
    if cmd.order_type in ("STP", "STP LMT") and stp is not None:
        o.auxPrice = stp
    o.orderRef = cmd.client_order_id
    o.parentId = cmd.parent_ib_id
    if cmd.oca_group:
        o.ocaGroup = cmd.oca_group
        o.ocaType = 1  # cancel the others on fill, with block
    o.transmit = cmd.transmit
    # attributes ibapi still sends but TWS rejects at their defaults (error 10268/10269)
    o.eTradeOnly = False
    o.firmQuoteOnly = False
    return o
