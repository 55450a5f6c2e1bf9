"""F30: reqHistoricalData with keepUpToDate. After the bars and historicalDataEnd the simulator
keeps sending historicalDataUpdate (the bar in progress every 5 s, then the next bar) until
cancelHistoricalData; an end date or a series without a bar in progress is refused with 321.
ibapi at the last text version and at the protobuf maximum, and ib_async (text, 178)."""
from __future__ import annotations

from datetime import datetime

from ib_async import IB, Stock

from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, stock
from tests.support.processes import wait_for

start_sim = start_sim_at_versions()


def _t(date: str) -> float:
    """A bar time as the simulator writes it with formatDate 1 ("yyyymmdd hh:mm:ss ZONE")."""
    return datetime.strptime(date[:17], "%Y%m%d %H:%M:%S").timestamp()


def _client(sim, client_id: int) -> IbapiClient:
    c = IbapiClient(sim.port, client_id).connect()
    rec = c.rec
    rec.historicalDataUpdate = lambda req_id, bar: rec._add("historicalDataUpdate", req_id, bar)
    return c


def _updates(c: IbapiClient, req_id: int) -> list:
    return [e[1] for e in c.rec.get("historicalDataUpdate", lambda e: e[0] == req_id)]


def test_ibapi_keeps_getting_the_bar_in_progress_until_it_cancels(start_sim):
    sim = start_sim()
    c = _client(sim, 41)
    try:
        c.client.reqHistoricalData(1, stock("AAPL"), "", "120 S", "10 secs", "TRADES", 0, 1, True, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 1)
        bars = [e[1] for e in c.rec.get("historicalData", lambda e: e[0] == 1)]
        assert len(bars) == 12
        c.wait("historicalDataUpdate", lambda e: e[0] == 1, count=4, deadline=60)
        ups = _updates(c, 1)
        times = [_t(b.date) for b in ups]
        assert times == sorted(times)
        assert times[0] >= _t(bars[-1].date)
        steps = {b - a for a, b in zip(times, times[1:])}
        assert 0 in steps and 10 in steps and steps <= {0, 10}  # updated, then a new bar
        for b in ups:
            assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
            assert b.volume >= 0 and b.barCount >= 0
        # the simulator's market: the bar in progress closes at the last print (AAPL, 0.01)
        assert abs(ups[-1].close - sim.control.quote(265598)["last"]) < 5.0

        c.client.cancelHistoricalData(1)
        stopped_at = len(_updates(c, 1))
        # a second subscription runs on: two of its updates are longer than one interval of
        # the cancelled one, which sends nothing more (at most one already on its way)
        c.client.reqHistoricalData(2, stock("MSFT"), "", "60 S", "5 secs", "MIDPOINT", 0, 2, True, [])
        c.wait("historicalDataUpdate", lambda e: e[0] == 2, count=2, deadline=60)
        assert len(_updates(c, 1)) <= stopped_at + 1
        assert all(b.volume == -1 for b in _updates(c, 2))  # no volume on MIDPOINT, as IB
        assert all(b.date.isdigit() for b in _updates(c, 2))  # formatDate 2: epoch seconds
        c.client.cancelHistoricalData(2)

        # IB's rules for a live series: no end date, a series with a bar in progress
        c.client.reqHistoricalData(3, stock("AAPL"), "20260101 10:00:00 US/Eastern", "1 D",
                                   "1 min", "TRADES", 0, 1, True, [])
        c.client.reqHistoricalData(4, stock("AAPL"), "", "1 D", "1 min", "BID_ASK", 0, 1, True, [])
        assert c.wait_error(321, 3)[2] == \
            "Error validating request.-'bM' : cause - End date not supported with live updates"
        assert c.wait_error(321, 4)[2] == \
            "Error validating request.-'bM' : cause - Source price not supported with live updates"
        assert not c.rec.get("historicalData", lambda e: e[0] in (3, 4))
        # the same end date without keepUpToDate is an ordinary request
        c.client.reqHistoricalData(5, stock("AAPL"), "20260101 10:00:00 US/Eastern", "1800 S",
                                   "1 min", "TRADES", 0, 1, False, [])
        c.wait("historicalDataEnd", lambda e: e[0] == 5)
    finally:
        c.disconnect()


def test_ib_async_update_event(start_sim):
    sim = start_sim()
    ib = IB()
    ib.connect("127.0.0.1", sim.port, clientId=42, timeout=30)
    try:
        [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        bars = ib.reqHistoricalData(aapl, "", "60 S", "5 secs", "TRADES", False,
                                    keepUpToDate=True)
        first = len(bars)
        assert first == 12
        events: list[tuple[int, bool]] = []
        bars.updateEvent += lambda b, new_bar: events.append((len(b), new_bar))

        def poll():
            ib.sleep(0.05)
            return len([e for e in events if e[1]]) >= 2
        wait_for(poll, 60, what="two new bars through ib_async's updateEvent")
        assert len(bars) >= first + 2
        assert bars[-1].date > bars[first - 1].date
        ib.cancelHistoricalData(bars)
        n = len(events)
        # another live series runs on for two of its updates (longer than one interval):
        # the cancelled one sends nothing more (at most one already on its way)
        [msft] = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))
        other = ib.reqHistoricalData(msft, "", "60 S", "5 secs", "MIDPOINT", False,
                                     keepUpToDate=True)
        seen: list[bool] = []
        other.updateEvent += lambda b, new_bar: seen.append(new_bar)
        wait_for(lambda: (ib.sleep(0.05), len(seen) >= 2)[1], 60, what="the other series")
        assert len(events) <= n + 1
        ib.cancelHistoricalData(other)
    finally:
        ib.disconnect()


def test_historical_data_update_reads_the_same_in_protobuf_as_in_text():
    """ibapi's decoder, at the last version before the protobuf switch (208), at it and at
    the newest: the same historicalDataUpdate from both wire forms (msg 90 / 290)."""
    from decimal import Decimal

    from ibapi.common import PROTOBUF_MSG_ID

    from services.simulator import pbwire
    from services.simulator.encoders import TextEncoder
    from services.simulator.protocol import Out
    from tests.simulator.test_protobuf import MAX, _frame_id, decode

    bar = ("20260402 09:30:00 US/Eastern", "190.01", "190.5", "189.75", "190.25", "1200",
           "190.1275", 31)
    text = decode(TextEncoder(200).historical_data_update(13, bar), 200)
    assert text == [("historicalDataUpdate", [13, {
        "date": "20260402 09:30:00 US/Eastern", "open": 190.01, "high": 190.5, "low": 189.75,
        "close": 190.25, "volume": Decimal("1200"), "wap": Decimal("190.1275"), "barCount": 31}])]
    gate = pbwire.RESPONSE_GATES[Out.HISTORICAL_DATA_UPDATE]
    assert gate == pbwire.HISTORICAL_DATA
    for version in (gate - 1, gate, MAX):
        frame = pbwire.encoder_for(version, "America/New_York").historical_data_update(13, bar)
        assert (_frame_id(frame) > PROTOBUF_MSG_ID) == (version >= gate), version
        assert decode(frame, version) == text, version
