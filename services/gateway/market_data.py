"""Market data: the bus's subscriptions and historical requests, IB's streams back onto the bus.

``SubscribeRequest`` (``sub.req``) -> one ref-counted IB request per (symbol, kind), within
IB's limits (``subscriptions``); ticks merged into a top of book per request id and published
once per drained batch; depth rows counted so a restarted stream can clear consumers' books
first; real-time bars. ``HistoricalRequest`` (``hist.req``) -> paced by ``HistoryDesk``, bars
published together on ``hist.REQUESTER``, closed by ``HistoricalEnd``.

Every request id is the outbox's; a socket loss unassigns them all and ``restore`` asks again
under fresh ids (IB may or may not have kept a request; a fresh id cannot collide).

The market data type (``market_data_type``; docs/gateway.md, "Market data type"): every
connection asks ``reqMarketDataType`` before its first subscription. Under ``auto`` it asks
live (1); when IB refuses a reqMktData for want of live data (354, or 10089 which leaves the
request open and silent) it switches to delayed (3) for good and asks that subscription
again; IB sends live data anyway wherever the account has it. A refusal with no way out
(10168, or any refusal outside ``auto``) ends the subscription with an error and one alert.
IB's ``marketDataType`` says per request what arrives: Ticks are marked ``delayed``, and the
heartbeat's ``md_type.SYMBOL.KIND`` counters carry it to ``ibfleet status``.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from proto.schema import Alert, HistoricalEnd, HistoricalRequest, SubscribeRequest
from services.gateway import translate
from services.gateway.contracts import ContractResolver
from services.gateway.errors import SUBSCRIPTION_DEAD_CODES
from services.gateway.history import HistoryDesk, HistoryJob
from services.gateway.options import GatewayOptions
from services.gateway.outbox import Outbox
from services.gateway.pacing import HistoricalPacer
from services.gateway.subscriptions import Outcome, Subscription, SubscriptionBook

DEPTH_REFRESH_S = 5.0  # a broken book is re-requested at most this often per symbol
#: IB's historical pacing log, in the gateway's state directory: IB paces per account, so the
#: pacer outlives reconnects (one per gateway) and a restart of the gateway process (this file)
HISTORY_PACING_FILE = "history_pacing.json"
#: historical requests not answered yet: the next gateway process asks them again
HISTORY_JOURNAL_FILE = "history_requests.json"


class MarketData:
    def __init__(self, opts: GatewayOptions, outbox: Outbox, contracts: ContractResolver,
                 publisher: Any, counters: Counter, socket_up: Callable[[], bool],
                 state_dir: Path | None = None) -> None:
        self.depth_rows_asked = opts.depth_rows
        self.outbox = outbox
        self.contracts = contracts
        self.publisher = publisher
        self.counters = counters
        self.socket_up = socket_up
        self.subs = SubscriptionBook({"lines": opts.mkt_data_lines,
                                      "depth": opts.depth_subscriptions,
                                      "tick_by_tick": opts.tick_by_tick_subscriptions})
        state = None if state_dir is None else Path(state_dir)
        self.history = HistoryDesk(
            HistoricalPacer(path=None if state is None else state / HISTORY_PACING_FILE),
            journal=None if state is None else state / HISTORY_JOURNAL_FILE)
        counters["history_restored"] = self.history.restored
        self.top: dict[int, translate.TopOfBook] = {}         # by req id
        self.depth_rows: dict[str, translate.DepthRows] = {}  # by symbol
        self.dirty_ticks: set[int] = set()                    # req ids with an unpublished tick
        self.depth_refreshed: dict[str, float] = {}           # symbol -> monotonic time
        # -- the market data type (module docstring)
        self.mode = opts.market_data_type                     # auto, live, frozen, delayed...
        self.fallback = False       # auto: IB refused live data once; delayed asked since
        self.session_type: int | None = None  # what this connection asked (None: nothing yet)
        self.refused: dict[tuple[str, str], int] = {}         # (symbol, kind) -> IB's code
        self.alerted: set[tuple[str, str]] = set()            # (alert code, subscription)

    # -- REQUESTS FROM THE BUS -------------------------------------------------------------
    def on_subscribe(self, req: SubscribeRequest) -> None:
        self.counters["sub_requests"] += 1
        ref = f"{req.requester}/{req.symbol}"
        if not req.active:
            sub = self.subs.remove(req.requester, req.symbol, req.kind)
            if sub is not None:
                self._cancel_at_ib(sub)
            return
        outcome, sub, why = self.subs.add(req.requester, req.symbol, req.kind)
        if req.refresh and req.kind == "depth" and sub is not None and sub.req_id is not None \
                and time.monotonic() - self.depth_refreshed.get(req.symbol, -1e9) > DEPTH_REFRESH_S:
            # a consumer's book broke (a lost update): cancel and re-request, so IB sends the
            # whole book again as inserts after a clear
            self.depth_refreshed[req.symbol] = time.monotonic()
            self.counters["depth_refreshes"] += 1
            self._cancel_at_ib(sub)
            sub.req_id = None
            self._request(sub)
            return
        if outcome in (Outcome.LIMIT, Outcome.BAD_KIND):
            self.counters["sub_refused"] += 1
            self.publisher.publish(translate.gateway_error(
                101 if outcome == Outcome.LIMIT else 321, why, -1, "subscription", ref))
            return
        if outcome == Outcome.NEW and sub is not None:
            if self.contracts.get(sub.symbol) is None:
                self.contracts.resolve(sub.symbol)
            elif self.socket_up():
                self._request(sub)

    def on_history_request(self, req: HistoricalRequest) -> None:
        self.counters["history_requests"] += 1
        self.history.add(req)
        if self.contracts.get(req.symbol) is None:
            self.contracts.resolve(req.symbol)

    # -- AT IB -----------------------------------------------------------------------------
    def wanted_type(self) -> int:
        """The market data type this connection should ask (IB's number)."""
        if self.mode == "auto":
            return 3 if self.fallback else 1
        return translate.MARKET_DATA_TYPES[self.mode]

    def _ask_type(self, data_type: int) -> None:
        """reqMarketDataType, once per connection and type: IB applies it to the reqMktData
        requests that follow it (the outbox keeps the order)."""
        if self.session_type == data_type:
            return
        self.session_type = data_type
        self.counters["market_data_type_requests"] += 1
        self.outbox.submit(f"market data type {data_type}",
                           lambda c: c.reqMarketDataType(data_type))

    def _request(self, sub: Subscription) -> None:
        contract = self.contracts.get(sub.symbol)
        if contract is None or not self.socket_up():
            return
        if self.session_type is None:  # a new connection: its type before its first request
            self._ask_type(self.wanted_type())
        rid = self.outbox.req_id()
        self.subs.assign(sub, rid)
        kind = sub.kind
        if kind == "tick":
            top = self.top[rid] = translate.TopOfBook(sub.symbol,
                                                      delayed=translate.is_delayed(sub.data_type))

            def call(c, top=top) -> None:
                # IB's units for this contract at this connection's version: shares on the bus
                top.size_unit, top.volume_unit = translate.size_units(
                    contract.secType, contract.currency, c.serverVersion())
                c.reqMktData(rid, contract, "", False, False, [])
        elif kind == "trade":
            call = lambda c: c.reqTickByTickData(rid, contract, "AllLast", 0, False)  # noqa: E731
        elif kind == "quote":
            call = lambda c: c.reqTickByTickData(rid, contract, "BidAsk", 0, False)  # noqa: E731
        elif kind == "depth":
            rows = self.depth_rows_asked
            # consumers' books restart empty once (at most ``rows`` deletes a side: IB's
            # full-book rule drops rows without a delete, translate.DepthRows), then IB's
            # inserts rebuild them
            clear = self.depth_rows.pop(sub.symbol, translate.DepthRows(rows)).clear_messages(
                sub.symbol)
            if clear:
                self.counters["depth_clears"] += 1
                self.counters["depth_clear_rows"] += len(clear)
            for msg in clear:
                self.publisher.publish(msg)
            call = lambda c: c.reqMktDepth(rid, contract, rows, False, [])  # noqa: E731
        else:
            call = lambda c: c.reqRealTimeBars(rid, contract, 5, "TRADES", False, [])  # noqa: E731
        self.outbox.submit(f"subscribe {sub.name}", call)

    def _cancel_at_ib(self, sub: Subscription) -> None:
        rid = sub.req_id
        if rid is None:
            return
        self.subs.by_req_id.pop(rid, None)
        self.top.pop(rid, None)
        if not self.socket_up():
            return
        kind = sub.kind
        if kind == "tick":
            call = lambda c: c.cancelMktData(rid)  # noqa: E731
        elif kind in ("trade", "quote"):
            call = lambda c: c.cancelTickByTickData(rid)  # noqa: E731
        elif kind == "depth":
            call = lambda c: c.cancelMktDepth(rid, False)  # noqa: E731
        else:
            call = lambda c: c.cancelRealTimeBars(rid)  # noqa: E731
        self.outbox.submit(f"cancel {sub.name}", call, urgent=True)

    def send_due_history(self, now: float) -> None:
        """Historical requests whose contract is known, once IB's pacing lets them go."""
        for job in self.history.due(now, lambda symbol: self.contracts.get(symbol) is not None):
            rid = self.outbox.req_id()
            self.history.sent(job, rid)
            contract, r = self.contracts.get(job.request.symbol), job.request
            self.outbox.submit("history", lambda c, rid=rid, contract=contract, r=r:
                               c.reqHistoricalData(rid, contract, r.end, r.duration, r.bar_size,
                                                   r.what_to_show, int(r.use_rth), 2, False, []))

    # -- CONNECTION ------------------------------------------------------------------------
    def symbols(self) -> set[str]:
        """Every symbol market data needs resolved (asked again after a reconnect)."""
        return {s.symbol for s in self.subs} | {j.request.symbol for j in self.history.waiting}

    def restore(self, resubscribe: bool) -> None:
        """Re-request what IB does not have: everything after a reconnect; with
        ``resubscribe`` (1101, farm back) also what IB may or may not have kept. A new
        connection asks its market data type first."""
        if self.session_type is None and self.socket_up():
            self._ask_type(self.wanted_type())
        for sub in self.subs:
            if resubscribe and sub.req_id is not None:
                self._cancel_at_ib(sub)
                sub.req_id = None
            if sub.req_id is None and self.contracts.get(sub.symbol) is not None:
                self._request(sub)

    def on_lost(self) -> None:
        """The socket died: no request id is live at IB any more."""
        self.subs.unassign_all()
        self.history.requeue_in_flight()
        self.top.clear()
        self.dirty_ticks.clear()
        self.session_type = None  # IB's market data type is per connection

    def contract_resolved(self, symbol: str) -> None:
        for sub in self.subs:
            if sub.symbol == symbol and sub.req_id is None:
                self._request(sub)

    def contract_failed(self, symbol: str, text: str) -> None:
        for job in self.history.fail_symbol(symbol):
            self._history_end(job, error=text)
        for sub in self.subs:
            if sub.symbol == symbol:
                for requester in sorted(sub.requesters):
                    self.publisher.publish(translate.gateway_error(
                        200, text, -1, "subscription", f"{requester}/{symbol}"))
                self.subs.drop(sub)

    def request_error(self, req_id: int, code: int, text: str) -> bool:
        """An IB error for a historical or market data request: True if it was ours."""
        job = self.history.finish(req_id)
        if job is not None:
            self.publisher.publish(translate.gateway_error(
                code, text, req_id, "history", f"{job.request.requester}/{job.request.request}"))
            self._history_end(job, error=f"{code}: {text}")
            return True
        sub = self.subs.owner(req_id)
        if sub is None:
            return False
        for requester in sorted(sub.requesters):
            self.publisher.publish(translate.gateway_error(
                code, text, req_id, "subscription", f"{requester}/{sub.symbol}"))
        if code in SUBSCRIPTION_DEAD_CODES:
            self.subs.drop(sub)
            self.top.pop(req_id, None)
        return True

    def permission_error(self, req_id: int, code: int, text: str) -> bool:
        """354 / 10089 / 10167 / 10168 (errors.MARKET_DATA_PERMISSION_CODES) for one of our
        subscriptions: True if it was ours. See the module docstring for what follows."""
        sub = self.subs.owner(req_id)
        if sub is None:
            return False
        self.counters[f"md_permission_{code}"] += 1
        for requester in sorted(sub.requesters):
            self.publisher.publish(translate.gateway_error(
                code, text, req_id, "subscription", f"{requester}/{sub.symbol}"))
        if code == 10167:  # an advisory: delayed ticks follow on this request
            self._set_type(sub, 3)
            return True
        if sub.kind == "tick" and code in (354, 10089) and self.mode == "auto" \
                and not sub.fell_back:
            sub.fell_back = True
            self.counters["md_delayed_fallbacks"] += 1
            self.fallback = True
            self._retire(sub, cancel=code == 10089)  # 10089 leaves it open (and silent) at IB
            self._ask_type(3)
            self._request(sub)
            self._alert_once(sub, "warning", "gateway.delayed_market_data",
                             f"no live market data for {sub.symbol} (IB {code}: {text}); "
                             f"asking IB for delayed data (market_data_type auto)")
            return True
        self._retire(sub, cancel=code == 10089)
        self.subs.drop(sub)
        self.refused[sub.key] = code
        self._alert_once(sub, "critical", "gateway.no_market_data",
                         f"no market data for {sub.symbol} {sub.kind}: IB {code}: {text} "
                         f"(market_data_type {self.mode}); the subscription is dropped")
        return True

    def _retire(self, sub: Subscription, cancel: bool) -> None:
        """This request id is over: cancelled at IB too when IB keeps it open."""
        if cancel:
            self._cancel_at_ib(sub)
        elif sub.req_id is not None:
            self.subs.by_req_id.pop(sub.req_id, None)
            self.top.pop(sub.req_id, None)
        self.dirty_ticks.discard(sub.req_id)
        sub.req_id = None

    def _alert_once(self, sub: Subscription, severity: str, code: str, text: str) -> None:
        if (code, sub.name) in self.alerted:
            return
        self.alerted.add((code, sub.name))
        self.publisher.publish(Alert(severity=severity, code=code, text=text))

    def on_market_data_type(self, req_id: int, data_type: int) -> None:
        """IB says what a reqMktData request delivers: live, frozen, delayed, delayed frozen."""
        sub = self.subs.owner(req_id)
        if sub is None:
            self.counters["orphan_data"] += 1
            return
        self._set_type(sub, data_type)

    def _set_type(self, sub: Subscription, data_type: int) -> None:
        first = sub.data_type != data_type
        sub.data_type = data_type
        self.refused.pop(sub.key, None)
        top = self.top.get(sub.req_id) if sub.req_id is not None else None
        if top is not None:
            top.delayed = translate.is_delayed(data_type)
        if first and translate.is_delayed(data_type):
            self._alert_once(sub, "info", "gateway.delayed_data",
                             f"{sub.symbol}: IB sends delayed market data (15-20 minutes "
                             f"late); ticks are marked delayed")

    # -- CALLBACKS: STREAMS ----------------------------------------------------------------
    def _data(self, req_id: int) -> Subscription | None:
        sub = self.subs.owner(req_id)
        if sub is None:
            self.counters["orphan_data"] += 1  # a late tick for a retired request id
            return None
        sub.last_data = time.monotonic()
        sub.updates += 1
        if not sub.data_type and sub.kind != "tick":
            sub.data_type = 1  # tick-by-tick, depth and bars: IB has them live only
        return sub

    def on_tick_price(self, req_id: int, tick_type: int, px, attrib) -> None:
        top = self.top.get(req_id)
        if top is not None and self._data(req_id) and top.price(tick_type, px):
            self.dirty_ticks.add(req_id)

    def on_tick_size(self, req_id: int, tick_type: int, sz) -> None:
        top = self.top.get(req_id)
        if top is not None and self._data(req_id) and top.size(tick_type, sz):
            self.dirty_ticks.add(req_id)

    def flush(self) -> None:
        """One Tick per symbol per drained batch (IB sends the top of book field by field)."""
        for req_id in self.dirty_ticks:
            top = self.top.get(req_id)
            if top is not None:
                self.publisher.publish(top.message())
        self.dirty_ticks.clear()

    def on_tick_by_tick_all_last(self, req_id, tick_type, t, px, sz, attrib, exchange,
                                 special) -> None:
        sub = self._data(req_id)
        if sub is not None:
            self.publisher.publish(translate.trade_tick(sub.symbol, t, px, sz, exchange))

    def on_tick_by_tick_bid_ask(self, req_id, t, bid, ask, bid_size, ask_size, attrib) -> None:
        sub = self._data(req_id)
        if sub is not None:
            self.publisher.publish(translate.quote_tick(sub.symbol, t, bid, ask, bid_size,
                                                        ask_size))

    def on_update_mkt_depth(self, req_id, position, operation, side, px, sz) -> None:
        self._depth(req_id, position, operation, side, px, sz, "", False)

    def on_update_mkt_depth_l2(self, req_id, position, mm, operation, side, px, sz,
                               smart) -> None:
        self._depth(req_id, position, operation, side, px, sz, mm, smart)

    def _depth(self, req_id, position, operation, side, px, sz, mm, smart) -> None:
        sub = self._data(req_id)
        if sub is None:
            return
        self.depth_rows.setdefault(sub.symbol, translate.DepthRows(self.depth_rows_asked)).apply(
            int(operation), int(side), int(position))
        self.publisher.publish(translate.depth_update(sub.symbol, position, operation, side, px,
                                                      sz, mm, smart))

    def on_realtime_bar(self, req_id, t, o, h, low, c, volume, wap, count) -> None:
        sub = self._data(req_id)
        if sub is not None:
            self.publisher.publish(translate.bar(sub.symbol, t, o, h, low, c, volume, wap, count))

    # -- CALLBACKS: HISTORY ----------------------------------------------------------------
    def on_historical_data(self, req_id: int, bar) -> None:
        self.history.bar(req_id, bar)

    def on_historical_data_end(self, req_id: int, start: str = "", end: str = "") -> None:
        job = self.history.finish(req_id)
        if job is None:
            return
        if job.bars:
            self.publisher.publish_batch(job.bars, f"hist.{job.request.requester}")
        self._history_end(job, count=len(job.bars))

    def _history_end(self, job: HistoryJob, count: int = 0, error: str = "") -> None:
        r = job.request
        self.publisher.publish(HistoricalEnd(requester=r.requester, request=r.request,
                                             count=count, error=error))
        self.history.save()

    # -- HEARTBEAT -------------------------------------------------------------------------
    def heartbeat(self, counters: Counter, now: float) -> None:
        for key in [k for k in counters if k.startswith(("tick_age_ms.", "md_type.",
                                                          "md_refused."))]:
            del counters[key]
        for sub in self.subs:
            age = -1 if sub.last_data is None else int((now - sub.last_data) * 1000)
            counters[f"tick_age_ms.{sub.symbol}.{sub.kind}"] = age
            # IB's market data type per subscription (0: not known yet); ibfleet status
            counters[f"md_type.{sub.symbol}.{sub.kind}"] = sub.data_type
        for (symbol, kind), code in self.refused.items():
            if (symbol, kind) not in self.subs.subs:
                counters[f"md_refused.{symbol}.{kind}"] = code
        counters["subscriptions"] = len(self.subs)
        for rule, n in self.history.paced.items():  # requests IB's pacing held back, by rule
            counters[f"history_paced_{rule}"] = n
        counters["history_waiting"] = len(self.history.waiting)
        counters["history_in_flight"] = len(self.history.in_flight)
        counters["market_data_type"] = self.session_type or 0
