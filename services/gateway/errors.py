"""IB's error codes, classified once: what an error means for the connection.

``classify(code)`` answers with a ``Kind``; ``error_router`` routes by it. The req_id tells
*which* owner (a subscription by request id, an order by order id); the code tells what it
means. No code says what became of an order (IB refuses a modify with 110 and the order keeps
working): order errors are reported, never acted on.
"""
from __future__ import annotations

import enum


class Kind(str, enum.Enum):
    LINK_LOST = "link_lost"            # 1100: TWS lost IB; socket is still up
    LINK_RESTORED_LOST = "restored_lost"   # 1101: back, market data subscriptions lost
    LINK_RESTORED_KEPT = "restored_kept"   # 1102: back, data kept
    FARM_DOWN = "farm_down"            # 2103 (market data farm broken)
    FARM_UP = "farm_up"                # 2104
    FARM_INFO = "farm_info"            # other farm status (HMDS, sec-def): state only
    CLIENT_ID_IN_USE = "client_id_in_use"  # 326
    CONNECTION = "connection"          # socket-level errors reported by ibapi
    PACING = "pacing"                  # 100: max rate exceeded
    INFO = "info"                      # informational, not an error
    WARNING = "warning"                # a warning to publish, but no owner action
    REQUEST = "request"                # an error about a request: route by req_id


FARM_DOWN_CODES = frozenset({2103})
FARM_UP_CODES = frozenset({2104})
FARM_INFO_CODES = frozenset({2105, 2106, 2107, 2108, 2157, 2158, 2119})
INFO_CODES = frozenset({2100, 2150, 2168, 2169, 2109, 2137, 2170, 399, 10167, 10197})
CONNECTION_CODES = frozenset({502, 503, 504, 507, 509, 1300, 2110})
#: codes about an order: published with scope "order" even when the id is not one of ours
ORDER_ERROR_CODES = frozenset({103, 110, 135, 161, 200, 201, 202, 203, 321, 10147, 10148})
#: a market data request without the account's permission (docs/gateway.md, "Market data
#: type"): 354 not subscribed, 10089 needs an API subscription (the request stays open and
#: silent), 10167 displaying delayed data (an advisory: delayed ticks follow), 10168 not
#: subscribed and delayed data not enabled; routed to market data before anything else
MARKET_DATA_PERMISSION_CODES = frozenset({354, 10089, 10167, 10168})
#: errors for a market data request that mean the subscription is dead at IB
SUBSCRIPTION_DEAD_CODES = frozenset({101, 200, 300, 309, 310, 321, 322, 354, 10090, 10190, 10168})


def classify(code: int) -> Kind:
    if code == 1100:
        return Kind.LINK_LOST
    if code == 1101:
        return Kind.LINK_RESTORED_LOST
    if code == 1102:
        return Kind.LINK_RESTORED_KEPT
    if code in FARM_DOWN_CODES:
        return Kind.FARM_DOWN
    if code in FARM_UP_CODES:
        return Kind.FARM_UP
    if code in FARM_INFO_CODES:
        return Kind.FARM_INFO
    if code == 326:
        return Kind.CLIENT_ID_IN_USE
    if code in CONNECTION_CODES:
        return Kind.CONNECTION
    if code == 100:
        return Kind.PACING
    if code in INFO_CODES:
        return Kind.INFO
    if 2100 <= code < 2200:  # IB's warning range
        return Kind.WARNING
    return Kind.REQUEST
