"""IB's ``error()`` callback, routed: every error to the one concern it belongs to.

``errors.classify`` says what a code means; this says who hears it. Connection-level codes
change the connection (1100 link lost, 1101/1102 restored, 2103/2104 farms, 326, socket
errors, 100 pacing); everything else is about a request, found by its id: a historical or
market data request, a contract resolution, or one of our orders. A market data permission
code (354, 10089, 10167, 10168) for a subscription goes to market data first: it may switch
to delayed data and ask again (market_data.py). An order's error goes out
as ``GatewayError(scope="order", code, text, req_id=IB order id, ref=client order id)`` and
nothing else: IB refuses a *modify* with 110 and the order keeps working, so an error never
says what became of an order; IB's orderStatus does.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from proto.schema import Alert
from services.gateway import translate
from services.gateway.connection import Connection
from services.gateway.contracts import ContractResolver
from services.gateway.errors import (MARKET_DATA_PERMISSION_CODES, ORDER_ERROR_CODES, Kind,
                                     classify)
from services.gateway.market_data import MarketData
from services.gateway.order_desk import OrderDesk
from services.gateway.outbox import Outbox

Resync = Callable[[str, bool, bool], None]  # (reason, reconcile, resubscribe)


class ErrorRouter:
    def __init__(self, conn: Connection, market: MarketData, contracts: ContractResolver,
                 desk: OrderDesk, outbox: Outbox, publisher: Any, counters: Counter,
                 resync: Resync) -> None:
        self.conn = conn
        self.market = market
        self.contracts = contracts
        self.desk = desk
        self.outbox = outbox
        self.publisher = publisher
        self.counters = counters
        self.resync = resync
        self.names = None  # reports' ConIdNames, set by the gateway

    def _publish(self, code: int, text: str, req_id: int, scope: str, ref: str = "") -> None:
        self.publisher.publish(translate.gateway_error(code, text, req_id, scope, ref))

    def on_error(self, req_id: int, code: int, text: str, advanced: str = "") -> None:
        kind = classify(code)
        self.counters[f"ib_error_{code}"] += 1
        if code in MARKET_DATA_PERMISSION_CODES and req_id >= 0 \
                and self.market.permission_error(req_id, code, text):
            return  # no live (or no) market data for a subscription: market data decides
        conn = self.conn
        if kind == Kind.LINK_LOST:
            self._publish(code, text, req_id, "connection")
            conn.ib_link_lost(f"{code}: {text}")
        elif kind in (Kind.LINK_RESTORED_LOST, Kind.LINK_RESTORED_KEPT):
            self._publish(code, text, req_id, "connection")
            conn.ib_link_restored()
            if conn.socket_up:
                lost = kind == Kind.LINK_RESTORED_LOST
                self.resync(f"{code}: {'data lost' if lost else 'data maintained'}", True, lost)
        elif kind == Kind.FARM_DOWN:
            self._publish(code, text, req_id, "info")
            conn.ib_farm_down(f"{code}: {text}")
        elif kind == Kind.FARM_UP:
            if conn.ib_farm_up():
                self._publish(code, text, req_id, "info")
                if conn.socket_up and not conn.link_lost:
                    self.resync(f"{code}: market data farm back; re-requesting market data",
                                False, True)
            else:
                self.counters["info_codes"] += 1
        elif kind in (Kind.FARM_INFO, Kind.INFO):
            # informational; a note about one of our orders (399, 2109...) is still a fact
            # about that order
            if not (req_id > 0 and self.desk.on_order_error(req_id, code, text)):
                self.counters["info_codes"] += 1
        elif kind == Kind.CLIENT_ID_IN_USE:
            # a lock-out repeats it every attempt: alerted once, summarised on the bus
            published = conn.client_id_in_use(text)
            if published is not None:
                self._publish(code, published, req_id, "connection")
        elif kind == Kind.CONNECTION:
            if code == 502:  # ibapi's "Couldn't connect to TWS": the socket never connected
                conn.on_connect_failed()
            if conn.connection_error_is_news(text):
                self._publish(code, text, req_id, "connection")
        elif kind == Kind.PACING:
            self._publish(code, text, req_id, "connection")
            self.publisher.publish(Alert(severity="critical", code="gateway.pacing_violation",
                                         text=f"IB reports a pacing violation: {text}"))
        elif kind == Kind.WARNING and req_id < 0:
            self._publish(code, text, req_id, "info")
        else:
            self._route_request_error(req_id, code, text)

    def _route_request_error(self, req_id: int, code: int, text: str) -> None:
        if self.market.request_error(req_id, code, text):
            return
        if self.contracts.request_error(req_id, code, text):
            return
        if self.names is not None and self.names.request_error(req_id, code, text):
            return  # a report's contract asked by conId (con_ids.py)
        if self.desk.on_order_error(req_id, code, text):
            return
        if self.outbox.is_req_id(req_id):  # a request we retired (cancelled, or re-requested)
            self.counters["stale_request_errors"] += 1
            return
        scope = "connection" if req_id < 0 else ("order" if code in ORDER_ERROR_CODES else "info")
        self._publish(code, text, req_id, scope)
