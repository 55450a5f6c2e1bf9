"""Conformance with the captures (issue 13, build item 1): for each transcript in
../shared/fixtures/tws/transcripts (a live paper IB Gateway at server version 200), replay the
client's requests through ibapi's EClient against a simulator process and check its answers on
the points that matter (checks.py: handshake, farm, kinds, statuses, errors, fields, zones).

A check that finds a difference fails the test unless the difference is listed in
`EXPECTED_DIFFERENCES` with the row of the fidelity table in docs/simulator.md that gives its
reason; a listed difference that no longer shows fails too (remove it from the table and the
docs), so nothing passes silently.

The simulator of each replay is configured as the captured gateway was: the account code of its
managedAccounts, the host zone of its connection time (``--host-zone``), the account zone IB
writes execution times in (``--time-zone US/Eastern``), server version 200, and, where the
capture shows a paper account without live API data, ``--market-data delayed``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import wait_for

from . import checks
from .driver import Conn, _contract_of, _order_of, replay
from .transcript import load

ROOT = Path(__file__).resolve().parents[3]
TRANSCRIPTS = Path(os.environ.get("IBFLEET_TWS_TRANSCRIPTS",
                                  ROOT.parent / "shared" / "fixtures" / "tws" / "transcripts"))
DOCS = ROOT / "docs" / "simulator.md"

#: the scenario of each transcript (the test's id) and the simulator options it needs beyond
#: the common ones; client ids per leg where not all 1
SCENARIOS: dict[str, dict] = {
    "api_client_id0_order_observation_aapl.txt": {"id": "client0_sees_and_cancels_anothers_gtc_order",
                                                  "clients": [1, 0]},
    "api_dollar_cost_averaging_aapl.txt": {"id": "market_orders_buy_buy_buy_sell"},
    "api_order_handle_reconnect_cancel_aapl.txt": {"id": "cancel_after_reconnect_without_open_orders"},
    "api_order_rest_cancel_aapl.txt": {"id": "limit_rests_then_cancelled"},
    "api_pairs_trading_aapl_msft.txt": {"id": "pair_of_market_orders_and_flatten"},
    "api_reconnect_active_order_aapl.txt": {"id": "gtc_order_survives_reconnect_then_cancelled"},
    "api_stop_loss_management_aapl.txt": {"id": "stop_placed_modified_cancelled"},
    # the TRAIL order's client line leaves out the trailStopPrice the capture sent: 10 x the
    # quote anchor, 2000 (ibkr-go cmd/ibkr-capture/api_scenarios.go: withTrailingPercent sets
    # TrailStopPrice = farSell(anchor) = anchor x 10; the anchor's fallback is 200). A SELL
    # trailing stop that far above the market triggers at once: PreSubmitted, Submitted, filled
    "api_tif_attribute_matrix_aapl.txt": {"id": "gtc_limit_cancel_and_trailing_stop",
                                          "order_fields": {247: {"trail_stop_price": "2000"}}},
    "completed_orders_cancelled_system_live.txt": {"id": "completed_order_cancelled_by_system",
                                                   "setup": "system_cancelled_order"},
    "current_time.txt": {"id": "current_time"},
    "direct_cancel_order.txt": {"id": "limit_cancelled_by_id"},
    "grounded_account_summary.txt": {"id": "account_summary"},
    "grounded_bootstrap.txt": {"id": "bootstrap"},
    "grounded_contract_details_aapl.txt": {"id": "contract_details_aapl"},
    # the history captures answer on the exchange calendar at the capture's instant (its
    # connection time; the requests' end time is "now"): sessions on, the clock set there
    "grounded_historical_bars.txt": {"id": "historical_bars_rth_hourly",
                                     "args": ["--sessions", "on", "--start-time", "1775425855"]},
    "historical_schedule_aapl.txt": {"id": "historical_schedule",
                                     "args": ["--sessions", "on", "--start-time", "1775929932"]},
    "place_order_invalid_type_live_error.txt": {"id": "invalid_order_type"},
    # the captured paper account (DUP770846) had no live API market data: 10089
    "realtime_bars_api_error.txt": {"id": "realtime_bars_without_live_data",
                                    "args": ["--market-data", "delayed"]},
    "req_ids.txt": {"id": "req_ids"},
}


@dataclass(frozen=True)
class Difference:
    row: str          # the fidelity table's row id in docs/simulator.md (F1, F2, ...)
    pattern: str      # every problem this difference explains matches it (re.search)


#: (transcript, check) -> the documented differences that check is expected to find. Each must
#: show (a fixed one fails the test until removed here and in docs/simulator.md) and every
#: problem of that check must be explained by one of them.
D = Difference
EXPECTED_DIFFERENCES: dict[tuple[str, str], tuple[Difference, ...]] = {
    # F8: a resting GTC limit far from the market reported Submitted at once, no PreSubmitted
    ("api_client_id0_order_observation_aapl.txt", "kinds"): (
        D("F8", r"leg 0 step 0 place_order: extra order_status\{'order_id': 295, 'status': 'Submitted'\}"),),
    ("api_client_id0_order_observation_aapl.txt", "statuses"): (
        D("F8", r"^order 295: IB \['Submitted', 'Cancelled'\], simulator \['PreSubmitted', 'Submitted', 'Cancelled'\]$"),),
    ("api_order_handle_reconnect_cancel_aapl.txt", "kinds"): (
        D("F8", r"leg 0 step 0 place_order: extra order_status\{'order_id': 294, 'status': 'Submitted'\}"),),
    ("api_order_handle_reconnect_cancel_aapl.txt", "statuses"): (
        D("F8", r"^order 294: IB \['Submitted', 'Cancelled'\], simulator \['PreSubmitted', 'Submitted', 'Cancelled'\]$"),),
    ("api_reconnect_active_order_aapl.txt", "kinds"): (
        D("F8", r"leg 0 step 0 place_order: extra order_status\{'order_id': 294, 'status': 'Submitted'\}"),),
    ("api_reconnect_active_order_aapl.txt", "statuses"): (
        D("F8", r"^order 294: IB \['Submitted', 'Cancelled'\], simulator \['PreSubmitted', 'Submitted', 'Cancelled'\]$"),),
    # F7: the captured marketable SELL orders went Submitted at once, the BUYs PreSubmitted
    ("api_dollar_cost_averaging_aapl.txt", "statuses"): (
        D("F7", r"^order 285: IB \['Submitted', 'Filled'\], simulator \['PreSubmitted', 'Filled'\]$"),),
    ("api_pairs_trading_aapl_msft.txt", "statuses"): (
        D("F7", r"^order (279|280): IB \['Submitted', 'Filled'\], simulator \['PreSubmitted', 'Filled'\]$"),),
    ("api_stop_loss_management_aapl.txt", "statuses"): (
        D("F7", r"^order 277: IB \['Submitted', 'Filled'\], simulator \['PreSubmitted', 'Filled'\]$"),),
    # F13: IB's first openOrder of a stop carries a limit price of its own
    ("api_stop_loss_management_aapl.txt", "fields"): (
        D("F13", r"step 1 place_order: open_order 276 lmt_price: IB '13.16', simulator '0'$"),),
    # F9: PendingCancel before Cancelled (1 cancel of the 6 captured)
    ("api_order_rest_cancel_aapl.txt", "kinds"): (
        D("F9", r"leg 0 step 1 cancel_order: no order_status\{'order_id': 1, 'status': 'Cancelled'\}"),),
    ("api_order_rest_cancel_aapl.txt", "statuses"): (
        D("F9", r"^order 1: IB \['PreSubmitted', 'Submitted', 'PendingCancel', 'Cancelled'\], "
                r"simulator \['PreSubmitted', 'Submitted', 'Cancelled'\]$"),),
    # F13: IB's first openOrder of the TRAIL order carries a limit price of its own, as a stop's
    ("api_tif_attribute_matrix_aapl.txt", "fields"): (
        D("F13", r"step 2 place_order: open_order 247 lmt_price: IB '2000.03', simulator '0'$"),),
    # F11: this older capture has neither the second (Submitted) pair nor the 202 after Cancelled
    ("direct_cancel_order.txt", "kinds"): (
        D("F11", r"leg 0 step 0 place_order: extra order_status\{'order_id': 1, 'status': 'Submitted'\}"),
        D("F11", r"leg 0 step 1 cancel_order: extra api_error\{'req_id': 1, 'code': 202\}")),
    ("direct_cancel_order.txt", "statuses"): (
        D("F11", r"^order 1: IB \['PreSubmitted', 'Cancelled'\], simulator \['PreSubmitted', 'Submitted', 'Cancelled'\]$"),),
    ("direct_cancel_order.txt", "errors"): (
        D("F11", r"leg 0 step 1 cancel_order: IB errors \[\], simulator \[\(1, 202, 'Order Canceled - reason:'\)\]$"),),
    # F46: the captured account's base currency is EUR, the simulator's accounts are USD
    ("grounded_account_summary.txt", "fields"): (
        D("F46", r"account_summary \d+ currency: IB 'EUR', simulator 'USD'$"),),
}


def _setup_system_cancelled_order(sim, transcript) -> None:
    """The capture's account held one order IB's system had cancelled (the completedOrder frame
    of the transcript: SELL 1 AAPL LMT 500.0 GTC, completedStatus "Cancelled by System"):
    placed here by another API client and cancelled at the broker (control ``broker_cancel``)."""
    conn = Conn(sim.port, 7)
    try:
        conn.client.placeOrder(1001, _contract_aapl(), _order_of(
            {"action": "SELL", "total_quantity": "1", "order_type": "LMT", "lmt_price": "500",
             "tif": "GTC"}))
        wait_for(lambda: any(m.kind == "order_status" and m.data["status"] == "Submitted"
                             for m in conn.rec.snapshot()), 30, what="order 1001 working")
        sim.control.broker_cancel(1001, client_id=7)
        wait_for(lambda: any(m.kind == "order_status" and m.data["status"] == "Cancelled"
                             for m in conn.rec.snapshot()), 30, what="order 1001 cancelled")
    finally:
        conn.close()
    _wait_gone(sim, 7)


def _contract_aapl():
    return _contract_of({"con_id": "265598", "symbol": "AAPL", "sec_type": "STK",
                         "exchange": "SMART", "currency": "USD"})


SETUPS = {"system_cancelled_order": _setup_system_cancelled_order}


def _add_order_fields(transcript, fields: dict[int, dict[str, str]]) -> None:
    """Order fields the capture sent that its client line leaves out, by order id."""
    for leg in transcript.legs:
        for step in leg.steps:
            for line in step.clients:
                if line.verb == "place_order" and int(line.payload["order_id"]) in fields:
                    line.payload = {**line.payload, **fields[int(line.payload["order_id"])]}


def _wait_gone(sim, client_id: int) -> None:
    wait_for(lambda: all(c["client_id"] != client_id for c in sim.control.clients()), 30,
             what=f"client {client_id} gone from the simulator")


def _names() -> list[str]:
    return sorted(p.name for p in TRANSCRIPTS.glob("*.txt")) if TRANSCRIPTS.is_dir() else []


def _id(name: str) -> str:
    return SCENARIOS.get(name, {}).get("id", name.removesuffix(".txt"))


def _doc_rows() -> set[str]:
    return set(re.findall(r"^\|\s*(F\d+)\s*\|", DOCS.read_text(), re.M))


def judge(name: str, problems: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(failures, documented): problems not explained by EXPECTED_DIFFERENCES, and documented
    differences that showed (those that did not are failures too)."""
    failures: list[str] = []
    documented: list[str] = []
    checks_ = list(problems) + [c for n, c in EXPECTED_DIFFERENCES if n == name and c not in problems]
    for check in checks_:
        found = problems.get(check, [])
        diffs = EXPECTED_DIFFERENCES.get((name, check), ())
        used: set[Difference] = set()
        for problem in found:
            d = next((d for d in diffs if re.search(d.pattern, problem)), None)
            if d is None:
                failures.append(f"[{check}] {problem}")
            else:
                used.add(d)
                documented.append(f"[{check}] ({d.row}) {problem}")
        for d in diffs:
            if d not in used:
                failures.append(f"[{check}] the documented difference {d.row} ({d.pattern!r}) no "
                                f"longer shows: remove it from EXPECTED_DIFFERENCES and docs/simulator.md")
    return failures, documented


@pytest.mark.parametrize("name", _names() or ["(no transcripts)"], ids=lambda n: _id(n))
def test_transcript(name, start_sim):
    if name == "(no transcripts)":
        pytest.skip(f"no transcripts in {TRANSCRIPTS}")
    transcript = load(TRANSCRIPTS / name)
    scenario = SCENARIOS.get(name, {})
    _add_order_fields(transcript, scenario.get("order_fields", {}))
    sim = start_sim("--account", transcript.account, "--server-version", "200",
                    "--host-zone", transcript.legs[0].connection_zone,
                    "--time-zone", checks.ACCOUNT_ZONE, *scenario.get("args", ()))
    if "setup" in scenario:
        SETUPS[scenario["setup"]](sim, transcript)
    result = replay(transcript, sim.port, scenario.get("clients", [1]),
                    wait_clients=lambda cid: _wait_gone(sim, cid))
    ctx = checks.Context(result, sim.control.status()["sim_time"])
    problems = {check: fn(ctx) for check, fn in checks.CHECKS.items()}
    failures, documented = judge(name, problems)
    for line in documented:
        print(f"documented difference: {line}")
    assert not failures, f"{name}: the simulator differs from IB's capture:\n  " + "\n  ".join(failures)


def test_every_transcript_has_a_scenario_and_every_difference_a_docs_row():
    names = _names()
    if not names:
        pytest.skip(f"no transcripts in {TRANSCRIPTS}")
    assert sorted(SCENARIOS) == names, "a transcript without a scenario (or a scenario without its file)"
    rows = _doc_rows()
    missing = {(n, c, d.row) for (n, c), ds in EXPECTED_DIFFERENCES.items() for d in ds if d.row not in rows}
    assert not missing, f"differences naming a row docs/simulator.md's fidelity table lacks: {missing}"
    assert {n for n, _ in EXPECTED_DIFFERENCES} <= set(names)
    assert {c for _, c in EXPECTED_DIFFERENCES} <= set(checks.CHECKS)
