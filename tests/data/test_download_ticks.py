"""``ibfleet data download --ticks``: IB historical ticks through a running fleet's gateway.

Units: the page walk (``tick_pages``) over IB's rule "at most 1000 from the start, the last
second completed". End to end: the simulator replays the real AMZN executions of 2012-06-21
(../shared/data/real, 11,419 prints), the download asks the real gateway bridge for its
trades in pages of 1000 and the catalog's ``trades/AMZN`` equals the file's prints (count,
prices, sizes, times in UTC at IB's whole seconds); a second run asks IB nothing and adds
nothing; ``HistoryDesk`` journals and re-sends tick requests like bar requests."""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from proto.schema import GatewayError, HistoricalTicksRequest
from services.data.catalog import Catalog
from services.data.download import TICKS_PER_REQUEST, DownloadError, Downloader, tick_pages
from services.data.importers import read
from services.data.sample import SAMPLE
from tests.data.conftest import shared
from tests.data.test_download import download_cli
from tests.support.processes import wait_for

NS = 1_000_000_000
DAY = "2012-06-21"


# -- units ---------------------------------------------------------------------------------

@dataclass
class T:
    time_ns: int
    n: int  # which tick of the data it is


def _ib(data: list[T]):
    """IB's answer from a start: the first 1000 at or after it, the last second completed."""
    asked = []

    def page(at: int) -> list[T]:
        asked.append(at)
        after = [t for t in data if t.time_ns >= at * NS]
        stop = min(TICKS_PER_REQUEST, len(after))
        while 0 < stop < len(after) and after[stop].time_ns == after[stop - 1].time_ns:
            stop += 1
        return after[:stop]
    return page, asked


def test_pages_continue_at_the_boundary_second_without_duplicates_or_gaps():
    # 2500 ticks, 7 a second, then a gap and 3 more: pages end inside a busy second
    data = [T((1000 + k // 7) * NS, k) for k in range(2500)]
    data += [T(5000 * NS, 2500 + k) for k in range(3)]
    page, asked = _ib(data)
    got = tick_pages(page, 1000, 6000)
    assert [t.n for t in got] == list(range(2503))
    # each full page's next start is its last second; the short one's next is past it
    assert asked[0] == 1000 and asked[1] == data[1000].time_ns // NS
    assert asked[-1] == 5001
    # the day's end cuts: nothing at or after it
    page, _ = _ib(data)
    assert [t.n for t in tick_pages(page, 1000, 1100)] == list(range(700))


def test_a_second_with_more_than_a_page_moves_on():
    data = [T(7 * NS, k) for k in range(1500)] + [T(8 * NS, 1500)]
    page, asked = _ib(data)
    assert [t.n for t in tick_pages(page, 0, 100)] == list(range(1501))
    assert asked[:3] == [0, 8, 9]


def test_bad_tick_kind_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="--ticks"):
        Downloader(Catalog(tmp_path / "c"), "AAPL", ticks="BIDS")
    assert Downloader(Catalog(tmp_path / "c"), "AAPL", ticks="BID_ASK").name == "quotes/AAPL"


def test_tick_requests_are_journalled_and_asked_again_after_a_loss(tmp_path):
    from services.gateway.history import HistoryDesk
    journal = tmp_path / "history_requests.json"
    desk = HistoryDesk(journal=journal)
    req = HistoricalTicksRequest(requester="data.download.1", request="dl1", symbol="AMZN",
                                 what_to_show="BID_ASK", start="20120621-00:00:00",
                                 ignore_size=True)
    assert desk.add(req) and not desk.add(req)
    assert desk.due(0.0, lambda s: True) == []  # bars only by default
    [job] = desk.due(0.0, lambda s: True, HistoricalTicksRequest)
    desk.sent(job, 9)
    assert desk.requeue_in_flight() == 1 and desk.waiting[0].req_id is None
    again = HistoryDesk(journal=journal)  # the next gateway process
    assert again.restored == 1 and again.waiting[0].request == req


# -- through the fleet ---------------------------------------------------------------------

def _download(config: Path, catalog: Path, *extra: str, wait: bool = True):
    return download_cli(config, catalog, "AMZN", "--from", DAY, "--to", DAY, "--ticks",
                        "TRADES", *extra, wait=wait, timeout=600)


def _tick_requests(fleet) -> list:
    """The historical tick requests the gateway sent IB (its pacing log's request keys)."""
    path = fleet.config.service_state_dir("gateway") / "history_pacing.json"
    log = json.loads(path.read_text()) if path.exists() else []
    return [rk for _, _, rk in log if rk[1] == "ticks"]


@pytest.mark.both_wire_formats
def test_download_ticks_of_a_replayed_real_day_equal_its_trades(fleet, tmp_path):
    kind, _, options = SAMPLE[1]  # the AMZN executions' import options (the same file)
    source = Catalog(tmp_path / "replay")
    source.add(read(kind, [str(shared("trades/AMZN_2012-06-21_executions.csv"))], options))
    prints = source.read("trades/AMZN").to_pylist()
    assert len(prints) == 11_419
    fleet.start_simulator("--market", "trades/AMZN", "--catalog", str(tmp_path / "replay"),
                          "--speed", "0", "--market-wait", "now", state=None)
    fleet.wait(lambda: '"replay_done"' in fleet.procs.log("simulator"), deadline=180,
               what="the simulator to replay the day")
    fleet.start_broker()
    fleet.start_gateway()
    fleet.wait_gateway("synchronised")

    target = tmp_path / "downloaded"
    done = _download(fleet.config_path, target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 1 days stored, 0 there already" in done.stdout, done.stdout
    catalog = Catalog(target)
    meta = catalog.meta("trades/AMZN")
    rows = catalog.read("trades/AMZN").to_pylist()
    # every print of the day, in order, at IB's whole seconds (UTC), its price and size
    assert len(rows) == len(prints) == meta.rows
    assert [(r["ts"], r["price"], r["size"]) for r in rows] == \
        [(p["ts"] // NS * NS, p["price"], p["size"]) for p in prints]
    assert [p.key for p in meta.partitions] == [f"date={DAY}"]
    assert [c.name for c in meta.columns] == ["ts", "price", "size"]
    assert catalog.read("trades/AMZN").schema == source.read("trades/AMZN").schema
    [prov] = meta.provenance
    assert prov.importer == "download" and prov.rows == len(prints)
    assert prov.options["what_to_show"] == "TRADES" and prov.options["date"] == DAY
    assert "whatToShow=TRADES" in prov.licence and "useRTH=1" in prov.licence
    # pages of 1000 from the day's midnight, each from the last second of the one before
    asked = _tick_requests(fleet)
    assert len(asked) == len(prov.options["requests"].split(", "))
    assert len(prints) // TICKS_PER_REQUEST + 1 <= len(asked) <= len(prints) // 900 + 3
    # (symbol, "ticks", whatToShow, start, end, count, useRTH, ignoreSize)
    assert asked[0][:4] == ["AMZN", "ticks", "TRADES", "20120621-00:00:00"]
    assert all(rk[4] == "" and rk[5] == TICKS_PER_REQUEST and rk[6] is True for rk in asked)
    starts = [rk[3] for rk in asked]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    fleet.pump()
    assert not [e for e in fleet.messages(GatewayError) if e.code == 162]

    # a second run: the day is there; IB is asked nothing, nothing is added
    before = catalog.meta("trades/AMZN")
    done = _download(fleet.config_path, target)
    assert done.returncode == 0 and "done: 0 days stored, 1 there already" in done.stdout
    assert len(_tick_requests(fleet)) == len(asked)
    after = Catalog(target).meta("trades/AMZN")
    assert after.rows == len(prints)
    assert [(p.key, p.rows, p.sha256) for p in after.partitions] == \
        [(p.key, p.rows, p.sha256) for p in before.partitions]

    # killed once IB answered two of its pages: nothing half-written, and the rerun stores
    # the same day (its first page waits out IB's 15 s rule for an identical request)
    killed = tmp_path / "killed"
    n = len(_tick_requests(fleet))
    proc = _download(fleet.config_path, killed, wait=False)
    try:
        wait_for(lambda: len(_tick_requests(fleet)) >= n + 2 or proc.poll() is not None, 120,
                 what="two pages asked", interval=0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert "trades/AMZN" not in Catalog(killed).names()
    assert not (killed / ".tmp").exists() or not any((killed / ".tmp").iterdir())
    done = _download(fleet.config_path, killed)
    assert done.returncode == 0 and "done: 1 days stored" in done.stdout, done.stdout
    assert Catalog(killed).read("trades/AMZN").equals(catalog.read("trades/AMZN"))


def test_a_gateway_killed_mid_walk_loses_no_tick(fleet, tmp_path):
    """The gateway dies (SIGKILL) with a page in flight: the next gateway process asks the
    journalled request again (or the download's repeat), the walk goes on, and the day holds
    every print once."""
    kind, _, options = SAMPLE[1]
    source = Catalog(tmp_path / "replay")
    source.add(read(kind, [str(shared("trades/AMZN_2012-06-21_executions.csv"))], options))
    prints = source.read("trades/AMZN").to_pylist()
    fleet.start_simulator("--market", "trades/AMZN", "--catalog", str(tmp_path / "replay"),
                          "--speed", "0", "--market-wait", "now", "--history-delay-ms", "1500",
                          state=None)
    fleet.wait(lambda: '"replay_done"' in fleet.procs.log("simulator"), deadline=180,
               what="the simulator to replay the day")
    fleet.start_broker()
    gateway = fleet.start_gateway()
    fleet.wait_gateway("synchronised")
    target = tmp_path / "c"
    proc = _download(fleet.config_path, target, wait=False)
    try:
        wait_for(lambda: len(_tick_requests(fleet)) >= 3 or proc.poll() is not None, 120,
                 what="three pages asked", interval=0.02)
        os.kill(gateway.pid, signal.SIGKILL)  # the third page is in flight (1.5 s delay)
        gateway.wait(30)
        fleet.start_gateway()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    print(out, err)
    if proc.returncode != 0:  # the gateway was away too long: a rerun continues
        assert proc.returncode == 1 and "the gateway stopped answering" in err, (out, err)
        done = _download(fleet.config_path, target)
        assert done.returncode == 0, done.stdout + done.stderr
    rows = Catalog(target).read("trades/AMZN").to_pylist()
    assert [(r["ts"], r["price"], r["size"]) for r in rows] == \
        [(p["ts"] // NS * NS, p["price"], p["size"]) for p in prints]
    assert not (target / ".tmp").exists() or not any((target / ".tmp").iterdir())
    # the page in flight was asked again by the next gateway, not before IB's 15 s rule
    log = json.loads((fleet.config.service_state_dir("gateway") / "history_pacing.json")
                     .read_text())
    third = [t for t, _, rk in log if rk[1] == "ticks" and rk[3] == _tick_requests(fleet)[2][3]]
    assert len(third) == 2 and third[1] - third[0] >= 15.0, third
