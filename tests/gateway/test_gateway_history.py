"""Historical bars over the bus, with IB's pacing applied before anything reaches IB."""
from __future__ import annotations

from proto.schema import Bar, GatewayError, HistoricalEnd, HistoricalRequest


def _ask(fleet, request: str, symbol: str = "AAPL", duration: str = "1 D",
         bar_size: str = "1 hour") -> None:
    fleet.subscribe("AAPL", "tick")  # sets up the test's publisher, routed
    fleet.pub.publish(HistoricalRequest(requester="strat.h", request=request, symbol=symbol,
                                        duration=duration, bar_size=bar_size))


def test_historical_bars_come_back_on_the_requesters_topic(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    _ask(fleet, "r1")
    end = fleet.bus.wait(HistoricalEnd, lambda m: m.request == "r1")[0]
    assert end.error == "" and end.count > 0
    bars = fleet.bus.of(Bar, lambda m: m.request == "r1")
    assert len(bars) == end.count
    assert all(b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close) for b in bars)
    assert [b.start_ns for b in bars] == sorted(b.start_ns for b in bars)
    assert all(b.seconds == 3600 and b.symbol == "AAPL" for b in bars)


def test_an_unknown_symbol_ends_the_request_with_an_error(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    _ask(fleet, "bad", symbol="NOSUCH")
    end = fleet.bus.wait(HistoricalEnd, lambda m: m.request == "bad")[0]
    assert end.count == 0 and "NOSUCH" in end.error


def test_a_burst_for_one_contract_is_paced_and_never_violates_ibs_rules(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    durations = ["1 D", "2 D", "3 D", "4 D", "5 D", "6 D", "7 D"]  # 7 for one contract
    for i, duration in enumerate(durations):
        _ask(fleet, f"b{i}", duration=duration)
    ends = fleet.bus.wait(HistoricalEnd, lambda m: m.request.startswith("b"),
                          count=len(durations), deadline=90)
    # the simulator refuses a sixth request for one contract within 2 s with error 162, as
    # IB does: every request answered without one means the gateway held the sixth back
    assert all(e.error == "" and e.count > 0 for e in ends), \
        [(e.request, e.error, e.count) for e in ends]
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 162)
