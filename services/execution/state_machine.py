"""The order state machine: every transition is a row of one table.

States follow the order's life as execution sees it; events are what can happen to it. A
transition not in the table is refused (and logged by the caller), never improvised.
"""
from __future__ import annotations

from enum import Enum


class OrderState(str, Enum):
    NEW = "new"
    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    INACTIVE = "inactive"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def uncertain(self) -> bool:
        """IB has not yet told us where the order stands: modify and cancel must wait."""
        return self in (OrderState.NEW, OrderState.PENDING_SUBMIT, OrderState.PENDING_CANCEL)


class Event(str, Enum):
    SEND = "send"  # the place command went to the gateway
    ACCEPTED = "accepted"  # IB: PreSubmitted / Submitted
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"  # the last fill: nothing remains
    CANCEL_SENT = "cancel_sent"
    CANCELLED = "cancelled"  # IB: Cancelled / ApiCancelled, or error 202
    REJECTED = "rejected"  # risk, the gateway, or IB (201, 110, ...)
    INACTIVE = "inactive"  # IB: Inactive


S, E = OrderState, Event
TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.INACTIVE})

TRANSITIONS: dict[tuple[OrderState, Event], OrderState] = {
    (S.NEW, E.SEND): S.PENDING_SUBMIT,
    (S.NEW, E.REJECTED): S.REJECTED,
    (S.NEW, E.CANCELLED): S.CANCELLED,  # cancelled before it was ever sent
    (S.PENDING_SUBMIT, E.SEND): S.PENDING_SUBMIT,  # resent after a restart: gateway dedupes
    (S.PENDING_SUBMIT, E.ACCEPTED): S.SUBMITTED,
    (S.PENDING_SUBMIT, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PENDING_SUBMIT, E.FILL): S.FILLED,
    (S.PENDING_SUBMIT, E.REJECTED): S.REJECTED,
    (S.PENDING_SUBMIT, E.CANCELLED): S.CANCELLED,
    (S.PENDING_SUBMIT, E.INACTIVE): S.INACTIVE,
    (S.PENDING_SUBMIT, E.CANCEL_SENT): S.PENDING_CANCEL,
    (S.SUBMITTED, E.ACCEPTED): S.SUBMITTED,
    (S.SUBMITTED, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.SUBMITTED, E.FILL): S.FILLED,
    (S.SUBMITTED, E.CANCEL_SENT): S.PENDING_CANCEL,
    (S.SUBMITTED, E.CANCELLED): S.CANCELLED,
    (S.SUBMITTED, E.REJECTED): S.REJECTED,
    (S.SUBMITTED, E.INACTIVE): S.INACTIVE,
    (S.PARTIALLY_FILLED, E.ACCEPTED): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, E.CANCEL_SENT): S.PENDING_CANCEL,
    (S.PARTIALLY_FILLED, E.CANCELLED): S.CANCELLED,
    (S.PARTIALLY_FILLED, E.INACTIVE): S.INACTIVE,
    (S.PENDING_CANCEL, E.ACCEPTED): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.PARTIAL_FILL): S.PENDING_CANCEL,  # fills still arrive while cancelling
    (S.PENDING_CANCEL, E.FILL): S.FILLED,
    (S.PENDING_CANCEL, E.CANCELLED): S.CANCELLED,
    (S.PENDING_CANCEL, E.CANCEL_SENT): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.INACTIVE): S.INACTIVE,
    (S.PENDING_CANCEL, E.REJECTED): S.PENDING_CANCEL,  # a refused cancel (10148): wait for IB
    # IB can report fills after we saw a cancel (the fill raced it): the fill wins
    (S.CANCELLED, E.PARTIAL_FILL): S.CANCELLED,
    (S.CANCELLED, E.FILL): S.FILLED,
}


class IllegalTransition(ValueError):
    pass


def next_state(state: OrderState, event: Event) -> OrderState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state.value}") from None


# IB's orderStatus strings, as events
IB_STATUS_EVENTS: dict[str, Event] = {
    "PreSubmitted": Event.ACCEPTED,
    "Submitted": Event.ACCEPTED,
    "ApiPending": Event.ACCEPTED,
    "Cancelled": Event.CANCELLED,
    "ApiCancelled": Event.CANCELLED,
    "Inactive": Event.INACTIVE,
    "PendingCancel": Event.CANCEL_SENT,
}
