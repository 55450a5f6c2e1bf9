"""``ibfleet data download``: IB historical bars through a running fleet's gateway (real
processes: simulator, bus, gateway), paced there, one UTC day per partition, resumable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from proto.schema import GatewayError, Heartbeat
from services.data.catalog import Catalog
from services.data.download import (Chunk, DownloadError, Downloader, chunks_for_day, explain,
                                    no_data)
from services.data.importers import Options, read
from tests.support.processes import REPO, wait_for

NS = 1_000_000_000
HISTORY_DELAY_MS = "1500"  # the simulator answers each historical request this late


# -- units ---------------------------------------------------------------------------------

def test_a_day_is_cut_into_the_durations_ib_accepts_for_the_bar_size():
    day = date(2026, 11, 20)
    start = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp())
    assert chunks_for_day(day, 60) == [Chunk(start + 86400, 86400)]
    assert chunks_for_day(day, 60)[0].end_text == "20261121-00:00:00"
    assert chunks_for_day(day, 60)[0].duration_text == "1 D"
    assert chunks_for_day(day, 300) == [Chunk(start + 86400, 86400)]
    thirty = chunks_for_day(day, 30)  # 28800 S at most for 30 secs bars
    assert [c.duration_text for c in thirty] == ["28800 S"] * 3
    assert [c.end_text for c in thirty] == ["20261120-08:00:00", "20261120-16:00:00",
                                            "20261121-00:00:00"]
    assert len(chunks_for_day(day, 5)) == 24 and len(chunks_for_day(day, 1)) == 48
    assert len(chunks_for_day(day, 15)) == 6


def test_ib_errors_are_named():
    assert "pacing violation (162)" in explain(
        "162: Historical Market Data Service error message:Historical data request pacing "
        "violation")
    assert "does not know this contract (200)" in explain("200: No security definition")
    assert "invalid (321)" in explain("321: Error validating request")
    assert no_data("162: Historical Market Data Service error message:HMDS query returned no "
                   "data: AAPL@SMART Trades")
    assert not no_data("162: Historical data request pacing violation")


def test_the_gateway_takes_a_repeated_request_once():
    """The download repeats an unanswered request (PUB/SUB may lose one while the gateway
    restarts): the gateway's HistoryDesk must not ask IB twice for it."""
    from proto.schema import HistoricalRequest
    from services.gateway.history import HistoryDesk
    desk = HistoryDesk()
    req = HistoricalRequest(requester="data.download.1", request="dl1", symbol="AAPL",
                            end="20261121-00:00:00")
    assert desk.add(req) is True
    assert desk.add(req) is False and len(desk.waiting) == 1
    [job] = desk.due(0.0, lambda symbol: True)
    desk.sent(job, 5)
    assert desk.add(req) is False and not desk.waiting  # in flight: still the same request
    desk.finish(5)
    assert desk.add(req) is True  # answered: asking again is a new request


def test_bad_arguments_are_refused(tmp_path):
    catalog = Catalog(tmp_path / "c")
    with pytest.raises(DownloadError, match="bar-size"):
        Downloader(catalog, "AAPL", bar_size="7 min")
    with pytest.raises(DownloadError, match="--what"):
        Downloader(catalog, "AAPL", what="BIDS")
    with pytest.raises(DownloadError, match="before --from"):
        Downloader(catalog, "AAPL", first=date(2026, 1, 2), last=date(2026, 1, 1))


def test_no_bus_is_a_clear_error(tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(f'[bus]\nrun_dir = "{tmp_path / "run"}"\n[fleet]\nstate_dir = '
                      f'"{tmp_path / "state"}"\n')
    done = _download(config, tmp_path / "c", "2026-11-20", "2026-11-20")
    assert done.returncode == 1
    assert "nothing answers on the fleet's bus" in done.stderr, done.stderr
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("bars-*"))


# -- through the fleet ---------------------------------------------------------------------

def download_cli(config: Path, catalog: Path, *args: str, wait: bool = True,
                 timeout: float = 300):
    """``ibfleet data download ARGS --catalog C --config F``: the finished process (its
    command and output printed, shown when a test fails), or with ``wait=False`` a Popen."""
    cmd = [sys.executable, "-m", "services.cli", "data", "download", *args,
           "--catalog", str(catalog), "--config", str(config)]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(cmd[2:])}\n{done.stdout}{done.stderr}")
    return done


def _download(config: Path, catalog: Path, first: str, last: str, *extra: str,
              wait: bool = True):
    return download_cli(config, catalog, "AAPL", "--from", first, "--to", last, *extra,
                        wait=wait)


def _pacing_log(fleet) -> list:
    """Every historical request the gateway sent IB (its HistoricalPacer's log):
    [wall time, contract key, request key (symbol, duration, bar size, what, rth, end)]."""
    path = fleet.config.service_state_dir("gateway") / "history_pacing.json"
    return json.loads(path.read_text()) if path.exists() else []


def _gateway_counters(fleet, since: int = 0) -> dict:
    beats = [h for h in fleet.messages(Heartbeat)[since:] if h.src == "gateway.1"]
    return dict(beats[-1].counters) if beats else {}


def _independent_bars(fleet, days: list[date]) -> dict[date, list[tuple]]:
    """The same requests straight to the simulator with ibapi (another client id, so another
    IB session with its own pacing): per day, the bars it serves that start in that day."""
    from tests.simulator.ibapi_client import IbapiClient, stock
    client = IbapiClient(fleet.port, 31).connect()
    out = {}
    try:
        for req_id, day in enumerate(days, 1):
            end = f"{day + timedelta(days=1):%Y%m%d}-00:00:00"
            client.client.reqHistoricalData(req_id, stock("AAPL"), end, "1 D", "1 min",
                                            "TRADES", 1, 2, False, [])
            client.wait("historicalDataEnd", lambda e, r=req_id: e[0] == r, deadline=60)
            start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
                        .timestamp())
            out[day] = [(int(b.date) * NS, float(b.open), float(b.high), float(b.low),
                         float(b.close), float(b.volume))
                        for _, b in client.rec.get("historicalData", lambda e, r=req_id: e[0] == r)
                        if start <= int(b.date) < start + 86400]
    finally:
        client.disconnect()
    return out


def test_download_three_days_then_a_killed_download_resumes_to_the_same_catalog(
        fleet, tmp_path):
    fleet.start_simulator("--history-delay-ms", HISTORY_DELAY_MS)
    fleet.start_broker()
    fleet.start_gateway()
    fleet.wait_gateway("synchronised")
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=k) for k in (4, 3, 2)]  # over, before the simulator began
    first, last = days[0].isoformat(), days[-1].isoformat()

    # 1. uninterrupted: three days, one partition each
    whole = tmp_path / "whole"
    done = _download(fleet.config_path, whole, first, last)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 3 days stored, 0 there already" in done.stdout, done.stdout
    catalog = Catalog(whole)
    meta = catalog.meta("bars-1min/AAPL")
    assert [p.key for p in meta.partitions] == [f"date={d}" for d in days]
    # each day holds exactly the bars the simulator serves for the same request (asked
    # independently, with ibapi) that start in that UTC day: one a minute (the simulator also
    # serves the bar starting at the request's end, 00:00 of the next day, and not the day's
    # own 00:00 bar: 1439; IB's end time is exclusive)
    direct = _independent_bars(fleet, days)
    stored = catalog.read("bars-1min/AAPL").to_pylist()
    assert [p.rows for p in meta.partitions] == [len(direct[d]) for d in days]
    assert all(len(direct[d]) >= 1439 for d in days)
    assert [tuple(r.values()) for r in stored] == [b for d in days for b in direct[d]]
    for part, day in zip(meta.partitions, days):
        start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
        assert start * NS <= part.first_ts and part.last_ts == (start + 86340) * NS
        table = pq.read_table(whole / "bars-1min/AAPL" / part.key / "part.parquet")
        assert table.num_rows == part.rows
    # the bars importer's schema and units, the instrument as the gateway knows it
    assert [c.name for c in meta.columns] == ["ts", "open", "high", "low", "close", "volume"]
    csv = tmp_path / "bars.csv"
    csv.write_text("ts,open,high,low,close,volume\n2026-01-02T10:00:00Z,1,2,0.5,1.5,10\n"
                   "2026-01-02T10:01:00Z,1,2,0.5,1.5,10\n")
    imported = read("bars", [str(csv)], Options(symbol="AAPL"))[0]
    assert imported.kind == meta.kind == "bars-1min"
    assert catalog.read("bars-1min/AAPL").schema == imported.table.schema
    ref = meta.instrument
    assert (ref.symbol, ref.sec_type, ref.currency, ref.zone) == ("AAPL", "STK", "USD", "UTC")
    assert ref.min_tick == 0.01
    assert len(meta.provenance) == 3
    for prov, day in zip(meta.provenance, days):
        assert prov.importer == "download" and prov.rows == len(direct[day])
        assert prov.licence.startswith("IB historical data via ibfleet gateway, requested ")
        assert "whatToShow=TRADES" in prov.licence and "useRTH=1" in prov.licence
        assert prov.options["date"] == day.isoformat()
        end = day + timedelta(days=1)
        assert prov.options["requests"] == f"{end:%Y%m%d}-00:00:00 1 D"
    # three requests, one per day, each "1 D" of "1 min" ending at the next UTC midnight
    log = _pacing_log(fleet)
    assert [(rk[1], rk[2], rk[5]) for _, _, rk in log] == [
        ("1 D", "1 min", f"{d + timedelta(days=1):%Y%m%d}-00:00:00") for d in days]

    # 2. the same download into another catalog, killed once its first day is stored
    resumed = tmp_path / "resumed"
    proc = _download(fleet.config_path, resumed, first, last, wait=False)
    meta_path = resumed / "bars-1min/AAPL/_dataset.json"
    try:
        wait_for(lambda: meta_path.exists() or proc.poll() is not None, 120,
                 what="the first day stored", interval=0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    partial = Catalog(resumed).meta("bars-1min/AAPL")
    assert [p.key for p in partial.partitions] == [f"date={days[0]}"]
    assert not (resumed / ".tmp").exists() or not any((resumed / ".tmp").iterdir())
    # its first day was asked < 15 s after the same request of the first download: the
    # gateway held it back (IB's identical-request rule) instead of letting IB refuse it
    mark = len(fleet.messages(Heartbeat))
    fleet.wait(lambda: (lambda c: c.get("history_waiting") == 0 and
                        c.get("history_in_flight") == 0)(_gateway_counters(fleet, mark)),
               60, what="the gateway idle")
    assert _gateway_counters(fleet, mark)["history_paced_identical"] >= 1
    before = len(_pacing_log(fleet))

    # 3. run it again: only the missing days are asked, the result is the uninterrupted one
    done = _download(fleet.config_path, resumed, first, last)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 2 days stored, 1 there already" in done.stdout, done.stdout
    log = _pacing_log(fleet)
    assert [rk[5] for _, _, rk in log[before:]] == [
        f"{d + timedelta(days=1):%Y%m%d}-00:00:00" for d in days[1:]]
    again = Catalog(resumed).meta("bars-1min/AAPL")
    assert [(p.key, p.rows, p.sha256) for p in again.partitions] == \
        [(p.key, p.rows, p.sha256) for p in meta.partitions]
    assert Catalog(resumed).read("bars-1min/AAPL").equals(catalog.read("bars-1min/AAPL"))
    assert again.instrument == meta.instrument
    # IB's pacing was never violated: no identical request within 15 s, no 162 from IB
    for i, (t_i, _, rk_i) in enumerate(log):
        for t_j, _, rk_j in log[i + 1:]:
            if rk_j == rk_i:
                assert t_j - t_i >= 15.0, (rk_i, t_j - t_i)
    fleet.pump()
    assert not [e for e in fleet.messages(GatewayError) if e.code == 162]

    # 4. once more: nothing is asked at all
    done = _download(fleet.config_path, resumed, first, last)
    assert done.returncode == 0 and "done: 0 days stored, 3 there already" in done.stdout
    assert len(_pacing_log(fleet)) == len(log)


def test_without_a_gateway_the_download_says_so(fleet, tmp_path):
    fleet.start_broker()
    fleet.wait_heartbeats({"bus.1"})
    done = _download(fleet.config_path, tmp_path / "c", "2026-11-20", "2026-11-20",
                     "--wait", "3")
    assert done.returncode == 1
    assert "the gateway is not running" in done.stderr, done.stderr


def test_a_gateway_restart_mid_download_loses_no_day_and_stores_no_part(fleet, tmp_path):
    fleet.start_simulator("--history-delay-ms", HISTORY_DELAY_MS)
    fleet.start_broker()
    gateway = fleet.start_gateway()
    fleet.wait_gateway("synchronised")
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=k) for k in (7, 6, 5)]
    first, last = days[0].isoformat(), days[-1].isoformat()
    target = tmp_path / "c"
    proc = _download(fleet.config_path, target, first, last, wait=False)
    try:
        wait_for(lambda: (target / "bars-1min/AAPL/_dataset.json").exists()
                 or proc.poll() is not None, 120, what="the first day stored")
        os.kill(gateway.pid, signal.SIGKILL)  # its next request is in flight or on its way
        gateway.wait(30)
        time.sleep(1.0)
        fleet.start_gateway()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    print(out, err)
    # the restarted gateway answers the request the killed one journalled (or the repeat the
    # download sends): the download goes on; had the gateway stayed away it would have
    # stopped with only complete days, and a rerun continues
    if proc.returncode != 0:
        assert proc.returncode == 1 and "the gateway stopped answering" in err, (out, err)
        done = _download(fleet.config_path, target, first, last)
        assert done.returncode == 0, done.stdout + done.stderr
    meta = Catalog(target).meta("bars-1min/AAPL")
    assert [p.key for p in meta.partitions] == [f"date={d}" for d in days]
    assert all(p.rows >= 1439 for p in meta.partitions)
    assert not (target / ".tmp").exists() or not any((target / ".tmp").iterdir())
