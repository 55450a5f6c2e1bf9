"""The order handle ``submit`` returns: one order's life, kept after it is done.

An ``OrderHandle`` *is* the order's client order id (a ``str`` subclass): everything that
took the id before (``cancel(coid)``, ``parent_id=coid``, a dict key, ``==`` with
``update.client_order_id``) takes the handle unchanged. On top it carries what execution
reported about the order (``status``, ``filled``, ``remaining``, ``avg_fill_price``), its
fills with their commissions, a log of events, and callbacks. The strategy keeps it after
the order is done (``Strategy.handles``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

from services.model.orders import DONE_VALUES

EVENTS = ("update", "fill", "commission", "done")


@dataclass
class Fill:
    """One execution of an order (IB's ``execDetails``, as execution booked it)."""

    exec_id: str  #: IB's execution id, e.g. ``0000b7e5.0001.01.01``
    time_ns: int  #: when the strategy learned of it (host clock, ns since the epoch)
    side: str  #: ``BUY`` or ``SELL``
    quantity: float  #: shares (contracts) in this execution, > 0
    price: float  #: price of this execution, in the instrument's currency
    #: IB's commission for this execution (``commissionReport``), in the account currency;
    #: NaN until IB reports it (it may come before or after the fill, or never)
    commission: float = math.nan


class OrderEvent(NamedTuple):
    """One entry of ``OrderHandle.events``."""

    time_ns: int  #: host clock, ns
    status: str  #: execution's state after the event (``new``, ``submitted``, ``filled``...)
    filled: float  #: cumulative filled quantity then
    text: str  #: execution's or risk's reason, if any


class OrderHandle(str):
    """An order sent by this strategy: equal to, and usable as, its client order id.

    The strategy's own calls (``cancel``, ``modify``, ``parent_id=``) take it as is; in a
    bus message built by hand use ``handle.client_order_id`` (a plain ``str``: msgspec does
    not encode ``str`` subclasses).

    Attributes (read-only by convention):

    - ``client_order_id`` (str), ``symbol``, ``side`` (``BUY``/``SELL``), ``quantity``
      (shares, > 0), ``order_type`` (``LMT``, ``MKT``, ``STP``, ``STP LMT``), ``limit_price``
      and ``stop_price`` (NaN when not used), ``tif``, ``parent_id``, ``oca_group``: the
      terms, updated when a modify is reported.
    - ``status``: execution's state: ``new`` (sent, not yet reported), ``pending_submit``,
      ``submitted``, ``pending_modify``, ``pending_cancel``, ``partially_filled``, and the
      final ``filled``, ``cancelled``, ``expired``, ``rejected`` (also when risk refused it),
      ``inactive``.
    - ``filled``, ``remaining`` (shares), ``avg_fill_price``: execution's numbers.
    - ``fills``: list of ``Fill`` (one per execId), ``commission``: the sum of the
      commissions IB reported for them (0.0 while none is known).
    - ``events``: list of ``OrderEvent``; ``reason``: the last reason given (a refusal's text).
    - ``done``: the order is over (one of the final states);
      ``active``: not done.
    """

    def __new__(cls, client_order_id: str, **terms) -> "OrderHandle":
        self = super().__new__(cls, client_order_id)
        self.client_order_id = str(client_order_id)
        self.symbol = terms.get("symbol", "")
        self.side = terms.get("side", "BUY")
        self.quantity = float(terms.get("quantity", 0.0))
        self.order_type = terms.get("order_type", "LMT")
        self.limit_price = terms.get("limit_price", math.nan)
        self.stop_price = terms.get("stop_price", math.nan)
        self.tif = terms.get("tif", "DAY")
        self.parent_id = terms.get("parent_id", "")
        self.oca_group = terms.get("oca_group", "")
        self.ib_order_id = 0
        self.status = "new"
        self.filled = 0.0
        self.avg_fill_price = 0.0
        self.reason = ""
        self.fills: list[Fill] = []
        self.events: list[OrderEvent] = [OrderEvent(terms.get("time_ns", 0), "new", 0.0, "")]
        self._listeners: dict[str, list[Callable]] = {}
        return self

    # -- what it is ---------------------------------------------------------------------------
    @property
    def remaining(self) -> float:
        """Shares still to fill (0 once done)."""
        return 0.0 if self.done else max(0.0, self.quantity - self.filled)

    @property
    def done(self) -> bool:
        return self.status in DONE_VALUES

    @property
    def active(self) -> bool:
        return not self.done

    @property
    def commission(self) -> float:
        """Sum of the commissions IB reported for this order's fills (account currency)."""
        return sum(f.commission for f in self.fills if math.isfinite(f.commission))

    @property
    def signed_remaining(self) -> float:
        """``remaining``, negative for a sell."""
        return self.remaining if self.side == "BUY" else -self.remaining

    def __repr__(self) -> str:
        return (f"OrderHandle({self.client_order_id!r}, {self.side} {self.quantity:g} "
                f"{self.symbol} {self.order_type}, status={self.status!r}, "
                f"filled={self.filled:g})")

    # -- callbacks ----------------------------------------------------------------------------
    def on(self, event: str, fn: Callable) -> "OrderHandle":
        """Call ``fn`` on ``event``: ``"update"`` (``fn(handle)``, every report), ``"fill"``
        (``fn(handle, fill)``), ``"commission"`` (``fn(handle, fill)``, when IB's commission
        for a fill arrives), ``"done"`` (``fn(handle)``, once). Raises ``ValueError`` for
        another event name. Returns the handle, so calls chain. An exception in ``fn`` is a
        callback error like any other (counted, logged)."""
        if event not in EVENTS:
            raise ValueError(f"unknown order event {event!r}; one of {', '.join(EVENTS)}")
        self._listeners.setdefault(event, []).append(fn)
        if event == "done" and self.done:
            fn(self)
        return self

    def _emit(self, event: str, *args) -> None:
        for fn in self._listeners.get(event, ()):
            fn(self, *args)

    # -- fed by the strategy ------------------------------------------------------------------
    def _apply(self, update, now_ns: int) -> Fill | None:
        """An ``OrderUpdate`` from execution; returns the new fill it carries, if any."""
        was_done = self.done
        self.status = update.state
        self.filled = update.filled
        self.avg_fill_price = update.avg_fill_price
        self.quantity = update.quantity or self.quantity
        self.limit_price, self.stop_price = update.limit_price, update.stop_price
        self.ib_order_id = update.ib_order_id or self.ib_order_id
        if update.reason:
            self.reason = update.reason
        self.events.append(OrderEvent(now_ns, update.state, update.filled, update.reason))
        fill = None
        if update.exec_id and all(f.exec_id != update.exec_id for f in self.fills):
            fill = Fill(update.exec_id, now_ns, update.side, update.last_fill_qty,
                        update.last_fill_price)
            self.fills.append(fill)
        if fill is not None:
            self._emit("fill", fill)
        self._emit("update")
        if self.done and not was_done:
            self._emit("done")
        return fill

    def _refused(self, reason: str, text: str, now_ns: int) -> None:
        """Risk (or execution through risk) refused it: it never reached the broker."""
        was_done = self.done
        self.status = "rejected"
        self.reason = f"{reason}: {text}" if text else reason
        self.events.append(OrderEvent(now_ns, "rejected", self.filled, self.reason))
        self._emit("update")
        if not was_done:
            self._emit("done")

    def _commission(self, exec_id: str, amount: float) -> bool:
        for fill in self.fills:
            if fill.exec_id == exec_id:
                if fill.commission != amount:
                    fill.commission = amount
                    self._emit("commission", fill)
                return True
        return False
