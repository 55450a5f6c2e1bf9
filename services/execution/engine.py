"""Execution's order book-keeping, free of sockets: intents in, commands and updates out.

Every accepted intent and every state change is journaled before anything acts on it, so a
restart rebuilds every order from the journal. The gateway de-duplicates a place by client
order id, so re-sending a place whose outcome is unknown never makes a second order.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from proto.schema import (Execution, GatewayState, OpenOrder, OrderCommand, OrderIntent,
                          OrderStatus, OrderUpdate, PnL)
from services.execution.state_machine import (IB_STATUS_EVENTS, TRANSITIONS, Event,
                                              IllegalTransition, OrderState, next_state)
from services.runtime.journal import Journal
from services.runtime.positions import Holding

log = logging.getLogger("execution.engine")


@dataclass
class ManagedOrder:
    intent: OrderIntent  # the latest accepted terms (a modify replaces them)
    state: OrderState = OrderState.NEW
    ib_order_id: int = 0
    filled: float = 0.0
    avg_fill_price: float = 0.0
    reason: str = ""
    waiting: list[OrderIntent] = field(default_factory=list)  # modify/cancel held for the state
    sent_at: float = 0.0

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    @property
    def strategy(self) -> str:
        return self.intent.strategy


class ExecutionEngine:
    def __init__(self, journal: Journal, cancel_on_reconnect: bool = False) -> None:
        self.journal = journal
        self.cancel_on_reconnect = cancel_on_reconnect
        self.orders: dict[str, ManagedOrder] = {}
        self.children: dict[str, list[str]] = {}  # bracket parent -> its children
        self.by_ib_id: dict[int, str] = {}
        self.exec_ids: set[str] = set()
        self.positions: dict[tuple[str, str], Holding] = {}
        self.unknown_orders: set[int] = set()
        self.updates: list[OrderUpdate] = []  # to publish; drained by the service
        self.gateway_state = "disconnected"
        self._was_synchronised = False  # to tell a reconnect from the first connection
        self._replaying = False
        self._restore()

    # -- RESTORE ------------------------------------------------------------------------------
    def _restore(self) -> None:
        self._replaying = True
        try:
            for record in self.journal.replay():
                if isinstance(record, OrderIntent):
                    self._accept(record)
                elif isinstance(record, OrderStatus):
                    order = self.orders.get(record.client_order_id)
                    if order is not None:
                        order.state = OrderState(record.status)
                        order.reason = record.why_held
                        if record.ib_order_id:
                            order.ib_order_id = record.ib_order_id
                            self.by_ib_id[record.ib_order_id] = order.client_order_id
                elif isinstance(record, Execution):
                    self._apply_fill(record)
        finally:
            self._replaying = False
            self.updates.clear()

    # -- INTENTS ------------------------------------------------------------------------------
    def on_intent(self, intent: OrderIntent) -> list[OrderCommand]:
        """An approved intent from risk. Idempotent by client order id."""
        order = self.orders.get(intent.client_order_id)
        if intent.action == "new":
            if order is not None:  # a resend: the order exists, nothing more to do
                return []
            self.journal.append(intent)
            order = self._accept(intent)
            return self._send_place(order)
        if order is None:
            log.warning("modify/cancel of an unknown order",
                        extra={"client_order_id": intent.client_order_id})
            return []
        if order.state.terminal:
            return []
        if order.state.uncertain or order.waiting:
            order.waiting.append(intent)  # IB has not said where it stands: wait for it
            return []
        return self._act(order, intent)

    def _accept(self, intent: OrderIntent) -> ManagedOrder:
        order = ManagedOrder(intent=intent)
        self.orders[intent.client_order_id] = order
        if intent.parent_id:
            self.children.setdefault(intent.parent_id, []).append(intent.client_order_id)
        return order

    def _act(self, order: ManagedOrder, intent: OrderIntent) -> list[OrderCommand]:
        if intent.action == "cancel":
            self._transition(order, Event.CANCEL_SENT)
            order.sent_at = time.monotonic()
            return [OrderCommand(command="cancel", client_order_id=order.client_order_id,
                                 ib_order_id=order.ib_order_id, symbol=order.intent.symbol)]
        # modify: new terms on the same IB id
        terms = order.intent
        merged = OrderIntent(strategy=terms.strategy, client_order_id=terms.client_order_id,
                             action="new", symbol=terms.symbol, side=terms.side,
                             quantity=intent.quantity or terms.quantity,
                             order_type=terms.order_type,
                             limit_price=_pick(intent.limit_price, terms.limit_price),
                             stop_price=_pick(intent.stop_price, terms.stop_price),
                             tif=terms.tif, parent_id=terms.parent_id,
                             oca_group=terms.oca_group, transmit=True)
        self.journal.append(merged)
        order.intent = merged
        return [self._command(order, "modify")]

    def _send_place(self, order: ManagedOrder) -> list[OrderCommand]:
        parent_ib = 0
        if order.intent.parent_id:
            parent = self.orders.get(order.intent.parent_id)
            if parent is None or not parent.ib_order_id:
                return []  # sent once the parent has its IB id (see on_placed)
            parent_ib = parent.ib_order_id
        self._transition(order, Event.SEND)
        order.sent_at = time.monotonic()
        cmd = self._command(order, "place")
        cmd.parent_ib_id = parent_ib
        return [cmd]

    def _command(self, order: ManagedOrder, command: str) -> OrderCommand:
        i = order.intent
        return OrderCommand(command=command, client_order_id=i.client_order_id,
                            ib_order_id=order.ib_order_id, symbol=i.symbol, side=i.side,
                            quantity=i.quantity, order_type=i.order_type,
                            limit_price=i.limit_price, stop_price=i.stop_price, tif=i.tif,
                            oca_group=i.oca_group, transmit=i.transmit)

    def cancel_all(self, strategy: str = "") -> list[OrderCommand]:
        out: list[OrderCommand] = []
        for order in self.orders.values():
            if order.state.terminal or (strategy and order.strategy != strategy):
                continue
            cancel = OrderIntent(strategy=order.strategy, client_order_id=order.client_order_id,
                                 action="cancel")
            if order.state is OrderState.NEW:
                self._transition(order, Event.CANCELLED, "cancelled before it was sent")
            elif order.state.uncertain:
                order.waiting.append(cancel)
            else:
                out.extend(self._act(order, cancel))
        return out

    # -- GATEWAY EVENTS -----------------------------------------------------------------------
    def on_placed(self, status: OrderStatus) -> list[OrderCommand]:
        """The gateway's synchronous reply to a place: the IB order id."""
        order = self.orders.get(status.client_order_id)
        if order is None or not status.ib_order_id:
            return []
        out: list[OrderCommand] = []
        if order.ib_order_id != status.ib_order_id:
            order.ib_order_id = status.ib_order_id
            self.by_ib_id[status.ib_order_id] = order.client_order_id
            self._journal_state(order)
            # bracket children waiting for their parent's IB id
            for coid in self.children.get(order.client_order_id, ()):
                child = self.orders[coid]
                if child.state is OrderState.NEW:
                    out.extend(self._send_place(child))
        return out

    def on_status(self, status: OrderStatus) -> list[OrderCommand]:
        order = self._find(status.client_order_id, status.ib_order_id)
        if order is None:
            self._unknown(status.ib_order_id)
            return []
        if status.ib_order_id and not order.ib_order_id:
            order.ib_order_id = status.ib_order_id
            self.by_ib_id[status.ib_order_id] = order.client_order_id
        if status.status == "Filled" or (status.filled >= order.intent.quantity > 0):
            # quantities come from executions (deduped by execId); the status only moves state
            if order.filled + 1e-9 >= order.intent.quantity:
                self._transition(order, Event.FILL)
            return self._release(order)
        event = IB_STATUS_EVENTS.get(status.status)
        if event is not None:
            self._transition(order, event, status.why_held)
        return self._release(order)

    def on_open_order(self, msg: OpenOrder) -> list[OrderCommand]:
        order = self._find(msg.client_order_id, msg.ib_order_id)
        if order is None:
            self._unknown(msg.ib_order_id)
            return []
        if not order.ib_order_id:
            order.ib_order_id = msg.ib_order_id
            self.by_ib_id[msg.ib_order_id] = order.client_order_id
            self._journal_state(order)
        if order.state is OrderState.PENDING_SUBMIT:
            self._transition(order, Event.ACCEPTED)
        return self._release(order)

    def on_execution(self, fill: Execution) -> list[OrderCommand]:
        if fill.exec_id in self.exec_ids:
            return []  # IB replays executions: the same execId is the same fill
        order = self._find(fill.client_order_id, fill.ib_order_id)
        if order is None:
            self._unknown(fill.ib_order_id)
            return []
        self.journal.append(fill)
        self._apply_fill(fill)
        return self._release(order)

    def on_rejected(self, client_order_id: str, reason: str) -> None:
        order = self.orders.get(client_order_id)
        if order is not None and not order.state.terminal:
            self._transition(order, Event.REJECTED, reason)

    def on_gateway_state(self, state: GatewayState) -> list[OrderCommand]:
        """After a reconnect: finish what a crash or a drop left uncertain."""
        previous, self.gateway_state = self.gateway_state, state.state
        if state.state != "synchronised" or previous == "synchronised":
            return []
        out: list[OrderCommand] = []
        if self.cancel_on_reconnect and self._was_synchronised:
            out.extend(self.cancel_all())
        self._was_synchronised = True
        for order in self.orders.values():
            if order.state is OrderState.PENDING_SUBMIT and not order.ib_order_id:
                out.extend(self._send_place(order))  # outcome unknown: the gateway dedupes
        return out

    def _apply_fill(self, fill: Execution) -> None:
        self.exec_ids.add(fill.exec_id)
        order = self._find(fill.client_order_id, fill.ib_order_id)
        if order is None:
            return
        total = order.filled + fill.quantity
        if total > 0:
            order.avg_fill_price = (order.avg_fill_price * order.filled
                                    + fill.price * fill.quantity) / total
        order.filled = total
        signed = fill.quantity if fill.side == "BUY" else -fill.quantity
        key = (order.strategy, order.intent.symbol)
        self.positions.setdefault(key, Holding()).apply(signed, fill.price)
        done = order.filled + 1e-9 >= order.intent.quantity
        event = Event.FILL if done else Event.PARTIAL_FILL
        if (order.state, event) in _ALLOWED:
            order.state = next_state(order.state, event)
        self._emit(order, exec_id=fill.exec_id, last_qty=fill.quantity, last_price=fill.price)

    # -- HELPERS ------------------------------------------------------------------------------
    def _release(self, order: ManagedOrder) -> list[OrderCommand]:
        """Act on a held modify/cancel once IB has said where the order stands."""
        out: list[OrderCommand] = []
        while order.waiting and not order.state.uncertain:
            intent = order.waiting.pop(0)
            if order.state.terminal:
                order.waiting.clear()
                break
            out.extend(self._act(order, intent))
        return out

    def _find(self, client_order_id: str, ib_order_id: int) -> ManagedOrder | None:
        if client_order_id and client_order_id in self.orders:
            return self.orders[client_order_id]
        coid = self.by_ib_id.get(ib_order_id)
        return self.orders.get(coid) if coid else None

    def _unknown(self, ib_order_id: int) -> None:
        if ib_order_id and ib_order_id not in self.unknown_orders:
            self.unknown_orders.add(ib_order_id)
            log.warning("order at IB that execution did not place",
                        extra={"ib_order_id": ib_order_id})

    def _transition(self, order: ManagedOrder, event: Event, reason: str = "") -> None:
        try:
            new = next_state(order.state, event)
        except IllegalTransition as exc:
            log.info("ignored transition", extra={"client_order_id": order.client_order_id,
                                                  "detail": str(exc)})
            return
        if new is order.state and not reason:
            return
        order.state = new
        if reason:
            order.reason = reason
        self._journal_state(order)
        self._emit(order)

    def _journal_state(self, order: ManagedOrder) -> None:
        if self._replaying:
            return
        self.journal.append(OrderStatus(ib_order_id=order.ib_order_id,
                                        client_order_id=order.client_order_id,
                                        status=order.state.value, filled=order.filled,
                                        remaining=order.intent.quantity - order.filled,
                                        why_held=order.reason))

    def _emit(self, order: ManagedOrder, exec_id: str = "", last_qty: float = 0.0,
              last_price: float = 0.0) -> None:
        self.updates.append(self.update_of(order, exec_id, last_qty, last_price))

    def update_of(self, order: ManagedOrder, exec_id: str = "", last_qty: float = 0.0,
                  last_price: float = 0.0) -> OrderUpdate:
        i = order.intent
        return OrderUpdate(strategy=i.strategy, client_order_id=i.client_order_id,
                           state=order.state.value, symbol=i.symbol, side=i.side,
                           quantity=i.quantity, filled=order.filled,
                           avg_fill_price=order.avg_fill_price, limit_price=i.limit_price,
                           stop_price=i.stop_price, order_type=i.order_type,
                           ib_order_id=order.ib_order_id, parent_id=i.parent_id,
                           exec_id=exec_id, last_fill_qty=last_qty,
                           last_fill_price=last_price, reason=order.reason)

    def stuck_cancels(self, now: float, timeout: float) -> list[OrderCommand]:
        """Cancels IB has not confirmed within ``timeout``: send them again. A cancel is safe to
        repeat (IB answers 10147/10148 if the order is already gone or going)."""
        out = []
        for order in self.orders.values():
            if order.state is OrderState.PENDING_CANCEL and now - order.sent_at > timeout:
                order.sent_at = now
                out.append(OrderCommand(command="cancel", client_order_id=order.client_order_id,
                                        ib_order_id=order.ib_order_id,
                                        symbol=order.intent.symbol))
        return out

    def unconfirmed(self, now: float, timeout: float) -> list[ManagedOrder]:
        """Orders sent longer than ``timeout`` ago that IB has not yet confirmed: query them
        (a reconciliation), never re-send them blindly."""
        return [o for o in self.orders.values()
                if o.state is OrderState.PENDING_SUBMIT and o.sent_at
                and now - o.sent_at > timeout]

    def open_orders(self, strategy: str = "") -> list[ManagedOrder]:
        return [o for o in self.orders.values()
                if not o.state.terminal and (not strategy or o.strategy == strategy)]

    def position_messages(self) -> list[PnL]:
        return [PnL(strategy=strategy, symbol=symbol, position=p.quantity, realized=p.realized,
                    avg_cost=p.avg_cost)
                for (strategy, symbol), p in self.positions.items()]


_ALLOWED = frozenset(TRANSITIONS)


def _pick(new: float, old: float) -> float:
    return old if math.isnan(new) else new
