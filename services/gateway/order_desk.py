"""The order desk: the one owner of execution's order commands on their way to IB.

Execution owns every order's truth and reconciles it; the desk does only what needs the socket:

- IB order ids (``OrderIdSequence``, durable blocks) and client order id -> IB id
  (``OrderMap``, journalled with the command before it is sent): a place whose client order
  id is already mapped is answered with the mapping and never placed again;
- holding commands while the connection is not synchronised, in order, never dropped (what
  was queued for a socket that died comes back to the head of the queue);
- places sent that IB has not mentioned yet (*unacknowledged*): a reconciliation run that
  started after they were sent and did not mention them means they died with the socket;
  they are resent with the same id (IB answers 103 if it had one after all, so a resend can
  never make a second order);
- places journalled by a previous run but never sent (SIGKILL while holding them): resent
  after the first reconciliation unless IB reported them;
- modifies and cancels are journalled before they are acknowledged and marked done once they
  went out: those a previous run acknowledged and never sent follow its places, once;
- a journal write that fails (a full disk) refuses the command with the reason ("gateway
  journal cannot write: ENOSPC ..."): nothing refused is ever sent; a critical alert goes out,
  and the next command tries the disk again (an info alert says when it writes again);
- untransmitted legs (``transmit=False``): IB says nothing about them until a transmitting leg
  of their group (same parent, or the parent itself) is sent, so until then they are neither
  unacknowledged nor resent; they are *in flight* for the reconciliation's report.

The desk never publishes an order status: only IB's orderStatus does (``reports``). A place the
desk itself refuses before sending (its contract cannot be resolved) goes out as
``GatewayError(scope="order", code=200, req_id=IB id, ref=client order id)``, nothing else.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable

import msgspec
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel

from proto.schema import Alert, GatewayError, Message, OrderCommand, OrderStatus
from services.bus.reliable import Refused
from services.gateway import translate
from services.gateway.contracts import ContractResolver
from services.gateway.orders import OrderIdSequence, OrderMap, OrderRecord
from services.gateway.outbox import Outbox

#: the reason of a reconciliation execution asked for (it saw a gap or a difference): its
#: executions are published whole, even those published before (``Reports.on_exec_details``)
EXECUTION_ASKED = "reconcile requested by execution"
#: IB's statuses after which an order works no more
DONE_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


class CommandRefused(Refused):
    """Raised from the order handler: the reliable server nacks with this text."""


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


def group_of(cmd: OrderCommand) -> int:
    """The IB id a bracket's legs share: the parent's."""
    return cmd.parent_ib_id or cmd.ib_order_id


class OrderDesk:
    def __init__(self, state_dir: Path, client_id: int, outbox: Outbox,
                 contracts: ContractResolver, can_send: Callable[[], bool], publisher: Any,
                 counters: Counter, log: logging.Logger,
                 request_reconcile: Callable[[str], None]) -> None:
        self.client_id = client_id
        self.outbox = outbox
        self.contracts = contracts
        self.can_send = can_send
        self.publisher = publisher
        self.counters = counters
        self.log = log
        self.request_reconcile = request_reconcile
        self.ids = OrderIdSequence(state_dir)
        self.orders = OrderMap(state_dir)
        #: commands waiting for synchronised (or for their contract), in arrival order
        self.held: deque[OrderCommand] = deque()
        #: places journalled by a previous run and never sent, by IB id
        self.unsent: dict[int, OrderCommand] = self._journalled_unsent()
        #: places sent that IB has not mentioned yet: IB id -> (command, send number)
        self.unacked: dict[int, tuple[OrderCommand, int]] = {}
        #: places sent with transmit=False whose group has no transmitting leg sent yet
        self.untransmitted: dict[int, OrderCommand] = {}
        #: ids resent (after a drop or a crash) that IB has not mentioned since
        self.resent: set[int] = set()
        #: the last order error (IB's, or the desk's own refusal) per IB id, for a resent place
        self.last_error: dict[int, GatewayError] = {}
        #: places sent so far; a reconciliation run notes it when it asks for open orders
        self.sends = 0
        #: modifies/cancels acknowledged and not yet sent: id(cmd) -> (cmd, journal key)
        self._hold_keys: dict[int, tuple[OrderCommand, int]] = {}
        #: modifies/cancels a previous run acknowledged and never sent, in journal order
        self.unsent_commands: list[tuple[int, OrderCommand]] = self._journalled_commands()
        #: why the journal cannot write ("" while it can)
        self.journal_error = ""
        self._journal_alerted = 0.0

    # -- COMMANDS (the reliable server's handler) ------------------------------------------
    def on_command(self, msg: Message, peer_src: str) -> list[Message]:
        if not peer_src.startswith("execution."):
            self.counters["refused_commands"] += 1
            text = (f"refused {type(msg).__name__} from {peer_src!r}: only execution.* may "
                    f"command the gateway")
            self.log.warning("command refused", extra={"src": peer_src,
                                                       "type": type(msg).__name__})
            self.publisher.publish(Alert(severity="warning", code="gateway.refused_command",
                                         text=text))
            raise CommandRefused(text)
        if not isinstance(msg, OrderCommand):
            self.counters["refused_commands"] += 1
            raise CommandRefused(f"the gateway takes OrderCommand only, not {type(msg).__name__}")
        self.counters[f"cmd_{msg.command}"] += 1
        if msg.command == "place":
            return self._place(msg)
        if msg.command == "reconcile":
            self.request_reconcile(EXECUTION_ASKED)
            return []  # without a socket the next connection reconciles anyway
        if msg.command in ("modify", "cancel"):
            rec = self.orders.get(msg.client_order_id) if msg.client_order_id else None
            if rec is None and msg.ib_order_id:
                rec = self.orders.by_ib_id(msg.ib_order_id)
            if rec is None:
                raise CommandRefused(f"{msg.command}: unknown order (client_order_id "
                                     f"{msg.client_order_id!r}, ib_order_id {msg.ib_order_id})")
            msg.ib_order_id = rec.ib_order_id
            msg.client_order_id = rec.client_order_id
            if not msg.symbol:
                msg.symbol = rec.symbol
            try:  # durable before the ack: a kill -9 before it is sent does not lose it
                key = self.orders.hold(msg)
            except OSError as exc:
                raise CommandRefused(self._journal_failed(exc, msg.command)) from None
            self._journal_ok()
            self._hold_keys[id(msg)] = (msg, key)
        self._dispatch(msg)
        return []

    # -- JOURNAL FAILURES ------------------------------------------------------------------
    def _journal_failed(self, exc: OSError, what: str) -> str:
        """Count, alert (critical; again at most every 30 s), and the refusal's text."""
        code = exc.errno or errno.EIO
        reason = (f"gateway journal cannot write: {errno.errorcode.get(code, str(code))} "
                  f"({os.strerror(code)}): {exc}")
        self.counters["journal_write_failures"] += 1
        self.counters[f"{what}s_refused_journal"] += 1
        first = not self.journal_error
        self.journal_error = reason
        self.log.error("command refused: the journal cannot write", extra={
            "command": what, "error": reason})
        now = time.monotonic()
        if first or now - self._journal_alerted > 30.0:
            self._journal_alerted = now
            self.publisher.publish(Alert(severity="critical", code="gateway.journal_write_failed",
                                         text=f"{reason}; order commands are refused until it "
                                              f"can"))
        return reason

    def _journal_ok(self) -> None:
        if self.journal_error:
            self.log.warning("the journal writes again", extra={"was": self.journal_error})
            self.journal_error = ""
            self.counters["journal_recoveries"] += 1
            self.publisher.publish(Alert(severity="info", code="gateway.journal_recovered",
                                         text="gateway journal writes again; commands accepted"))

    def _command_sent(self, cmd: OrderCommand) -> None:
        """A modify/cancel went to IB: journal it done (never raises: it did go out)."""
        entry = self._hold_keys.pop(id(cmd), None)
        if entry is None:
            return
        try:
            self.orders.hold_done(entry[1])
        except OSError as exc:  # after a restart it is sent again: a repeat IB tolerates
            self.counters["held_done_marker_errors"] += 1
            self.log.error("could not journal a sent modify/cancel", extra={
                "ib_order_id": cmd.ib_order_id, "error": str(exc)})

    def _place(self, cmd: OrderCommand) -> list[Message]:
        rec = self.orders.get(cmd.client_order_id)
        if rec is not None:  # a resend, or execution retrying after our restart
            self.counters["duplicate_places"] += 1
            return self._known(rec)
        if not cmd.client_order_id or not cmd.symbol or not cmd.quantity > 0:
            raise CommandRefused("place needs client_order_id, symbol and a positive quantity")
        if cmd.order_type in ("LMT", "STP LMT") and math.isnan(cmd.limit_price):
            raise CommandRefused(f"{cmd.order_type} order needs a limit price")
        if cmd.order_type in ("STP", "STP LMT") and math.isnan(cmd.stop_price):
            raise CommandRefused(f"{cmd.order_type} order needs a stop price")
        try:
            ib_id = self.ids.allocate()      # the block is fsync'd before the id is used
            cmd.ib_order_id = ib_id
            self.orders.add(cmd, ib_id)      # journalled (with the command) before sending
        except OSError as exc:  # nothing was journalled: refused, and never sent later
            cmd.ib_order_id = 0
            raise CommandRefused(self._journal_failed(exc, "place")) from None
        self._journal_ok()
        self._dispatch(cmd)
        # the mapping: IB's own name for "sent by the API, not acknowledged yet"
        return [OrderStatus(ib_order_id=ib_id, client_order_id=cmd.client_order_id,
                            status="PendingSubmit", filled=0.0, remaining=cmd.quantity,
                            parent_id=cmd.parent_ib_id)]

    def _known(self, rec: OrderRecord) -> list[Message]:
        """The answer to a place already mapped: the mapping with the last status IB reported
        (PendingSubmit if none yet) and the last error about it, if any."""
        reply: list[Message] = [OrderStatus(
            ib_order_id=rec.ib_order_id, client_order_id=rec.client_order_id, status=rec.status,
            filled=rec.filled, remaining=rec.remaining, perm_id=rec.perm_id,
            parent_id=rec.parent_id)]
        error = self.last_error.get(rec.ib_order_id)
        if error is not None:
            reply.append(error)
        return reply

    # -- SENDING ---------------------------------------------------------------------------
    def _dispatch(self, cmd: OrderCommand) -> None:
        """Send now (through the outbox) or hold until synchronised; never drop."""
        if self.can_send() and not self.held and self._send(cmd):
            return
        self.held.append(cmd)
        self.counters["held_commands"] += 1
        if cmd.symbol:
            self.contracts.resolve(cmd.symbol)

    def send_now(self, cmd: OrderCommand) -> None:
        """A global cancel: to the outbox's urgent lane now, never behind held commands."""
        self._send(cmd)

    def _send(self, cmd: OrderCommand) -> bool:
        """Queue one command in the outbox; False if its contract is not resolved yet."""
        if cmd.command == "global_cancel":
            def global_cancel(client) -> None:
                client.reqGlobalCancel(OrderCancel())
                self.untransmitted.clear()  # dropped with the rest, maybe without a word
            self.outbox.submit(cmd, global_cancel, urgent=True)
            return True
        if cmd.command == "cancel":
            def cancel(client, ib_id=cmd.ib_order_id) -> None:
                client.cancelOrder(ib_id, OrderCancel())
                # IB may never say a word about an untransmitted leg it drops: not in flight
                self.untransmitted.pop(ib_id, None)
                self._command_sent(cmd)
            self.outbox.submit(cmd, cancel, urgent=True)
            return True
        contract = self.contracts.get(cmd.symbol)
        if contract is None:
            return False
        order = build_order(cmd, cmd.ib_order_id)

        def place(client) -> None:
            client.placeOrder(cmd.ib_order_id, contract, order)
            self._sent(cmd)
            self._command_sent(cmd)
        self.outbox.submit(cmd, place)
        return True

    def _sent(self, cmd: OrderCommand) -> None:
        """placeOrder went out (a place or a modify)."""
        ib_id = cmd.ib_order_id
        if cmd.command == "place":
            self.unsent.pop(ib_id, None)
            self.sends += 1
            if cmd.transmit:
                self.unacked[ib_id] = (cmd, self.sends)
            else:  # IB holds it silently until a transmitting leg of its group is sent
                self.untransmitted[ib_id] = cmd
            self._mark_sent(ib_id)
        if cmd.transmit:
            self._transmitted(group_of(cmd))

    def _transmitted(self, group: int) -> None:
        """A transmitting leg of ``group`` went out: IB now owes an answer for the others."""
        legs = [c for c in self.untransmitted.values()
                if c.ib_order_id == group or c.parent_ib_id == group]
        for leg in legs:
            del self.untransmitted[leg.ib_order_id]
            self.unacked[leg.ib_order_id] = (leg, self.sends)

    def release_held(self) -> None:
        """Send what was held, in order, once orders may go (per symbol, a command waits
        behind an earlier one whose contract is still being resolved)."""
        if not self.can_send():
            return
        waiting: deque[OrderCommand] = deque()
        while self.held:
            cmd = self.held.popleft()
            if waiting and cmd.symbol in {w.symbol for w in waiting}:
                waiting.append(cmd)
                continue
            if not self._send(cmd):
                waiting.append(cmd)
                self.contracts.resolve(cmd.symbol)
        self.held = waiting

    def requeue(self, cmds: list[OrderCommand]) -> None:
        """Commands that never went out (their socket died): back to the head, in order."""
        self.held.extendleft(reversed(cmds))

    def held_symbols(self) -> set[str]:
        return {c.symbol for c in self.held if c.symbol}

    def contract_failed(self, symbol: str, text: str) -> None:
        """IB has no (single) contract for ``symbol``: its held places are refused here."""
        keep: deque[OrderCommand] = deque()
        for cmd in self.held:
            if cmd.command == "place" and cmd.symbol == symbol:
                self.counters["places_refused_unknown_contract"] += 1
                self._publish_error(cmd.ib_order_id, cmd.client_order_id, 200, text)
            else:
                keep.append(cmd)
        self.held = keep

    # -- WHAT IB SAYS ABOUT OUR ORDERS (from reports and the error router) -----------------
    def owns(self, ib_order_id: int) -> bool:
        return self.orders.by_ib_id(ib_order_id) is not None

    def mentioned(self, ib_order_id: int) -> None:
        """IB said something about this order: it has it (or refused it); not in flight."""
        self.orders.mark_acked(ib_order_id)
        self.unsent.pop(ib_order_id, None)
        self.unacked.pop(ib_order_id, None)
        self.untransmitted.pop(ib_order_id, None)
        self.resent.discard(ib_order_id)

    def on_order_error(self, ib_order_id: int, code: int, text: str) -> bool:
        """An IB error about one of our orders: published as it is; True if it was ours."""
        rec = self.orders.by_ib_id(ib_order_id)
        if rec is None:
            return False
        was_resent = ib_order_id in self.resent
        self.mentioned(ib_order_id)
        self._publish_error(ib_order_id, rec.client_order_id, code, text)
        if code == 103 and was_resent:
            # IB had the first send after all: the order exists; let IB tell its state
            self.counters["resends_already_at_ib"] += 1
            self.request_reconcile("a resent order was already at IB")
        return True

    def _publish_error(self, ib_order_id: int, client_order_id: str, code: int,
                       text: str) -> None:
        error = translate.gateway_error(code, text, ib_order_id, "order", client_order_id)
        self.last_error[ib_order_id] = error
        self.publisher.publish(error)

    def on_open_order(self, ib_order_id: int, client_order_id: str, symbol: str, side: str,
                      quantity: float, status: str) -> None:
        rec = self.orders.by_ib_id(ib_order_id) or self.orders.learn(
            client_order_id, ib_order_id, symbol, side, quantity)
        if status:
            rec.status = status
        self.mentioned(ib_order_id)

    def on_order_status(self, ib_order_id: int, status: str, filled: float, remaining: float,
                        perm_id: int) -> str:
        """IB's orderStatus for one of ours: the client order id ("" if not in the map)."""
        rec = self.orders.by_ib_id(ib_order_id)
        if rec is None:
            return ""
        rec.status, rec.perm_id = status, perm_id
        rec.filled, rec.remaining = filled, remaining
        rec.final = status in DONE_STATUSES
        self.mentioned(ib_order_id)
        return rec.client_order_id

    def on_execution(self, ib_order_id: int, cum_qty: float) -> None:
        rec = self.orders.by_ib_id(ib_order_id)
        if rec is not None and cum_qty >= rec.filled:
            rec.filled = cum_qty  # replays too: they carry cumQty
        self.mentioned(ib_order_id)

    def on_completed_order(self, ib_order_id: int, client_order_id: str, status: str) -> int:
        """IB lists an order as completed; its IB id (IB's classic message has none: found by
        orderRef), 0 if it is not one of ours."""
        rec = self.orders.by_ib_id(ib_order_id) if ib_order_id else None
        if rec is None and client_order_id:
            rec = self.orders.get(client_order_id)
        if rec is None:
            return 0
        if status:
            rec.status = status
        rec.final = True
        self.mentioned(rec.ib_order_id)
        return rec.ib_order_id

    def observe_next_valid_id(self, order_id: int) -> None:
        self.ids.observe_next_valid_id(int(order_id))

    # -- RECONCILIATION --------------------------------------------------------------------
    def reconciled(self, sends_before_run: int | None) -> None:
        """A reconciliation run is complete. Places sent before it asked for open orders
        that IB has still not mentioned died with the socket; places journalled by a previous
        run and never reported are still to be sent. Both go to the head of the held queue
        (before anything held since, e.g. a modify of them), same id, same orderRef."""
        resend: list[OrderCommand] = []
        for ib_id, cmd in sorted(self.unsent.items()):
            self.log.warning("sending a place journalled before a crash", extra={
                "ib_order_id": ib_id, "client_order_id": cmd.client_order_id})
            resend.append(cmd)
        self.unsent = {}
        if sends_before_run is not None:
            lost = sorted(ib_id for ib_id, (_, n) in self.unacked.items()
                          if n <= sends_before_run)
            for ib_id in lost:
                cmd, _ = self.unacked.pop(ib_id)
                # IB never mentioned it: it died in the socket with the connection
                self.counters["places_resent_after_drop"] += 1
                self.log.warning("resending a place lost with the connection", extra={
                    "ib_order_id": ib_id, "client_order_id": cmd.client_order_id})
                resend.append(cmd)
        for cmd in resend:
            self.resent.add(cmd.ib_order_id)
        # then the modifies/cancels a previous run acknowledged and never sent, in order
        for key, cmd in self.unsent_commands:
            self.counters["held_commands_replayed"] += 1
            self.log.warning("sending a modify/cancel journalled before a crash", extra={
                "command": cmd.command, "ib_order_id": cmd.ib_order_id,
                "client_order_id": cmd.client_order_id})
            self._hold_keys[id(cmd)] = (cmd, key)
            resend.append(cmd)
        self.unsent_commands = []
        self.requeue(resend)

    def in_flight_ids(self) -> list[int]:
        """Places whose fate IB cannot have told yet: held, queued in the outbox, unsent from
        a previous run, sent but not mentioned, untransmitted."""
        ids = {c.ib_order_id for c in self.held if c.command == "place"}
        ids.update(w.ib_order_id for w in self.outbox.queued()
                   if isinstance(w, OrderCommand) and w.command == "place")
        ids.update(self.unsent)
        ids.update(self.unacked)
        ids.update(self.untransmitted)
        return sorted(ids)

    # -- JOURNAL ---------------------------------------------------------------------------
    def _mark_sent(self, ib_order_id: int) -> None:
        try:
            self.orders.mark_sent(ib_order_id)
        except OSError as exc:  # the order did go out; after a restart it is resent, and
            # IB refuses the duplicate id (103): never a reason to drop the session
            self.counters["sent_marker_errors"] += 1
            self.log.error("could not journal a sent place", extra={
                "ib_order_id": ib_order_id, "error": str(exc)})

    def _journalled_commands(self) -> list[tuple[int, OrderCommand]]:
        out: list[tuple[int, OrderCommand]] = []
        for key, rec in sorted(self.orders.pending_cmds.items()):
            try:
                out.append((key, msgspec.convert(rec["cmd"], OrderCommand)))
            except (msgspec.ValidationError, ValueError, TypeError, KeyError) as exc:
                self.log.error("a journalled modify/cancel this build cannot read is not sent",
                               extra={"key": key, "error": str(exc)})
        return out

    def _journalled_unsent(self) -> dict[int, OrderCommand]:
        """Places of a previous run to send after the first reconciliation unless IB reports
        them: those never sent, and those sent but never confirmed by IB."""
        cmds: dict[int, OrderCommand] = {}
        places = {**self.orders.unsent_places(), **self.orders.unconfirmed_places()}
        for ib_id, cmd in places.items():
            try:
                cmds[int(ib_id)] = msgspec.convert(cmd, OrderCommand)
            except (msgspec.ValidationError, ValueError, TypeError) as exc:
                self.log.error("a journalled place this build cannot read is not resent",
                               extra={"ib_order_id": ib_id, "error": str(exc)})
        return cmds

    # -- LIFECYCLE -------------------------------------------------------------------------
    def heartbeat(self, counters: Counter) -> None:
        counters["held_commands_now"] = len(self.held)
        counters["unacked_places_now"] = len(self.unacked)
        counters["untransmitted_places_now"] = len(self.untransmitted)
        counters["next_order_id"] = self.ids.next_id

    def close(self) -> None:
        self.orders.close()
