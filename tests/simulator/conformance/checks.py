"""The checks a replay must pass, each a function returning its problems (an empty list: the
simulator answered as IB did on that point). What each check compares, and the rule for
messages the simulator sends beyond the transcript's:

- ``handshake``: the server version; the connection time written ``yyyymmdd hh:mm:ss ZONE`` with
  the gateway host's zone name exactly as the capture (a Windows name such as "Central European
  Standard Time", or "US/Eastern", "CET"), read by the bridge's own parser
  (services/gateway/ib_time.py) to an instant within 5 minutes of the simulator's clock;
  managedAccounts; a nextValidId; after a reconnect of the same client, a nextValidId above every
  id it used.
- ``farm``: the farm-status messages after the handshake, by farm: each farm the capture reports
  (2103/2104 market data, 2105/2106/2107 HMDS, 2157/2158 sec-def) is reported by the simulator.
- ``kinds``: each step's answers in order: every message of the transcript has a counterpart in
  the simulator's answers of the same kind and key (order id; request id; an error's request id
  and code), in the same order (a subsequence). Between them the simulator may send only
  messages IB sends there too but the transcripts (whose recorder kept what its test used) left
  out: a commissionAndFeesReport (IB sends one per execution: api_pairs_trading_aapl_msft),
  openOrder again for an order already opened (api_stop_loss_management_aapl has one before
  Filled), orderStatus after each openOrder of a reqOpenOrders/reqAllOpenOrders answer (the TWS
  API's documented pair), farm-status errors and market data. Any other extra message (a status,
  an error, a bar) is a problem.
- ``statuses``: each order's orderStatus sequence over the whole session, as IB sent it
  (answers to reqOpenOrders excluded on both sides: they repeat, they do not move).
- ``errors``: each step's errors other than farm statuses: request id, code and text.
- ``fields``: of each matched pair, the fields a client reads (per kind: `FIELDS`); values that
  depend on the market or the account's history (fill prices, permIds, execIds, account values)
  are checked for their form, not their value.
- ``zones``: execution times and completedTime in the account's zone (``yyyymmdd hh:mm:ss
  US/Eastern``, as the captured frames write them) and at the right instant; historical bar
  times in the zone the capture shows.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Callable

from services.gateway import ib_time

from .driver import FARM_CODES, Msg, Replay, align, expected_messages

#: the account's zone as IB writes it in execution times and completedTime (the G200 frames in
#: ../shared/fixtures/tws/frames.jsonl and the completedOrder frame of
#: completed_orders_cancelled_system_live.txt write "US/Eastern")
ACCOUNT_ZONE = "US/Eastern"
CLOCK_SLACK_S = 300

FARMS = {2103: "market data", 2104: "market data", 2105: "HMDS", 2106: "HMDS", 2107: "HMDS",
         2157: "sec-def", 2158: "sec-def"}
IB_TIME = re.compile(r"^\d{8} \d{2}:\d{2}:\d{2} (.+)$")
EXEC_ID = re.compile(r"^[0-9a-f]{8}\.[0-9a-f]{8}\.01\.\d{2}$")

CONTRACT = ("con_id", "symbol", "sec_type", "exchange", "currency", "local_symbol", "trading_class")
#: per kind, the fields compared for equality (``contract.x``: a field of the contract block)
FIELDS: dict[str, tuple[str, ...]] = {
    "open_order": ("order_id", "account", *(f"contract.{c}" for c in CONTRACT), "action",
                   "order_type", "quantity", "lmt_price", "aux_price", "tif", "client_id", "status"),
    "order_status": ("order_id", "filled", "remaining", "parent_id", "client_id", "why_held",
                     "mkt_cap_price"),
    "execution_detail": ("req_id", "order_id", "account", "symbol", "side", "shares"),
    "commission_report": ("currency",),
    "api_error": ("req_id", "code", "advanced_order_reject_json"),
    "contract_details": ("req_id", *(f"contract.{c}" for c in CONTRACT), "contract.primary_exchange",
                         "market_name", "min_tick", "long_name", "time_zone_id"),
    "contract_details_end": ("req_id",),
    "account_summary": ("req_id", "account", "tag", "currency"),
    "account_summary_end": ("req_id",),
    "historical_bar": ("req_id",),
    "historical_bars_end": ("req_id",),
    "historical_schedule": ("req_id", "time_zone", "start_date_time", "end_date_time"),
    "completed_order": (*(f"contract.{c}" for c in CONTRACT), "action", "order_type", "quantity",
                        "lmt_price", "aux_price", "tif", "account", "filled_quantity", "status",
                        "completed_status"),
}
#: texts whose *text* is compared exactly (a number as "10.00" vs "10.0" matters there)
TEXT_FIELDS = {("open_order", "lmt_price"), ("open_order", "aux_price")}
#: prices that depend on the market: both zero, or both positive
MARKET_PRICES = {"order_status": ("avg_fill_price", "last_fill_price"),
                 "execution_detail": ("price",), "commission_report": ("commission",)}


def _get(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return KeyError
        value = value[part]
    return value


def same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _instant_s(text: str) -> float | None:
    try:
        return ib_time.to_ns(text) / 1e9
    except ValueError:
        return None


class Context:
    """A replay with what the checks need: the expected messages per step, the simulator's
    clock and the account's zone."""

    def __init__(self, replay: Replay, sim_time: float, account_zone: str = ACCOUNT_ZONE) -> None:
        self.replay = replay
        self.sim_time = sim_time
        self.account_zone = account_zone
        self.expected: list[list[list[Msg]]] = [
            [expected_messages(step, replay.req_ids) for step in run.leg.steps]
            for run in replay.legs]

    def steps(self):
        """(leg index, step index, the step, expected messages, actual messages)."""
        for li, run in enumerate(self.replay.legs):
            for si, step in enumerate(run.leg.steps):
                yield li, si, step, self.expected[li][si], run.steps[si]

    def pairs(self):
        """Every matched (expected, actual) pair with its place."""
        for li, si, step, exp, act in self.steps():
            for e, i in zip(exp, align(exp, act)):
                if i is not None:
                    yield f"leg {li} step {si} {'+'.join(step.verbs)}", e, act[i]


# ---------------------------------------------------------------------------- checks
def check_handshake(ctx: Context) -> list[str]:
    problems: list[str] = []
    used: dict[int, int] = defaultdict(int)
    for li, run in enumerate(ctx.replay.legs):
        hs = run.leg.handshake
        if run.server_version != hs["server_version"]:
            problems.append(f"leg {li}: server version {run.server_version}, IB {hs['server_version']}")
        m = IB_TIME.match(run.connection_time)
        if not m:
            problems.append(f"leg {li}: connection time {run.connection_time!r} is not 'yyyymmdd hh:mm:ss ZONE'")
        else:
            if m.group(1) != run.leg.connection_zone:
                problems.append(f"leg {li}: connection time zone {m.group(1)!r}, IB {run.leg.connection_zone!r}")
            at = _instant_s(run.connection_time)
            if at is None:
                problems.append(f"leg {li}: the bridge cannot read the connection time {run.connection_time!r}")
            elif abs(at - ctx.sim_time) > CLOCK_SLACK_S:
                problems.append(f"leg {li}: connection time {run.connection_time!r} is "
                                f"{at - ctx.sim_time:+.0f} s off the simulator's clock")
        accounts = [m.data["accounts"] for m in run.greeting if m.kind == "managed_accounts"]
        want = run.leg.greeting_value("managed_accounts")
        if want is not None and accounts != [want["accounts"]]:
            problems.append(f"leg {li}: managedAccounts {accounts}, IB {want['accounts']}")
        ids = [m.data["order_id"] for m in run.greeting if m.kind == "next_valid_id"]
        if len(ids) != 1:
            problems.append(f"leg {li}: {len(ids)} nextValidId at connect, IB 1")
        elif used[run.client_id] and ids[0] <= used[run.client_id]:
            problems.append(f"leg {li}: reconnect of client {run.client_id}: nextValidId {ids[0]} "
                            f"is not above its used id {used[run.client_id]}")
        for step in run.leg.steps:
            for line in step.clients:
                if line.verb == "place_order":
                    used[run.client_id] = max(used[run.client_id], int(line.payload["order_id"]))
    return problems


def check_farm(ctx: Context) -> list[str]:
    problems: list[str] = []
    for li, run in enumerate(ctx.replay.legs):
        want = {FARMS[int(line.payload["code"])] for line in run.leg.greeting
                if line.verb == "api_error" and int(line.payload["code"]) in FARMS}
        got = {FARMS[m.data["code"]] for m in run.greeting
               if m.kind == "api_error" and m.data["code"] in FARMS}
        for farm in sorted(want - got):
            problems.append(f"leg {li}: no {farm} farm status, IB sent one")
    return problems


def _allowed_extra(msg: Msg, verbs: list[str], opened: set[int]) -> bool:
    if msg.kind in ("commission_report", "market_data"):
        return True
    if msg.kind == "api_error" and msg.data["code"] in FARM_CODES:
        return True
    if msg.kind == "open_order" and msg.data["order_id"] in opened:
        return True
    if msg.kind == "order_status" and "req_open_orders" in verbs:
        return True
    return False


def check_kinds(ctx: Context) -> list[str]:
    problems: list[str] = []
    for li, run in enumerate(ctx.replay.legs):
        opened: set[int] = set()
        for si, step in enumerate(run.leg.steps):
            exp, act = ctx.expected[li][si], run.steps[si]
            where = f"leg {li} step {si} {'+'.join(step.verbs)}"
            idx = align(exp, act)
            for e, i in zip(exp, idx):
                if i is None:
                    problems.append(f"{where}: no {e!r} (IB sent it)")
            matched = {i for i in idx if i is not None}
            extras: list[str] = []
            for i, m in enumerate(act):
                if i not in matched and not _allowed_extra(m, step.verbs, opened):
                    extras.append(repr(m))
                if m.kind == "open_order":
                    opened.add(m.data["order_id"])
            for text in dict.fromkeys(extras):          # one problem per kind of extra, counted
                n = extras.count(text)
                problems.append(f"{where}: extra {text}" + (f" x{n}" if n > 1 else ""))
    return problems


def _statuses(steps: list[tuple[list[str], list[Msg]]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for verbs, msgs in steps:
        if "req_open_orders" in verbs:
            continue
        for m in msgs:
            if m.kind == "order_status":
                out[int(m.data["order_id"])].append(m.data["status"])
    return out


def check_statuses(ctx: Context) -> list[str]:
    exp = _statuses([(s.verbs, e) for _, _, s, e, _ in ctx.steps()])
    act = _statuses([(s.verbs, a) for _, _, s, _, a in ctx.steps()])
    return [f"order {oid}: IB {exp.get(oid, [])}, simulator {act.get(oid, [])}"
            for oid in sorted(set(exp) | set(act)) if exp.get(oid, []) != act.get(oid, [])]


def check_errors(ctx: Context) -> list[str]:
    problems: list[str] = []
    for li, si, step, exp, act in ctx.steps():
        def errs(msgs: list[Msg]) -> list[tuple[int, int, str]]:
            return [(int(m.data["req_id"]), int(m.data["code"]), m.data["message"]) for m in msgs
                    if m.kind == "api_error" and int(m.data["code"]) not in FARM_CODES]
        if errs(exp) != errs(act):
            problems.append(f"leg {li} step {si} {'+'.join(step.verbs)}: IB errors {errs(exp)}, "
                            f"simulator {errs(act)}")
    return problems


def check_fields(ctx: Context) -> list[str]:
    problems: list[str] = []
    greet_ids = [next((m.data["order_id"] for m in run.greeting if m.kind == "next_valid_id"), None)
                 for run in ctx.replay.legs]
    for where, e, a in ctx.pairs():
        for name in FIELDS.get(e.kind, ()):
            want = _get(e.data, name)
            if want is KeyError:
                continue                       # not in the capture: nothing to compare
            got = _get(a.data, name)
            ok = str(want) == str(got) if (e.kind, name) in TEXT_FIELDS else same(want, got)
            if not ok:
                problems.append(f"{where}: {e.kind} {e.key} {name}: IB {want!r}, simulator {got!r}")
        for name in MARKET_PRICES.get(e.kind, ()):
            want, got = _get(e.data, name), _get(a.data, name)
            if want is not KeyError and (float(want) == 0) != (float(got) == 0):
                problems.append(f"{where}: {e.kind} {e.key} {name}: IB {want!r}, simulator {got!r}")
        if "perm_id" in e.data and (int(e.data["perm_id"]) > 0) != (int(a.data.get("perm_id") or 0) > 0):
            problems.append(f"{where}: {e.kind} {e.key} permId {a.data.get('perm_id')!r}")
        if e.kind == "execution_detail" and not EXEC_ID.match(str(a.data["exec_id"])):
            problems.append(f"{where}: execId {a.data['exec_id']!r} is not IB's form")
        if e.kind == "account_summary":
            try:
                float(a.data["value"])
            except ValueError:
                problems.append(f"{where}: account summary {a.data['tag']} value {a.data['value']!r}")
        if e.kind == "current_time" and abs(float(a.data["time"]) - ctx.sim_time) > CLOCK_SLACK_S:
            problems.append(f"{where}: currentTime {a.data['time']} is off the simulator's clock "
                            f"{ctx.sim_time:.0f}")
        if e.kind == "next_valid_id":
            li = int(where.split()[1])
            run = ctx.replay.legs[li]
            want_greet = run.leg.greeting_value("next_valid_id")["order_id"]
            if a.data["order_id"] - greet_ids[li] != int(e.data["order_id"]) - int(want_greet):
                problems.append(f"{where}: nextValidId {a.data['order_id']} after {greet_ids[li]} "
                                f"at connect; IB {e.data['order_id']} after {want_greet}")
    return problems


def check_zones(ctx: Context) -> list[str]:
    problems: list[str] = []
    bars_seen: set[str] = set()
    for where, e, a in ctx.pairs():
        if e.kind == "execution_detail":
            text = a.data["time"]
            m = IB_TIME.match(text)
            if not m or m.group(1) != ctx.account_zone:
                problems.append(f"{where}: execution time {text!r} is not in the account's zone "
                                f"{ctx.account_zone!r}")
            else:
                at = _instant_s(text)
                if at is None or abs(at - ctx.sim_time) > CLOCK_SLACK_S:
                    problems.append(f"{where}: execution time {text!r} is off the simulator's clock")
        elif e.kind == "completed_order":
            want, got = IB_TIME.match(e.data["completed_time"]), IB_TIME.match(a.data["completed_time"])
            if not got or want.group(1) != got.group(1):
                problems.append(f"{where}: completedTime {a.data['completed_time']!r}, IB writes "
                                f"{e.data['completed_time']!r}")
        elif e.kind == "historical_bar":
            want, got = IB_TIME.match(e.data["time"]), IB_TIME.match(str(a.data["time"]))
            if want and (not got or got.group(1) != want.group(1)) and where not in bars_seen:
                bars_seen.add(where)
                problems.append(f"{where}: bar time {a.data['time']!r}, IB writes {e.data['time']!r}")
    return problems


CHECKS: dict[str, Callable[[Context], list[str]]] = {
    "handshake": check_handshake, "farm": check_farm, "kinds": check_kinds,
    "statuses": check_statuses, "errors": check_errors, "fields": check_fields,
    "zones": check_zones,
}
