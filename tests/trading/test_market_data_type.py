"""Issue 13, items 3 and 7: market data on a paper account without live API data.

Must show: a paper account without live data: strategies receive delayed data marked as such,
and ``status`` says so. The simulator's account has delayed data only (``--market-data
delayed``): the bridge (``market_data_type = "auto"``, the default) asks live, IB answers 10089,
the bridge switches to delayed and asks again; Ticks arrive marked ``delayed``, a strategy acts
on them, one that requires live data does not, and the fleet status says "delayed". An account
with no market data at all: an error and one alert, no ticks, nothing crashes.
"""
from __future__ import annotations

import tomllib

import tomli_w

from proto.schema import Alert, GatewayError, GatewayState, Tick
from services.fleet.status import collect
from services.fleet.supervisor import FleetPaths
from tests.support.processes import wait_for

PROBE = "tests.support.probe_strategy:Probe"
RISK = {"max_position": 1000, "order_rate": 50, "order_burst": 50, "stale_after_s": 30}


def _add(fleet, name: str, params: dict, **top) -> None:
    """A Probe strategy on AAPL, with top-level strategy config keys (require_live_data)."""
    path = fleet.add_strategy(name, PROBE, ["AAPL"], params, risk=RISK)
    data = tomllib.loads(path.read_text())
    data.update(top)
    path.write_text(tomli_w.dumps(data))


def _ticks(fleet, symbol: str = "AAPL") -> list[Tick]:
    return [t for t in fleet.messages(Tick) if t.symbol == symbol]


def _errors(fleet, code: int) -> list[GatewayError]:
    return [e for e in fleet.messages(GatewayError) if e.code == code]


def _status_market_data(fleet) -> dict:
    """What ``ibfleet status --json`` reports under "market_data" (its collect(), without the
    supervisord the status command also asks for its processes)."""
    return collect(fleet.config, FleetPaths(fleet.config)).as_dict()["market_data"]


def _sim_orders(fleet, strategy: str) -> list[dict]:
    return [o for o in fleet.sim.orders() if o["order_ref"].startswith(f"{strategy}-")]


def test_delayed_only_account_strategies_get_delayed_ticks_and_status_says_so(fleet):
    fleet.start_core(sim_args=("--market-data", "delayed"))
    _add(fleet, "dly", {"mode": "rest_far", "count": 1})
    _add(fleet, "liveonly", {"mode": "rest_far", "count": 1}, require_live_data=True)
    fleet.start_strategy("dly")
    fleet.start_strategy("liveonly")

    # IB refuses live data (10089, the request left open and silent); the bridge switches to
    # delayed and asks again: delayed ticks, every one marked
    fleet.wait(lambda: len([t for t in _ticks(fleet) if t.delayed]) >= 5, deadline=90,
               what="delayed AAPL ticks on the bus")
    refused = _errors(fleet, 10089)
    assert refused and refused[0].scope == "subscription"
    assert "Delayed market data is available" in refused[0].text
    assert _errors(fleet, 10167), "IB's 'displaying delayed market data' advisory"
    assert all(t.delayed for t in _ticks(fleet)), "a Tick not marked delayed"
    fleet.wait(lambda: any(a.code == "gateway.delayed_market_data" and "AAPL" in a.text
                           for a in fleet.alerts()), what="the fallback alert")

    # a strategy acts on delayed data (its order rests at the simulator) ...
    fleet.wait(lambda: _sim_orders(fleet, "dly"), deadline=90,
               what="the strategy acting on delayed ticks")
    # ... one that requires live data says so once and never trades
    fleet.wait(lambda: any(a.code == "strategy.delayed_data_refused" and "liveonly" in a.text
                           for a in fleet.alerts()), deadline=60,
               what="the live-only strategy's alert")

    # status: delayed, per symbol
    wait_for(lambda: _status_market_data(fleet).get("AAPL", {}).get("tick") == "delayed",
             deadline=60, what="status to show AAPL's market data as delayed")

    # a reconnect: the bridge asks delayed straight away (no second 10089), ticks stay delayed
    n_10089, n_ticks = len(_errors(fleet, 10089)), len(_ticks(fleet))
    mark = len(fleet.messages(GatewayState))
    fleet.sim.restart(seconds=2)
    fleet.wait_gateway("connecting", after=mark, deadline=60)
    fleet.wait_gateway("synchronised", after=mark, deadline=120)
    fleet.wait(lambda: len(_ticks(fleet)) >= n_ticks + 5, deadline=90,
               what="ticks again after the reconnect")
    assert all(t.delayed for t in _ticks(fleet))
    assert len(_errors(fleet, 10089)) == n_10089, "live asked again after the reconnect"

    fleet.pump()
    assert not fleet.decisions("liveonly"), "the live-only strategy sent an intent"
    assert not _sim_orders(fleet, "liveonly")
    refusals = [a for a in fleet.alerts("strategy.delayed_data_refused") if "liveonly" in a.text]
    assert len(refusals) == 1, refusals
    assert fleet.sim.status()["mkt_silent"] == 0, "the 10089 request left open at IB"
    assert all(p.poll() is None for p in fleet.procs.procs), "a process died"


def test_account_without_market_data_errors_once_and_nothing_crashes(fleet):
    fleet.start_core(sim_args=("--market-data", "none"))
    _add(fleet, "nodata", {"mode": "rest_far", "count": 1})
    fleet.start_strategy("nodata")

    # auto: live refused (354), delayed refused (10168): the subscription ends, one alert.
    # The strategy asks again every couple of seconds: refused each time, alerted once.
    fleet.wait(lambda: len(_errors(fleet, 10168)) >= 3, deadline=90,
               what="IB's 10168 for the repeated subscription")
    assert _errors(fleet, 354) and _errors(fleet, 354)[0].scope == "subscription"
    assert all(e.scope == "subscription" and e.ref.endswith("/AAPL")
               for e in _errors(fleet, 10168))
    fleet.pump()
    alerts = [a for a in fleet.alerts("gateway.no_market_data") if "AAPL" in a.text]
    assert len(alerts) == 1 and alerts[0].severity == "critical", alerts
    assert "10168" in alerts[0].text
    assert not _ticks(fleet), "ticks from an account without market data"
    assert not fleet.decisions("nodata") and not _sim_orders(fleet, "nodata")
    wait_for(lambda: _status_market_data(fleet).get("AAPL", {}).get("tick") == "refused (10168)",
             deadline=60, what="status to show AAPL's market data refused")
    assert fleet.gateway_state() == "synchronised"
    assert all(p.poll() is None for p in fleet.procs.procs), "a process died"


def test_live_only_gateway_on_a_delayed_account_refuses_with_one_alert(fleet):
    """``market_data_type = "live"``: no fallback; IB's 10089 ends the subscription (cancelled
    at IB, where it stays open otherwise) with an error and one alert."""
    fleet.config_path.write_text(fleet.config_path.read_text().replace(
        "[gateway]\n", '[gateway]\nmarket_data_type = "live"\n'))
    fleet.start_core(sim_args=("--market-data", "delayed"))
    _add(fleet, "strict", {"mode": "rest_far", "count": 1})
    fleet.start_strategy("strict")
    fleet.wait(lambda: len(_errors(fleet, 10089)) >= 2, deadline=90,
               what="IB's 10089 for the repeated subscription")
    fleet.pump()
    alerts = [a for a in fleet.alerts("gateway.no_market_data") if "AAPL" in a.text]
    assert len(alerts) == 1, alerts
    assert not _ticks(fleet) and not _errors(fleet, 10167)
    # cancelled at IB, where 10089 leaves it open: no silent request piles up
    assert fleet.sim.status()["subscriptions"]["mkt"] == 0
    wait_for(lambda: fleet.sim.status()["mkt_silent"] == 0, deadline=30,
             what="the refused request cancelled at the simulator")
    assert isinstance(alerts[0], Alert) and fleet.gateway_state() == "synchronised"
    assert all(p.poll() is None for p in fleet.procs.procs), "a process died"
