"""What the bridge must get right about IB's own behaviour (issue 13, "Why" item 6): the depth
full-book rule across a farm flap, historical requests and contract lookups in flight across a
gateway restart, historical pacing across reconnects and gateway restarts, a lasting client id
lock-out (326), futures positions' exchange. Real simulator, bus and gateway processes
(tests/gateway/conftest.py); outside trades: test_gateway_outside_trade.py."""
from __future__ import annotations

import signal

import pytest
import zmq

from core.book import BookError, OrderBook
from proto.schema import (Alert, Bar, ContractLookup, ContractLookupResult, DepthUpdate,
                          Execution, GatewayError, Heartbeat, HistoricalEnd, HistoricalRequest,
                          Position, ReconcileEnd)
from services.bus.reliable import ReliableClient
from services.gateway.connection import LOCKOUT_CRITICAL_ATTEMPTS
from tests.gateway.conftest import running_fleet
from tests.support.processes import wait_for

pytestmark = pytest.mark.both_wire_formats  # the fleet's tests at v200 and v226 (conftest)

AAPL = 265598
ROWS = 10  # the gateway's --depth-rows default, and a strategy's book depth


def _book(fleet, symbol: str = "AAPL", since: int = 0):
    """A strategy's book (core.book.OrderBook, as Strategy.handle_depth keeps it) fed with
    every DepthUpdate on the bus, in order; with the updates it refused."""
    book, refused = OrderBook(ROWS), []
    for m in fleet.bus.of(DepthUpdate, lambda m: m.symbol == symbol, since=since):
        try:
            book.update_depth(m.position, m.operation, m.side, m.price, m.size)
        except BookError as exc:
            refused.append((m, str(exc)))
            book.reset()
    return book, refused


def _state_after(fleet, state: str, since: int) -> int:
    """Wait for the gateway to publish ``state`` after ``since``; its index on the bus (the
    gateway also repeats its state with every heartbeat: ``since`` must follow the change
    before)."""
    msg = fleet.bus.wait_state(state, since=since, deadline=60)
    with fleet.bus.lock:
        return next(i for i, m in enumerate(fleet.bus.messages) if m is msg)


def _rows(levels) -> list[tuple[float, float]]:
    return [(round(float(p), 6), float(s)) for p, s in levels]


def _same_as_simulator(fleet) -> bool:
    book, _ = _book(fleet)
    sim = fleet.sim.depth(AAPL, ROWS)
    return _rows(book.bids()) == _rows(sim["bids"]) and _rows(book.asks()) == _rows(sim["asks"])


def test_a_farm_flap_resets_a_full_depth_book_once_and_it_is_rebuilt_from_ibs_inserts(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    fleet.subscribe("AAPL", "depth")

    # long enough that IB's full-book rule has dropped rows without deletes: far more inserts
    # than deletes on one side of a book that never holds more than ROWS rows
    def full_book_drops():
        ups = fleet.bus.of(DepthUpdate, lambda m: m.symbol == "AAPL")
        return max(sum(1 for m in ups if m.side == s and m.operation == 0)
                   - sum(1 for m in ups if m.side == s and m.operation == 2)
                   for s in (0, 1)) > 3 * ROWS
    wait_for(full_book_drops, 120, what="rows pushed off a full book without a delete")
    assert _book(fleet)[1] == []

    # the market stands still from here, so the books can be compared
    fleet.sim.bench_freeze(True, stamps=False)
    wait_for(lambda: _same_as_simulator(fleet), 60, what="the bus's book == the simulator's")
    mark = fleet.bus.mark()
    fleet.sim.farm_flap(seconds=1.0)
    _state_after(fleet, "synchronised", _state_after(fleet, "degraded", mark))
    wait_for(lambda: _same_as_simulator(fleet) and fleet.bus.of(
        DepthUpdate, lambda m: m.symbol == "AAPL" and m.operation == 0, since=mark),
        60, what="the book rebuilt from IB's inserts after the flap")

    after = fleet.bus.of(DepthUpdate, lambda m: m.symbol == "AAPL", since=mark)
    deletes = [m for m in after if m.operation == 2]
    inserts = [m for m in after if m.operation == 0]
    # one reset: at most ROWS deletes a side, all before the first insert of the new stream
    assert len(deletes) <= 2 * ROWS, len(deletes)
    assert all(m.position == 0 for m in deletes)
    first_insert = next(i for i, m in enumerate(after) if m.operation == 0)
    assert all(m.operation == 0 for m in after[first_insert:]), "a delete after the rebuild"
    assert len(inserts) <= 2 * ROWS and len(after) <= 4 * ROWS, (len(deletes), len(inserts))
    # the strategy-side book refused nothing, and equals the simulator's
    book, refused = _book(fleet)
    assert refused == []
    assert _rows(book.bids()) == _rows(fleet.sim.depth(AAPL, ROWS)["bids"])
    assert _rows(book.asks()) == _rows(fleet.sim.depth(AAPL, ROWS)["asks"])


def test_a_lasting_client_id_lockout_is_alerted_once_and_its_326s_summarised(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    mark = fleet.bus.mark()
    fleet.sim.lockout(client_id=fleet.client_id, seconds=600)  # until lifted below
    fleet.bus.wait(Alert, lambda m: m.code == "gateway.client_id_locked_out", since=mark,
                   deadline=120, what="the critical alert of a lasting lock-out")
    fleet.sim.lockout(client_id=fleet.client_id, seconds=0)  # the other session goes
    fleet.bus.wait_state("synchronised", since=mark, deadline=60)
    fleet.bus.wait(Alert, lambda m: m.code == "gateway.client_id_accepted", since=mark)
    beat = fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                          and m.counters.get("ib_error_326", 0) >= LOCKOUT_CRITICAL_ATTEMPTS,
                          since=mark, what="the 326s counted")[-1]
    refused = beat.counters["ib_error_326"]
    alerts = [(m.severity, m.code) for m in fleet.bus.of(Alert, since=mark)
              if "client_id" in m.code]
    assert alerts == [("warning", "gateway.client_id_in_use"),
                      ("critical", "gateway.client_id_locked_out"),
                      ("info", "gateway.client_id_accepted")], alerts
    errors = fleet.bus.of(GatewayError, lambda m: m.code == 326, since=mark)
    # the first, then at most one summary per LOCKOUT_SUMMARY_S: far fewer than the refusals
    assert 1 <= len(errors) <= 3 < refused, (len(errors), refused)


@pytest.fixture
def slow_history_fleet(procs):
    """The gateway tests' fleet (conftest.fleet) with a simulator that answers historical
    requests after 3 s, so one is still in flight when a fault strikes."""
    with running_fleet(procs, "--history-delay-ms", "3000") as f:
        yield f


def _ask_history(fleet, request: str, symbol: str = "AAPL") -> None:
    fleet.subscribe("AAPL", "tick")  # sets up the test's publisher, routed
    fleet.pub.publish(HistoricalRequest(requester="strat.h", request=request, symbol=symbol,
                                        duration="1 D", bar_size="1 hour"))


def _gateway_counter(fleet, name: str, since: int = 0):
    beats = fleet.bus.of(Heartbeat, lambda m: m.src.startswith("gateway"), since=since)
    return beats[-1].counters.get(name) if beats else None


def test_a_historical_request_in_flight_across_a_gateway_restart_is_answered(slow_history_fleet):
    fleet = slow_history_fleet
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    mark = fleet.bus.mark()
    _ask_history(fleet, "across")
    fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                   and m.counters.get("history_in_flight") == 1, since=mark,
                   what="the request sent to IB and not answered yet")
    fleet.sim.restart(seconds=2.0)  # IB Gateway restarts: the answer never comes
    fleet.bus.wait_state("disconnected", since=mark, deadline=30)
    end = fleet.bus.wait(HistoricalEnd, lambda m: m.request == "across", since=mark,
                         deadline=90, what="the request answered after the reconnect")[0]
    assert end.error == "" and end.count > 0, end
    assert len(fleet.bus.of(Bar, lambda m: m.request == "across")) == end.count
    # asked again on the new session: after IB's identical-request window, never inside it
    assert fleet.bus.states(since=mark)[:1] == ["disconnected"]
    assert _gateway_counter(fleet, "history_paced_identical", since=mark) == 1
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 162)


def test_historical_pacing_outlives_a_reconnect_and_a_gateway_process_restart(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    _ask_history(fleet, "first")
    end = fleet.bus.wait(HistoricalEnd, lambda m: m.request == "first")[0]
    assert end.error == "" and end.count > 0
    # the gateway process restarts (a new connection, and a new process): IB still counts
    # the first request, and so must the pacer
    fleet.procs.kill(fleet.gateway, signal.SIGKILL)
    fleet.gateway.wait(30)
    mark = fleet.bus.mark()
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised", since=mark)
    _ask_history(fleet, "again")  # identical
    held = fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                          and m.counters.get("history_paced_identical") == 1, since=mark,
                          what="the identical request held back by the pacer")[0]
    end = fleet.bus.wait(HistoricalEnd, lambda m: m.request == "again", since=mark,
                         deadline=90)[0]
    assert end.error == "" and end.count > 0
    # held first, sent after: the pacer's decision came before IB's answer
    with fleet.bus.lock:
        order = [i for i, m in enumerate(fleet.bus.messages) if m is held or m is end]
        assert [fleet.bus.messages[i] for i in order] == [held, end]
    assert not fleet.bus.of(GatewayError, lambda m: m.code == 162)


def test_a_historical_request_in_flight_when_the_gateway_process_dies_is_answered_by_the_next(
        slow_history_fleet):
    fleet = slow_history_fleet
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    mark = fleet.bus.mark()
    _ask_history(fleet, "orphan")
    fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                   and m.counters.get("history_in_flight") == 1, since=mark,
                   what="the request sent to IB and not answered yet")
    fleet.procs.kill(fleet.gateway, signal.SIGKILL)
    fleet.gateway.wait(30)
    fleet.start_gateway()
    end = fleet.bus.wait(HistoricalEnd, lambda m: m.request == "orphan", since=mark,
                         deadline=90, what="the next gateway process answering it")[0]
    assert end.error == "" and end.count > 0, end
    assert len(fleet.bus.of(HistoricalEnd, lambda m: m.request == "orphan")) == 1
    fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                   and m.counters.get("history_restored") == 1
                   and m.counters.get("history_waiting") == 0
                   and m.counters.get("history_in_flight") == 0, since=mark)


def test_a_futures_position_is_named_with_its_exchange_even_by_a_gateway_that_never_resolved_it(
        fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    seq = fleet.command(command="place", client_order_id="es-1", symbol="ESZ6@CME", side="BUY",
                        quantity=1, order_type="MKT")
    fleet.wait_acked(seq)
    fill = fleet.bus.wait(Execution, lambda m: m.client_order_id == "es-1")[0]
    assert fill.symbol == "ESZ6@CME"
    # a new gateway process: its contract cache is empty, and IB's position names no exchange
    fleet.procs.kill(fleet.gateway, signal.SIGKILL)
    fleet.gateway.wait(30)
    mark = fleet.bus.mark()
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised", since=mark)
    positions = fleet.bus.of(Position, since=mark)
    assert [p.symbol for p in positions if p.symbol.startswith("ESZ6")] == ["ESZ6@CME"], \
        [p.symbol for p in positions]
    assert not [p for p in positions if p.symbol.endswith("@")]
    # the run ended after the position it had to name
    with fleet.bus.lock:
        after = fleet.bus.messages[mark:]
    at = next(i for i, m in enumerate(after) if isinstance(m, Position)
              and m.symbol == "ESZ6@CME")
    assert any(isinstance(m, ReconcileEnd) for m in after[at:])
    fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                   and m.counters.get("exchange_lookups") == 1, since=mark)


def test_a_contract_lookup_in_flight_when_the_session_drops_is_answered_with_the_reason(fleet):
    from tests.gateway.test_gateway_lookup import _ask
    fleet.start_gateway("--probe-interval", "30", "--probe-timeout", "30")  # no probe drop
    fleet.bus.wait_state("synchronised")
    mark = fleet.bus.mark()
    client = ReliableClient(zmq.Context.instance(), fleet.cfg.bus.endpoint("gateway"),
                            "cli.test", resend_after=1.0)
    got: list = []
    try:
        fleet.sim.hang()  # IB reads nothing more: the lookup below stays in flight
        client.send(ContractLookup(symbols=["IBM"]))
        fleet.bus.wait(Heartbeat, lambda m: m.src.startswith("gateway")
                       and m.counters.get("lookups") == 1, since=mark,
                       what="the lookup taken by the gateway")
        assert not [m for m in client.poll(10) if isinstance(m, ContractLookupResult)]
        fleet.sim.restart(seconds=1.0)  # the gateway restarts under it
        result = wait_for(lambda: got.extend(client.poll(50)) or next(
            (m for m in got if isinstance(m, ContractLookupResult)), None), 60,
            what="the lookup's answer")
    finally:
        fleet.sim.resume()
        client.close()
    assert not result.connected, result
    assert "connection to IB was lost" in result.text and not result.failed, result
    down = fleet.bus.wait_state("disconnected", since=mark, deadline=60)
    with fleet.bus.lock:
        at = next(i for i, m in enumerate(fleet.bus.messages) if m is down)
    fleet.bus.wait_state("synchronised", since=at, deadline=60)
    again = _ask(fleet, ["IBM"])
    assert again.connected and again.resolved == {"IBM": 8314}, again
