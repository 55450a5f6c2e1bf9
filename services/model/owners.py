"""Who owns an order or a position besides the strategies, and what the kill switch keeps.

Owners (execution's books, ``ord.update.OWNER``):

- a strategy's name (``services.strategy.config``: a strategy may not take a reserved name);
- ``external``: orders and positions execution did not make (adopted from IB);
- ``unowned``: what ``ibfleet strategy remove NAME --keep`` handed over from a removed
  strategy (its position, its working orders, its PnL). No strategy may trade it: risk
  refuses every intent for it; its orders are watched and cancelled by the kill switch as
  any strategy's (its protective exits kept under ``keep_exits``).

Kill modes (a strategy TOML's top-level ``on_kill``; risk forwards each strategy's mode with
the kill, execution applies it):

- ``keep_exits`` (the default): entries are cancelled, protective exits stay working
  (``protective_exits``);
- ``cancel_all``: every order of the strategy is cancelled;
- ``flatten``: every order cancelled, then the position closed at market.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

EXTERNAL = "external"
UNOWNED = "unowned"
RESERVED_OWNERS = frozenset({EXTERNAL, UNOWNED})

KEEP_EXITS, CANCEL_ALL, FLATTEN = "keep_exits", "cancel_all", "flatten"
KILL_MODES = (KEEP_EXITS, CANCEL_ALL, FLATTEN)
DEFAULT_KILL_MODE = KEEP_EXITS
EPSILON = 1e-9


def kill_mode(modes: dict[str, str], owner: str) -> str:
    """The kill mode of ``owner``: ``external`` orders are always cancelled (nobody in the
    fleet protects a position with them); a strategy (or ``unowned``) not named, or named
    with a mode this version does not know, gets the default."""
    if owner == EXTERNAL:
        return CANCEL_ALL
    mode = modes.get(owner, DEFAULT_KILL_MODE)
    return mode if mode in KILL_MODES else DEFAULT_KILL_MODE


@dataclass(frozen=True)
class WorkingOrder:
    """What ``protective_exits`` needs of one working order (execution's ``ManagedOrder``).

    ``side`` ``BUY``/``SELL``; ``remaining`` its quantity not filled yet; ``group`` the orders
    of which at most one can fill (an OCA group, a bracket's children: the parent's id),
    else its own id; ``parent_working``: it is a child whose parent has not filled entirely
    (its parent is an entry still working: the child is then part of the entry)."""

    client_order_id: str
    owner: str
    symbol: str
    side: str
    remaining: float
    group: str
    parent_working: bool = False


def protective_exits(orders: Iterable[WorkingOrder],
                     position: Callable[[str, str], float]) -> set[str]:
    """The client order ids among ``orders`` (in the order given: the oldest first) that
    protect a position: the child of a filled parent, or any order, on the side that reduces
    its owner's position in its symbol (``position(owner, symbol)``, signed), whose remaining
    quantity fits within what is still unprotected. A group (OCA, a bracket's stop and target)
    counts once, by its largest member; an order that could take the position through zero,
    or that belongs to an entry still working, is not an exit."""
    kept: set[str] = set()
    covered: dict[tuple[str, str], float] = {}  # (owner, symbol) -> quantity protected
    groups: dict[tuple[str, str, str], float] = {}  # (owner, symbol, group) -> its largest
    for order in orders:
        if order.parent_working or order.remaining <= EPSILON:
            continue
        held = position(order.owner, order.symbol)
        if abs(held) <= EPSILON or (held > 0) == (order.side == "BUY"):
            continue  # flat, or on the side that adds
        key = (order.owner, order.symbol)
        gkey = (order.owner, order.symbol, order.group)
        already = groups.get(gkey, 0.0)
        extra = max(0.0, order.remaining - already)
        if covered.get(key, 0.0) + extra > abs(held) + EPSILON:
            continue
        covered[key] = covered.get(key, 0.0) + extra
        groups[gkey] = max(already, order.remaining)
        kept.add(order.client_order_id)
    return kept
