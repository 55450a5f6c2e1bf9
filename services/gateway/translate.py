"""ibapi callback arguments -> bus messages. Pure functions and small per-stream state.

IB's sentinels become NaN (prices) or 0 (sizes); Decimal sizes become floats; BOT/SLD become
BUY/SELL; the client order id comes back from ``orderRef``; IB's times become ns since epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from ibapi.const import UNSET_DECIMAL, UNSET_DOUBLE, UNSET_INTEGER
from ibapi.contract import Contract

from proto.schema import (Bar, Commission, CompletedOrder, DepthUpdate, Execution, GatewayError,
                          OpenOrder, OrderStatus, Position, QuoteTick, Tick, TradeTick)
from services.gateway import ib_time
from services.model.orders import OrderType

NAN = float("nan")
SIDES = {"BOT": "BUY", "SLD": "SELL", "BUY": "BUY", "SELL": "SELL"}


def price(value) -> float:
    if value is None:
        return NAN
    value = float(value)
    return NAN if value == UNSET_DOUBLE or math.isinf(value) else value


def size(value) -> float:
    if value is None or value == UNSET_DECIMAL:
        return 0.0
    if isinstance(value, Decimal):
        return float(value)
    value = float(value)
    return 0.0 if value == UNSET_DOUBLE else value


def parse_ib_time(text: str) -> int:
    """Any IB time -> ns since epoch (0: unknown; see ``ib_time``, which counts and logs it)."""
    return ib_time.parse_ns(text)


def filter_time(exec_time_ns: int, margin_s: float = 60.0) -> str:
    """The reqExecutions filter 'yyyymmdd-hh:mm:ss' (UTC) a margin before the last seen fill."""
    if exec_time_ns <= 0:
        return ""
    return ib_time.utc_filter(exec_time_ns - int(margin_s * 1e9))


def gateway_error(code: int, text: str, req_id: int = -1, scope: str = "",
                  ref: str = "") -> GatewayError:
    """An IB error (or one of the gateway's own refusals), as published on ``gw.error``."""
    return GatewayError(code=int(code), text=text, req_id=int(req_id), scope=scope, ref=ref)


def symbol_of(contract: Contract, known: dict[int, str]) -> str:
    """The bus symbol of an IB contract: ours if we resolved it, else derived (see contracts)."""
    if contract.conId in known:
        return known[contract.conId]
    if contract.secType == "STK":
        return contract.symbol
    if contract.secType == "CASH":
        return f"{contract.symbol}.{contract.currency}"
    return f"{contract.localSymbol or contract.symbol}@{contract.exchange}"


# -- market data ------------------------------------------------------------------------------

# tickPrice/tickSize types (live and delayed) -> Tick field. IB's delayed tick types: 66 bid,
# 67 ask, 68 last, 69 bid size, 70 ask size, 71 last size, 72 high, 73 low, 74 volume,
# 75 close, 76 open (high/low/close/open have no Tick field, live or delayed)
PRICE_FIELDS = {1: "bid", 2: "ask", 4: "last", 66: "bid", 67: "ask", 68: "last"}
SIZE_FIELDS = {0: "bid_size", 3: "ask_size", 5: "last_size", 8: "volume",
               69: "bid_size", 70: "ask_size", 71: "last_size", 74: "volume"}
DELAYED_TICK_TYPES = frozenset(range(66, 77)) | {88}
#: IB's market data types (reqMarketDataType / marketDataType) and their config names
MARKET_DATA_TYPES = {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}
MARKET_DATA_TYPE_NAMES = {v: k for k, v in MARKET_DATA_TYPES.items()}


#: ibapi server_versions.MIN_SERVER_VER_MARKET_DATA_IN_SHARES: IB's reqMktData bid/ask/last
#: sizes of US stocks are in shares from it, in round lots of 100 before it (TWS 985's "quotes
#: in shares"); their day volume (tick 8/74) stays in lots at every version (captured: AAPL
#: 312894 at v200). docs/simulator.md F31
MARKET_DATA_IN_SHARES = 159
US_STOCK_LOT = 100.0


def size_units(sec_type: str, currency: str, server_version: int) -> tuple[float, float]:
    """(shares per unit of IB's bid/ask/last sizes, shares per unit of its volume) for a
    reqMktData of this contract on a connection of ``server_version``: the bus carries shares."""
    if sec_type != "STK" or currency != "USD":
        return 1.0, 1.0
    return (1.0 if server_version >= MARKET_DATA_IN_SHARES else US_STOCK_LOT), US_STOCK_LOT


def is_delayed(data_type: int) -> bool:
    return data_type in (3, 4)


@dataclass
class TopOfBook:
    """reqMktData arrives field by field; a Tick carries the whole top of book, marked
    ``delayed`` when IB said so (marketDataType 3/4) or sent a delayed tick type."""

    symbol: str
    values: dict[str, float] = field(default_factory=lambda: {
        "bid": NAN, "ask": NAN, "bid_size": NAN, "ask_size": NAN, "last": NAN,
        "last_size": 0.0, "volume": 0.0})
    delayed: bool = False
    #: shares per unit of IB's sizes and of its volume (``size_units``); set when the
    #: request goes out, on the connection whose server version decides them
    size_unit: float = 1.0
    volume_unit: float = 1.0

    def price(self, tick_type: int, value) -> bool:
        name = PRICE_FIELDS.get(tick_type)
        if name is None:
            return False
        return self._set(name, price(value), tick_type)

    def size(self, tick_type: int, value) -> bool:
        name = SIZE_FIELDS.get(tick_type)
        if name is None:
            return False
        unit = self.volume_unit if name == "volume" else self.size_unit
        return self._set(name, size(value) * unit, tick_type)

    def _set(self, name: str, value: float, tick_type: int) -> bool:
        """True if the top of book changed. ibapi follows each tickPrice with a tickSize of
        the same size: a Tick only for what moved, never a second one for an unchanged quote."""
        old = self.values[name]
        delayed = self.delayed or tick_type in DELAYED_TICK_TYPES
        if (value == old or (value != value and old != old)) and delayed == self.delayed:
            return False
        self.values[name], self.delayed = value, delayed
        return True

    def message(self) -> Tick:
        return Tick(symbol=self.symbol, **self.values, delayed=self.delayed)


@dataclass
class DepthRows:
    """The rows a consumer's book holds on each side of a depth stream, so a restart clears it
    once, with IB's own delete operations, before the fresh book arrives.

    Counted as a consumer's book applies IB's operations (``core.book.OrderBook`` of ``depth``
    rows, the depth the gateway asks IB for): an insert on a full side pushes the last row off
    *without a delete* (IB's full-book rule), so a full side stays at ``depth`` rows however
    many inserts follow; an operation beyond the rows a consumer has is refused by it and
    changes nothing. The clear is therefore at most ``depth`` deletes a side: each one at
    position 0, which every consumer's book applies (and which leaves it empty)."""

    depth: int = 10
    rows: list[int] = field(default_factory=lambda: [0, 0])  # [ask, bid]

    def apply(self, operation: int, side: int, position: int = 0) -> None:
        if side not in (0, 1) or not 0 <= position < self.depth:
            return
        n = self.rows[side]
        if operation == 0 and position <= n:
            self.rows[side] = min(self.depth, n + 1)
        elif operation == 2 and position < n:
            self.rows[side] = n - 1

    def clear_messages(self, symbol: str) -> list[DepthUpdate]:
        out = [DepthUpdate(symbol=symbol, position=0, operation=2, side=side, price=0.0, size=0.0)
               for side in (0, 1) for _ in range(self.rows[side])]
        self.rows = [0, 0]
        return out


def trade_tick(symbol: str, t: int, px, sz, exchange: str) -> TradeTick:
    return TradeTick(symbol=symbol, price=price(px), size=size(sz), exchange=exchange or "",
                     exch_ts=int(t) * 1_000_000_000)


def quote_tick(symbol: str, t: int, bid, ask, bid_size, ask_size) -> QuoteTick:
    return QuoteTick(symbol=symbol, bid=price(bid), ask=price(ask), bid_size=size(bid_size),
                     ask_size=size(ask_size), exch_ts=int(t) * 1_000_000_000)


def depth_update(symbol: str, position: int, operation: int, side: int, px, sz,
                 market_maker: str = "", smart: bool = False) -> DepthUpdate:
    return DepthUpdate(symbol=symbol, position=int(position), operation=int(operation),
                       side=int(side), price=price(px), size=size(sz),
                       market_maker=market_maker or "", smart_depth=bool(smart))


def bar(symbol: str, t: int, o, h, low, c, volume, wap, count) -> Bar:
    return Bar(symbol=symbol, start_ns=int(t) * 1_000_000_000, seconds=5, open=price(o),
               high=price(h), low=price(low), close=price(c), volume=size(volume),
               wap=price(size(wap)) if wap is not None and wap != UNSET_DECIMAL else NAN,
               count=int(count or 0))


# -- orders and account -----------------------------------------------------------------------

#: IB order types this build does not model, by what their prices mean (IB's "Order Types"
#: pages; docs/simulator.md F19): aux is the trigger of MIT/LIT, the trailing amount of a
#: trailing stop (whose stop is trailStopPrice, moving with the market); lmt the limit of
#: the LIMIT forms. "limit" / "stop" name the OpenOrder fields they go to.
TRIGGERED_TYPES: dict[str, tuple[bool, str]] = {
    "MIT": (False, "aux"), "LIT": (True, "aux"),
    "TRAIL": (False, "trail"), "TRAIL LIMIT": (True, "trail"),
}


def _terms(order) -> tuple[float, float]:
    """(limit, stop) of an open order, NaN where its type uses none: IB writes 0, not unset,
    for the prices a type does not use (a MKT order's limit, a LMT order's aux; captured in
    ../shared/fixtures/tws/transcripts), and 0 is a price. A trailing stop's stop is its
    current trailStopPrice (its auxPrice is the trailing amount: ``trailing``); an MIT/LIT's
    the trigger. Other types this build does not model (REL...) keep what IB sent."""
    try:
        kind = OrderType(order.orderType)
    except ValueError:
        shape = TRIGGERED_TYPES.get(order.orderType)
        if shape is None:
            return price(order.lmtPrice), price(order.auxPrice)
        has_limit, trigger = shape
        stop = order.trailStopPrice if trigger == "trail" else order.auxPrice
        return (price(order.lmtPrice) if has_limit else NAN, price(stop))
    return (price(order.lmtPrice) if kind.needs_limit else NAN,
            price(order.auxPrice) if kind.needs_stop else NAN)


def _trailing(order) -> tuple[float, float]:
    """(trailing amount, trailing percent) of a trailing stop, NaN where not set."""
    if order.orderType not in ("TRAIL", "TRAIL LIMIT"):
        return NAN, NAN
    percent = price(order.trailingPercent)
    return (NAN if percent == percent else price(order.auxPrice)), percent


def open_order(order_id: int, contract: Contract, order, state, symbol: str) -> OpenOrder:
    limit_price, stop_price = _terms(order)
    trailing_amount, trailing_percent = _trailing(order)
    return OpenOrder(ib_order_id=int(order_id), client_order_id=order.orderRef or "",
                     perm_id=int(order.permId or 0), client_id=int(order.clientId or 0),
                     account=order.account or "", symbol=symbol,
                     side=SIDES.get(order.action, "BUY"), quantity=size(order.totalQuantity),
                     order_type=order.orderType, limit_price=limit_price,
                     stop_price=stop_price, tif=order.tif or "DAY",
                     status=getattr(state, "status", "") or "", parent_id=int(order.parentId or 0),
                     oca_group=order.ocaGroup or "", trailing_amount=trailing_amount,
                     trailing_percent=trailing_percent)


def order_status(order_id: int, client_order_id: str, status: str, filled, remaining,
                 avg_fill_price, perm_id, parent_id, last_fill_price, why_held) -> OrderStatus:
    return OrderStatus(ib_order_id=int(order_id), client_order_id=client_order_id, status=status,
                       filled=size(filled), remaining=size(remaining),
                       avg_fill_price=float(avg_fill_price or 0.0), perm_id=int(perm_id or 0),
                       parent_id=int(parent_id or 0),
                       last_fill_price=float(last_fill_price or 0.0), why_held=why_held or "")


def execution(contract: Contract, ex, symbol: str) -> Execution:
    return Execution(exec_id=ex.execId, ib_order_id=int(ex.orderId), client_order_id=ex.orderRef or "",
                     perm_id=int(ex.permId or 0), account=ex.acctNumber or "", symbol=symbol,
                     side=SIDES.get(ex.side, "BUY"), quantity=size(ex.shares), price=float(ex.price),
                     cum_quantity=size(ex.cumQty), avg_price=float(ex.avgPrice or 0.0),
                     exec_time_ns=parse_ib_time(ex.time or ""), exchange=ex.exchange or "")


def commission(report) -> Commission:
    return Commission(exec_id=report.execId, commission=price(report.commissionAndFees),
                      currency=report.currency or "USD", realized_pnl=price(report.realizedPNL))


def position(account: str, contract: Contract, qty, avg_cost, symbol: str) -> Position:
    return Position(account=account, symbol=symbol, quantity=size(qty), avg_cost=price(avg_cost))


def _int(value) -> int:
    return 0 if value is None or value == UNSET_INTEGER else int(value)


def completed_order(contract: Contract, order, state, symbol: str,
                    ib_order_id: int = 0) -> CompletedOrder:
    """reqCompletedOrders' answer for one order. IB's classic wire message carries neither the
    order id nor the client id (both 0 then): ``ib_order_id`` is the caller's, found by orderRef
    in the gateway's own map, when IB's is missing."""
    return CompletedOrder(ib_order_id=_int(order.orderId) or int(ib_order_id),
                          client_order_id=order.orderRef or "", perm_id=_int(order.permId),
                          symbol=symbol, side=SIDES.get(order.action, "BUY"),
                          quantity=size(order.totalQuantity), filled=size(order.filledQuantity),
                          status=getattr(state, "status", "") or "",
                          completed_status=getattr(state, "completedStatus", "") or "",
                          completed_time=getattr(state, "completedTime", "") or "",
                          completed_time_ns=parse_ib_time(getattr(state, "completedTime", "") or ""),
                          client_id=_int(order.clientId))
