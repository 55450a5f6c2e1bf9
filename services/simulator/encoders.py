"""Server-to-client messages in the text wire format, field for field as the client decoder reads
them at the negotiated server version.

`TextEncoder` is the encoder layer: one method per message, each returning a complete frame. A
protobuf encoder (server versions 201+) would be a second class with the same methods.
"""
from __future__ import annotations

import re
import time as _time
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import protocol as P
from .contracts import Instrument
from .ledger import Fill
from .orders import SimOrder
from .protocol import Out
from .wire import UNSET_DOUBLE, encode, frame

UNSET_DOUBLE_STR = "1.7976931348623157E308"
UNSET_INT_STR = "2147483647"
UNSET_LONG_STR = "9223372036854775807"
SHAREHOLDER = "Not an insider or substantial shareholder"


#: OrderState's margin fields in the order openOrder writes them (before, change, after)
MARGIN_FIELDS = ("initMarginBefore", "maintMarginBefore", "equityWithLoanBefore",
                 "initMarginChange", "maintMarginChange", "equityWithLoanChange",
                 "initMarginAfter", "maintMarginAfter", "equityWithLoanAfter")


def _num_or(x: float | None, unset: str) -> str:
    """A completedOrder price as IB writes it there ("2000.0"), or ``unset`` when there is none."""
    return unset if x is None else repr(float(x))


def qty(q: float) -> str:
    return str(int(q)) if q == int(q) else repr(q)


def num(x: float) -> str:
    return UNSET_DOUBLE_STR if x == UNSET_DOUBLE else repr(float(x))


#: Windows zone names a Windows-hosted IB Gateway writes in the connection time -> IANA (CLDR
#: windowsZones.xml, territory 001); only for ``host_zone``, the simulated gateway host's zone
WINDOWS_ZONES = {
    "Central European Standard Time": "Europe/Warsaw", "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris", "GMT Standard Time": "Europe/London",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Pacific Standard Time": "America/Los_Angeles", "Tokyo Standard Time": "Asia/Tokyo",
    "China Standard Time": "Asia/Shanghai", "Singapore Standard Time": "Asia/Singapore",
}


@lru_cache(maxsize=64)
def zone_info(name: str) -> tzinfo:
    """The zone of an IANA, IB legacy (US/Eastern) or Windows name; ValueError if unknown."""
    if name.upper() in ("UTC", "GMT"):
        return timezone.utc
    try:
        return ZoneInfo(WINDOWS_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def ib_time(epoch: float, zone: str = "UTC") -> str:
    """IB's 'yyyymmdd hh:mm:ss ZONE' form: the wall time in ``zone``, then its name as given
    (a real gateway writes executions in the account's zone, e.g. US/Eastern)."""
    return datetime.fromtimestamp(epoch, zone_info(zone)).strftime("%Y%m%d %H:%M:%S") + " " + zone


def parse_filter_time(text: str, local_zone: str) -> float | None:
    """An ExecutionFilter time as IB reads it: 'yyyymmdd-hh:mm:ss' UTC, 'yyyymmdd hh:mm:ss ZONE'
    in ZONE, 'yyyymmdd hh:mm:ss' in the gateway's own zone. None: unreadable (no filter)."""
    m = re.fullmatch(r"(\d{8})(-|\s+)(\d{2}:\d{2}:\d{2})(?:\s+(.+))?", text.strip())
    if not m:
        return None
    date, sep, hms, name = m.groups()
    try:
        naive = datetime.strptime(f"{date} {hms}", "%Y%m%d %H:%M:%S")
        tz = timezone.utc if sep == "-" and not name else zone_info((name or local_zone).strip())
    except ValueError:
        return None
    return naive.replace(tzinfo=tz).timestamp()


class TextEncoder:
    def __init__(self, version: int, zone: str = "America/New_York") -> None:
        self.v = version
        self.zone = zone  # the account's zone: execution and completed-order times

    # ---- session
    @staticmethod
    def server_version(version: int, conn_time: str) -> bytes:
        return frame([str(version), conn_time])

    def next_valid_id(self, order_id: int) -> bytes:
        return frame([str(int(Out.NEXT_VALID_ID)), "1", str(order_id)])

    def managed_accounts(self, accounts: str) -> bytes:
        return frame([str(int(Out.MANAGED_ACCTS)), "1", accounts])

    def error(self, req_id: int, code: int, text: str, advanced: str = "") -> bytes:
        f: list[object] = [int(Out.ERR_MSG)]
        if self.v < P.ERROR_TIME:
            f.append(2)
        f += [req_id, code, text]
        if self.v >= P.ADVANCED_ORDER_REJECT:
            f.append(advanced)
        if self.v >= P.ERROR_TIME:
            f.append(int(_time.time() * 1000))
        return encode(f)

    def current_time(self, epoch: float) -> bytes:
        return encode([int(Out.CURRENT_TIME), 1, int(epoch)])

    def current_time_millis(self, epoch: float) -> bytes:
        return encode([int(Out.CURRENT_TIME_IN_MILLIS), int(epoch * 1000)])

    # ---- contracts
    def contract_data(self, req_id: int, inst: Instrument) -> bytes:
        s = inst.spec
        v = self.v
        f: list[object] = [int(Out.CONTRACT_DATA)]
        if v < P.SIZE_RULES:
            f.append(8)
        f += [req_id, s.symbol, s.sec_type, s.last_trade_date]
        if v >= P.LAST_TRADE_DATE:
            f.append(s.last_trade_date)
        f += [0.0 if s.sec_type in ("FUT", "OPT") else "", "", s.exchange, s.currency, inst.local_symbol,
              inst.trading_class, inst.trading_class, inst.con_id, s.min_tick]
        if v < P.SIZE_RULES:
            f.append(1)                      # mdSizeMultiplier
        f += [s.multiplier, inst.order_types,  # IB's full order-type list (contracts.ORDER_TYPES)
              inst.valid_exchanges, 1, 0, s.long_name, s.primary_exchange,
              s.last_trade_date[:6] if s.last_trade_date else "", "", "", "", s.time_zone,
              inst.trading_hours(), inst.liquid_hours(),
              "", ""]                         # evRule, evMultiplier
        # secIdList: a count, then tag/value pairs ("1", "ISIN", "US0378331005" in the G200 frame)
        f.append(len(inst.sec_ids))
        for tag, value in inst.sec_ids:
            f += [tag, value]
        f += [1, "", "", inst.market_rule_ids, s.last_trade_date,
              "ETF" if s.symbol == "SPY" else ("COMMON" if s.sec_type == "STK" else "")]
        if v == P.FRACTIONAL_SIZE_SUPPORT:
            f.append(1)
        if v >= P.SIZE_RULES:
            f += list(inst.size_rules)        # minSize, sizeIncrement, suggestedSizeIncrement
        if v >= P.INELIGIBILITY_REASONS:
            f.append(0)
        return encode(f)

    def contract_data_end(self, req_id: int) -> bytes:
        return encode([int(Out.CONTRACT_DATA_END), 1, req_id])

    def market_rule(self, rule_id: int, bands: list[tuple[float, float]]) -> bytes:
        f: list[object] = [int(Out.MARKET_RULE), rule_id, len(bands)]
        for low_edge, increment in bands:
            f += [low_edge, increment]
        return encode(f)

    # ---- market data (hot paths use f-strings to stay cheap)
    def tick_price(self, req_id: int, tick_type: int, price: str, size: str, mask: int = 0) -> bytes:
        return frame(["1", "6", str(req_id), str(tick_type), price, size, str(mask)])

    def tick_size(self, req_id: int, tick_type: int, size: str) -> bytes:
        return frame(["2", "6", str(req_id), str(tick_type), size])

    def tick_string(self, req_id: int, tick_type: int, value: str) -> bytes:
        return frame(["46", "6", str(req_id), str(tick_type), value])

    def tick_req_params(self, req_id: int, min_tick: float, bbo_exchange: str) -> bytes:
        return encode([int(Out.TICK_REQ_PARAMS), req_id, min_tick, bbo_exchange, 3])

    def market_data_type(self, req_id: int, data_type: int) -> bytes:
        return encode([int(Out.MARKET_DATA_TYPE), 1, req_id, data_type])

    def tick_snapshot_end(self, req_id: int) -> bytes:
        return encode([int(Out.TICK_SNAPSHOT_END), 1, req_id])

    def tbt_last(self, req_id: int, kind: int, t: int, price: str, size: str, exchange: str) -> bytes:
        return frame(["99", str(req_id), str(kind), str(t), price, size, "0", exchange, ""])

    def tbt_bid_ask(self, req_id: int, t: int, bid: str, ask: str, bid_size: str, ask_size: str) -> bytes:
        return frame(["99", str(req_id), "3", str(t), bid, ask, bid_size, ask_size, "0"])

    def tbt_mid(self, req_id: int, t: int, mid: str) -> bytes:
        return frame(["99", str(req_id), "4", str(t), mid])

    def depth(self, req_id: int, position: int, op: int, side: int, price: str, size: str) -> bytes:
        return frame(["12", "1", str(req_id), str(position), str(op), str(side), price, size])

    def depth_l2(self, req_id: int, position: int, maker: str, op: int, side: int, price: str,
                 size: str, smart: bool) -> bytes:
        return frame(["13", "1", str(req_id), str(position), maker, str(op), str(side), price, size,
                      "1" if smart else "0"])

    def realtime_bar(self, req_id: int, t: int, o: str, h: str, l: str, c: str, volume: str,
                     wap: str, count: int) -> bytes:
        return frame(["50", "3", str(req_id), str(t), o, h, l, c, volume, wap, str(count)])

    def historical_data(self, req_id: int, start: str, end: str,
                        bars: list[tuple[str, str, str, str, str, str, str, int]]) -> list[bytes]:
        f: list[object] = [int(Out.HISTORICAL_DATA), req_id]
        if self.v < P.HISTORICAL_DATA_END:
            f += [start, end]
        f.append(len(bars))
        for bar in bars:
            f += list(bar)
        out = [encode(f)]
        if self.v >= P.HISTORICAL_DATA_END:
            out.append(encode([int(Out.HISTORICAL_DATA_END), req_id, start, end]))
        return out

    def historical_data_update(self, req_id: int,
                               bar: tuple[str, str, str, str, str, str, str, int]) -> bytes:
        """keepUpToDate's bar in progress (msg 90; ibapi decoder processHistoricalDataUpdateMsg):
        reqId, barCount, date, open, close, high, low, WAP, volume (close before high/low)."""
        date, o, h, l, c, v, wap, n = bar  # noqa: E741
        return encode([Out.HISTORICAL_DATA_UPDATE, req_id, n, date, o, c, h, l, wap, v])

    # ---- orders
    def _contract_block(self, inst: Instrument, exchange: str | None = None) -> list[object]:
        s = inst.spec
        return [inst.con_id, s.symbol, s.sec_type, s.last_trade_date, 0.0, "", s.multiplier,
                exchange if exchange is not None else s.exchange, s.currency, inst.local_symbol,
                inst.trading_class]

    def _trail_fields(self, o: SimOrder) -> tuple[str, str, str]:
        """openOrder's (trailStopPrice, trailingPercent, lmtPriceOffset) of a trailing order, as
        IB fills them (completedOrder TRAIL LIMIT in ../shared/fixtures/tws/frames.jsonl: the
        stop and the offset; trailingPercent only when the order trails by a percentage); empty,
        as before, for every other type."""
        r = o.req
        if r.order_type not in ("TRAIL", "TRAIL LIMIT"):
            return "", "", ""
        return (self.order_price(o, r.trail_stop_price) if r.trail_stop_price is not None else "",
                repr(float(r.trailing_percent)) if r.trailing_percent is not None else "",
                self.order_price(o, r.lmt_price_offset) if r.lmt_price_offset is not None else "")

    @staticmethod
    def order_price(o: SimOrder, price: float | None) -> str:
        """An openOrder price as IB Gateway writes it: to the instrument's tick decimals
        ("10.00" for a limit of 10), and "0", not unset, when the order has none (a MKT order's
        limit, a LMT order's aux price; every openOrder in the transcripts)."""
        if price is None or price == UNSET_DOUBLE:
            return "0"
        return f"{price:.{o.inst.decimals}f}"

    def open_order(self, o: SimOrder) -> bytes:
        v = self.v
        r = o.req
        lmt = self.order_price(o, o.limit_price())
        aux = self.order_price(o, r.aux_price)
        trail_stop, trail_pct, lmt_offset = self._trail_fields(o)
        f: list[object] = [int(Out.OPEN_ORDER), r.order_id]
        f += self._contract_block(o.inst, r.contract.exchange or o.inst.spec.exchange)
        f += [r.action, qty(r.total_qty), r.order_type, lmt, aux, r.tif, r.oca_group,
              r.account or "", r.open_close, r.origin, r.order_ref, o.client_id, o.perm_id,
              r.outside_rth, r.hidden, 0.0, r.good_after_time, "",
              "", "", ""]                                   # faGroup, faMethod, faPercentage
        if v < P.FA_PROFILE_DESUPPORT:
            f.append("")
        f += ["", r.good_till_date, "", "", "",              # modelCode, GTD, rule80A, percentOffset, settlingFirm
              0, "", -1,                                    # shortSaleSlot, designatedLocation, exemptCode
              0, "", "", "", "", "",                        # auctionStrategy, box params, stock range
              r.display_size, r.block_order, r.sweep_to_fill, False, "",  # displaySize .. minQty
              r.oca_type, False, False, "",                 # ocaType, eTradeOnly, firmQuoteOnly, nbboPriceCap
              r.parent_id, r.trigger_method,
              "", 0, "", "",                                # volatility, volType, dnOrderType, dnAuxPrice
              False, 0,                                     # continuousUpdate, referencePriceType
              trail_stop, trail_pct,                        # trailStopPrice, trailingPercent
              "", "",                                       # basisPoints, basisPointsType
              "", 0, 0,                                     # comboLegsDescrip, comboLegs, orderComboLegs
              0,                                            # smartComboRoutingParams
              "", "", "",                                   # scale init/subs size, price increment
              "",                                           # hedgeType
              False, "", "", False, False,                  # optOutSmartRouting, clearing x2, notHeld, dn contract
              "",                                           # algoStrategy
              False]                                        # solicited
        pv = o.preview                                      # a whatIf's margin preview
        if pv is None:
            f += [False, o.status,                          # whatIf, status
                  "", "", "", "", "", "", "", "", "",       # margins before/change/after
                  "", "", "", ""]                           # commission, min, max, currency
        else:
            f += [True, o.status] + [pv[k] for k in MARGIN_FIELDS]
            f += [pv["commissionAndFees"], pv["minCommissionAndFees"], pv["maxCommissionAndFees"],
                  pv["commissionAndFeesCurrency"]]
        if v >= P.FULL_ORDER_PREVIEW_FIELDS:
            if pv is None:
                f += ["", "", "", "", "", "", "", "", "", "", "", "", 0]
            else:
                # marginCurrency, the outside-RTH margins (no sessions model: the same numbers),
                # suggestedSize, rejectReason, no allocations
                f += [pv["marginCurrency"]] + [pv[k] for k in MARGIN_FIELDS] + ["", "", 0]
        f += ["",                                           # warningText
              False, False,                                 # randomizeSize, randomizePrice
              0,                                            # conditions
              # adjusted order params: adjustedOrderType, triggerPrice, trailStopPrice (ibapi reads
              # it again here), lmtPriceOffset, adjusted stop/stop limit/trailing amount/unit
              "", "", trail_stop, lmt_offset, "", "", "", 0,
              "", "", "",                                   # soft dollar tier
              "", False, False, False, ""]                  # cashQty .. usePriceMgmtAlgo
        if v >= P.DURATION:
            f.append("")
        if v >= P.POST_TO_ATS:
            f.append("")
        if v >= P.AUTO_CANCEL_PARENT:
            f.append(False)
        if v >= P.PEGBEST_PEGMID_OFFSETS:
            f += ["", "", "", "", ""]
        if v >= P.CUSTOMER_ACCOUNT:
            f.append("")
        if v >= P.PROFESSIONAL_CUSTOMER:
            f.append(False)
        if v >= P.BOND_ACCRUED_INTEREST:
            f.append("")
        if v >= P.INCLUDE_OVERNIGHT:
            f.append(False)
        if v >= P.CME_TAGGING_FIELDS_IN_OPEN_ORDER:
            f += ["", ""]
        if v >= P.SUBMITTER:
            f.append("")
        if v >= P.IMBALANCE_ONLY:
            f.append(False)
        return encode(f)

    def order_status(self, o: SimOrder, client_id: int | None = None) -> bytes:
        """orderStatus as IB writes it: an untriggered stop is PreSubmitted with whyHeld
        "trigger" and mktCapPrice is 0 (transcript api_stop_loss_management_aapl.txt);
        ``client_id``: the clientId field when another client (0) is told (IB writes the
        receiver's, transcript api_client_id0_order_observation_aapl.txt)."""
        status = o.status if o.status != "PendingSubmit" else "PreSubmitted"
        why = o.why_held
        if not why and status == "PreSubmitted" and o.awaits_trigger:
            why = "trigger"
        return encode([int(Out.ORDER_STATUS), o.order_id, status, qty(o.filled), qty(o.remaining),
                       o.avg_fill_price, o.perm_id, o.req.parent_id, o.last_fill_price,
                       o.client_id if client_id is None else client_id, why, 0])

    def open_order_end(self) -> bytes:
        return encode([int(Out.OPEN_ORDER_END), 1])

    def completed_order(self, o: SimOrder, parent_perm_id: int | None, account: str) -> bytes:
        """completedOrder (101), laid out as IB Gateway sends it at v200 (see the capture
        completed_orders_cancelled_system_live.txt): no orderId or clientId, the order's fields
        in openOrder's order with its own trailer (filledQuantity .. completedStatus)."""
        v = self.v
        r = o.req
        lmt = o.limit_price() or 0.0
        aux = r.aux_price if r.aux_price is not None else 0.0
        trail = r.order_type in ("TRAIL", "TRAIL LIMIT")
        f: list[object] = [int(Out.COMPLETED_ORDER)]
        f += self._contract_block(o.inst, r.contract.exchange or o.inst.spec.exchange)
        f += [r.action, qty(r.total_qty), r.order_type, repr(float(lmt)), repr(float(aux)), r.tif,
              r.oca_group, r.account or account, r.open_close, r.origin, r.order_ref, o.perm_id,
              r.outside_rth, r.hidden, 0,                   # discretionaryAmt
              r.good_after_time, "", "", ""]                # faGroup, faMethod, faPercentage
        if v < P.FA_PROFILE_DESUPPORT:
            f.append("")                                    # faProfile
        f += ["", r.good_till_date, 0, "", "",              # modelCode, GTD, rule80A, percentOffset, settlingFirm
              0, "", -1,                                    # shortSaleSlot, designatedLocation, exemptCode
              "", "", "", "", "",                           # box params, stock range
              r.display_size or UNSET_INT_STR, r.sweep_to_fill, False, "",   # displaySize, sweep, AON, minQty
              r.oca_type or 3, r.trigger_method,
              "", 0, "None", "", 0, False, 0, "",           # volatility, volType, dnOrderType (+ its 4 fields)
              False, 0,                                     # continuousUpdate, referencePriceType
              # trailStopPrice, trailingPercent (the G200 TRAIL LIMIT frame: "2000.0", "")
              _num_or(r.trail_stop_price, ""), _num_or(r.trailing_percent, ""),
              "", 0, 0,                                     # comboLegsDescrip, comboLegs, orderComboLegs
              0,                                            # smartComboRoutingParams
              UNSET_INT_STR, UNSET_INT_STR, "",             # scale init/subs size, price increment
              "",                                           # hedgeType
              "", "IB", False, False,                       # clearingAccount, clearingIntent, notHeld, dn contract
              "",                                           # algoStrategy
              False,                                        # solicited
              o.status,
              False, False,                                 # randomizeSize, randomizePrice
              0,                                            # conditions
              # trailStopPrice, lmtPriceOffset (the G200 TRAIL LIMIT frame: "2000.0", "0.05")
              _num_or(r.trail_stop_price if trail else None, UNSET_DOUBLE_STR),
              _num_or(r.lmt_price_offset if trail else None, UNSET_DOUBLE_STR),
              0, True, False,                               # cashQty, dontUseAutoPriceForHedge, isOmsContainer
              "",                                           # autoCancelDate
              qty(o.filled), UNSET_INT_STR, False,          # filledQuantity, refFuturesConId, autoCancelParent
              SHAREHOLDER, False, False,                    # shareholder, imbalanceOnly, routeMarketableToBbo
              parent_perm_id if parent_perm_id is not None else UNSET_LONG_STR,
              ib_time(o.completed_time, self.zone), o.completed_status]
        if v >= P.PEGBEST_PEGMID_OFFSETS:
            f += ["", "", "", "", ""]
        if v >= P.CUSTOMER_ACCOUNT:
            f.append("")
        if v >= P.PROFESSIONAL_CUSTOMER:
            f.append(False)
        if v >= P.SUBMITTER:
            f.append("")
        return encode(f)

    def completed_orders_end(self) -> bytes:
        return encode([int(Out.COMPLETED_ORDERS_END)])

    def exec_details(self, req_id: int, fill: Fill, inst: Instrument) -> bytes:
        f: list[object] = [int(Out.EXECUTION_DATA), req_id, fill.order_id]
        f += self._contract_block(inst, fill.exchange)
        f += [fill.exec_id, ib_time(fill.time, self.zone), fill.account, fill.exchange, fill.side, qty(fill.qty),
              fill.price, fill.perm_id, fill.client_id, 0, qty(fill.cum_qty), fill.avg_price,
              fill.order_ref, "", "", "", fill.liquidity]
        if self.v >= P.PENDING_PRICE_REVISION:
            f.append(False)
        if self.v >= P.SUBMITTER:
            f.append("")
        return encode(f)

    def exec_details_end(self, req_id: int) -> bytes:
        return encode([int(Out.EXECUTION_DATA_END), 1, req_id])

    def commission_report(self, fill: Fill, currency: str) -> bytes:
        return encode([int(Out.COMMISSION_REPORT), 1, fill.exec_id, fill.commission, currency,
                       num(fill.realized_pnl), UNSET_DOUBLE_STR, ""])

    # ---- portfolio and account
    def position(self, account: str, inst: Instrument, position: float, avg_cost: float) -> bytes:
        f: list[object] = [int(Out.POSITION_DATA), 3, account]
        # a future's position comes without an exchange, as IB writes it
        # (../shared/fixtures/tws/frames.jsonl, "position ES FUT": ES FUT 20250919 ... "" USD)
        f += self._contract_block(inst, "" if inst.sec_type == "FUT" else None)
        f += [qty(position), avg_cost]
        return encode(f)

    def position_end(self) -> bytes:
        return encode([int(Out.POSITION_END), 1])

    def portfolio_value(self, inst: Instrument, position: float, market_price: float, market_value: float,
                        avg_cost: float, unrealized: float, realized: float, account: str) -> bytes:
        s = inst.spec
        return encode([int(Out.PORTFOLIO_VALUE), 8, inst.con_id, s.symbol, s.sec_type, s.last_trade_date,
                       0.0, "", s.multiplier, s.primary_exchange, s.currency, inst.local_symbol,
                       inst.trading_class, qty(position), market_price, market_value, avg_cost,
                       unrealized, realized, account])

    def account_value(self, key: str, value: str, currency: str, account: str) -> bytes:
        return encode([int(Out.ACCT_VALUE), 2, key, value, currency, account])

    def account_time(self, hhmm: str) -> bytes:
        return encode([int(Out.ACCT_UPDATE_TIME), 1, hhmm])

    def account_download_end(self, account: str) -> bytes:
        return encode([int(Out.ACCT_DOWNLOAD_END), 1, account])

    def account_summary(self, req_id: int, account: str, tag: str, value: str, currency: str) -> bytes:
        return encode([int(Out.ACCOUNT_SUMMARY), 1, req_id, account, tag, value, currency])

    def account_summary_end(self, req_id: int) -> bytes:
        return encode([int(Out.ACCOUNT_SUMMARY_END), 1, req_id])

    def account_update_multi(self, req_id: int, account: str, key: str, value: str, currency: str) -> bytes:
        return encode([int(Out.ACCOUNT_UPDATE_MULTI), 1, req_id, account, "", key, value, currency])

    def account_update_multi_end(self, req_id: int) -> bytes:
        return encode([int(Out.ACCOUNT_UPDATE_MULTI_END), 1, req_id])

    def position_multi(self, req_id: int, account: str, inst: Instrument, position: float, avg_cost: float) -> bytes:
        f: list[object] = [int(Out.POSITION_MULTI), 1, req_id, account]
        f += self._contract_block(inst)
        f += [qty(position), avg_cost, ""]
        return encode(f)

    def position_multi_end(self, req_id: int) -> bytes:
        return encode([int(Out.POSITION_MULTI_END), 1, req_id])

    def pnl(self, req_id: int, daily: float, unrealized: float, realized: float) -> bytes:
        return encode([int(Out.PNL), req_id, daily, unrealized, realized])

    def pnl_single(self, req_id: int, position: float, daily: float, unrealized: float, realized: float,
                   value: float) -> bytes:
        return encode([int(Out.PNL_SINGLE), req_id, qty(position), daily, unrealized, realized, value])

    # ---- deliberate junk for the garbage fault: framing stays intact, content does not
    @staticmethod
    def garbage() -> Iterable[bytes]:
        yield frame(["9999", "1", "unknown message id"])            # unknown message id
        yield frame(["1", "6", "abc", "not-a-tick", "x.y", "", ""])  # malformed tickPrice
        yield frame(["3", "17"])                                     # truncated orderStatus
        yield frame([""])                                            # empty message id
