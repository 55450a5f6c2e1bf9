"""The strategy API reference, generated from the code's docstrings and the bus schema.

``python -m services.strategy.apidoc > docs/strategy_api.md``; a test checks that the
committed page is what this prints, so the page cannot drift from the code.
"""
from __future__ import annotations

import inspect
import re
import sys
from typing import Any

import msgspec

from proto import schema
from services.strategy import account, bars, clock, handle
from services.strategy.base import Strategy

#: the Strategy's public names by section, in reading order
SECTIONS: list[tuple[str, list[str]]] = [
    ("Callbacks (override)", ["on_start", "on_tick", "on_quote", "on_trade", "on_depth",
                              "on_bar", "on_order_update", "on_fill", "on_rejected",
                              "on_timer", "on_market_open", "on_market_close", "on_stop"]),
    ("Market data", ["subscribe", "subscribe_bars", "history"]),
    ("Orders", ["submit", "bracket", "modify", "cancel", "flatten", "target_position",
                "submit_bracket"]),
    ("Timers", ["every", "at"]),
    ("State", ["position", "orders", "order", "open_orders", "handle", "handles", "pnl",
               "account", "calendar", "mids", "book", "instrument", "paused", "params",
               "symbols", "name", "log"]),
]
ATTRIBUTES = {
    "handles": "``OrderedDict[str, OrderHandle]``: every order of this run by client order "
               "id, open or done (the last 10,000 finished ones are kept).",
    "account": "``Account``: the account's values as IB reports them (below).",
    "calendar": "``TradingCalendar``: the session ``on_market_open``/``on_market_close`` and "
                "``at(..., trading_days_only=True)`` follow; replace it in ``__init__`` or "
                "``on_start`` (before timers are made) for another market.",
    "mids": "``dict[str, float]``: the last mid per symbol, from ticks, quotes or depth.",
    "paused": "``bool``: risk's trading state says no (paused, halted, errored): nothing is "
              "sent, not even a cancel; ``submit`` & co. return None.",
    "params": "``dict``: the ``[params]`` table of the strategy's TOML.",
    "symbols": "``list[str]``: the ``symbols`` of the strategy's TOML.",
    "name": "``str``: the strategy's name (its TOML ``name``), the prefix of its order ids.",
    "log": "``logging.Logger``: lines go to the strategy's JSON log (``ibfleet logs``).",
}
MESSAGES = [schema.Bar, schema.Tick, schema.QuoteTick, schema.TradeTick, schema.DepthUpdate,
            schema.OrderUpdate, schema.RiskDecision, schema.StrategyPosition,
            schema.AccountValue, schema.Commission]
#: units and meanings of fields the schema's comments leave implicit
FIELD_NOTES = {
    "symbol": "the instrument's symbol (``AAPL``)",
    "start_ns": "start of the bar, ns since the epoch (UTC)",
    "seconds": "bar size in seconds (5 for IB's real-time bars, 60 for 1 min...)",
    "open": "price", "high": "price", "low": "price", "close": "price",
    "volume": "shares traded in the bar (``Tick``: cumulative for the day)",
    "wap": "volume-weighted average price", "count": "number of trades",
    "bid": "price", "ask": "price", "bid_size": "shares", "ask_size": "shares",
    "last": "last trade price (NaN: none yet)", "last_size": "shares",
    "price": "price", "size": "shares",
    "position": "row of the book, 0 = best", "operation": "0 insert, 1 update, 2 delete",
    "side": "``BUY``/``SELL`` (``DepthUpdate``: 0 ask, 1 bid)",
    "strategy": "the strategy's name", "client_order_id": "the order's id (``OrderHandle``)",
    "state": "execution's order state (``OrderHandle.status``)",
    "quantity": "shares, > 0 (``StrategyPosition``: signed)",
    "filled": "cumulative shares filled", "avg_fill_price": "price",
    "limit_price": "price (NaN: none)", "stop_price": "trigger price (NaN: none)",
    "order_type": "``LMT``, ``MKT``, ``STP``, ``STP LMT``", "ib_order_id": "IB's order id",
    "parent_id": "client order id of the bracket parent", "exec_id": "IB's execution id "
    "(set on a fill)", "last_fill_qty": "shares in this fill", "last_fill_price": "price",
    "reason": "why (a refusal's text, IB's message)", "tif": "``DAY``, ``GTC``, ``IOC``",
    "oca_group": "one-cancels-all group", "approved": "risk's answer",
    "text": "the reason for a human", "avg_cost": "price per share",
    "realized": "money, net of commissions", "commissions": "money",
    "realized_day": "money, net, this trading day", "trading_day": "ISO date",
    "multiplier": "contract multiplier", "account": "IB account code", "key": "IB's key "
    "(``NetLiquidation``...)", "value": "IB's text", "currency": "ISO code",
    "commission": "money, account currency", "realized_pnl": "IB's number (NaN: none)",
    "exch_ts": "exchange time, ns (0: unknown)", "exchange": "IB's exchange code",
    "delayed": "IB's delayed data (15-20 min late)", "market_maker": "IB's MM id",
    "smart_depth": "SMART depth row", "request": "historical request id ('' for live bars)",
    "owner": "'' this strategy's; 'external' adopted from IB",
}
SKIP_FIELDS = {"v", "src", "seq", "tseq", "ts"}
MESSAGE_DOCS = {"Bar": "A bar: IB's 5-second real-time bar, a historical bar, or one of the "
                       "sizes ``services.strategy.bars`` builds (``on_bar``)."}


def _doc(obj: Any) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no description)")


def _signature(name: str, fn: Any) -> str:
    try:
        sig = str(inspect.signature(fn, eval_str=True))
    except (NameError, TypeError):
        sig = str(inspect.signature(fn))
    sig = sig.replace("(self, ", "(").replace("(self)", "()")
    sig = re.sub(r"\b(?:[a-z_]+\.)+([A-Z]\w*)", r"\1", sig)  # proto.schema.Bar -> Bar
    return f"{name}{sig}"


def _strategy() -> list[str]:
    out = []
    for title, names in SECTIONS:
        out += [f"### {title}", ""]
        for name in names:
            member = inspect.getattr_static(Strategy, name, None)
            if member is None:
                out += [f"- **`{name}`**: {ATTRIBUTES[name]}", ""]
            elif isinstance(member, property):
                out += [f"#### `{name}` (property)", "", _doc(member), ""]
            else:
                out += [f"#### `{_signature(name, member)}`", "", _doc(member), ""]
    return out


def _class(cls: type, members: list[str] = ()) -> list[str]:
    out = [f"### `{cls.__name__}`", "", _doc(cls), ""]
    for name in members:
        member = inspect.getattr_static(cls, name)
        if isinstance(member, property):
            out += [f"- `{name}` (property): {_doc(member)}"]
        else:
            out += [f"- `{_signature(name, member)}`: {_doc(member)}"]
    return out + [""] if members else out


def _comments(cls: type) -> dict[str, str]:
    """Trailing ``# comments`` (and ``#:`` lines) of the class body's field lines."""
    notes: dict[str, str] = {}
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return notes
    pending = ""
    for line in lines:
        m = re.match(r"\s+#:\s?(.*)", line)
        if m:
            pending = (pending + " " + m.group(1)).strip()
            continue
        m = re.match(r"\s+(\w+)\s*:[^#]*(?:#\s?(.*))?$", line)
        if m:
            notes[m.group(1)] = (m.group(2) or pending or "").lstrip(":").strip()
        pending = ""
    return notes


def _dataclass_fields(cls: type) -> list[str]:
    notes = _comments(cls)
    out = [f"### `{cls.__name__}`", "", _doc(cls), "", "| field | type | meaning |",
           "|---|---|---|"]
    for name, typ in cls.__annotations__.items():
        out.append(f"| `{name}` | `{_type(typ)}` | {notes.get(name, '')} |")
    return out + [""]


def _type(typ: Any) -> str:
    typ = getattr(typ, "__forward_arg__", typ)
    text = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    return str(text).replace("typing.", "").replace("|", "or")


def _message(cls: type) -> list[str]:
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, msgspec.Struct):
            notes.update({k: v for k, v in _comments(klass).items() if v})
    doc = cls.__dict__.get("__doc__") or MESSAGE_DOCS.get(cls.__name__, "")
    out = [f"### `{cls.__name__}` (`{cls.TOPIC}`)", "", inspect.cleandoc(doc), "",
           "| field | type | default | meaning |", "|---|---|---|---|"]
    for field in msgspec.structs.fields(cls):
        if field.name in SKIP_FIELDS:
            continue
        default = "" if field.default is msgspec.NODEFAULT else repr(field.default)
        meaning = notes.get(field.name) or FIELD_NOTES.get(field.name, "")
        out.append(f"| `{field.name}` | `{_type(field.type)}` | {default} | {meaning} |")
    return out + [""]


def render() -> str:
    out = ["# Strategy API reference", "",
           "<!-- generated by `python -m services.strategy.apidoc > docs/strategy_api.md` from "
           "the docstrings; tests/strategy/test_api.py checks it is current: edit the code, "
           "not this page -->", "",
           "Prices are in the instrument's currency, quantities in shares (contracts), times "
           "in nanoseconds since the epoch (UTC) from the host's clock: the wall clock live, "
           "the recording's in a backtest. A refused order term raises "
           "`services.model.orders.InvalidOrder` (a `ValueError`) and sends nothing.", "",
           "## `Strategy` (`services.strategy.Strategy`)", "", _doc(sys.modules[
               Strategy.__module__]), "", *_strategy(),
           "## Order handles (`services.strategy.handle`)", "",
           *_class(handle.OrderHandle, ["on", "remaining", "done", "active", "commission",
                                        "signed_remaining"]),
           *_dataclass_fields(handle.Fill), *_dataclass_fields(handle.OrderEvent),
           "## Account (`services.strategy.account`)", "", *_class(account.Account), "",
           f"Keys every source provides: {', '.join(f'`{k}`' for k in account.COMMON_KEYS)}.",
           "",
           "## Bars (`services.strategy.bars`)", "", _doc(bars), "",
           f"Bar sizes: {', '.join(f'`{k}`' for k in bars.BAR_SIZES)}.", "",
           f"- `{_signature('bar_seconds', bars.bar_seconds)}`: {_doc(bars.bar_seconds)}", "",
           "## Timers and calendar (`services.strategy.clock`)", "", _doc(clock), "",
           *_class(clock.Timer, ["cancel"]),
           *_class(clock.TradingCalendar, ["is_open", "is_trading_day", "next_event"]),
           "## Messages a strategy receives (`proto/schema.py`)", "",
           "Fields `v, src, seq, tseq, ts` (schema version, publisher, sequence numbers, "
           "publish time) are on every message and left out below.", ""]
    for cls in MESSAGES:
        out += _message(cls)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
