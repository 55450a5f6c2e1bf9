"""Every message on the ibfleet bus, defined once.

Wire form: a msgpack array ``[type, v, src, seq, tseq, ts, *fields]``; a bus frame carries a
list of such arrays (a batch of one or more). The header fields:

- ``type``  the class name below (msgspec's tag);
- ``v``     the schema version the sender wrote (a receiver refuses a newer one);
- ``src``   the sending service and instance, ``"gateway.1"``;
- ``seq``   per-source sequence number over everything the source sends (the recorder and
            replay check completeness and order with it);
- ``tseq``  per-source sequence number within one topic, so a subscriber that filters topics
            still sees every gap and never a false one;
- ``ts``    nanoseconds since the epoch when the source sent it.

The publisher stamps the header; code that builds a message fills only its own fields.
Adding a field at the end with a default is a compatible change; anything else bumps
SCHEMA_VERSION.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Union

import msgspec

SCHEMA_VERSION = 1


class Message(msgspec.Struct, array_like=True, tag=True, kw_only=True, forbid_unknown_fields=True):
    """Header common to every bus message; see the module docstring."""

    v: int = SCHEMA_VERSION
    src: str = ""
    seq: int = 0
    tseq: int = 0
    ts: int = 0

    #: topic prefix of this message type; ``topic()`` may append a key (symbol, strategy)
    TOPIC: ClassVar[str] = ""

    def topic(self) -> str:
        return self.TOPIC


class _Keyed(Message, kw_only=True):
    """A message whose topic is its type's prefix plus a key (a symbol or a strategy)."""

    def key(self) -> str:  # overridden
        return ""

    def topic(self) -> str:
        return f"{self.TOPIC}.{self.key()}"


class _BySymbol(_Keyed, kw_only=True):
    symbol: str

    def key(self) -> str:
        return self.symbol


class _ByStrategy(_Keyed, kw_only=True):
    strategy: str

    def key(self) -> str:
        return self.strategy


# -- MARKET DATA ------------------------------------------------------------------------------

class Tick(_BySymbol, kw_only=True):
    """Top of book from reqMktData (sampled by IB). NaN marks a field IB did not send."""

    TOPIC: ClassVar[str] = "md.tick"
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    last: float = float("nan")
    last_size: float = 0.0
    volume: float = 0.0
    #: IB's delayed data (15-20 minutes late: a paper account without live API data, see
    #: docs/gateway.md "Market data type"); added at the end with a default, so recordings
    #: written before it decode as live
    delayed: bool = False


class TradeTick(_BySymbol, kw_only=True):
    """Tick-by-tick Last / AllLast."""

    TOPIC: ClassVar[str] = "md.trade"
    price: float
    size: float
    exchange: str = ""
    exch_ts: int = 0  # IB's own time of the trade, ns
    delayed: bool = False  # IB has no delayed tick-by-tick: always False from IB (see Tick)


class QuoteTick(_BySymbol, kw_only=True):
    """Tick-by-tick BidAsk."""

    TOPIC: ClassVar[str] = "md.quote"
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    exch_ts: int = 0
    delayed: bool = False  # IB has no delayed tick-by-tick: always False from IB (see Tick)


class DepthUpdate(_BySymbol, kw_only=True):
    """IB's position-based depth row update (updateMktDepth / updateMktDepthL2)."""

    TOPIC: ClassVar[str] = "md.depth"
    position: int
    operation: Literal[0, 1, 2]  # insert, update, delete
    side: Literal[0, 1]  # 0 ask, 1 bid (IB's convention)
    price: float
    size: float
    market_maker: str = ""
    smart_depth: bool = False


class Bar(_BySymbol, kw_only=True):
    TOPIC: ClassVar[str] = "md.bar"
    start_ns: int
    seconds: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float = float("nan")
    count: int = 0
    request: str = ""  # for historical bars: the HistoricalRequest they answer


class HistoricalRequest(Message, kw_only=True):
    """Ask the gateway for historical bars; they come back on ``hist.REQUESTER`` as ``Bar``s
    (with ``request`` set) closed by a ``HistoricalEnd``. The gateway applies IB's pacing."""

    TOPIC: ClassVar[str] = "hist.req"
    requester: str
    request: str  # the requester's own id for this request
    symbol: str
    duration: str = "1 D"  # IB's durationStr
    bar_size: str = "1 min"  # IB's barSizeSetting
    what_to_show: str = "TRADES"
    use_rth: bool = True
    end: str = ""  # IB's endDateTime; "" is now


class HistoricalEnd(Message, kw_only=True):
    TOPIC: ClassVar[str] = "hist"
    requester: str
    request: str
    count: int = 0
    error: str = ""  # set when IB (or the gateway) refused the request

    def topic(self) -> str:
        return f"hist.{self.requester}"


class HistoricalTicksRequest(Message, kw_only=True):
    """Ask the gateway for IB historical ticks (reqHistoricalTicks): up to ``count`` (IB: at
    most 1000, more to complete a second) from ``start`` or to ``end`` (IB's date/time forms,
    exactly one of the two non-empty). They come back on ``hist.REQUESTER`` as
    ``HistoricalTick``s (with ``request`` set) closed by a ``HistoricalEnd``; the gateway paces
    them with the historical bars (IB's historical data rules)."""

    TOPIC: ClassVar[str] = "hist.req"
    requester: str
    request: str  # the requester's own id for this request
    symbol: str
    what_to_show: Literal["TRADES", "BID_ASK", "MIDPOINT"] = "TRADES"
    start: str = ""  # IB's startDateTime ("yyyymmdd-hh:mm:ss": UTC)
    end: str = ""  # IB's endDateTime
    count: int = 1000  # numberOfTicks
    use_rth: bool = True
    ignore_size: bool = False  # BID_ASK: only ticks where a price changed


class HistoricalTick(Message, kw_only=True):
    """One historical tick as IB sent it (seconds resolution: ``time_ns`` is a whole second).
    TRADES (historicalTicksLast): price, size, exchange, special_conditions, past_limit,
    unreported. BID_ASK: bid, ask, bid_size, ask_size, bid_past_low, ask_past_high. MIDPOINT:
    price (size 0). Prices in the instrument's currency, sizes in its units; NaN where unset."""

    TOPIC: ClassVar[str] = "hist"
    symbol: str
    request: str
    what_to_show: str
    time_ns: int
    price: float = float("nan")
    size: float = float("nan")
    bid: float = float("nan")
    ask: float = float("nan")
    bid_size: float = float("nan")
    ask_size: float = float("nan")
    exchange: str = ""
    special_conditions: str = ""
    past_limit: bool = False
    unreported: bool = False
    bid_past_low: bool = False
    ask_past_high: bool = False


class SubscribeRequest(Message, kw_only=True):
    """A strategy asks the gateway for market data; the gateway de-duplicates across strategies."""

    TOPIC: ClassVar[str] = "sub.req"
    requester: str
    symbol: str
    kind: Literal["tick", "trade", "quote", "depth", "bar"]
    active: bool = True  # False to unsubscribe
    refresh: bool = False  # depth: the requester's book broke; have IB send it afresh


# -- ORDERS -----------------------------------------------------------------------------------

OrderType = Literal["MKT", "LMT", "STP", "STP LMT"]
Side = Literal["BUY", "SELL"]
Tif = Literal["DAY", "GTC", "IOC"]


class OrderIntent(_ByStrategy, kw_only=True):
    """A strategy's wish to trade; ``client_order_id`` is its idempotency key across retries."""

    TOPIC: ClassVar[str] = "ord.intent"
    client_order_id: str
    action: Literal["new", "modify", "cancel"]
    symbol: str = ""
    side: Side = "BUY"
    quantity: float = 0.0
    order_type: OrderType = "LMT"
    limit_price: float = float("nan")
    stop_price: float = float("nan")
    tif: Tif = "DAY"
    parent_id: str = ""  # client order id of a bracket parent
    oca_group: str = ""
    transmit: bool = True


class RiskDecision(_ByStrategy, kw_only=True):
    TOPIC: ClassVar[str] = "ord.decision"
    client_order_id: str
    approved: bool
    reason: str = ""  # machine-readable code, e.g. "max_position"
    text: str = ""  # the same for a human


class OrderCommand(Message, kw_only=True):
    """Execution tells the gateway to place, modify or cancel; only execution may send these."""

    TOPIC: ClassVar[str] = "ord.cmd"
    command: Literal["place", "modify", "cancel", "global_cancel", "reconcile"]
    client_order_id: str
    ib_order_id: int = 0
    symbol: str = ""
    side: Side = "BUY"
    quantity: float = 0.0
    order_type: OrderType = "LMT"
    limit_price: float = float("nan")
    stop_price: float = float("nan")
    tif: Tif = "DAY"
    parent_ib_id: int = 0
    oca_group: str = ""
    transmit: bool = True


class OrderStatus(Message, kw_only=True):
    TOPIC: ClassVar[str] = "ord.status"
    ib_order_id: int
    client_order_id: str
    status: str  # IB's: PendingSubmit, PreSubmitted, Submitted, Filled, Cancelled, Inactive
    filled: float
    remaining: float
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    perm_id: int = 0
    parent_id: int = 0
    why_held: str = ""


class OpenOrder(Message, kw_only=True):
    TOPIC: ClassVar[str] = "ord.open"
    ib_order_id: int
    client_order_id: str
    perm_id: int
    client_id: int
    account: str
    symbol: str
    side: Side
    quantity: float
    order_type: str
    limit_price: float = float("nan")
    stop_price: float = float("nan")
    tif: str = "DAY"
    status: str = ""
    parent_id: int = 0
    oca_group: str = ""
    #: trailing stops (TRAIL, TRAIL LIMIT): ``stop_price`` is the current trailStopPrice, and
    #: the trail is one of these (an amount in price units, or a percent); NaN otherwise
    trailing_amount: float = float("nan")
    trailing_percent: float = float("nan")


class Execution(Message, kw_only=True):
    """A fill. ``exec_id`` is IB's: a replayed execution carries the same one, so dedupe on it."""

    TOPIC: ClassVar[str] = "ord.exec"
    exec_id: str
    ib_order_id: int
    client_order_id: str
    perm_id: int
    account: str
    symbol: str
    side: Side
    quantity: float
    price: float
    cum_quantity: float
    avg_price: float
    exec_time_ns: int
    exchange: str = ""


class OrderUpdate(_ByStrategy, kw_only=True):
    """Execution's view of one order, for the strategy that owns it: state and fills.

    ``state`` is execution's state machine's (new, pending_submit, submitted, partially_filled,
    filled, pending_cancel, cancelled, rejected, inactive). A fill sets ``exec_id`` and the
    ``last_fill_*`` fields; a replayed fill keeps its exec_id, so consumers dedupe on it.
    """

    TOPIC: ClassVar[str] = "ord.update"
    client_order_id: str
    state: str
    symbol: str
    side: Side
    quantity: float
    filled: float = 0.0
    avg_fill_price: float = 0.0
    limit_price: float = float("nan")
    stop_price: float = float("nan")
    order_type: str = "LMT"
    ib_order_id: int = 0
    parent_id: str = ""
    exec_id: str = ""
    last_fill_qty: float = 0.0
    last_fill_price: float = 0.0
    reason: str = ""
    tif: str = "DAY"
    oca_group: str = ""
    owner: str = ""  # "" the strategy's own; "external" an order adopted from IB


class StrategyPosition(_ByStrategy, kw_only=True):
    """Execution's position of one strategy in one symbol (the owner's numbers; mirrors copy
    them, never recompute them). Published on ``ord.update.STRATEGY`` with every change, in the
    same frame as the fill's ``OrderUpdate`` (position first), and in execution's snapshot.

    Money is in the instrument's currency, multiplier applied. ``realized`` and ``commissions``
    are lifetime; ``realized_day`` is realized PnL net of commissions in ``trading_day`` (the
    exchange's trading day, rolled at the configured time in the exchange's zone).
    """

    TOPIC: ClassVar[str] = "ord.update"
    symbol: str
    quantity: float
    avg_cost: float = 0.0
    realized: float = 0.0  # net of commissions
    commissions: float = 0.0
    realized_day: float = 0.0  # net of commissions, this trading day
    trading_day: str = ""  # ISO date
    multiplier: float = 1.0
    #: booked fills whose commission IB has not reported (yet): ``commissions`` and the
    #: realized figures leave them out, so they are a lower bound until this is 0 (IB sends
    #: commissionReport at its own pace, sometimes never: docs/simulator.md F26)
    commissions_unknown: int = 0


class StrategyDigest(_ByStrategy, kw_only=True):
    """Execution's summary of one strategy, every heartbeat, on ``ord.update.STRATEGY``.

    A mirror compares it with its own view: a difference, or a sequence gap it exposes (the
    digest continues the topic's ``tseq``, so even a lost *last* update shows within one
    interval), makes the mirror re-join execution's snapshot.
    """

    TOPIC: ClassVar[str] = "ord.update"
    open_orders: int = 0
    positions: dict[str, float] = {}
    fills: int = 0  # execIds booked for this strategy


class CompletedOrder(Message, kw_only=True):
    """IB's reqCompletedOrders answer for one order (filled, cancelled or inactive today)."""

    TOPIC: ClassVar[str] = "ord.completed"
    ib_order_id: int
    client_order_id: str
    perm_id: int
    symbol: str
    side: Side
    quantity: float
    filled: float
    status: str  # IB's orderState.status: Filled, Cancelled, Inactive
    completed_status: str = ""  # IB's text, e.g. "Cancelled by System"
    completed_time: str = ""  # as IB wrote it ('yyyymmdd hh:mm:ss ZONE')
    client_id: int = 0
    completed_time_ns: int = 0  # completed_time in ns since the epoch (0: unknown); last: array_like


class ReconcileEnd(Message, kw_only=True):
    """The gateway finished one reconciliation run: every open order, execution, completed
    order and position IB reported for it is already on the bus (ord.open, ord.exec,
    ord.completed, acct.pos precede this). ``open_ids``: IB ids of this client's orders IB
    lists as open; ``in_flight_ids``: places the gateway still holds or is resending, whose
    fate is not yet known at IB. Execution closes what IB no longer lists; the gateway never
    decides an order's fate."""

    TOPIC: ClassVar[str] = "ord.recon"
    reason: str
    open_ids: list[int] = []
    in_flight_ids: list[int] = []
    completed_included: bool = True


class Commission(Message, kw_only=True):
    TOPIC: ClassVar[str] = "ord.comm"
    exec_id: str
    commission: float
    currency: str = "USD"
    realized_pnl: float = float("nan")


# -- ACCOUNT ----------------------------------------------------------------------------------

class Position(Message, kw_only=True):
    TOPIC: ClassVar[str] = "acct.pos"
    account: str
    symbol: str
    quantity: float
    avg_cost: float


class AccountValue(Message, kw_only=True):
    TOPIC: ClassVar[str] = "acct.value"
    account: str
    key: str
    value: str
    currency: str = ""


class PnL(Message, kw_only=True):
    """PnL for an account, a symbol, or a strategy (whichever of the keys is set)."""

    TOPIC: ClassVar[str] = "acct.pnl"
    account: str = ""
    symbol: str = ""
    strategy: str = ""
    daily: float = 0.0
    realized: float = 0.0
    unrealized: float = 0.0
    position: float = 0.0
    avg_cost: float = 0.0


# -- GATEWAY ----------------------------------------------------------------------------------

GatewayStateName = Literal["disconnected", "connecting", "connected", "synchronised", "degraded"]


class GatewayState(Message, kw_only=True):
    TOPIC: ClassVar[str] = "gw.state"
    state: GatewayStateName
    reason: str = ""
    server_version: int = 0
    client_id: int = 0
    reconnects: int = 0
    #: IB's clock minus this host's (ns), from IB's currentTime; 0 within IB's one-second
    #: resolution. A market replay's simulator runs on the data's clock (years back): the
    #: fleet's trading day follows IB's clock, not the host's (execution's day figures)
    clock_offset_ns: int = 0


class GatewayError(Message, kw_only=True):
    TOPIC: ClassVar[str] = "gw.error"
    code: int
    text: str
    req_id: int = -1
    # what the error belongs to: "order", "subscription", "connection", "info"
    scope: str = ""
    ref: str = ""  # client order id or subscription key it was routed to


# -- REFERENCE DATA ---------------------------------------------------------------------------

class Instrument(_BySymbol, kw_only=True):
    """What IB says about an instrument the fleet names ``symbol`` (``AAPL``, ``ESZ6@CME``, a
    front-month ``ES``): the gateway publishes it on ``ref.instrument.SYMBOL`` once the symbol
    is resolved (reqContractDetails, reqMarketRule), again on every reconnect and when a
    market rule arrives; the bus's last-value cache serves it to late joiners. Every other
    process mirrors it (``services/runtime/instruments.py``).

    ``price_bands``: IB's market rule as ``[(low_edge, increment), ...]`` ascending; a price at
    or above a low edge is on that band's increment (``min_tick`` alone when no rule came).
    Hours are IB's strings (``20261130:0930-20261130:1600;20261201:CLOSED``) in
    ``time_zone_id``. A front-month symbol names the contract it stands for now
    (``local_symbol``, ``con_id``) and ``roll_date`` (YYYYMMDD): from that day on it stands
    for the next expiry (``roll_rule`` says how it was chosen)."""

    TOPIC: ClassVar[str] = "ref.instrument"
    con_id: int
    sec_type: str
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: float = 1.0
    min_tick: float
    price_bands: list[tuple[float, float]] = []
    market_rule_ids: str = ""
    size_increment: float = 1.0
    min_size: float = 1.0
    trading_hours: str = ""
    liquid_hours: str = ""
    time_zone_id: str = ""
    last_trade_date: str = ""
    long_name: str = ""
    roll_rule: str = ""  # front month only: "volume" or "days_before_expiry=N"
    roll_date: str = ""  # front month only: YYYYMMDD on which it moves to the next expiry


# -- FLEET ------------------------------------------------------------------------------------

class Heartbeat(Message, kw_only=True):
    """Every service sends one at a fixed interval; silence past a few intervals means dead."""

    TOPIC: ClassVar[str] = "hb"
    interval_ms: int
    state: str = "running"
    counters: dict[str, int] = {}

    def topic(self) -> str:
        return f"hb.{self.src}"


class ProcessState(Message, kw_only=True):
    """A fleet process changed state under supervisord (from the event listener)."""

    TOPIC: ClassVar[str] = "fleet.proc"
    name: str
    state: str  # supervisord's: STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL...
    from_state: str = ""
    pid: int = 0
    restarts: int = 0  # starts within the crash-loop window


class Control(Message, kw_only=True):
    """Fleet control: kill switch, pause/resume a strategy. ``orders`` (to the gateway only)
    asks what is working at the broker; the gateway answers with ``BrokerOrders``.
    ``remove`` (operator -> risk -> execution; ``ibfleet strategy remove``): ``target``'s
    orders and positions are handed to the reserved ``unowned`` book and risk forgets the
    strategy. ``on_kill``: on a ``kill`` risk forwards to execution, each strategy's kill mode
    from its TOML (``keep_exits``, ``cancel_all``, ``flatten``; a strategy not named:
    ``keep_exits``)."""

    TOPIC: ClassVar[str] = "ctl"
    command: Literal["kill", "resume_all", "pause", "resume", "flatten", "orders", "remove"]
    target: str = ""  # a strategy name, or "" for all
    reason: str = ""
    on_kill: dict[str, str] = {}  # strategy -> its kill mode (risk fills it for execution)


#: a strategy's trading state as risk decides it: ``active``; ``reducing`` (its daily loss
#: limit: only orders that reduce its position); ``paused`` (``ibfleet pause NAME``);
#: ``halted`` (the kill switch); ``errored`` (its callbacks kept raising: risk halted it)
TRADING_STATES = ("active", "reducing", "paused", "halted", "errored")


class TradingState(_ByStrategy, kw_only=True):
    """Risk's decision about one strategy's trading, on ``ctl.state.STRATEGY``: published on
    every change, repeated every few seconds, and served by risk's snapshot (``risk-snap``,
    prefix ``ctl.state.STRATEGY``), so a strategy that starts or re-joins while paused or
    halted learns it. The strategy applies it (no intent leaves it unless ``active`` or
    ``reducing``) and confirms it in its heartbeat's ``state``. ``state`` is one of
    ``TRADING_STATES``; ``reason`` says why, for a human."""

    TOPIC: ClassVar[str] = "ctl.state"
    state: str
    reason: str = ""


class Ack(Message, kw_only=True):
    """The reliable path's acknowledgement of one request, optionally with a reply."""

    TOPIC: ClassVar[str] = "ack"
    ref_src: str
    ref_seq: int
    ok: bool = True
    error: str = ""
    duplicate: bool = False  # the request was seen before; it was not processed twice


class BrokerOrders(Message, kw_only=True):
    """The gateway's answer to an operator's ``kill`` or ``orders`` control: the orders of
    every client of the account that IB lists working (reqAllOpenOrders) after the cancels."""

    TOPIC: ClassVar[str] = "gw.orders"
    connected: bool  # False: IB could not be asked; ``working`` is then unknown (-1)
    working: int
    orders: list[str] = []  # one line per working order, for the operator
    global_cancel: bool = False  # a reqGlobalCancel went out for this request
    text: str = ""


class ContractLookup(Message, kw_only=True):
    """The operator asks the gateway whether IB knows ``symbols`` (``ibfleet strategy add``
    checks a strategy's symbols before it reports success); on the gateway's reliable socket
    only, answered with a ``ContractLookupResult``."""

    TOPIC: ClassVar[str] = "gw.lookup"
    symbols: list[str] = []


class ContractLookupResult(Message, kw_only=True):
    """The gateway's answer to a ``ContractLookup``: each symbol IB resolved (its conId) or
    refused (IB's reason, e.g. ``unknown symbol 'XYZ': IB has no such contract``); a symbol
    in neither got no answer in time. ``connected`` False: IB could not be asked."""

    TOPIC: ClassVar[str] = "gw.lookup"
    connected: bool = False
    resolved: dict[str, int] = {}
    failed: dict[str, str] = {}
    text: str = ""


class Alert(Message, kw_only=True):
    """Something a human must see: a crash loop, a reconciliation mismatch, a disk full."""

    TOPIC: ClassVar[str] = "alert"
    severity: Literal["info", "warning", "critical"]
    code: str
    text: str


class SnapshotEnd(Message, kw_only=True):
    """Closes a snapshot reply; ``last_seq`` is the owner's per-source seq it is consistent with."""

    TOPIC: ClassVar[str] = "snap.end"
    owner: str
    last_seq: dict[str, int] = {}
    count: int = 0


ALL_TYPES: tuple[type[Message], ...] = (
    Tick, TradeTick, QuoteTick, DepthUpdate, Bar, SubscribeRequest, HistoricalRequest,
    HistoricalEnd, HistoricalTicksRequest, HistoricalTick,
    OrderIntent, RiskDecision, OrderCommand, OrderStatus, OpenOrder, Execution, OrderUpdate,
    Commission, StrategyPosition, StrategyDigest, CompletedOrder, ReconcileEnd,
    Position, AccountValue, PnL,
    GatewayState, GatewayError, Instrument,
    Heartbeat, ProcessState, Control, Ack, Alert, SnapshotEnd, BrokerOrders, TradingState,
    ContractLookup, ContractLookupResult,
)
TYPES_BY_NAME: dict[str, type[Message]] = {t.__name__: t for t in ALL_TYPES}
AnyMessage = Union[ALL_TYPES]  # type: ignore[valid-type]
