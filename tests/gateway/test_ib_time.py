"""The bridge's one parser of IB times, on the strings real gateways sent
(../shared/fixtures/tws: frames.jsonl and transcripts/*.txt)."""
from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timezone
from types import SimpleNamespace

from services.gateway import ib_time, translate
from services.gateway.history import bar_time_ns
from services.gateway.ib_time import IBTime

S = 1_000_000_000


def utc(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=timezone.utc).timestamp()) * S


def test_real_execution_times_carry_their_zone():
    t = IBTime()
    # G200 execDetails AAPL MKT (EDT: UTC-4)
    assert t.ns("20260413 15:27:04 US/Eastern") == utc("2026-04-13 19:27:04")
    # RU execDetails ES FUT 2025
    assert t.ns("20250708 02:35:00 America/New_York") == utc("2025-07-08 06:35:00")
    # G200 completedOrder TRAIL LIMIT
    assert t.ns("20260415 11:00:11 US/Eastern") == utc("2026-04-15 15:00:11")
    # historical bars (grounded_historical_bars)
    assert t.ns("20260402 09:30:00 US/Eastern") == utc("2026-04-02 13:30:00")
    assert not t.counters.get("ib_time_errors")


def test_connection_times_windows_and_legacy_zone_names():
    t = IBTime()
    # transcripts/api_client_id0_order_observation_aapl.txt: CEST, UTC+2
    assert t.ns("20260415 18:28:40 Central European Standard Time") == utc("2026-04-15 16:28:40")
    # transcripts/completed_orders_cancelled_system_live.txt
    assert t.ns("20260412 18:39:37 CET") == utc("2026-04-12 16:39:37")
    assert t.ns("20260101 12:00:00 Tokyo Standard Time") == utc("2026-01-01 03:00:00")


def test_utc_dash_form_epoch_seconds_and_the_connection_zone():
    t = IBTime()
    assert t.ns("20260410-16:00:00") == utc("2026-04-10 16:00:00")    # historical_schedule
    assert t.ns("1775931128") == 1775931128 * S                        # current_time.txt
    assert t.ns("20260415 18:28:40") == 0                               # no zone known yet
    assert t.counters["ib_time_errors"] == 1
    t.set_connection_time("20260415 18:28:40 Central European Standard Time")
    assert t.connection_zone_name == "Central European Standard Time"
    assert t.ns("20260415 18:28:40") == utc("2026-04-15 16:28:40")
    assert t.ns("20260115 18:28:40") == utc("2026-01-15 17:28:40")      # CET in winter


def test_an_unknown_zone_is_a_counted_error_logged_once_never_utc(caplog):
    t = IBTime(Counter(), logging.getLogger("test.ib_time"))
    with caplog.at_level(logging.ERROR, "test.ib_time"):
        assert t.ns("20260413 15:27:04 Mars/Olympus") == 0
        assert t.ns("20260413 15:28:04 Mars/Olympus") == 0
        assert t.ns("20260413 15:27:04 Atlantis Standard Time") == 0
        assert t.ns("not a time") == 0
    assert t.counters["ib_time_errors"] == 4
    logged = [r.getMessage() for r in caplog.records]
    assert sum("Mars/Olympus" in m for m in logged) == 1
    assert sum("Atlantis Standard Time" in m for m in logged) == 1
    assert t.ns("") == 0 and t.counters["ib_time_errors"] == 4          # empty: just unknown
    t.set_connection_time("20260413 15:27:04 Mars/Olympus")
    assert t.connection_zone is None and t.counters["ib_time_errors"] == 5


def test_translate_uses_the_zone_for_exec_time_and_completed_orders():
    ex = SimpleNamespace(execId="e1", orderId=3, orderRef="c1", permId=9, acctNumber="DU1",
                         side="BOT", shares=1, price=257.95, cumQty=1, avgPrice=257.95,
                         time="20260413 15:27:04 US/Eastern", exchange="IEX")
    msg = translate.execution(SimpleNamespace(), ex, "AAPL")
    assert msg.exec_time_ns == utc("2026-04-13 19:27:04")
    order = SimpleNamespace(orderId=0, orderRef="c1", permId=9, action="BUY", totalQuantity=1,
                            filledQuantity=0, clientId=0)
    state = SimpleNamespace(status="Cancelled", completedStatus="Cancelled by System",
                            completedTime="20260415 11:00:11 US/Eastern")
    done = translate.completed_order(SimpleNamespace(), order, state, "AAPL", 3)
    assert done.completed_time == "20260415 11:00:11 US/Eastern"
    assert done.completed_time_ns == utc("2026-04-15 15:00:11")


def test_the_execution_filter_is_utc_with_a_margin_before_the_last_fill():
    last = ib_time.IBTime().ns("20260414 04:27:04 Asia/Tokyo")   # 2026-04-13 19:27:04 UTC
    assert translate.filter_time(last) == "20260413-19:26:04"
    assert translate.filter_time(0) == ""


def test_bar_times_epoch_dates_and_zoned_strings():
    assert bar_time_ns("1775931128") == 1775931128 * S
    assert bar_time_ns("20260402") == utc("2026-04-02 00:00:00")
    assert bar_time_ns("20260402 09:30:00 US/Eastern") == utc("2026-04-02 13:30:00")
