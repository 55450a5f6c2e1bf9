"""Mean reversion sizes each position from its stop."""
from __future__ import annotations

from services.strategy.examples.mean_reversion import position_size


def test_quantity_is_risk_per_trade_over_the_stop_distance_in_whole_lots():
    # 0.1 % of 1,000,000 = 1,000 at risk; stop 0.37 away -> 2702.7 -> 2702 shares
    assert position_size(1_000_000, 0.001, 100.00, 99.63, 1, 10_000) == 2702
    # EUR.USD in lots of 1,000
    assert position_size(1_000_000, 0.001, 1.1000, 1.0990, 1000, 10_000_000) == 1_000_000


def test_quantity_is_capped_and_a_zero_stop_distance_trades_nothing():
    assert position_size(1_000_000, 0.01, 100.0, 99.0, 1, 500) == 500
    assert position_size(1_000_000, 0.01, 100.0, 100.0, 1, 500) == 0
