"""Time zones as a real gateway writes them: execution and completed-order times in the account's
zone, the connection time in the host's (often a Windows name), ExecutionFilter times read as IB
reads them ('-' form UTC, a named zone, else the host's)."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from ibapi.execution import ExecutionFilter

from services.simulator.encoders import ib_time, parse_filter_time
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, order, stock

start_sim = start_sim_at_versions()   # each test at v200 (text) and at the protobuf maximum

AAPL = 265598
T = 1776108424  # 2026-04-13 19:27:04 UTC (the G200 capture's "20260413 15:27:04 US/Eastern")


def test_ib_time_writes_the_wall_time_of_the_named_zone():
    assert ib_time(T, "US/Eastern") == "20260413 15:27:04 US/Eastern"
    assert ib_time(T, "America/New_York") == "20260413 15:27:04 America/New_York"
    assert ib_time(T, "Asia/Tokyo") == "20260414 04:27:04 Asia/Tokyo"
    assert ib_time(T, "Central European Standard Time") == \
        "20260413 21:27:04 Central European Standard Time"
    with pytest.raises(ValueError):
        ib_time(T, "Mars/Olympus")


def test_execution_filter_times_are_read_as_ib_reads_them():
    assert parse_filter_time("20260413-19:27:04", "Asia/Tokyo") == T           # UTC
    assert parse_filter_time("20260413 15:27:04 US/Eastern", "Asia/Tokyo") == T
    assert parse_filter_time("20260414 04:27:04", "Asia/Tokyo") == T            # host's zone
    assert parse_filter_time("20260413 15:27:04 Nowhere/Land", "UTC") is None
    assert parse_filter_time("junk", "UTC") is None


def test_execution_times_carry_the_account_zone_and_the_handshake_the_host_zone(start_sim):
    sim = start_sim("--time-zone", "Asia/Tokyo", "--host-zone", "Central European Standard Time")
    c = IbapiClient(sim.port, 31).connect()
    try:
        conn = c.client.twsConnectionTime()
        conn = conn.decode() if isinstance(conn, bytes) else conn
        date, hms, zone = conn.split(" ", 2)
        assert zone == "Central European Standard Time"
        at = datetime.strptime(f"{date} {hms}", "%Y%m%d %H:%M:%S").replace(
            tzinfo=ZoneInfo("Europe/Warsaw")).timestamp()
        assert abs(at - sim.control.status()["sim_time"]) < 30

        ask = sim.control.quote(AAPL)["ask"]
        oid = c.next_order_id()
        c.client.placeOrder(oid, stock("AAPL"), order("BUY", 10, "LMT", lmt=round(ask + 0.5, 2)))
        (ex,) = [e[2] for e in c.wait("execDetails", lambda e: e[2].orderId == oid)]
        fill = sim.control.fills()[0]
        assert ex.time == datetime.fromtimestamp(int(fill["time"]), ZoneInfo("Asia/Tokyo")) \
            .strftime("%Y%m%d %H:%M:%S") + " Asia/Tokyo"

        def listed(req_id: int, since: str) -> int:
            flt = ExecutionFilter()
            flt.time = since
            c.client.reqExecutions(req_id, flt)
            c.wait("execDetailsEnd", lambda e: e[0] == req_id)
            return len(c.rec.get("execDetails", lambda e: e[0] == req_id))

        t = int(fill["time"])
        utc = lambda s: datetime.fromtimestamp(s, timezone.utc).strftime("%Y%m%d-%H:%M:%S")  # noqa: E731
        tokyo = lambda s: ib_time(s, "Asia/Tokyo")  # noqa: E731
        host = lambda s: ib_time(s, "Europe/Warsaw").rsplit(" ", 1)[0]  # noqa: E731
        assert (listed(101, utc(t - 60)), listed(102, utc(t + 60))) == (1, 0)
        assert (listed(103, tokyo(t - 60)), listed(104, tokyo(t + 60))) == (1, 0)
        assert (listed(105, host(t - 60)), listed(106, host(t + 60))) == (1, 0)
    finally:
        c.disconnect()
