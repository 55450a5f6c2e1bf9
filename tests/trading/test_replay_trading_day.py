"""During market replay the fleet's "today" is the data's day, not the host's.

The simulator replaying the LOBSTER AAPL sample runs on the data's clock (2012-06-21 09:30
New York). Its fills carry that time, so execution books them to that trading day; the day
figures (``realized_day``, what risk's daily loss limit reads) must be taken on the same
clock, or a replayed day's losses count for no day at all: the gateway measures IB's clock
(currentTime) and publishes its offset (``GatewayState.clock_offset_ns``); execution and risk
read "now" on it (services/runtime/broker_clock.py). Real simulator, bus, gateway, risk,
execution and a strategy trading against the replayed book."""
from __future__ import annotations

import math

from proto.schema import GatewayState, StrategyPosition
from services.data.catalog import Catalog
from services.data.importers import read
from services.data.sample import SAMPLE, SAMPLE_DIR
from tests.support.fleet import Fleet

PROBE = "tests.support.probe_strategy:Probe"
CHURN_RISK = {"max_position": 1000, "order_rate": 50, "order_burst": 50, "max_open_orders": 10}
DATA_DAY = "2012-06-21"
YEARS_BACK_NS = 10 * 365 * 86400 * 10**9  # the sample is 14 years old: more than 10


def test_a_replayed_days_fills_count_for_that_day(procs, tmp_path):
    catalog = Catalog(tmp_path / "catalog")
    kind, files, options = SAMPLE[0]
    catalog.add(read(kind, [str(SAMPLE_DIR / f) for f in files], options))
    fleet = Fleet(procs, tmp_path)
    try:
        fleet.start_core(sim_args=("--market", "lobster/AAPL", "--catalog",
                                   str(tmp_path / "catalog"), "--speed", "1"))
        fleet.wait(lambda: any(m.clock_offset_ns < -YEARS_BACK_NS
                               for m in fleet.messages(GatewayState)),
                   deadline=60, what="the gateway's measure of IB's (the data's) clock")
        fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10},
                           risk=CHURN_RISK)
        fleet.start_strategy("churn")

        def closed_trades() -> list[StrategyPosition]:
            return [p for p in fleet.messages(StrategyPosition)
                    if p.strategy == "churn" and p.symbol == "AAPL"
                    and abs(p.realized + p.commissions) > 1e-9]  # a round trip closed
        fleet.wait(closed_trades, deadline=120, what="a round trip against the replayed book")
        last = closed_trades()[-1]
        assert last.trading_day == DATA_DAY, last
        # every fill is of the data's day: the day's figure is the whole realized figure
        assert math.isclose(last.realized_day, last.realized, abs_tol=1e-6), last
    finally:
        fleet.close()
