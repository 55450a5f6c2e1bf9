"""Order state machine and matching against the simulated book.

Statuses follow TWS: PreSubmitted (held: stop not triggered, bracket child waiting for its
parent), Submitted (working), Filled, Cancelled, Inactive (rejected). Orders belong to the
clientId that placed them and keep living when that client disconnects.

Every change to an order goes through `_touch`, which tells the sink the account changed: with a
state directory that change is journalled before any message about it reaches a socket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .contracts import ContractQuery, Instrument
from .ledger import Fill, Ledger
from .market import Market, PriceProcess
from .protocol import Code

SUPPORTED_TYPES = {"MKT", "LMT", "STP", "STP LMT"}
# order types IB's API knows (the TWS API's "Order Types" list); any other is refused by the
# gateway before the contract is even looked at, with 321 "'bF' : cause - Invalid order type was
# entered" (transcript place_order_invalid_type_live_error.txt); a known type the simulator does
# not implement is refused with 201 instead
IB_ORDER_TYPES = SUPPORTED_TYPES | {
    "TRAIL", "TRAIL LIMIT", "TRAILLMT", "TRAIL MIT", "TRAIL LIT", "MIT", "LIT", "MOC", "LOC", "MOO",
    "LOO", "MTL", "MKT PRT", "STP PRT", "LMT + MKT", "REL", "REL + LMT", "REL + MKT", "PASSV REL",
    "PEG MKT", "PEG MID", "PEG MIDPT", "PEG BENCH", "PEG BEST", "PEG PRIM", "PEG STK", "MIDPRICE",
    "SNAP MKT", "SNAP MID", "SNAP PRIM", "BOX TOP", "VOL", "AUC", "QUOTE", "VWAP", "GAT"}
SUPPORTED_TIFS = {"DAY", "GTC", "IOC", "FOK", "OPG"}
# OPG (market/limit on open) takes only these order types (IB's "Time in Force" page: "Use OPG to
# send a market-on-open (MOO) or limit-on-open (LOO) order")
OPG_TYPES = {"MKT", "LMT"}
LIVE = {"PreSubmitted", "Submitted", "PendingSubmit"}
DONE = {"Filled", "Cancelled", "Inactive"}

# OrderState.completedStatus texts, as IB words them in completedOrder (captured at v200)
BY_TRADER = "Cancelled by Trader"
BY_SYSTEM = "Cancelled by System:\n"
FILLED = "Filled"


def exec_id(token: int, seq: int, correction: int = 1) -> str:
    """IB's execId shape, e.g. ``0000e0d5.6575a7f3.01.01``: the account's token, the account's
    execution counter, and the correction number (``.01`` first, ``.02`` after a correction)."""
    return f"{token:08x}.{seq:08x}.01.{correction:02d}"


@dataclass
class OrderRequest:
    """The fields of a placeOrder request the simulator acts on (the rest are accepted and ignored)."""
    order_id: int
    contract: ContractQuery
    action: str
    total_qty: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str = "DAY"
    oca_group: str = ""
    account: str = ""
    open_close: str = ""
    origin: int = 0
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    block_order: bool = False
    sweep_to_fill: bool = False
    display_size: int = 0
    trigger_method: int = 0
    outside_rth: bool = False
    hidden: bool = False
    good_after_time: str = ""
    good_till_date: str = ""
    oca_type: int = 0
    what_if: bool = False


@dataclass
class SimOrder:
    req: OrderRequest
    client_id: int
    perm_id: int
    inst: Instrument
    status: str = "PendingSubmit"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    why_held: str = ""
    triggered: bool = False
    transmitted: bool = False
    fills: int = 0
    commission_paid: float = 0.0
    completed_time: float = 0.0     # simulated epoch seconds the order became Filled/Cancelled/Inactive
    completed_status: str = ""      # OrderState.completedStatus
    preview: dict | None = None     # a whatIf's OrderState margin preview (never a stored order)

    @property
    def order_id(self) -> int:
        return self.req.order_id

    @property
    def key(self) -> tuple[int, int]:
        return (self.client_id, self.req.order_id)

    @property
    def remaining(self) -> float:
        return max(0.0, self.req.total_qty - self.filled)

    @property
    def buy(self) -> bool:
        return self.req.action == "BUY"

    @property
    def live(self) -> bool:
        return self.status in LIVE


class OrderSink(Protocol):
    def order_changed(self, order: SimOrder, send_open_order: bool) -> None: ...
    def order_filled(self, order: SimOrder, fill: Fill) -> None: ...
    def order_error(self, client_id: int, order_id: int, code: tuple[int, str], **fmt: object) -> None: ...
    def order_cancel_seen(self, client_id: int, order: SimOrder, reason: str) -> None: ...
    def state_changed(self) -> None: ...


class OrderEngine:
    """`exec_token` is the account's execId token, `perm_start` the last permId handed out (the
    next is one above); both, like every counter here, belong to the account and persist with it."""

    def __init__(self, market: Market, ledger: Ledger, sink: OrderSink, exec_token: int,
                 perm_start: int) -> None:
        self.market = market
        self.ledger = ledger
        self.sink = sink
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.inactive: list[SimOrder] = []        # rejected orders (status Inactive), oldest first
        self.max_id: dict[int, int] = {}          # highest order id each clientId has used
        self.handed: dict[int, int] = {}          # highest id nextValidId told each clientId
        self.exec_token = exec_token
        self.next_perm = perm_start
        self.exec_seq = 0
        self.dirty: dict[tuple[int, int], SimOrder] = {}   # orders changed since the last commit
        self._auction = False     # inside open_auction: OPG orders may be worked

    def _touch(self, order: SimOrder) -> None:
        self.dirty[order.key] = order
        self.sink.state_changed()

    # ---- queries
    def next_valid_id(self, client_id: int) -> int:
        return self.max_id.get(client_id, 0) + 1

    def issue_id(self, client_id: int) -> int:
        """The id nextValidId tells a client (at startApi and for reqIds): as IB's gateway, each
        one is above every id the client used *and* every id it was told before, so reqIds right
        after the handshake's nextValidId(1) answers 2 (transcript req_ids.txt)."""
        n = max(self.max_id.get(client_id, 0), self.handed.get(client_id, 0)) + 1
        self.handed[client_id] = n
        return n

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        return [o for o in self.orders.values()
                if o.live and o.transmitted and (client_id is None or o.client_id == client_id)]

    def completed_orders(self) -> list[SimOrder]:
        """The account's filled, cancelled and rejected orders (every clientId), in the order they
        were placed (permIds only grow, across restarts too; the simulated clock may not)."""
        done = [o for o in self.orders.values() if o.status in DONE] + self.inactive
        return sorted(done, key=lambda o: o.perm_id)

    def parent_perm_id(self, order: SimOrder) -> int | None:
        if not order.req.parent_id:
            return None
        parent = self.orders.get((order.client_id, order.req.parent_id))
        return parent.perm_id if parent is not None else None

    # ---- requests
    def place(self, client_id: int, req: OrderRequest, inst: Instrument | None) -> None:
        key = (client_id, req.order_id)
        existing = self.orders.get(key)
        self.ledger.record_request(client_id=client_id, order_id=req.order_id, symbol=req.contract.symbol,
                                   con_id=inst.con_id if inst else 0, action=req.action, qty=req.total_qty,
                                   order_type=req.order_type, lmt_price=req.lmt_price, aux_price=req.aux_price,
                                   tif=req.tif, order_ref=req.order_ref, parent_id=req.parent_id,
                                   transmit=req.transmit, oca_group=req.oca_group,
                                   time=self.market.now(), modify=bool(existing and existing.live))
        self.sink.state_changed()
        if existing is not None and existing.live and not existing.transmitted:
            self._resend_untransmitted(existing, req)
            return
        if existing is not None and existing.live:
            self._modify(existing, req)
            return
        if existing is not None or req.order_id <= self.max_id.get(client_id, 0):
            self.sink.order_error(client_id, req.order_id, Code.DUP_ORDER_ID)
            return
        self.max_id[client_id] = req.order_id
        if inst is None:
            self.sink.order_error(client_id, req.order_id, Code.NO_SECDEF)
            return
        reason = self._validate(req, inst)
        if reason is not None:
            self._reject(client_id, req, inst, *reason)
            return
        order = SimOrder(req, client_id, self._perm(), inst)
        if req.parent_id:
            parent = self.orders.get((client_id, req.parent_id))
            if parent is None or not (parent.live or parent.status == "Filled" or not parent.transmitted):
                self._reject(client_id, req, inst, Code.ORDER_REJECTED, "Parent order is not live",
                             order=order)
                return
        self.orders[key] = order
        self._touch(order)
        if not req.transmit:
            order.status = "PendingSubmit"   # held by TWS until a transmit=True order releases it
            return
        self._release(order)

    def _release(self, order: SimOrder) -> None:
        """A transmit=True order: it goes out, and with a bracket child its parent and siblings."""
        parent = self.orders.get((order.client_id, order.req.parent_id)) if order.req.parent_id else None
        if parent is not None:
            if not parent.transmitted:
                self._transmit(parent)
            for sibling in self._children(parent):
                if not sibling.transmitted and sibling.live:
                    self._transmit(sibling)
        else:
            self._transmit(order)

    def _resend_untransmitted(self, order: SimOrder, req: OrderRequest) -> None:
        """An order TWS holds untransmitted, placed again: its fields are replaced; it stays
        untransmitted unless this time transmit is set (then it goes out as a new order would)."""
        reason = self._validate(req, order.inst)
        if reason is not None:
            code, text = reason
            if code == Code.ORDER_REJECTED:
                self.sink.order_error(order.client_id, req.order_id, code, reason=text)
            else:
                self.sink.order_error(order.client_id, req.order_id, code)
            return
        keep_parent = order.req.parent_id
        self._touch(order)
        order.req = req
        order.req.parent_id = keep_parent
        if req.transmit:
            self._release(order)

    def cancel(self, client_id: int, order_id: int) -> None:
        order = self.orders.get((client_id, order_id))
        if order is None and client_id == 0:
            # client 0 sees every API client's orders (reqAllOpenOrders) and may cancel them by
            # their order id (transcript api_client_id0_order_observation_aapl.txt): the
            # canceller hears Cancelled (with its own clientId) and 202, the owner as usual
            theirs = [o for o in self.orders.values()
                      if o.order_id == order_id and o.live and o.transmitted]
            if len(theirs) == 1:
                self._cancel(theirs[0], "", completed_status=BY_TRADER, observer=client_id)
                return
        if order is None:
            self.sink.order_error(client_id, order_id, Code.CANT_CANCEL_UNKNOWN, id=order_id)
            return
        if not order.live and order.transmitted:
            self.sink.order_error(client_id, order_id, Code.CANT_CANCEL, id=order_id, state=order.status)
            return
        self._cancel(order, "", completed_status=BY_TRADER)

    def global_cancel(self) -> None:
        for order in list(self.orders.values()):
            if order.live:
                self._cancel(order, "", completed_status=BY_TRADER)

    # ---- broker-side events (the control socket's)
    def broker_cancel(self, client_id: int, order_id: int, reason: str = "",
                      by: str = "system") -> SimOrder:
        """Cancelled at the broker, by the TWS user (``by="trader"``) or IB's system: the owner
        hears 202 and Cancelled if connected; either way reqOpenOrders/reqCompletedOrders show
        it cancelled, with completedStatus "Cancelled by Trader" or "Cancelled by System"."""
        if by not in ("trader", "system"):
            raise ValueError(f"by must be 'trader' or 'system', not {by!r}")
        order = self.orders.get((client_id, order_id))
        if order is None:
            raise KeyError(f"no order {order_id} of clientId {client_id}")
        if not order.live:
            raise ValueError(f"order {order_id} of clientId {client_id} is {order.status}, not working")
        self._cancel(order, reason, completed_status=BY_TRADER if by == "trader" else BY_SYSTEM)
        return order

    def expire_day_orders(self) -> list[SimOrder]:
        """The close: every working DAY order is cancelled by the system (children with it)."""
        working = [o for o in self.orders.values() if o.live]
        for order in working:
            if order.live and order.req.tif in ("DAY", "OPG"):
                self._cancel(order, "", completed_status=BY_SYSTEM)
        return [o for o in working if not o.live]      # with children cancelled alongside

    def open_auction(self) -> list[SimOrder]:
        """The opening auction: every working OPG order (MOO/LOO) is worked once against the book;
        what it cannot fill there is cancelled by the system. Returns the orders it worked."""
        opg = [o for o in self.orders.values() if o.live and o.transmitted and o.req.tif == "OPG"]
        self._auction = True
        try:
            for order in opg:
                if not order.live:
                    continue
                self._activate(order, send_open=False)
                self._work(order)
                if order.live:
                    self._cancel(order, "", completed_status=BY_SYSTEM)
        finally:
            self._auction = False
        return opg

    def correct_execution(self, old_exec_id: str, quantity: float | None, price: float | None
                          ) -> tuple[SimOrder | None, Fill, Fill]:
        """IB's execution correction: the fill is replaced by one whose execId has its last field
        raised, with the corrected quantity and/or price; the account is rebooked from its fills.
        Returns (the order, the old fill, the new fill)."""
        ledger = self.ledger
        index = next((i for i, f in enumerate(ledger.fills) if f.exec_id == old_exec_id), None)
        if index is None:
            raise KeyError(f"no current execution {old_exec_id!r} (unknown, or already corrected)")
        old = ledger.fills[index]
        base, _, number = old.exec_id.rpartition(".")
        qty = float(quantity) if quantity is not None else old.qty
        px = float(price) if price is not None else old.price
        if qty <= 0:
            raise ValueError("a corrected quantity must be positive")
        order = self.orders.get((old.client_id, old.order_id))
        inst = order.inst if order is not None else None
        if order is not None and order.perm_id != old.perm_id:
            order, inst = None, None
        spec_inst = inst or self._instrument(old.con_id)
        if spec_inst is not None and not spec_inst.on_tick(px):
            raise ValueError(f"price {px} is not a multiple of the tick {spec_inst.min_tick}")
        siblings = [i for i, f in enumerate(ledger.fills) if f.perm_id == old.perm_id]
        first = siblings[0] == index
        commission = old.commission
        if spec_inst is not None:
            spec = spec_inst.spec
            commission = qty * px * spec.commission_per_unit if spec_inst.sec_type == "CASH" \
                else qty * spec.commission_per_unit
            if first:
                commission = max(commission, spec.commission_min)
            commission = round(commission, 4)
        new = Fill(**{**old.__dict__, "exec_id": f"{base}.{int(number) + 1:02d}", "qty": qty,
                      "price": px, "commission": commission})
        ledger.fills[index] = new
        # cumulative quantity / average price of the order's fills, through each fill
        cum = value = 0.0
        for i in siblings:
            f = ledger.fills[i]
            cum += f.qty
            value += f.qty * f.price
            if i >= index:
                f.cum_qty, f.avg_price = cum, value / cum
        ledger.rebook(self._instrument)
        # the corrected fill, and every later fill of the instrument (cumulative figures and
        # realized P&L were recomputed for them) must be journalled again
        ledger.replaced.update(i for i in range(index, len(ledger.fills))
                               if ledger.fills[i].con_id == old.con_id)
        if order is not None:
            order.filled = cum
            order.avg_fill_price = value / cum
            order.commission_paid += commission - old.commission
            if siblings[-1] == index:
                order.last_fill_price = px
            self._touch(order)
        self.sink.state_changed()
        return order, old, new

    def _instrument(self, con_id: int):
        proc = self.market.processes.get(con_id)
        return proc.inst if proc is not None else None

    # ---- matching, called after every market step
    def on_step(self) -> None:
        for order in list(self.orders.values()):
            if order.live and order.transmitted and not order.why_held:
                self._work(order)

    # ---- internals
    def _perm(self) -> int:
        self.next_perm += 1
        return self.next_perm

    def _children(self, parent: SimOrder) -> list[SimOrder]:
        return [o for o in self.orders.values()
                if o.client_id == parent.client_id and o.req.parent_id == parent.order_id]

    def _validate(self, req: OrderRequest, inst: Instrument) -> tuple[tuple[int, str], str] | None:
        if req.action not in ("BUY", "SELL"):
            return Code.ORDER_REJECTED, f"Invalid action {req.action!r}"
        if req.order_type not in SUPPORTED_TYPES:
            return Code.ORDER_REJECTED, f"Order type {req.order_type!r} is not supported by the simulator"
        if req.tif not in SUPPORTED_TIFS:
            return Code.ORDER_REJECTED, f"Time in force {req.tif!r} is not supported"
        if req.tif == "OPG" and req.order_type not in OPG_TYPES:
            return Code.ORDER_REJECTED, "OPG (on-open) orders must be MKT or LMT"
        if not req.total_qty or req.total_qty <= 0:
            return Code.ORDER_REJECTED, "Order quantity must be positive"
        needs_lmt = req.order_type in ("LMT", "STP LMT")
        needs_aux = req.order_type in ("STP", "STP LMT")
        if needs_lmt and (req.lmt_price is None or req.lmt_price <= 0):
            return Code.ORDER_REJECTED, "Limit price is missing"
        if needs_aux and (req.aux_price is None or req.aux_price <= 0):
            return Code.ORDER_REJECTED, "Stop price is missing"
        if needs_lmt and not inst.on_tick(req.lmt_price):
            return Code.BAD_TICK, ""
        if needs_aux and not inst.on_tick(req.aux_price):
            return Code.BAD_TICK, ""
        return None

    def _reject(self, client_id: int, req: OrderRequest, inst: Instrument, code: tuple[int, str], reason: str,
                order: SimOrder | None = None) -> None:
        if code == Code.ORDER_REJECTED:
            self.sink.order_error(client_id, req.order_id, code, reason=reason)
        else:
            self.sink.order_error(client_id, req.order_id, code)
        self.ledger.cancels.append({"client_id": client_id, "order_id": req.order_id, "rejected": True,
                                    "code": code[0], "reason": reason})
        # kept as an Inactive completed order (reqCompletedOrders), not among the account's orders
        order = order or SimOrder(req, client_id, self._perm(), inst)
        order.status = "Inactive"
        order.completed_time = self.market.now()
        order.completed_status = reason or code[1]
        self.inactive.append(order)
        self.sink.state_changed()

    def _transmit(self, order: SimOrder) -> None:
        order.transmitted = True
        self._touch(order)
        parent = self.orders.get((order.client_id, order.req.parent_id)) if order.req.parent_id else None
        if parent is not None and parent.status != "Filled":
            order.why_held = "child"
            order.status = "PreSubmitted"
            self.sink.order_changed(order, True)
            return
        # As IB Gateway (transcripts api_order_rest_cancel_aapl, api_tif_attribute_matrix_aapl,
        # api_dollar_cost_averaging_aapl, api_stop_loss_management_aapl): first an
        # openOrder/orderStatus pair PreSubmitted (IB has the order; an untriggered stop with
        # whyHeld "trigger"), then either the fills of a marketable order, or a second pair once
        # it works at its destination: Submitted (a stop waiting for its trigger: PreSubmitted).
        order.why_held = ""
        order.status = "PreSubmitted"
        self.sink.order_changed(order, True)
        if order.req.tif == "OPG" and not self._auction:
            return              # rests PreSubmitted until the open auction (open_auction)
        self._activate(order, send_open=False)
        self._work_and_confirm(order)

    def _work_and_confirm(self, order: SimOrder) -> None:
        """Work a just accepted (or modified) order; unless that filled, triggered or ended it,
        send the second openOrder/orderStatus pair IB sends when the order is working."""
        fills, status = order.fills, order.status
        self._work(order)
        if order.live and order.fills == fills and order.status == status:
            self.sink.order_changed(order, True)

    def _activate(self, order: SimOrder, send_open: bool) -> None:
        self._touch(order)
        order.why_held = ""
        order.status = "PreSubmitted" if order.req.order_type.startswith("STP") and not order.triggered else "Submitted"
        if send_open:
            self.sink.order_changed(order, True)

    def _modify(self, order: SimOrder, req: OrderRequest) -> None:
        inst = order.inst
        reason = self._validate(req, inst)
        if reason is not None:
            code, text = reason
            if code == Code.ORDER_REJECTED:
                self.sink.order_error(order.client_id, req.order_id, code, reason=text)
            else:
                self.sink.order_error(order.client_id, req.order_id, code)
            return
        if req.total_qty < order.filled:
            self.sink.order_error(order.client_id, req.order_id, Code.ORDER_REJECTED,
                                  reason="New quantity is below the filled quantity")
            return
        keep_parent = order.req.parent_id
        self._touch(order)
        order.req = req
        order.req.parent_id = keep_parent
        if req.order_type.startswith("STP") is False:
            order.triggered = False
        if not order.why_held and not (req.tif == "OPG" and not self._auction):
            self._activate(order, send_open=False)
        # IB acknowledges a modification with an openOrder/orderStatus pair, then a second one
        # when the modified order works (transcript api_stop_loss_management_aapl.txt)
        self.sink.order_changed(order, True)
        if order.remaining <= 0:
            self._finish(order)
        elif not order.why_held:
            self._work_and_confirm(order)

    def _cancel(self, order: SimOrder, reason: str, notify_error: bool = True,
                completed_status: str = BY_SYSTEM, observer: int | None = None) -> None:
        self._touch(order)
        order.status = "Cancelled"
        order.completed_time = self.market.now()
        order.completed_status = completed_status
        self.ledger.cancels.append({"client_id": order.client_id, "order_id": order.order_id,
                                    "filled": order.filled, "time": order.completed_time})
        if order.transmitted:
            # IB: orderStatus Cancelled first, then error 202 (every cancel in the transcripts)
            self.sink.order_changed(order, False)
            if notify_error:
                self.sink.order_error(order.client_id, order.order_id, Code.ORDER_CANCELLED, reason=reason)
            if observer is not None and observer != order.client_id:
                self.sink.order_cancel_seen(observer, order, reason)
        for child in self._children(order):
            if child.live or not child.transmitted:
                self._cancel(child, "Parent order cancelled", completed_status=completed_status)

    def _trigger_ref(self, proc: PriceProcess) -> int:
        return proc.last_ticks if proc.inst.sec_type != "CASH" else int(round(proc.mid_ticks))

    def _work(self, order: SimOrder) -> None:
        proc = self.market.processes[order.inst.con_id]
        req = order.req
        if req.tif == "OPG" and not self._auction:
            return              # an on-open order trades only in the opening auction
        if req.order_type.startswith("STP") and not order.triggered:
            ref = self._trigger_ref(proc)
            aux = order.inst.to_ticks(req.aux_price)
            if (order.buy and max(ref, proc.ask) >= aux and ref >= aux) or (not order.buy and ref <= aux):
                self._touch(order)
                order.triggered = True
                order.status = "Submitted"
                self.sink.order_changed(order, False)
            else:
                return
        limit = order.inst.to_ticks(req.lmt_price) if req.order_type in ("LMT", "STP LMT") else None
        if req.tif == "FOK" and self._fillable_now(order, proc, limit) < order.remaining - 1e-12:
            # fill or kill: all of it at once, or nothing
            self._cancel(order, "", completed_status=BY_SYSTEM)
            return
        self._match(order, proc, limit)
        if order.live and req.tif in ("IOC", "FOK"):
            self._cancel(order, "", completed_status=BY_SYSTEM)

    @staticmethod
    def _fillable_now(order: SimOrder, proc: PriceProcess, limit: int | None) -> float:
        """The quantity the book offers the order right now, at its limit or better."""
        total = 0.0
        for level in (proc.book.asks if order.buy else proc.book.bids):
            if limit is not None and ((order.buy and level[0] > limit) or (not order.buy and level[0] < limit)):
                break
            total += max(0.0, proc.available(not order.buy, level))
        return total

    def _match(self, order: SimOrder, proc: PriceProcess, limit: int | None) -> None:
        levels = proc.book.asks if order.buy else proc.book.bids
        for level in levels:
            if order.remaining <= 0:
                break
            if limit is not None and ((order.buy and level[0] > limit) or (not order.buy and level[0] < limit)):
                break
            avail = proc.available(not order.buy, level)
            if avail <= 0:
                continue
            qty = min(order.remaining, avail)
            proc.consume(not order.buy, level[0], qty)
            self._execute(order, proc, level[0], qty, liquidity=2)
        # passive fill: a print at our resting price trades against us (simplified queue position)
        t = proc.trade
        if limit is not None and order.remaining > 0 and t is not None and t.ticks == limit \
                and t.aggressor_buy != order.buy:
            taken = proc.consumed.get(("print", t.ticks), 0.0)
            qty = min(order.remaining, t.size - taken)
            if qty > 0:
                proc.consumed[("print", t.ticks)] = taken + qty
                self._execute(order, proc, limit, qty, liquidity=1)

    def _execute(self, order: SimOrder, proc: PriceProcess, ticks: int, qty: float, liquidity: int) -> None:
        inst = order.inst
        self._touch(order)
        price = inst.price(ticks)
        total = order.filled + qty
        order.avg_fill_price = (order.avg_fill_price * order.filled + price * qty) / total
        order.filled = total
        order.last_fill_price = price
        order.fills += 1
        spec = inst.spec
        if inst.sec_type == "CASH":
            commission = qty * price * spec.commission_per_unit
        else:
            commission = qty * spec.commission_per_unit
        if order.fills == 1:
            commission = max(commission, spec.commission_min)
        commission = round(commission, 4)
        order.commission_paid += commission
        self.exec_seq += 1
        now = self.market.now()
        fill = Fill(
            exec_id=exec_id(self.exec_token, self.exec_seq),
            order_id=order.order_id, client_id=order.client_id, perm_id=order.perm_id,
            con_id=inst.con_id, symbol=inst.symbol, sec_type=inst.sec_type,
            side="BOT" if order.buy else "SLD", qty=qty, price=price, time=now,
            cum_qty=order.filled, avg_price=order.avg_fill_price, order_ref=order.req.order_ref,
            account=self.ledger.account,
            exchange=spec.primary_exchange or spec.exchange if spec.exchange == "SMART" else spec.exchange,
            liquidity=liquidity, commission=commission)
        self.ledger.apply_fill(fill, inst)
        if order.remaining <= 1e-12:
            order.status = "Filled"
            order.completed_time = now
            order.completed_status = FILLED
        self.sink.order_filled(order, fill)
        self._oca_after_fill(order, qty)
        if order.status == "Filled":
            self._finish(order)

    def _finish(self, order: SimOrder) -> None:
        if order.status != "Filled":
            self._touch(order)
            order.status = "Filled"
            order.completed_time = self.market.now()
            order.completed_status = FILLED
            self.sink.order_changed(order, False)
        for child in self._children(order):
            if child.why_held == "child":
                self._activate(child, send_open=True)
                self.sink.order_changed(child, False)
                self._work(child)

    def _oca_after_fill(self, order: SimOrder, qty: float) -> None:
        peers: list[SimOrder] = []
        oca_type = order.req.oca_type or 1
        if order.req.oca_group:
            peers = [o for o in self.orders.values() if o is not order and o.live
                     and o.req.oca_group == order.req.oca_group and o.client_id == order.client_id]
        elif order.req.parent_id:
            # a bracket's children are one implicit OCA group; IB reduces the others by the fill
            parent = self.orders.get((order.client_id, order.req.parent_id))
            if parent is not None:
                peers = [o for o in self._children(parent) if o is not order and o.live]
            oca_type = 2
        for peer in peers:
            if oca_type == 1:
                self._cancel(peer, "OCA group cancelled")
            else:
                self._touch(peer)
                peer.req.total_qty = max(peer.filled, peer.req.total_qty - qty)
                if peer.remaining <= 1e-12:
                    self._cancel(peer, "OCA group reduced to zero")
                else:
                    self.sink.order_changed(peer, True)
