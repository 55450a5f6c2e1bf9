"""A test client on IB's official ibapi: EClient + EWrapper, reader thread, callbacks collected in
thread-safe lists that tests poll with `wait_for`."""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Callable

from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.order import Order
from ibapi.wrapper import EWrapper

from tests.support.processes import wait_for


class Recorder(EWrapper):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.events: dict[str, list[tuple]] = defaultdict(list)
        self.next_id: int | None = None
        self.timeline: list[tuple[str, tuple]] = []   # every event in arrival order

    def _add(self, name: str, *args: Any) -> None:
        with self.lock:
            self.events[name].append(args)
            self.timeline.append((name, args))

    def get(self, name: str, pred: Callable[[tuple], bool] | None = None) -> list[tuple]:
        with self.lock:
            items = list(self.events.get(name, ()))
        return [e for e in items if pred is None or pred(e)]

    def clear(self, name: str) -> None:
        with self.lock:
            self.events.pop(name, None)

    # ---- callbacks
    def nextValidId(self, orderId): self.next_id = orderId; self._add("nextValidId", orderId)
    def managedAccounts(self, accountsList): self._add("managedAccounts", accountsList)
    def error(self, reqId, errorTime, errorCode, errorString, advancedOrderRejectJson=""):
        self._add("error", reqId, errorCode, errorString)
    def connectionClosed(self): self._add("connectionClosed")
    def contractDetails(self, reqId, contractDetails): self._add("contractDetails", reqId, contractDetails)
    def contractDetailsEnd(self, reqId): self._add("contractDetailsEnd", reqId)
    def tickPrice(self, reqId, tickType, price, attrib): self._add("tickPrice", reqId, tickType, price)
    def tickSize(self, reqId, tickType, size): self._add("tickSize", reqId, tickType, size)
    def tickString(self, reqId, tickType, value): self._add("tickString", reqId, tickType, value)
    def tickReqParams(self, tickerId, minTick, bboExchange, snapshotPermissions):
        self._add("tickReqParams", tickerId, minTick, bboExchange)
    def marketDataType(self, reqId, marketDataType): self._add("marketDataType", reqId, marketDataType)
    def tickSnapshotEnd(self, reqId): self._add("tickSnapshotEnd", reqId)
    def tickByTickAllLast(self, reqId, tickType, time, price, size, tickAttribLast, exchange, specialConditions):
        self._add("tbtLast", reqId, tickType, time, price, size)
    def tickByTickBidAsk(self, reqId, time, bidPrice, askPrice, bidSize, askSize, tickAttribBidAsk):
        self._add("tbtBidAsk", reqId, time, bidPrice, askPrice, bidSize, askSize)
    def tickByTickMidPoint(self, reqId, time, midPoint): self._add("tbtMid", reqId, time, midPoint)
    def updateMktDepth(self, reqId, position, operation, side, price, size):
        self._add("depth", reqId, position, operation, side, price, size)
    def updateMktDepthL2(self, reqId, position, marketMaker, operation, side, price, size, isSmartDepth):
        self._add("depth", reqId, position, operation, side, price, size)
    def realtimeBar(self, reqId, time, open_, high, low, close, volume, wap, count):
        self._add("realtimeBar", reqId, time, open_, high, low, close, volume)
    def historicalData(self, reqId, bar): self._add("historicalData", reqId, bar)
    def historicalDataEnd(self, reqId, start, end): self._add("historicalDataEnd", reqId, start, end)
    def openOrder(self, orderId, contract, order, orderState):
        self._add("openOrder", orderId, contract, order, orderState.status)
    def openOrderEnd(self): self._add("openOrderEnd")
    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId, parentId,
                    lastFillPrice, clientId, whyHeld, mktCapPrice):
        self._add("orderStatus", orderId, status, filled, remaining, avgFillPrice, parentId)
    def execDetails(self, reqId, contract, execution): self._add("execDetails", reqId, contract, execution)
    def execDetailsEnd(self, reqId): self._add("execDetailsEnd", reqId)
    def commissionAndFeesReport(self, commissionAndFeesReport): self._add("commission", commissionAndFeesReport)
    def position(self, account, contract, position, avgCost): self._add("position", account, contract, position, avgCost)
    def positionEnd(self): self._add("positionEnd")
    def updateAccountValue(self, key, val, currency, accountName): self._add("accountValue", key, val, currency)
    def updatePortfolio(self, contract, position, marketPrice, marketValue, averageCost, unrealizedPNL,
                        realizedPNL, accountName): self._add("portfolio", contract, position, marketPrice)
    def accountDownloadEnd(self, accountName): self._add("accountDownloadEnd", accountName)
    def accountSummary(self, reqId, account, tag, value, currency): self._add("accountSummary", reqId, tag, value)
    def accountSummaryEnd(self, reqId): self._add("accountSummaryEnd", reqId)
    def pnl(self, reqId, dailyPnL, unrealizedPnL, realizedPnL): self._add("pnl", reqId, dailyPnL, unrealizedPnL, realizedPnL)
    def pnlSingle(self, reqId, pos, dailyPnL, unrealizedPnL, realizedPnL, value): self._add("pnlSingle", reqId, pos, value)
    def currentTime(self, time): self._add("currentTime", time)
    def currentTimeInMillis(self, timeInMillis): self._add("currentTimeInMillis", timeInMillis)
    def completedOrder(self, contract, order, orderState): self._add("completedOrder", contract, order, orderState)
    def completedOrdersEnd(self): self._add("completedOrdersEnd")


class OrderRecorder(Recorder):
    """Also keeps every openOrder's Order with its status ("order": (orderId, order, status))
    and every orderStatus with its whyHeld ("status": (orderId, status, filled, remaining,
    whyHeld))."""

    def openOrder(self, orderId, contract, order, orderState):   # noqa: N802 (ibapi's name)
        super().openOrder(orderId, contract, order, orderState)
        self._add("order", orderId, order, orderState.status)

    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId, parentId,  # noqa: N802
                    lastFillPrice, clientId, whyHeld, mktCapPrice):
        super().orderStatus(orderId, status, filled, remaining, avgFillPrice, permId, parentId,
                            lastFillPrice, clientId, whyHeld, mktCapPrice)
        self._add("status", orderId, status, float(filled), float(remaining), whyHeld)


class IbapiClient:
    """EClient on its own reader thread. Always `disconnect()` in a finally."""

    def __init__(self, port: int, client_id: int, recorder: Recorder | None = None) -> None:
        self.rec = recorder or Recorder()
        self.client = EClient(self.rec)
        self.port = port
        self.client_id = client_id
        self.thread: threading.Thread | None = None

    def connect(self, wait_ready: bool = True, deadline: float = 30.0) -> "IbapiClient":
        self.client.connect("127.0.0.1", self.port, self.client_id)
        self.thread = threading.Thread(target=self.client.run, daemon=True, name=f"ibapi-{self.client_id}")
        self.thread.start()
        if wait_ready:
            wait_for(lambda: self.rec.next_id is not None, deadline, what=f"nextValidId for client {self.client_id}")
        return self

    def disconnect(self) -> None:
        try:
            self.client.disconnect()
        finally:
            if self.thread is not None:
                self.thread.join(timeout=10)

    def connected(self) -> bool:
        return self.client.isConnected()

    def wait(self, name: str, pred: Callable[[tuple], bool] | None = None, count: int = 1,
             deadline: float = 30.0) -> list[tuple]:
        return wait_for(lambda: (lambda r: r if len(r) >= count else None)(self.rec.get(name, pred)),
                        deadline, what=f"{count}x {name}")

    def errors(self, code: int | None = None, req_id: int | None = None) -> list[tuple]:
        return self.rec.get("error", lambda e: (code is None or e[1] == code) and (req_id is None or e[0] == req_id))

    def wait_error(self, code: int, req_id: int | None = None, deadline: float = 30.0) -> tuple:
        return wait_for(lambda: (self.errors(code, req_id) or [None])[0], deadline, what=f"error {code}")

    def completed_orders(self) -> dict[str, tuple]:
        """reqCompletedOrders now, by orderRef: (contract, order, orderState)."""
        self.rec.clear("completedOrder")
        self.rec.clear("completedOrdersEnd")
        self.client.reqCompletedOrders(False)
        self.wait("completedOrdersEnd")
        return {e[1].orderRef: e for e in self.rec.get("completedOrder")}

    def next_order_id(self) -> int:
        oid = self.rec.next_id
        self.rec.next_id = oid + 1
        return oid


def stock(symbol: str = "AAPL") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def future(month: str = "202612") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "ES", "FUT", "CME", "USD"
    c.lastTradeDateOrContractMonth = month
    return c


def forex() -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "EUR", "CASH", "IDEALPRO", "USD"
    return c


def order(action: str, qty: float, order_type: str = "MKT", lmt: float | None = None,
          aux: float | None = None, tif: str = "DAY", ref: str = "", transmit: bool = True,
          parent: int = 0) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.tif = action, qty, order_type, tif
    if lmt is not None:
        o.lmtPrice = lmt
    if aux is not None:
        o.auxPrice = aux
    o.orderRef = ref
    o.transmit = transmit
    o.parentId = parent
    # attributes ibapi 10.50 sends but TWS no longer accepts at their defaults
    o.eTradeOnly = False
    o.firmQuoteOnly = False
    return o
