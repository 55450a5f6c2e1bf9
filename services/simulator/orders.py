"""Order state machine and matching against the simulated book.

Statuses follow TWS: PreSubmitted (held: a stop, trailing stop or touch order not triggered
(whyHeld "trigger"), a bracket child before its parent has any fill ("child"), a short sale of a
hard-to-borrow instrument waiting for its locate ("locate")), Submitted (working), Filled,
Cancelled, Inactive (rejected). Orders belong to the clientId that placed them and keep living
when that client disconnects.

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

SUPPORTED_TYPES = {"MKT", "LMT", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIT", "LIT"}
#: types held PreSubmitted (whyHeld "trigger") until their trigger fires: stops and trailing
#: stops when the market reaches the stop, touch orders (MIT, LIT) when it touches auxPrice
TRIGGER_TYPES = {"STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIT", "LIT"}
TRAIL_TYPES = {"TRAIL", "TRAIL LIMIT"}
TOUCH_TYPES = {"MIT", "LIT"}
#: the types that work as a limit order (once triggered): their limit price
LIMIT_TYPES = {"LMT", "STP LMT", "LIT", "TRAIL LIMIT"}
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
    # trailing orders (None: unset). trail_stop_price: the stop; the client's initial one, then
    # the simulator's as it trails the market (IB's openOrder shows the current one).
    # trailing_percent: the trailing amount as a percentage (auxPrice holds it in money
    # otherwise). lmt_price_offset: TRAIL LIMIT's limit = stop -/+ offset (SELL/BUY).
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    lmt_price_offset: float | None = None


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

    @property
    def awaits_trigger(self) -> bool:
        """A stop, trailing stop or touch order whose trigger has not fired (whyHeld "trigger")."""
        return self.req.order_type in TRIGGER_TYPES and not self.triggered

    def limit_price(self) -> float | None:
        """The limit the order works at: lmtPrice, or a TRAIL LIMIT's stop -/+ its offset."""
        r = self.req
        if r.order_type == "TRAIL LIMIT":
            if r.trail_stop_price is None or r.lmt_price_offset is None:
                return r.lmt_price
            off = r.lmt_price_offset if self.buy else -r.lmt_price_offset
            return self.inst.price(self.inst.to_ticks(r.trail_stop_price) + self.inst.to_ticks(off))
        return r.lmt_price if r.order_type in LIMIT_TYPES else None


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
        # --sessions on: the trading hours (sessions.TradingHours) hold orders outside their
        # hours, expire DAY/GTD orders and accept GTD; None (sessions off): orders always work
        self.hours = None

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
        if inst.whole_shares_only and not float(req.total_qty or 0).is_integer():
            self.sink.order_error(client_id, req.order_id, Code.VALIDATE_ERROR, what="v",
                                  cause="Order size does not conform to market rule.")
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

    def locate(self, client_id: int, order_id: int) -> SimOrder:
        """Shares located for a held short sale (whyHeld "locate", F28): the order is released
        and works as if just accepted (openOrder/orderStatus Submitted, or its fills; a stop
        waits for its trigger). KeyError if unknown, ValueError if not held for a locate."""
        order = self.orders.get((client_id, order_id))
        if order is None:
            raise KeyError(f"no order {order_id} of clientId {client_id}")
        if not order.live or order.why_held != "locate":
            state = f"{order.status} ({order.why_held})" if order.why_held else order.status
            raise ValueError(f"order {order_id} of clientId {client_id} is {state}, not held for a locate")
        self._touch(order)
        order.why_held = ""
        paused = self.hours is not None and not self._auction and not self.hours.working(order)
        if (order.req.tif == "OPG" and not self._auction) or paused:
            self._prime_trail(order)
            self.sink.order_changed(order, True)    # PreSubmitted: waits for the open/its hours
            return order
        self._activate(order, send_open=False)
        self._work_and_confirm(order)
        return order

    def expire_day_orders(self, which=None) -> list[SimOrder]:
        """The close: every working DAY order is cancelled by the system (children with it);
        `which(order)`, when given, chooses the orders instead (the trading hours' closes, GTD)."""
        working = [o for o in self.orders.values() if o.live]
        for order in working:
            if order.live and (order.req.tif in ("DAY", "OPG") if which is None else which(order)):
                self._cancel(order, "", completed_status=BY_SYSTEM)
        return [o for o in working if not o.live]      # with children cancelled alongside

    def open_auction(self, which=None) -> list[SimOrder]:
        """The opening auction: every working OPG order (MOO/LOO) is worked once against the book;
        what it cannot fill there is cancelled by the system. Returns the orders it worked.
        `which(order)`: only those orders (the trading hours: one instrument's open)."""
        opg = [o for o in self.orders.values() if o.live and o.transmitted and o.req.tif == "OPG"
               and (which is None or which(o))]
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
        if req.tif not in SUPPORTED_TIFS and not (self.hours is not None and req.tif in self.hours.tifs):
            return Code.ORDER_REJECTED, f"Time in force {req.tif!r} is not supported"
        if req.tif == "OPG" and req.order_type not in OPG_TYPES:
            return Code.ORDER_REJECTED, "OPG (on-open) orders must be MKT or LMT"
        if not req.total_qty or req.total_qty <= 0:
            return Code.ORDER_REJECTED, "Order quantity must be positive"
        trailing = req.order_type in TRAIL_TYPES
        if trailing:
            reason = self._validate_trail(req, inst)
            if reason is not None:
                return reason
        needs_lmt = req.order_type in ("LMT", "STP LMT", "LIT")
        needs_aux = req.order_type in ("STP", "STP LMT", "MIT", "LIT")
        if needs_lmt and (req.lmt_price is None or req.lmt_price <= 0):
            return Code.ORDER_REJECTED, "Limit price is missing"
        if needs_aux and (req.aux_price is None or req.aux_price <= 0):
            return Code.ORDER_REJECTED, ("Trigger price is missing" if req.order_type in TOUCH_TYPES
                                         else "Stop price is missing")
        if needs_lmt and not inst.on_tick(req.lmt_price):
            return Code.BAD_TICK, ""
        if (needs_aux or (trailing and req.aux_price is not None)) and not inst.on_tick(req.aux_price):
            return Code.BAD_TICK, ""
        if self.hours is not None:
            return self.hours.validate(req, inst)
        return None

    @staticmethod
    def _validate_trail(req: OrderRequest, inst: Instrument) -> tuple[tuple[int, str], str] | None:
        """TRAIL and TRAIL LIMIT: a trailing amount in auxPrice or a trailingPercent (IB: one or
        the other, "mutually exclusive"); an optional initial trailStopPrice; TRAIL LIMIT's limit
        offset, lmtPriceOffset (or, the older form, a lmtPrice next to the trailStopPrice).
        Unset prices (IB's unset double, or 0) are None from here on. The texts are the
        simulator's: no capture has IB refusing a trailing order."""
        for name in ("aux_price", "trail_stop_price", "trailing_percent"):
            v = getattr(req, name)
            if v is not None and not 0 < v < 1e300:
                setattr(req, name, None)
        if req.lmt_price_offset is not None and not 0 <= req.lmt_price_offset < 1e300:
            req.lmt_price_offset = None
        if req.lmt_price is not None and not 0 < req.lmt_price < 1e300:
            req.lmt_price = None
        if req.aux_price is None and req.trailing_percent is None:
            return Code.ORDER_REJECTED, "Trailing amount or trailing percent is missing"
        if req.aux_price is not None and req.trailing_percent is not None:
            return Code.ORDER_REJECTED, "Trailing amount and trailing percent are mutually exclusive"
        if req.trailing_percent is not None and req.trailing_percent >= 100:
            return Code.ORDER_REJECTED, "Trailing percent must be below 100"
        if req.order_type == "TRAIL LIMIT":
            if req.lmt_price_offset is None and req.lmt_price is not None and req.trail_stop_price is not None:
                diff = req.lmt_price - req.trail_stop_price
                req.lmt_price_offset = round(diff if req.action == "BUY" else -diff, inst.decimals)
            if req.lmt_price_offset is None or req.lmt_price_offset < 0:
                return Code.ORDER_REJECTED, "Limit price offset is missing"
            if not inst.on_tick(req.lmt_price_offset):
                return Code.BAD_TICK, ""
        else:
            req.lmt_price = None
        if req.trail_stop_price is not None and not inst.on_tick(req.trail_stop_price):
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
        if parent is not None and parent.filled <= 0:
            # an attached order waits for its parent's first fill (F27: _release_children)
            order.why_held = "child"
            order.status = "PreSubmitted"
            self.sink.order_changed(order, True)
            return
        if self._needs_locate(order):
            # a short sale of a hard-to-borrow stock: held until shares are located (F28),
            # PreSubmitted with whyHeld "locate" (IB's orderStatus: "This field is used to
            # identify an order held when TWS is trying to locate shares for a short sell. The
            # value used to indicate this is 'locate'."); `locate` releases it
            order.why_held = "locate"
            order.status = "PreSubmitted"
            self.sink.order_changed(order, True)
            return
        self._prime_trail(order)
        # As IB Gateway (transcripts api_order_rest_cancel_aapl, api_tif_attribute_matrix_aapl,
        # api_dollar_cost_averaging_aapl, api_stop_loss_management_aapl): first an
        # openOrder/orderStatus pair PreSubmitted (IB has the order; an untriggered stop with
        # whyHeld "trigger"), then either the fills of a marketable order, or a second pair once
        # it works at its destination: Submitted (a stop waiting for its trigger: PreSubmitted).
        # Outside its trading hours (sessions on) it stays PreSubmitted after IB's warning 399
        # until the hours release it (sessions.TradingHours).
        notice = self.hours.hold(order) if self.hours is not None and not self._auction else None
        order.why_held = ""
        order.status = "PreSubmitted"
        self.sink.order_changed(order, True)
        if notice is not None:
            self.sink.order_error(order.client_id, order.order_id, notice)
            return
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
        self._prime_trail(order)
        order.status = "PreSubmitted" if order.awaits_trigger else "Submitted"
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
        if req.order_type not in TRIGGER_TYPES:
            order.triggered = False
        paused = self.hours is not None and not self._auction and not self.hours.working(order)
        if not order.why_held and not (req.tif == "OPG" and not self._auction) and not paused:
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
        if self.hours is not None and not self._auction and not self.hours.working(order):
            return              # outside its trading hours (sessions on)
        if order.awaits_trigger and not self._fire(order, proc):
            return
        lmt = order.limit_price()
        limit = order.inst.to_ticks(lmt) if lmt is not None else None
        if req.tif == "FOK" and self._fillable_now(order, proc, limit) < order.remaining - 1e-12:
            # fill or kill: all of it at once, or nothing
            self._cancel(order, "", completed_status=BY_SYSTEM)
            return
        self._match(order, proc, limit)
        if order.live and req.tif in ("IOC", "FOK"):
            self._cancel(order, "", completed_status=BY_SYSTEM)

    def _fire(self, order: SimOrder, proc: PriceProcess) -> bool:
        """Check an untriggered order's trigger against the market; True once it fired (the
        order then works as its market or limit order: Submitted, with an openOrder/orderStatus
        pair, as IB sent for the TRAIL order of api_tif_attribute_matrix_aapl).
        Stops: BUY at or above auxPrice, SELL at or below. Touch orders (MIT, LIT): BUY at or
        below auxPrice, SELL at or above. Trailing stops: as a stop, at their trailing stop."""
        req, inst = order.req, order.inst
        ref = self._trigger_ref(proc)
        if req.order_type in TRAIL_TYPES:
            stop = self._trail(order, ref)
            fired = ref >= stop if order.buy else ref <= stop
        elif req.order_type in TOUCH_TYPES:
            aux = inst.to_ticks(req.aux_price)
            fired = ref <= aux if order.buy else ref >= aux
        else:
            aux = inst.to_ticks(req.aux_price)
            fired = (order.buy and max(ref, proc.ask) >= aux and ref >= aux) or (not order.buy and ref <= aux)
        if not fired:
            return False
        self._touch(order)
        order.triggered = True
        order.status = "Submitted"
        self.sink.order_changed(order, True)
        return True

    def _trail(self, order: SimOrder, ref: int) -> int:
        """A trailing order's stop (ticks) after the market's reference price ``ref``: first the
        client's trailStopPrice, or ``ref`` -/+ the trailing amount (SELL/BUY); then it only
        follows the market in the order's favour: up for a SELL as the price rises, down for a
        BUY as it falls, never back. The amount is auxPrice, or trailingPercent of ``ref``."""
        req, inst = order.req, order.inst
        if req.trailing_percent:
            amount = max(1, int(round(ref * req.trailing_percent / 100.0)))
        else:
            amount = inst.to_ticks(req.aux_price or 0.0)
        follow = ref + amount if order.buy else ref - amount
        current = inst.to_ticks(req.trail_stop_price) if req.trail_stop_price is not None else None
        stop = follow if current is None else (min(current, follow) if order.buy else max(current, follow))
        if stop != current:
            self._touch(order)
            req.trail_stop_price = inst.price(stop)
        return stop

    def _prime_trail(self, order: SimOrder) -> None:
        """Give a trailing order its stop before IB would report it (openOrder's trailStopPrice)."""
        if order.req.order_type in TRAIL_TYPES and not order.triggered:
            proc = self.market.processes.get(order.inst.con_id)
            if proc is not None:
                self._trail(order, self._trigger_ref(proc))

    def _room(self, order: SimOrder) -> float:
        """What the order may execute now: its remaining quantity; an attached (bracket) child
        no more than its parent has filled less what the parent's children executed, so it never
        closes more than the parent opened while the parent is partially filled (F27)."""
        room = order.remaining
        if order.req.parent_id:
            parent = self.orders.get((order.client_id, order.req.parent_id))
            if parent is not None:
                done = sum(c.filled for c in self._children(parent))
                room = min(room, max(0.0, parent.filled - done))
        return room

    def _needs_locate(self, order: SimOrder) -> bool:
        """A short sale of a hard-to-borrow stock (InstrumentSpec.hard_to_borrow): a SELL for
        more than the account holds. Attached (bracket) children close what their parent opened."""
        if order.buy or order.req.parent_id or not getattr(order.inst.spec, "hard_to_borrow", False):
            return False
        pos = self.ledger.positions.get(order.inst.con_id)
        return (pos.qty if pos is not None else 0.0) < order.remaining - 1e-9

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
            room = self._room(order)
            if room <= 1e-12:
                break
            if limit is not None and ((order.buy and level[0] > limit) or (not order.buy and level[0] < limit)):
                break
            avail = proc.available(not order.buy, level)
            if avail <= 0:
                continue
            qty = min(room, avail)
            proc.consume(not order.buy, level[0], qty)
            self._execute(order, proc, level[0], qty, liquidity=2)
        # passive fill: a print at our resting price trades against us (simplified queue position)
        t = proc.trade
        if limit is not None and order.remaining > 0 and t is not None and t.ticks == limit \
                and t.aggressor_buy != order.buy:
            taken = proc.consumed.get(("print", t.ticks), 0.0)
            qty = min(self._room(order), t.size - taken)
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
        if order.fills == 1:
            self._release_children(order)   # the parent's first fill sets them working (F27)
        if order.status == "Filled":
            self._finish(order)

    def _finish(self, order: SimOrder) -> None:
        if order.status != "Filled":
            self._touch(order)
            order.status = "Filled"
            order.completed_time = self.market.now()
            order.completed_status = FILLED
            self.sink.order_changed(order, False)
        self._release_children(order)

    def _release_children(self, parent: SimOrder) -> None:
        """IB makes a parent's attached orders (a bracket's take-profit and stop-loss) work once
        the parent has any fill, not only when it is Filled (F27); while the parent is partially
        filled a child executes no more than the parent has filled (_room)."""
        if parent.filled <= 0:
            return
        for child in self._children(parent):
            if child.why_held == "child" and child.live:
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
