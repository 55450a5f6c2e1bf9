"""F31: the units of reqMktData sizes and volume by server version, at the simulator (what an
ibapi client receives) and through the bridge (shares on the bus).

IB's rule as modelled (docs/simulator.md F31): US stocks' bid/ask/last sizes in round lots of
100 below MIN_SERVER_VER_MARKET_DATA_IN_SHARES (159), in shares from it; their day volume
(tick 8) in lots at every version (the G200 capture: AAPL's delayed day volume 312894 at
v200); futures and everything else in contracts/units. The market is frozen once it has
traded, so every number is compared exactly with the simulator's own book and volume."""
from __future__ import annotations

import pytest

from proto.schema import GatewayState, Tick
from tests.gateway.conftest import running_fleet
from tests.simulator.ibapi_client import IbapiClient, future, stock
from tests.support.processes import wait_for

AAPL, ES, EURUSD = 265598, 495512563, 12087792


def _trade_then_freeze(control) -> dict[int, tuple[float, float, float]]:
    """Let the market trade, freeze it; per conId: (volume, best bid size, best ask size)."""
    wait_for(lambda: control.quote(AAPL)["volume"] > 1000 and control.quote(ES)["volume"] > 10,
             60, what="some volume")
    control.call("bench_freeze", frozen=True, stamps=False)
    out = {}
    for con_id in (AAPL, ES):
        depth = control.depth(con_id, 1)
        out[con_id] = (control.quote(con_id)["volume"], depth["bids"][0][1], depth["asks"][0][1])
    assert out == {c: (control.quote(c)["volume"], control.depth(c, 1)["bids"][0][1],
                       control.depth(c, 1)["asks"][0][1]) for c in (AAPL, ES)}  # frozen
    return out


@pytest.mark.parametrize("version", [158, 159, 226])
def test_the_units_an_ibapi_client_receives(start_sim, version):
    sim = start_sim("--server-version", str(version))
    truth = _trade_then_freeze(sim.control)
    c = IbapiClient(sim.port, 51).connect()
    try:
        c.client.reqMktData(1, stock("AAPL"), "", False, False, [])
        c.client.reqMktData(2, future(), "", False, False, [])
        for rid in (1, 2):
            c.wait("tickSize", lambda e, rid=rid: e[0] == rid and e[1] == 8)
            c.wait("tickSize", lambda e, rid=rid: e[0] == rid and e[1] == 0)

        def got(rid: int, tick_type: int) -> float:
            return float(c.rec.get("tickSize", lambda e: e[0] == rid and e[1] == tick_type)[0][2])

        volume, bid_size, ask_size = truth[AAPL]
        lots = version < 159
        assert got(1, 8) == volume // 100                      # lots at every version
        assert got(1, 0) == (bid_size // 100 if lots else bid_size)
        assert got(1, 3) == (ask_size // 100 if lots else ask_size)
        volume, bid_size, ask_size = truth[ES]                  # a future: contracts
        assert (got(2, 8), got(2, 0), got(2, 3)) == (volume, bid_size, ask_size)
    finally:
        c.disconnect()


@pytest.mark.parametrize("version", [158, 200])
def test_the_bridge_publishes_shares(procs, version):
    with running_fleet(procs, "--server-version", str(version)) as fleet:
        fleet.start_gateway()
        fleet.bus.wait(GatewayState, lambda m: m.state == "synchronised", deadline=60)
        truth = _trade_then_freeze(fleet.sim)
        fx = fleet.sim.depth(EURUSD, 1)
        fleet.subscribe("AAPL", "tick")
        fleet.subscribe("EUR.USD", "tick")

        def last(symbol: str) -> Tick | None:
            ticks = fleet.bus.of(Tick, lambda m: m.symbol == symbol)
            return ticks[-1] if ticks else None

        def whole(symbol: str, volume: bool) -> bool:
            t = last(symbol)
            return (t is not None and t.bid_size > 0 and t.ask_size > 0
                    and (t.volume > 0 or not volume))
        wait_for(lambda: whole("AAPL", True) and whole("EUR.USD", False), 60,
                 what="both tops of book")
        volume, bid_size, ask_size = truth[AAPL]
        shares = (lambda n: n // 100 * 100) if version < 159 else (lambda n: n)
        aapl = last("AAPL")
        assert aapl.volume == volume // 100 * 100  # IB's lots, times 100
        assert (aapl.bid_size, aapl.ask_size) == (shares(bid_size), shares(ask_size))
        eur = last("EUR.USD")                       # not a US stock: as IB sends it
        assert (eur.bid_size, eur.ask_size) == (fx["bids"][0][1], fx["asks"][0][1])
