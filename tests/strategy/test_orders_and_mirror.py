"""Strategy.submit checks terms with the model's enums; the strategy's view is a mirror of
execution's numbers, replaced by execution's snapshot on a resync."""
from __future__ import annotations

import math

import pytest

from proto.schema import OrderUpdate, StrategyDigest, StrategyPosition
from services.model.orders import InvalidOrder
from services.strategy.base import Strategy
from services.runtime.instruments import Instruments
from tests.support.instruments import TEST_INSTRUMENTS


class Host:
    def __init__(self) -> None:
        self.intents = []

    def send_intent(self, intent) -> None:
        self.intents.append(intent)

    def request_data(self, symbol, kind) -> None:
        pass

    def now_ns(self) -> int:
        return 0


def _strategy():
    host = Host()
    return Strategy("s", ["AAPL"], {}, host, Instruments(TEST_INSTRUMENTS)), host


def test_a_lower_case_side_is_a_buy_and_nonsense_is_refused_before_anything_is_sent():
    s, host = _strategy()
    s.submit("AAPL", "buy", 10, "lmt", 100.0, tif="gtc")
    [intent] = host.intents
    assert (intent.side, intent.order_type, intent.tif) == ("BUY", "LMT", "GTC")
    for kwargs, field in ((dict(side="sideways"), "side"), (dict(order_type="LIMIT"), "order_type"),
                          (dict(tif="FOREVER"), "tif"), (dict(symbol="ZZZZ"), "symbol"),
                          (dict(quantity=0), "quantity"), (dict(limit_price=math.nan), "limit")):
        args = dict(symbol="AAPL", side="BUY", quantity=10, order_type="LMT", limit_price=1.0)
        args.update(kwargs)
        with pytest.raises(InvalidOrder, match=field):
            s.submit(**args)
    assert len(host.intents) == 1 and len(s.orders) == 1


def test_positions_are_executions_numbers_and_a_resync_replaces_the_mirror():
    s, _ = _strategy()
    s.handle_execution(StrategyPosition(strategy="s", symbol="AAPL", quantity=100,
                                        avg_cost=10.0, realized=-1.0))
    s.handle_execution(OrderUpdate(strategy="s", client_order_id="a", state="submitted",
                                   symbol="AAPL", side="BUY", quantity=5))
    assert s.position("AAPL") == 100 and s.pnl()[0] == -1.0
    assert s.handle_execution(StrategyDigest(strategy="s", open_orders=1,
                                             positions={"AAPL": 100}))
    assert not s.handle_execution(StrategyDigest(strategy="s", open_orders=0,
                                                 positions={"AAPL": 150}))
    s.resync([StrategyPosition(strategy="s", symbol="AAPL", quantity=150)])
    assert s.position("AAPL") == 150 and s.open_orders() == []
