"""Order vocabulary and the order state machine: one table of (state, event) -> next state.

IB's status strings (``Submitted``, ``Cancelled``...) are *reports*; execution turns them into
events of this table. A transition not in the table is refused (``IllegalTransition`` names
the state and the event) and the order keeps its state: nothing is improvised.

Sources: IB's "Order Status" page (TWS API docs, ``orderStatus``: PendingSubmit,
PendingCancel, PreSubmitted, Submitted, ApiCancelled, Cancelled, Filled, Inactive) and its
error codes (110 price increment, 201 rejected, 10147/10148 cancel refused, 161 not
cancellable); nautilus_trader's order FSM for the shape of the awkward rows.
"""
from __future__ import annotations

from enum import Enum


class InvalidOrder(ValueError):
    """An order's terms that cannot be sent: the message names the field and the value."""


class _Parsed(str, Enum):
    @classmethod
    def parse(cls, value: "str | _Parsed", field: str = ""):
        """The member for ``value`` (case-insensitive, surrounding blanks ignored).

        Raises ``InvalidOrder`` naming the field and the allowed values."""
        if isinstance(value, cls):
            return value
        member = cls._value2member_map_.get(value)  # the common case: already canonical
        if member is not None:
            return member
        if isinstance(value, str):
            text = " ".join(value.split()).upper()
            for member in cls:
                if member.value == text:
                    return member
        allowed = ", ".join(m.value for m in cls)
        raise InvalidOrder(f"{field or cls.__name__} {value!r} is not one of: {allowed}")


class OrderSide(_Parsed):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is OrderSide.BUY else -1

    @property
    def opposite(self) -> "OrderSide":
        return OrderSide.SELL if self is OrderSide.BUY else OrderSide.BUY


class OrderType(_Parsed):
    MARKET = "MKT"
    LIMIT = "LMT"
    STOP = "STP"
    STOP_LIMIT = "STP LMT"

    @property
    def needs_limit(self) -> bool:
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT)

    @property
    def needs_stop(self) -> bool:
        return self in (OrderType.STOP, OrderType.STOP_LIMIT)


class TimeInForce(_Parsed):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"


def signed(side: str, quantity: float) -> float:
    """``quantity`` with the sign of ``side`` (BUY +, SELL -)."""
    return quantity * OrderSide.parse(side, "side").sign


# -- THE STATE MACHINE ------------------------------------------------------------------------

class OrderState(str, Enum):
    NEW = "new"  # accepted by execution, not yet sent
    PENDING_SUBMIT = "pending_submit"  # sent; IB has not acknowledged it
    SUBMITTED = "submitted"  # working at IB
    PARTIALLY_FILLED = "partially_filled"  # working, some filled
    PENDING_MODIFY = "pending_modify"  # working; new terms sent, IB has not confirmed them
    PENDING_CANCEL = "pending_cancel"  # working; cancel sent, IB has not confirmed it
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # a DAY order at the close, "Cancelled by System"
    REJECTED = "rejected"  # refused by risk, the gateway or IB before it ever worked
    INACTIVE = "inactive"  # IB: Inactive

    @property
    def done(self) -> bool:
        return self in DONE

    @property
    def active(self) -> bool:
        return self not in DONE

    @property
    def uncertain(self) -> bool:
        """IB has not said where the order stands: a modify or cancel must wait for it."""
        return self in WAITING


class OrderEvent(str, Enum):
    SEND = "send"  # the place command went to the gateway
    ACCEPTED = "accepted"  # IB: PreSubmitted / Submitted / open order
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"  # the last fill: nothing remains
    MODIFY_SENT = "modify_sent"
    MODIFY_ACCEPTED = "modify_accepted"  # IB reports the order with the new terms
    MODIFY_REFUSED = "modify_refused"  # IB error (110...): the order keeps its old terms
    CANCEL_SENT = "cancel_sent"
    CANCEL_REFUSED = "cancel_refused"  # 10147/10148/161: still working, or already done
    CANCELLED = "cancelled"  # IB: Cancelled / ApiCancelled
    EXPIRED = "expired"  # IB: cancelled by the system at the end of its time in force
    REJECTED = "rejected"  # risk, the gateway, or IB refused the place
    INACTIVE = "inactive"  # IB: Inactive


S, E = OrderState, OrderEvent
DONE = frozenset({S.FILLED, S.CANCELLED, S.EXPIRED, S.REJECTED, S.INACTIVE})
WORKING = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED})
WAITING = frozenset({S.NEW, S.PENDING_SUBMIT, S.PENDING_MODIFY, S.PENDING_CANCEL})
DONE_VALUES = frozenset(s.value for s in DONE)

_working_rows: dict[tuple[OrderState, OrderEvent], OrderState] = {}
for _w in WORKING:
    _working_rows.update({
        (_w, E.ACCEPTED): _w,
        (_w, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
        (_w, E.FILL): S.FILLED,
        (_w, E.MODIFY_SENT): S.PENDING_MODIFY,
        (_w, E.CANCEL_SENT): S.PENDING_CANCEL,
        (_w, E.CANCELLED): S.CANCELLED,
        (_w, E.EXPIRED): S.EXPIRED,
        (_w, E.INACTIVE): S.INACTIVE,
        # a late refusal of an earlier modify/cancel: the order simply keeps working
        (_w, E.MODIFY_REFUSED): _w,
        (_w, E.CANCEL_REFUSED): _w,
    })
_working_rows[(S.SUBMITTED, E.REJECTED)] = S.REJECTED  # IB rejects an order it had accepted

#: (state, event) -> next state. A row whose target is ``None`` means "back to working":
#: SUBMITTED with nothing filled, PARTIALLY_FILLED otherwise (``next_state`` resolves it).
TRANSITIONS: dict[tuple[OrderState, OrderEvent], OrderState | None] = {
    (S.NEW, E.SEND): S.PENDING_SUBMIT,
    (S.NEW, E.REJECTED): S.REJECTED,
    (S.NEW, E.CANCELLED): S.CANCELLED,  # cancelled before it was ever sent
    (S.PENDING_SUBMIT, E.SEND): S.PENDING_SUBMIT,  # resent after a restart: the gateway dedupes
    (S.PENDING_SUBMIT, E.ACCEPTED): S.SUBMITTED,
    (S.PENDING_SUBMIT, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PENDING_SUBMIT, E.FILL): S.FILLED,
    (S.PENDING_SUBMIT, E.REJECTED): S.REJECTED,
    (S.PENDING_SUBMIT, E.CANCELLED): S.CANCELLED,
    (S.PENDING_SUBMIT, E.EXPIRED): S.EXPIRED,
    (S.PENDING_SUBMIT, E.INACTIVE): S.INACTIVE,
    (S.PENDING_SUBMIT, E.CANCEL_SENT): S.PENDING_CANCEL,
    **_working_rows,
    # new terms in flight: the old terms stay in force until IB confirms the new ones
    (S.PENDING_MODIFY, E.MODIFY_ACCEPTED): None,
    (S.PENDING_MODIFY, E.MODIFY_REFUSED): None,  # e.g. 110: the order works on, old terms
    (S.PENDING_MODIFY, E.ACCEPTED): S.PENDING_MODIFY,  # a status that says nothing of terms
    (S.PENDING_MODIFY, E.PARTIAL_FILL): S.PENDING_MODIFY,
    (S.PENDING_MODIFY, E.FILL): S.FILLED,  # filled before the modify landed
    (S.PENDING_MODIFY, E.CANCEL_SENT): S.PENDING_CANCEL,
    (S.PENDING_MODIFY, E.CANCELLED): S.CANCELLED,
    (S.PENDING_MODIFY, E.EXPIRED): S.EXPIRED,
    (S.PENDING_MODIFY, E.INACTIVE): S.INACTIVE,
    # a cancel in flight: fills still arrive; a refused cancel leaves the order working
    (S.PENDING_CANCEL, E.ACCEPTED): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.PARTIAL_FILL): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.FILL): S.FILLED,
    (S.PENDING_CANCEL, E.CANCEL_SENT): S.PENDING_CANCEL,  # repeated while unconfirmed
    (S.PENDING_CANCEL, E.CANCELLED): S.CANCELLED,
    (S.PENDING_CANCEL, E.EXPIRED): S.EXPIRED,
    (S.PENDING_CANCEL, E.INACTIVE): S.INACTIVE,
    (S.PENDING_CANCEL, E.CANCEL_REFUSED): None,
    (S.PENDING_CANCEL, E.MODIFY_REFUSED): S.PENDING_CANCEL,  # the modify before the cancel
    (S.PENDING_CANCEL, E.MODIFY_ACCEPTED): S.PENDING_CANCEL,
    # IB reports a fill that raced our cancel after the cancel: the fill wins
    (S.CANCELLED, E.PARTIAL_FILL): S.CANCELLED,
    (S.CANCELLED, E.FILL): S.FILLED,
    (S.EXPIRED, E.PARTIAL_FILL): S.EXPIRED,
    (S.EXPIRED, E.FILL): S.FILLED,
}


class IllegalTransition(ValueError):
    pass


def next_state(state: OrderState, event: OrderEvent, filled: float = 0.0) -> OrderState:
    """The state after ``event``; ``filled`` resolves "back to working". Raises
    ``IllegalTransition`` for a pair the table does not have."""
    try:
        target = TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state.value}") from None
    if target is None:
        return S.PARTIALLY_FILLED if filled > 0 else S.SUBMITTED
    return target


#: IB's orderStatus strings as events (Filled is decided by quantities, see execution)
IB_STATUS_EVENTS: dict[str, OrderEvent] = {
    "PreSubmitted": E.ACCEPTED,
    "Submitted": E.ACCEPTED,
    "ApiPending": E.ACCEPTED,
    "Cancelled": E.CANCELLED,
    "ApiCancelled": E.CANCELLED,
    "Inactive": E.INACTIVE,
    "PendingCancel": E.CANCEL_SENT,
}

#: IB error codes that refuse a *place* (the order never worked)
PLACE_REFUSED_CODES = frozenset({110, 200, 201, 203, 321, 355, 382, 383, 387, 388, 10052})
#: IB error codes that refuse a *cancel*: the order is still working, or already gone
CANCEL_REFUSED_CODES = frozenset({161, 10147, 10148})
#: IB error codes that are not about an order's fate (warnings, the cancel confirmation 202,
#: 103 for a place resent with the same id after a drop: IB already has the order)
ORDER_INFO_CODES = frozenset({103, 202, 399, 404, 2109, 2148, 10167, 10197})
