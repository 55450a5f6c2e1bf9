"""Execution's order book-keeping, free of sockets: the one owner of order truth and fills.

Inputs: approved intents (from risk), and the gateway's *reports* of what IB said (order
status, open orders, executions, commissions, order errors, completed orders, the end of a
reconciliation run, the broker's positions). Outputs: order commands for the gateway and
frames for the bus (``OrderUpdate`` and ``StrategyPosition`` on ``ord.update.STRATEGY``).

Every accepted intent, every state change, every fill and commission is journaled before
anything acts on it, so a restart rebuilds every order and position from the journal. The
gateway de-duplicates a place by client order id, so re-sending a place whose outcome is
unknown never makes a second order. The rules of state, fills and positions are the model's
(``services.model``); this module only applies them.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from proto.schema import (Commission, CompletedOrder, Execution, GatewayError, GatewayState,
                          Message, OpenOrder, OrderCommand, OrderIntent, OrderStatus, OrderUpdate,
                          Position, ReconcileEnd, StrategyDigest, StrategyPosition)
from services.model.orders import (CANCEL_REFUSED_CODES, IB_STATUS_EVENTS, ORDER_INFO_CODES,
                                   PLACE_REFUSED_CODES, IllegalTransition, InvalidOrder,
                                   OrderEvent, OrderSide, OrderState, OrderType, TimeInForce,
                                   next_state)
from services.model.owners import (CANCEL_ALL, EXTERNAL, FLATTEN, UNOWNED, WorkingOrder,
                                   kill_mode, protective_exits)
from services.model.portfolio import EPSILON, Booked, Fill, Portfolio, exec_base
from services.runtime.journal import Journal

log = logging.getLogger("execution.engine")
#: reconciliation runs an order IB lists as Filled waits for its executions before it is closed
FILLED_WITHOUT_FILLS_RUNS = 3
E, S = OrderEvent, OrderState
# EXTERNAL: the owner of orders and positions execution did not make; UNOWNED: what removed
# strategies handed over (services/model/owners.py)
ADJUSTMENT_PREFIX = "adjust:"  # exec ids of bookings that adopt the broker's positions
FLATTEN_PREFIX = "flatten-"  # client order ids of the market orders a flatten sends
FLATTEN_WAIT_S = 5.0  # s a flatten waits for its target's cancels before closing anyway


class IntentRefused(ValueError):
    """An intent execution cannot act on; the text says why. Nothing changed."""


@dataclass
class ManagedOrder:
    intent: OrderIntent  # the terms in force (a confirmed modify replaces them)
    state: OrderState = OrderState.NEW
    ib_order_id: int = 0
    perm_id: int = 0
    fills: dict[str, tuple[float, float]] = field(default_factory=dict)  # exec base -> qty, px
    reason: str = ""
    pending_terms: OrderIntent | None = None  # a modify IB has not confirmed
    waiting: list[OrderIntent] = field(default_factory=list)  # modify/cancel held for IB
    sent_at: float = 0.0

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    @property
    def strategy(self) -> str:
        return self.intent.strategy

    filled: float = 0.0  # the sum of ``fills``' quantities (kept by ``record_fill``)
    avg_fill_price: float = 0.0

    def record_fill(self, exec_base_id: str, quantity: float, price: float) -> None:
        """Book (or, for a correction, replace) one execution's quantity and price."""
        self.fills[exec_base_id] = (quantity, price)
        self.filled = sum(q for q, _ in self.fills.values())
        self.avg_fill_price = sum(q * p for q, p in self.fills.values()) / self.filled \
            if self.filled else 0.0


class ExecutionEngine:
    def __init__(self, journal: Journal, cancel_on_reconnect: bool = False,
                 portfolio: Portfolio | None = None, clock=time.time_ns) -> None:
        self.journal = journal
        self.cancel_on_reconnect = cancel_on_reconnect
        self.portfolio = portfolio or Portfolio()
        self.clock = clock
        self.orders: dict[str, ManagedOrder] = {}
        self.children: dict[str, list[str]] = {}  # bracket parent -> its children
        self.by_ib_id: dict[int, str] = {}
        self.frames: list[tuple[str, list[Message]]] = []  # to publish; drained by the service
        self.alerts: list[tuple[str, str, str]] = []  # (severity, code, text); drained
        self.errors: Counter[str] = Counter()  # bad input, by kind
        self.gateway_state = "disconnected"
        self.reconcile_wanted = ""  # why execution wants the gateway to reconcile ("" no)
        self.broker_positions: dict[str, float] = {}
        self.client_id = 0  # the gateway's IB client id (from its state)
        self._completed_this_run: set[str] = set()
        #: orders IB lists completed Filled whose executions never came: runs waited so far
        self._filled_without_fills: dict[str, int] = {}
        self._perm_ids_seen: set[int] = set()  # open orders IB reported since the last run
        self._mismatch_seen: dict[str, float] = {}
        #: symbol -> broker minus ours, seen in a position IB streamed while synchronised;
        #: checked again at the gateway's next state report (``_check_drift``)
        self._drift: dict[str, float] = {}
        self._was_synchronised = False  # to tell a reconnect from the first connection
        self._replaying = False
        self._adjustments = 0
        self._executions: dict[str, Execution] = {}  # as IB reported them, for compaction
        #: the outbox watermark: the last fill booked, and the last one whose update is known
        #: published (journalled as ``{"published": exec_id}`` after the publish). A crash
        #: between the journal's sync and the publish leaves fills booked but never told:
        #: a restart publishes them again (consumers count a fill once per execId).
        self.last_booked = ""
        self.last_published = ""
        self._replayed_fills: list[str] = []  # booked during replay, in journal order
        self.republished = 0  # fills told again at the restore
        #: flatten controls not acted on yet: target ("" all) -> monotonic time asked
        self.flatten_wanted: dict[str, float] = {}
        self._lenient_journal = False  # the kill switch: a failed write never stops a cancel
        #: the protective exits the last kill kept working (client order ids), for its report
        self.kept_exits: list[str] = []
        self._flatten_seq = 0
        self._restore()

    # -- RESTORE ------------------------------------------------------------------------------
    def _restore(self) -> None:
        self._replaying = True
        try:
            for record in self.journal.entries():
                if isinstance(record, dict):
                    self._replay_record(record)
                else:
                    self._replay(record)
        finally:
            self._replaying = False
            self.frames.clear()
            self.alerts.clear()
        self._republish_unpublished()

    def _republish_unpublished(self) -> None:
        """Frames for the fills booked after the journal's last ``published`` mark (an
        outbox: they were durable but the process died before it told the bus)."""
        fills, mark = self._replayed_fills, self.last_published
        self._replayed_fills = []
        if mark and mark not in fills:
            self.errors["published_mark_unknown"] += 1  # told nothing rather than all again
            log.warning("journal's published mark names no booked fill",
                        extra={"exec_id": mark})
            self.last_published = self.last_booked
            return
        start = fills.index(mark) + 1 if mark else 0
        for exec_id in fills[start:]:
            fill = self._executions.get(exec_id)
            if fill is None or not self.portfolio.has_fill(exec_id):
                continue  # superseded by a later correction, which is told instead
            order = self._find(fill.client_order_id, fill.ib_order_id, fill.perm_id)
            if order is None:
                self._emit_position(EXTERNAL, fill.symbol)
            else:
                self._emit(order, exec_id=exec_id, last_qty=fill.quantity,
                           last_price=fill.price, with_position=True)
            self.republished += 1

    def published_mark(self) -> dict | None:
        """The record to journal once this batch's frames are published (None if no fill
        was booked since the last mark). Not synced by itself: a crash before the next
        sync only means those fills are published again after the restart."""
        if self.last_booked == self.last_published:
            return None
        self.last_published = self.last_booked
        return {"published": self.last_booked}

    def _replay(self, record: Message) -> None:
        if isinstance(record, OrderIntent):
            order = self.orders.get(record.client_order_id)
            if order is None:
                self._accept(record)
            elif record.action == "modify":
                order.pending_terms = record
            else:  # the terms in force after a confirmed modify
                order.intent, order.pending_terms = record, None
        elif isinstance(record, OrderStatus):
            order = self.orders.get(record.client_order_id)
            if order is not None:
                order.state = OrderState(record.status)
                order.reason = record.why_held
                if order.state is not S.PENDING_MODIFY:
                    order.pending_terms = None
                if record.ib_order_id:
                    self._learn_ib_id(order, record.ib_order_id)
        elif isinstance(record, Execution):
            self._book(record)
        elif isinstance(record, Commission):
            self.portfolio.book_commission(record.exec_id, record.commission)

    def _replay_record(self, record: dict) -> None:
        """Plain records: ``{"waiting": coid, "intents": [...]}`` is the whole list of
        modifies/cancels an order holds for IB (the last one journalled is in force)."""
        if "published" in record:
            self.last_published = str(record["published"])
            return
        if "reassign" in record:
            self._reassign(str(record["reassign"]), str(record.get("to", UNOWNED)))
            return
        coid = record.get("waiting")
        if not coid:
            return  # another kind (a probe written while the disk was failing)
        order = self.orders.get(coid)
        if order is None:
            return
        try:
            order.waiting = [msgspec.convert(i, OrderIntent) for i in record.get("intents", ())]
        except (msgspec.ValidationError, TypeError) as exc:
            self.errors["unreadable_waiting"] += 1
            log.error("journalled held intents unreadable", extra={"client_order_id": coid,
                                                                   "detail": str(exc)})

    def _set_waiting(self, order: ManagedOrder, waiting: list[OrderIntent]) -> None:
        """Journal then hold: a held modify/cancel is acknowledged only once it is journalled,
        so it survives a crash of execution (replayed with the order, released once)."""
        if not self._replaying:
            self.journal.append_record({"waiting": order.client_order_id,
                                        "intents": [msgspec.to_builtins(i) for i in waiting]})
        order.waiting = waiting

    # -- INTENTS ------------------------------------------------------------------------------
    def on_intent(self, intent: OrderIntent) -> list[OrderCommand]:
        """An approved intent from risk. Idempotent by client order id; raises
        ``IntentRefused`` (counted, nothing changed) for one that cannot be acted on."""
        order = self.orders.get(intent.client_order_id)
        if intent.action == "new":
            if order is not None:  # a resend: the order exists, nothing more to do
                return []
            self._validate_new(intent)
            frames = len(self.frames)
            try:
                with self.journal.grouped():  # the intent and its sent state: one write
                    self.journal.append(intent)
                    order = self._accept(intent)
                    commands = self._send_place(order)
            except BaseException:  # nothing was written: nothing changed either
                self._unaccept(intent)
                del self.frames[frames:]
                raise
            if order.state is S.NEW:  # held for its parent's IB id: say so now
                self._emit(order)
            return commands
        if order is None:
            self.errors[f"{intent.action}_unknown_order"] += 1
            raise IntentRefused(f"{intent.action} of unknown order {intent.client_order_id!r}")
        if order.strategy != intent.strategy:
            self.errors[f"{intent.action}_not_owner"] += 1
            raise IntentRefused(f"order {intent.client_order_id!r} belongs to "
                                f"{order.strategy!r}, not to {intent.strategy!r}")
        if order.state.done:
            self.errors[f"{intent.action}_done_order"] += 1
            raise IntentRefused(f"{intent.action} of order {intent.client_order_id!r}, which is "
                                f"already {order.state.value}")
        if intent.action == "modify":
            self._validate_modify(order, intent)
        if order.state is S.NEW and intent.action == "cancel":
            self._transition(order, E.CANCELLED, "cancelled before it was sent")
            return []
        if order.state.uncertain or order.waiting:
            # IB has not said where it stands: wait for it (journalled, see _set_waiting)
            self._set_waiting(order, [*order.waiting, intent])
            return []
        return self._act(order, intent)

    def _validate_new(self, intent: OrderIntent) -> None:
        try:
            OrderSide.parse(intent.side, "side")
            kind = OrderType.parse(intent.order_type, "order_type")
            TimeInForce.parse(intent.tif, "tif")
            if not (intent.quantity > 0) or not math.isfinite(intent.quantity):
                raise InvalidOrder(f"quantity {intent.quantity} must be positive")
            if kind.needs_limit and not math.isfinite(intent.limit_price):
                raise InvalidOrder(f"a {kind.value} order needs a limit price")
            if kind.needs_stop and not math.isfinite(intent.stop_price):
                raise InvalidOrder(f"a {kind.value} order needs a stop price")
            if not intent.symbol:
                raise InvalidOrder("symbol is empty")
        except InvalidOrder as exc:
            self.errors["invalid_order"] += 1
            raise IntentRefused(str(exc)) from None
        if intent.parent_id:
            parent = self.orders.get(intent.parent_id)
            if parent is None or parent.strategy != intent.strategy or parent.state.done:
                self.errors["unknown_parent"] += 1
                raise IntentRefused(f"parent order {intent.parent_id!r} of "
                                    f"{intent.client_order_id!r} is unknown or finished")

    def _validate_modify(self, order: ManagedOrder, intent: OrderIntent) -> None:
        if intent.quantity and (not math.isfinite(intent.quantity)
                                or intent.quantity + EPSILON < order.filled):
            self.errors["invalid_modify"] += 1
            raise IntentRefused(f"modify to quantity {intent.quantity} of an order with "
                                f"{order.filled:g} filled")

    def _accept(self, intent: OrderIntent) -> ManagedOrder:
        order = ManagedOrder(intent=intent)
        self.orders[intent.client_order_id] = order
        if intent.parent_id:
            self.children.setdefault(intent.parent_id, []).append(intent.client_order_id)
        return order

    def _unaccept(self, intent: OrderIntent) -> None:
        """Undo ``_accept`` of an intent whose journal write failed."""
        self.orders.pop(intent.client_order_id, None)
        siblings = self.children.get(intent.parent_id)
        if siblings and intent.client_order_id in siblings:
            siblings.remove(intent.client_order_id)
            if not siblings:
                del self.children[intent.parent_id]

    def _act(self, order: ManagedOrder, intent: OrderIntent) -> list[OrderCommand]:
        if intent.action == "cancel":
            self._transition(order, E.CANCEL_SENT)
            order.sent_at = time.monotonic()
            return [OrderCommand(command="cancel", client_order_id=order.client_order_id,
                                 ib_order_id=order.ib_order_id, symbol=order.intent.symbol)]
        # modify: new terms on the same IB id; the old ones stay in force until IB confirms
        terms = order.intent
        merged = OrderIntent(strategy=terms.strategy, client_order_id=terms.client_order_id,
                             action="modify", symbol=terms.symbol, side=terms.side,
                             quantity=intent.quantity or terms.quantity,
                             order_type=terms.order_type,
                             limit_price=_pick(intent.limit_price, terms.limit_price),
                             stop_price=_pick(intent.stop_price, terms.stop_price),
                             tif=terms.tif, parent_id=terms.parent_id,
                             oca_group=terms.oca_group, transmit=True)
        self.journal.append(merged)
        order.pending_terms = merged
        order.sent_at = time.monotonic()
        self._transition(order, E.MODIFY_SENT)
        cmd = self._command(order, "modify", merged)
        cmd.parent_ib_id = self._parent_ib_id(order)
        return [cmd]

    def _parent_ib_id(self, order: ManagedOrder) -> int:
        parent = self.orders.get(order.intent.parent_id) if order.intent.parent_id else None
        return parent.ib_order_id if parent is not None else 0

    def _send_place(self, order: ManagedOrder) -> list[OrderCommand]:
        parent_ib = 0
        if order.intent.parent_id:
            parent_ib = self._parent_ib_id(order)
            if not parent_ib:
                return []  # sent once the parent has its IB id (see on_placed)
        self._transition(order, E.SEND)
        order.sent_at = time.monotonic()
        cmd = self._command(order, "place", order.intent)
        cmd.parent_ib_id = parent_ib
        return [cmd]

    def _command(self, order: ManagedOrder, command: str, i: OrderIntent) -> OrderCommand:
        return OrderCommand(command=command, client_order_id=i.client_order_id,
                            ib_order_id=order.ib_order_id, symbol=i.symbol, side=i.side,
                            quantity=i.quantity, order_type=i.order_type,
                            limit_price=i.limit_price, stop_price=i.stop_price, tif=i.tif,
                            oca_group=i.oca_group, transmit=i.transmit)

    def cancel_all(self, strategy: str = "") -> list[OrderCommand]:
        """Every active order (of ``strategy``, or all, external ones included)."""
        out: list[OrderCommand] = []
        for order in list(self.orders.values()):
            if not order.state.done and (not strategy or order.strategy == strategy):
                out.extend(self._cancel_one(order))
        return out

    def kill(self, strategy: str = "", modes: dict[str, str] | None = None
             ) -> list[OrderCommand]:
        """The kill switch: every active order of ``strategy`` ("" all) is cancelled but the
        protective exits of owners whose mode (``modes``: owner -> ``on_kill``, from risk;
        ``services.model.owners.kill_mode``) is ``keep_exits``; owners in ``flatten`` mode
        are then closed at market (``flatten_due``). The kept exits are listed in
        ``kept_exits``. A journal write that fails while the cancels are made is alerted
        (``journal_failed``) and does not stop them. ``modes`` None: ``cancel_all`` for
        every owner (a kill without risk's modes: the old, safest behaviour)."""
        self._lenient_journal = True
        try:
            if modes is None:
                self.kept_exits = []
                return self.cancel_all(strategy)
            keep = self.protective_exits(strategy, modes)
            self.kept_exits = sorted(keep)
            out: list[OrderCommand] = []
            for order in list(self.orders.values()):
                if order.state.done or (strategy and order.strategy != strategy) \
                        or order.client_order_id in keep:
                    continue
                out.extend(self._cancel_one(order))
            for owner in sorted({o.strategy for o in self.orders.values()}
                                | self.portfolio.owners()):
                if (not strategy or owner == strategy) and kill_mode(modes, owner) == FLATTEN:
                    self.want_flatten(owner)
            return out
        finally:
            self._lenient_journal = False

    def protective_exits(self, strategy: str, modes: dict[str, str]) -> set[str]:
        """The active orders a kill keeps (``services.model.owners.protective_exits``) among
        those of owners in ``keep_exits`` mode: children of a filled parent, and orders that
        only reduce their owner's position."""
        candidates = []
        for order in self.orders.values():
            if order.state.done or order.state is S.PENDING_CANCEL \
                    or (strategy and order.strategy != strategy) \
                    or kill_mode(modes, order.strategy) != "keep_exits":
                continue
            i = order.intent
            parent = self.orders.get(i.parent_id) if i.parent_id else None
            parent_working = parent is not None and not (
                parent.state is S.FILLED or parent.filled + EPSILON >= parent.intent.quantity)
            candidates.append(WorkingOrder(
                client_order_id=i.client_order_id, owner=order.strategy, symbol=i.symbol,
                side=i.side, remaining=max(0.0, i.quantity - order.filled),
                group=i.oca_group or i.parent_id or i.client_order_id,
                parent_working=parent_working))
        return protective_exits(candidates, self.portfolio.quantity)

    def _cancel_one(self, order: ManagedOrder) -> list[OrderCommand]:
        """Cancel one active order as ``cancel_all`` does (held for IB if it is uncertain)."""
        if order.state is S.PENDING_CANCEL:
            return []
        cancel = OrderIntent(strategy=order.strategy, client_order_id=order.client_order_id,
                             action="cancel")
        if order.state is S.NEW:
            self._transition(order, E.CANCELLED, "cancelled before it was sent")
        elif order.state.uncertain:
            if not any(w.action == "cancel" for w in order.waiting):
                self._set_waiting(order, [*order.waiting, cancel])
        else:
            return self._act(order, cancel)
        return []

    # -- REMOVED STRATEGIES -------------------------------------------------------------------
    def reassign(self, owner: str, to: str = UNOWNED) -> dict:
        """``ibfleet strategy remove``: every order (working or done) and every position book
        (quantity, average cost, PnL, its fills) of ``owner`` becomes ``to``'s, journalled
        first (``{"reassign": owner, "to": to}``, replayed in place) so a restart rebuilds the
        same books. Publishes the orders and positions on ``ord.update.TO`` and a flat
        position per symbol on ``ord.update.OWNER``. Returns what was handed over:
        ``{"positions": {symbol: quantity}, "orders": [client order id...]}`` (working orders
        and non-flat positions only). Raises ``IntentRefused`` for a reserved owner."""
        if owner in (EXTERNAL, UNOWNED) or not owner:
            raise IntentRefused(f"{owner!r} is not a strategy: it cannot be removed")
        symbols = sorted(s for o, s in self.portfolio.books if o == owner)
        handed = {"positions": {s: self.portfolio.quantity(owner, s) for s in symbols
                                if abs(self.portfolio.quantity(owner, s)) > EPSILON},
                  "orders": [o.client_order_id for o in self.open_orders(owner)]}
        if not symbols and not any(o.strategy == owner for o in self.orders.values()):
            return handed
        self.journal.append_record({"reassign": owner, "to": to})
        moved = self._reassign(owner, to)
        for order in moved:
            if not order.state.done:
                self._emit(order)
        for symbol in symbols:
            self._emit_position(owner, symbol)
            self._emit_position(to, symbol)
        if handed["positions"] or handed["orders"]:
            self.alerts.append(("warning", "strategy_handed_over",
                                f"strategy {owner} removed: handed to {to}: "
                                + ", ".join([f"{s} {q:g}" for s, q in
                                             handed["positions"].items()]
                                            + [f"order {c}" for c in handed["orders"]])))
        return handed

    def _reassign(self, owner: str, to: str) -> list[ManagedOrder]:
        moved = []
        for order in self.orders.values():
            if order.strategy != owner:
                continue
            order.intent = msgspec.structs.replace(order.intent, strategy=to)
            if order.pending_terms is not None:
                order.pending_terms = msgspec.structs.replace(order.pending_terms, strategy=to)
            order.waiting = [msgspec.structs.replace(w, strategy=to) for w in order.waiting]
            moved.append(order)
        self.portfolio.reassign(owner, to)
        for target in [t for t in self.flatten_wanted if t == owner]:
            self.flatten_wanted[to] = self.flatten_wanted.pop(target)
        return moved

    def want_flatten(self, strategy: str = "") -> None:
        self.flatten_wanted.setdefault(strategy, time.monotonic())

    def flatten_due(self, now: float | None = None,
                    wait_for_cancels: float = FLATTEN_WAIT_S) -> list[OrderCommand]:
        """The market orders that close the positions of each flatten target whose orders
        are all done (cancelled or filled), or that waited ``wait_for_cancels`` seconds for
        them: one per (owner, symbol) not flat, ``external`` included for the whole account.
        Journalled like any order (a journal error raises: nothing is sent unjournalled)."""
        now = time.monotonic() if now is None else now
        out: list[OrderCommand] = []
        for target, asked in list(self.flatten_wanted.items()):
            working = [o for o in self.open_orders(target)
                       if not o.client_order_id.startswith(FLATTEN_PREFIX)]
            if working and now - asked < wait_for_cancels:
                continue
            del self.flatten_wanted[target]
            closing = {(o.strategy, o.intent.symbol) for o in self.open_orders(target)
                       if o.client_order_id.startswith(FLATTEN_PREFIX)}
            for view in self.portfolio.views(self.clock(), target or None):
                if abs(view.quantity) <= EPSILON or (view.owner, view.symbol) in closing:
                    continue
                self._flatten_seq += 1
                intent = OrderIntent(
                    strategy=view.owner, action="new", symbol=view.symbol,
                    client_order_id=f"{FLATTEN_PREFIX}{view.owner}-{view.symbol}-"
                                    f"{self.clock()}-{self._flatten_seq}",
                    side="SELL" if view.quantity > 0 else "BUY",
                    quantity=abs(view.quantity), order_type="MKT")
                out.extend(self.on_intent(intent))
                self.alerts.append(("warning", "flatten_order",
                                    f"flatten: {intent.side} {intent.quantity:g} "
                                    f"{view.symbol} at market for {view.owner}"))
        return out

    # -- GATEWAY REPORTS ----------------------------------------------------------------------
    def on_placed(self, status: OrderStatus) -> list[OrderCommand]:
        """The gateway's synchronous reply to a place: the IB order id."""
        order = self.orders.get(status.client_order_id)
        if order is None or not status.ib_order_id:
            return []
        out: list[OrderCommand] = []
        if order.ib_order_id != status.ib_order_id:
            self._learn_ib_id(order, status.ib_order_id)
            self._journal_state(order)
            out.extend(self._release_children(order))
        return out

    def _release_children(self, order: ManagedOrder) -> list[OrderCommand]:
        out: list[OrderCommand] = []
        for coid in self.children.get(order.client_order_id, ()):
            child = self.orders[coid]
            if child.state is S.NEW:
                out.extend(self._send_place(child))
        return out

    def on_status(self, status: OrderStatus) -> list[OrderCommand]:
        order = self._find(status.client_order_id, status.ib_order_id, status.perm_id)
        if order is None:
            return []  # an order of another client: its open order adopts it
        if status.ib_order_id and not order.ib_order_id:
            self._learn_ib_id(order, status.ib_order_id)
        if status.perm_id:
            order.perm_id = status.perm_id
        if status.status == "Filled":
            # quantities come from executions (by execId); the status only says "done"
            if order.state is not S.FILLED and order.filled + EPSILON >= self._quantity(order):
                self._transition(order, E.FILL)
            return self._release(order)
        event = IB_STATUS_EVENTS.get(status.status)
        if event is not None:
            self._transition(order, event, status.why_held)
        return self._release(order)

    def on_open_order(self, msg: OpenOrder) -> list[OrderCommand]:
        order = self._find(msg.client_order_id, msg.ib_order_id, msg.perm_id)
        if order is None:
            order = self._adopt(msg)
            if order is None:
                return []
        if msg.ib_order_id and not order.ib_order_id:
            self._learn_ib_id(order, msg.ib_order_id)
            self._journal_state(order)
        if msg.perm_id:
            order.perm_id = msg.perm_id
            self._perm_ids_seen.add(msg.perm_id)
        if order.state is S.PENDING_MODIFY and order.pending_terms is not None \
                and _same_terms(order.pending_terms, msg):
            self._confirm_modify(order)
        elif order.state is S.PENDING_SUBMIT:
            self._transition(order, E.ACCEPTED)
        return self._release(order)

    def _confirm_modify(self, order: ManagedOrder) -> None:
        terms = order.pending_terms
        assert terms is not None
        confirmed = OrderIntent(**{f: getattr(terms, f) for f in terms.__struct_fields__
                                   if f not in ("action",)}, action="new")
        self.journal.append(confirmed)
        order.intent, order.pending_terms = confirmed, None
        self._transition(order, E.MODIFY_ACCEPTED, "")

    def _adopt(self, msg: OpenOrder) -> ManagedOrder | None:
        """An order working at IB that execution did not make (another client, TWS, a lost
        journal): taken under the "external" owner, so it is counted, shown, and cancelled
        by the kill switch."""
        if msg.status in ("Cancelled", "ApiCancelled", "Filled", "Inactive"):
            return None
        coid = f"{EXTERNAL}-{msg.perm_id or msg.ib_order_id}"
        if coid in self.orders:
            return self.orders[coid]
        try:
            side = OrderSide.parse(msg.side, "side").value
            kind = OrderType.parse(msg.order_type, "order_type").value
            tif = TimeInForce.parse(msg.tif, "tif").value
        except InvalidOrder as exc:
            self.errors["unknown_order_terms"] += 1
            log.warning("order at IB with terms execution cannot represent",
                        extra={"ib_order_id": msg.ib_order_id, "detail": str(exc)})
            kind, tif, side = "LMT", "GTC", msg.side
        intent = OrderIntent(strategy=EXTERNAL, client_order_id=coid, action="new",
                             symbol=msg.symbol, side=side, quantity=msg.quantity,
                             order_type=kind, limit_price=msg.limit_price,
                             stop_price=msg.stop_price, tif=tif)
        self.journal.append(intent)
        order = self._accept(intent)
        order.state = S.SUBMITTED
        order.perm_id = msg.perm_id
        order.reason = f"adopted: at IB (client {msg.client_id}, ref {msg.client_order_id!r})"
        if msg.ib_order_id > 0 and msg.client_id == self.client_id:
            self._learn_ib_id(order, msg.ib_order_id)  # other clients' ids are theirs alone
        self._journal_state(order)
        self._emit(order)
        self.errors["adopted_orders"] += 1
        self.alerts.append(("warning", "unknown_order",
                            f"IB order {msg.ib_order_id} ({msg.side} {msg.quantity:g} "
                            f"{msg.symbol}, ref {msg.client_order_id!r}) was not placed by "
                            f"execution: adopted as {coid}"))
        return order

    def on_execution(self, fill: Execution) -> list[OrderCommand]:
        if self.portfolio.has_fill(fill.exec_id):
            return []  # IB replays executions: the same execId is the same fill
        order = self._find(fill.client_order_id, fill.ib_order_id, fill.perm_id)
        if order is None and exec_base(fill.exec_id)[1] > 1 \
                and not self.portfolio.knows_execution(fill.exec_id):
            # a correction of an execution we never booked, of an order we do not know:
            # nothing to correct; refused (counted, logged), nothing booked. Were it real,
            # the broker's positions, compared at each reconciliation, bring it in
            self.errors["correction_of_unknown_execution"] += 1
            log.error("correction of an unknown execution refused",
                      extra={"exec_id": fill.exec_id, "symbol": fill.symbol})
            return []
        self.journal.append(fill)
        result = self._book(fill)
        if result is Booked.STALE:
            self.errors["stale_correction"] += 1
            return []
        if order is None:
            return []
        return self._release(order)

    def _book(self, fill: Execution) -> Booked:
        """Book a fill into the portfolio and its order (journal replay too)."""
        order = self._find(fill.client_order_id, fill.ib_order_id, fill.perm_id)
        owner = order.strategy if order is not None else EXTERNAL
        try:
            side = OrderSide.parse(fill.side, "side")
        except InvalidOrder:
            self.errors["bad_execution"] += 1
            return Booked.STALE
        self._executions[fill.exec_id] = fill
        booked = self.portfolio.book_fill(Fill(  # in the order's symbol: a front-month
            # alias (ES) and IB's name of its contract (ESZ6@CME) are one instrument
            exec_id=fill.exec_id, owner=owner,
            symbol=order.intent.symbol if order is not None and order.intent.symbol
            else fill.symbol, side=side,
            quantity=fill.quantity, price=fill.price,
            time_ns=fill.exec_time_ns or fill.ts or self.clock(),
            client_order_id=order.client_order_id if order else fill.client_order_id))
        if booked in (Booked.DUPLICATE, Booked.STALE):
            return booked
        self.last_booked = fill.exec_id
        if self._replaying:
            self._replayed_fills.append(fill.exec_id)
        if booked is Booked.CORRECTED:
            self.alerts.append(("info", "execution_corrected",
                                f"IB corrected execution {exec_base(fill.exec_id)[0]}: now "
                                f"{fill.quantity:g} @ {fill.price:g}"))
        if order is None:
            if not fill.exec_id.startswith(ADJUSTMENT_PREFIX):
                self.alerts.append(("warning", "unknown_execution",
                                    f"execution {fill.exec_id} ({fill.side} {fill.quantity:g} "
                                    f"{fill.symbol}) of an order execution did not place: "
                                    f"booked to {EXTERNAL}"))
            self._emit_position(EXTERNAL, fill.symbol)
            return booked
        order.record_fill(exec_base(fill.exec_id)[0], fill.quantity, fill.price)
        done = order.filled + EPSILON >= self._quantity(order)
        event = E.FILL if done else E.PARTIAL_FILL
        try:
            order.state = next_state(order.state, event, order.filled)
        except IllegalTransition:
            pass  # e.g. a fill on a rejected order: booked, state kept
        if not self._replaying:
            self._journal_state(order)
        self._emit(order, exec_id=fill.exec_id, last_qty=fill.quantity, last_price=fill.price,
                   with_position=True)
        return booked

    def on_commission(self, msg: Commission) -> None:
        if not math.isfinite(msg.commission):
            self.errors["bad_commission"] += 1
            return
        if self.portfolio.book_commission(msg.exec_id, msg.commission):
            self.journal.append(msg)
            fill = self.portfolio.fill(msg.exec_id)
            if fill is not None:
                self._emit_position(fill.owner, fill.symbol)

    def on_order_error(self, err: GatewayError) -> list[OrderCommand]:
        """An IB (or gateway) error about one order: what it refuses depends on what was in
        flight, which only execution knows."""
        order = self._find(err.ref, err.req_id if err.req_id > 0 else 0, 0)
        if order is None or err.code in ORDER_INFO_CODES:
            return []
        text = f"{err.code}: {err.text}"
        if order.state is S.PENDING_MODIFY:
            order.pending_terms = None
            self._transition(order, E.MODIFY_REFUSED, f"modify refused: {text}")
        elif order.state is S.PENDING_CANCEL and err.code in CANCEL_REFUSED_CODES:
            self._transition(order, E.CANCEL_REFUSED, f"cancel refused: {text}")
            self.reconcile_wanted = f"cancel of {order.client_order_id} refused ({err.code})"
        elif order.state in (S.NEW, S.PENDING_SUBMIT) and err.code in PLACE_REFUSED_CODES:
            self._transition(order, E.REJECTED, text)
            for coid in self.children.get(order.client_order_id, ()):
                child = self.orders[coid]
                if not child.state.done:
                    self._transition(child, E.REJECTED, f"parent rejected: {text}")
        elif order.state in (S.SUBMITTED, S.PARTIALLY_FILLED) \
                and err.code in PLACE_REFUSED_CODES | CANCEL_REFUSED_CODES:
            # a late answer to a modify/cancel already settled: the order keeps working
            order.reason = f"IB: {text}"
            self._emit(order)
        return self._release(order)

    def on_completed(self, msg: CompletedOrder) -> list[OrderCommand]:
        """IB's record of an order that is over: close ours with the state IB gives."""
        order = self._find(msg.client_order_id, msg.ib_order_id, msg.perm_id)
        if order is None or order.state.done:
            return []
        self._completed_this_run.add(order.client_order_id)
        if msg.status == "Filled":
            if order.filled + EPSILON >= self._quantity(order):
                self._transition(order, E.FILL)
            else:  # the executions are missing: ask IB for them again
                self.reconcile_wanted = f"{order.client_order_id} completed Filled " \
                                        f"without its executions"
        elif msg.status in ("Cancelled", "ApiCancelled"):
            expired = "system" in msg.completed_status.lower() or \
                      "expire" in msg.completed_status.lower()
            self._transition(order, E.EXPIRED if expired else E.CANCELLED,
                             msg.completed_status or msg.status)
        elif msg.status == "Inactive":
            self._transition(order, E.INACTIVE, msg.completed_status or msg.status)
        if order.waiting:
            self._set_waiting(order, [])
        return []

    def on_broker_position(self, msg: Position) -> None:
        """IB's position: a reconciliation run's (compared at its ReconcileEnd), or an update
        IB streams while synchronised (a fill: ours, or a trade made outside the fleet). One
        that differs from ours is checked again at the gateway's next state report (it comes
        with every gateway heartbeat): our own execution may simply not be here yet."""
        self.broker_positions[msg.symbol] = msg.quantity
        if self.gateway_state == "synchronised":
            diff = self._position_diff(msg.symbol)
            if diff is None:
                self._drift.pop(msg.symbol, None)
            else:
                self._drift.setdefault(msg.symbol, diff)

    def _position_diff(self, symbol: str) -> float | None:
        """The broker's position in ``symbol`` minus ours, None if they agree."""
        diff = self.broker_positions.get(symbol, 0.0) - \
            self.portfolio.net_positions().get(symbol, 0.0)
        return diff if abs(diff) > EPSILON else None

    def _check_drift(self) -> None:
        """A streamed position that still differs from ours one gateway report later, by the
        same amount, is a trade we did not make (or a fill we lost): it counts as a first
        sighting of the mismatch, and a reconciliation run confirms it (``_compare_positions``:
        adopted, critical alert ``broker_positions_adopted``), without waiting for a
        reconnect."""
        for symbol, seen in list(self._drift.items()):
            diff = self._position_diff(symbol)
            if diff is None or abs(diff - seen) > EPSILON:
                if diff is None:
                    del self._drift[symbol]
                else:
                    self._drift[symbol] = diff  # moved again: one more report to settle
                continue
            del self._drift[symbol]
            self._mismatch_seen[symbol] = diff
            self.reconcile_wanted = (f"the broker's {symbol} position differs from the "
                                     f"fleet's by {diff:g} (a trade outside the fleet?): "
                                     f"confirming")

    def on_reconcile_end(self, end: ReconcileEnd) -> list[OrderCommand]:
        """Every report of the run is in: close what IB no longer has, then compare the
        broker's positions with ours and adopt the broker's if they still differ."""
        out: list[OrderCommand] = []
        open_ids, in_flight = set(end.open_ids), set(end.in_flight_ids)
        for order in list(self.orders.values()):
            if order.state.done or not order.ib_order_id or order.strategy == EXTERNAL:
                continue
            if order.ib_order_id in open_ids or order.ib_order_id in in_flight:
                continue
            if self._held_leg(order):
                continue  # transmit=False: IB holds it until its group's last leg is sent
            if order.filled + EPSILON >= self._quantity(order):
                self._transition(order, E.FILL)
                continue
            if order.client_order_id in self._completed_this_run:
                # IB lists it completed Filled, its executions not booked yet: the next run
                # (asked for in on_completed) brings them; a few runs without them, and it
                # is closed as below, alerted, and the broker's position adopted
                tries = self._filled_without_fills.get(order.client_order_id, 0) + 1
                self._filled_without_fills[order.client_order_id] = tries
                if tries <= FILLED_WITHOUT_FILLS_RUNS:
                    continue
            self._transition(order, E.CANCELLED, "IB no longer lists it (not open, not "
                                                 "completed)")
            self.alerts.append(("warning", "order_vanished",
                                f"{order.client_order_id} (IB {order.ib_order_id}) is not at "
                                f"IB any more: closed as cancelled with "
                                f"{order.filled:g} filled"))
        for order in list(self.orders.values()):
            if order.strategy == EXTERNAL and not order.state.done \
                    and order.perm_id not in self._perm_ids_seen \
                    and order.ib_order_id not in open_ids:
                self._transition(order, E.CANCELLED, "no longer at IB")
        self._completed_this_run.clear()
        self._perm_ids_seen.clear()
        self._compare_positions()
        for order in self.orders.values():
            out.extend(self._release(order))
        return out

    def _held_leg(self, order: ManagedOrder) -> bool:
        if order.intent.transmit:
            return False
        group = [order.intent.parent_id or order.client_order_id]
        group += self.children.get(group[0], [])
        return not any(self.orders[c].intent.transmit and self.orders[c].state is not S.NEW
                       for c in group if c in self.orders)

    def _canonical(self, symbol: str) -> str:
        """IB's name of the contract a fleet symbol stands for (the gateway names a future
        ``LOCAL@EXCHANGE`` in its reports, a front-month ``ES`` included)."""
        info = self.portfolio.instruments.by_symbol.get(symbol)
        if info is None or "@" in symbol or info.sec_type in ("", "STK", "CASH") \
                or not info.local_symbol:
            return symbol
        return f"{info.local_symbol}@{info.exchange}"

    def _compare_positions(self) -> None:
        ours: dict[str, float] = {}
        for symbol, quantity in self.portfolio.net_positions().items():
            key = self._canonical(symbol)
            ours[key] = ours.get(key, 0.0) + quantity
        theirs = {s: q for s, q in self.broker_positions.items() if abs(q) > EPSILON}
        differ = {s: theirs.get(s, 0.0) - ours.get(s, 0.0) for s in set(ours) | set(theirs)
                  if abs(theirs.get(s, 0.0) - ours.get(s, 0.0)) > EPSILON}
        confirmed = {s: d for s, d in differ.items()
                     if abs(self._mismatch_seen.get(s, math.nan) - d) <= EPSILON}
        self._mismatch_seen = differ
        if differ and not confirmed:
            # a fill between IB's position and execution answers can look like a mismatch:
            # believe it when a second run shows the same difference
            self.reconcile_wanted = "positions differ from the broker's: confirming"
            return
        for symbol, diff in sorted(confirmed.items()):
            self._adopt_position(symbol, diff)
        if confirmed:
            self._mismatch_seen = {}
            self.alerts.append(("critical", "broker_positions_adopted",
                                "the broker's positions differ from the fleet's (an account "
                                "reset, or trades outside the fleet): adopted the broker's: "
                                + ", ".join(f"{s} {ours.get(s, 0.0):g} -> "
                                            f"{theirs.get(s, 0.0):g}"
                                            for s in sorted(confirmed))))

    def _adopt_position(self, symbol: str, diff: float) -> None:
        """Book ``diff`` so our net position equals the broker's: first by taking strategies'
        positions that point the other way toward flat (at their cost: no PnL), the rest to
        the "external" owner."""
        for owner in sorted(self.portfolio.owners()):
            if abs(diff) <= EPSILON:
                break
            held = self.portfolio.quantity(owner, symbol)
            if held == 0 or (held > 0) == (diff > 0):
                continue
            take = math.copysign(min(abs(held), abs(diff)), diff)
            self._book_adjustment(owner, symbol, take)
            diff -= take
        if abs(diff) > EPSILON:
            self._book_adjustment(EXTERNAL, symbol, diff)

    def _book_adjustment(self, owner: str, symbol: str, quantity: float) -> None:
        self._adjustments += 1
        view = self.portfolio.view(owner, symbol, self.clock())
        price = view.avg_cost or 0.0
        fill = Execution(exec_id=f"{ADJUSTMENT_PREFIX}{self.clock()}-{self._adjustments}",
                         ib_order_id=0, client_order_id=f"{ADJUSTMENT_PREFIX}{owner}", perm_id=0,
                         account="", symbol=symbol, side="BUY" if quantity > 0 else "SELL",
                         quantity=abs(quantity), price=price, cum_quantity=abs(quantity),
                         avg_price=price, exec_time_ns=self.clock())
        self.journal.append(fill)
        self._executions[fill.exec_id] = fill
        booked = self.portfolio.book_fill(Fill(
            exec_id=fill.exec_id, owner=owner, symbol=symbol,
            side=OrderSide.BUY if quantity > 0 else OrderSide.SELL, quantity=abs(quantity),
            price=price, time_ns=fill.exec_time_ns, client_order_id=fill.client_order_id))
        if booked is Booked.NEW:
            self._emit_position(owner, symbol)

    def on_gateway_state(self, state: GatewayState) -> list[OrderCommand]:
        """After a reconnect: finish what a crash or a drop left uncertain."""
        previous, self.gateway_state = self.gateway_state, state.state
        self.client_id = state.client_id or self.client_id
        if state.state in ("disconnected", "connecting", "connected") \
                and previous != state.state:
            self.broker_positions.clear()  # the next run reports them afresh (flat: none)
            self._drift.clear()
        if state.state == "synchronised" and previous == "synchronised" and self._drift:
            self._check_drift()
        if state.state != "synchronised" or previous == "synchronised":
            return []
        if not self._was_synchronised:
            # execution may have joined after the gateway's run ended: ask for one of its own
            self.reconcile_wanted = "execution started"
        out: list[OrderCommand] = []
        if self.cancel_on_reconnect and self._was_synchronised:
            out.extend(self.cancel_all())
        self._was_synchronised = True
        for order in self.orders.values():
            if order.state is S.PENDING_SUBMIT and not order.ib_order_id:
                out.extend(self._send_place(order))  # outcome unknown: the gateway dedupes
        return out

    # -- HELPERS ------------------------------------------------------------------------------
    def _quantity(self, order: ManagedOrder) -> float:
        return order.intent.quantity

    def _release(self, order: ManagedOrder) -> list[OrderCommand]:
        """Act on a held modify/cancel once IB has said where the order stands."""
        out: list[OrderCommand] = []
        released = False
        while order.waiting and not order.state.uncertain:
            released = True
            if order.state.done:
                order.waiting = []
                break
            intent = order.waiting[0]
            order.waiting = order.waiting[1:]
            out.extend(self._act(order, intent))
        if released:
            self._set_waiting(order, order.waiting)
        return out

    def _learn_ib_id(self, order: ManagedOrder, ib_order_id: int) -> None:
        order.ib_order_id = ib_order_id
        self.by_ib_id[ib_order_id] = order.client_order_id

    def _find(self, client_order_id: str, ib_order_id: int, perm_id: int) -> ManagedOrder | None:
        if client_order_id and client_order_id in self.orders:
            return self.orders[client_order_id]
        coid = self.by_ib_id.get(ib_order_id) if ib_order_id else None
        if coid:
            return self.orders.get(coid)
        if perm_id:
            for order in self.orders.values():
                if order.perm_id == perm_id:
                    return order
        return None

    def _transition(self, order: ManagedOrder, event: OrderEvent, reason: str = "") -> None:
        try:
            new = next_state(order.state, event, order.filled)
        except IllegalTransition as exc:
            log.info("ignored transition", extra={"client_order_id": order.client_order_id,
                                                  "detail": str(exc)})
            return
        if new is order.state and not reason:
            return
        order.state = new
        if reason or event in (E.MODIFY_ACCEPTED, E.MODIFY_REFUSED, E.CANCEL_REFUSED):
            order.reason = reason
        if new.done:
            order.pending_terms = None
        self._journal_state(order)
        self._emit(order)

    def _journal_state(self, order: ManagedOrder) -> None:
        if self._replaying:
            return
        record = OrderStatus(ib_order_id=order.ib_order_id,
                             client_order_id=order.client_order_id,
                             status=order.state.value, filled=order.filled,
                             remaining=order.intent.quantity - order.filled,
                             why_held=order.reason)
        if not self._lenient_journal:
            self.journal.append(record)
            return
        try:
            self.journal.append(record)
        except OSError as exc:  # the kill switch: the cancel goes out all the same; IB's
            # answer (or the next reconciliation) brings the order's state back
            self.errors["journal_failed"] += 1
            if not any(code == "journal_failed" for _, code, _ in self.alerts):
                self.alerts.append(("critical", "journal_failed",
                                    f"execution could not journal a kill-switch cancel "
                                    f"(sent anyway): {exc}"))

    def _emit(self, order: ManagedOrder, exec_id: str = "", last_qty: float = 0.0,
              last_price: float = 0.0, with_position: bool = False) -> None:
        if self._replaying:
            return
        msgs: list[Message] = []
        if with_position:
            msgs.append(self.position_message(order.strategy, order.intent.symbol))
        msgs.append(self.update_of(order, exec_id, last_qty, last_price))
        self.frames.append((f"ord.update.{order.strategy}", msgs))

    def _emit_position(self, owner: str, symbol: str) -> None:
        if not self._replaying:
            self.frames.append((f"ord.update.{owner}", [self.position_message(owner, symbol)]))

    def position_message(self, owner: str, symbol: str) -> StrategyPosition:
        v = self.portfolio.view(owner, symbol, self.clock())
        return StrategyPosition(strategy=owner, symbol=symbol, quantity=v.quantity,
                                avg_cost=v.avg_cost, realized=v.realized,
                                commissions=v.commissions, realized_day=v.realized_day,
                                trading_day=v.trading_day, multiplier=v.multiplier,
                                commissions_unknown=self.portfolio.commissions_unknown(owner, symbol))

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
                           last_fill_price=last_price, reason=order.reason, tif=i.tif,
                           oca_group=i.oca_group,
                           owner=i.strategy if i.strategy in (EXTERNAL, UNOWNED) else "")

    def digest(self, owner: str) -> StrategyDigest:
        return StrategyDigest(strategy=owner, open_orders=len(self.open_orders(owner)),
                              positions={s: b.holding.quantity
                                         for (o, s), b in self.portfolio.books.items()
                                         if o == owner},
                              fills=sum(1 for (o, _), b in self.portfolio.books.items()
                                        if o == owner for f in b.fills
                                        if not f.exec_id.startswith(ADJUSTMENT_PREFIX)))

    def owners(self) -> set[str]:
        return {o.strategy for o in self.orders.values()} | self.portfolio.owners()

    def snapshot(self, owner: str | None = None) -> list[tuple[str, Message]]:
        """Execution's state for mirrors: open orders, positions, and a digest per owner."""
        items: list[tuple[str, Message]] = []
        for name in sorted(self.owners()):
            if owner is not None and name != owner:
                continue
            topic = f"ord.update.{name}"
            items += [(topic, self.update_of(o)) for o in self.open_orders(name)]
            items += [(topic, self.position_message(name, s))
                      for (o, s) in sorted(self.portfolio.books) if o == name]
            items.append((topic, self.digest(name)))
        return items

    def compaction(self) -> list[Message]:
        """The journal rewritten as the state now, so a start replays one record per order
        rather than its whole history: the terms and state of every order that is active or
        has fills (a done order without fills is dropped), every booked execution (current
        versions) and commission. Replaying it rebuilds the same orders and portfolio."""
        out: list[Message] = []
        for order in self.orders.values():
            if order.state.done and not order.fills:
                continue
            first = order.intent
            if first.action != "new":
                first = OrderIntent(**{f: getattr(first, f) for f in first.__struct_fields__
                                       if f != "action"}, action="new")
            out.append(first)
            if order.pending_terms is not None:
                out.append(order.pending_terms)
            out.append(OrderStatus(ib_order_id=order.ib_order_id,
                                   client_order_id=order.client_order_id,
                                   status=order.state.value, filled=order.filled,
                                   remaining=order.intent.quantity - order.filled,
                                   why_held=order.reason))
            if order.waiting:
                out.append({"waiting": order.client_order_id,  # type: ignore[arg-type]
                            "intents": [msgspec.to_builtins(i) for i in order.waiting]})
        # in the order IB reported them: a replay books each correction where it stood
        out += [fill for exec_id, fill in self._executions.items()
                if self.portfolio.has_fill(exec_id)]
        out += [Commission(exec_id=exec_id, commission=amount)
                for exec_id, amount in self.portfolio.commissions().items()]
        # the published mark, as the last fill that still stands at or before it
        booked = {m.exec_id for m in out if isinstance(m, Execution)}
        mark = ""
        for exec_id in self._executions:
            if exec_id in booked:
                mark = exec_id
            if exec_id == self.last_published:
                if mark:
                    out.append({"published": mark})  # type: ignore[arg-type]
                break
        return out

    def stuck_cancels(self, now: float, timeout: float) -> list[OrderCommand]:
        """Cancels IB has not confirmed within ``timeout``: send them again. A cancel is safe to
        repeat (IB answers 10147/10148 if the order is already gone or going)."""
        out = []
        for order in self.orders.values():
            if order.state is S.PENDING_CANCEL and now - order.sent_at > timeout:
                order.sent_at = now
                out.append(OrderCommand(command="cancel", client_order_id=order.client_order_id,
                                        ib_order_id=order.ib_order_id,
                                        symbol=order.intent.symbol))
        return out

    def unconfirmed(self, now: float, timeout: float) -> list[ManagedOrder]:
        """Orders sent (or modified) longer than ``timeout`` ago that IB has not yet confirmed:
        query them (a reconciliation), never re-send them blindly."""
        return [o for o in self.orders.values()
                if o.state in (S.PENDING_SUBMIT, S.PENDING_MODIFY) and o.sent_at
                and now - o.sent_at > timeout and not self._held_leg(o)]

    def open_orders(self, strategy: str = "") -> list[ManagedOrder]:
        return [o for o in self.orders.values()
                if not o.state.done and (not strategy or o.strategy == strategy)]


def _pick(new: float, old: float) -> float:
    return old if math.isnan(new) else new


def _same_terms(terms: OrderIntent, msg: OpenOrder) -> bool:
    """Does IB's open order carry these terms (quantity, and the prices its type uses)?"""
    kind = OrderType.parse(terms.order_type, "order_type")
    pairs = [(terms.quantity, msg.quantity)]
    if kind.needs_limit:
        pairs.append((terms.limit_price, msg.limit_price))
    if kind.needs_stop:
        pairs.append((terms.stop_price, msg.stop_price))
    return all(math.isfinite(a) and math.isfinite(b) and abs(a - b) < 1e-9 for a, b in pairs)
