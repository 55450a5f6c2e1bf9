"""The strategy API a trader expects (issue 15, item 6): bar sizes, the order handle, modify
by keyword, bracket, target_position, history, account values and commissions, timers and
the market's open/close, and the reference page generated from the docstrings."""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from proto import codec
from proto.schema import (AccountValue, Bar, Commission, OrderUpdate, RiskDecision,
                          StrategyPosition, TradeTick)
from services.backtest.engine import BacktestEngine, Settings
from services.backtest.synthetic import random_walk
from services.model.orders import InvalidOrder
from services.strategy import OrderHandle
from services.strategy.bars import BarAggregator, BarSizeError, aggregate, bar_seconds
from services.strategy.base import Strategy
from services.strategy.clock import TradingCalendar
from services.strategy.config import StrategyConfig
from services.strategy.runner import complete_bars, history_duration
from services.runtime.instruments import Instruments
from tests.support.instruments import TEST_INSTRUMENTS

NS = 1_000_000_000
NY = ZoneInfo("America/New_York")
REPO = Path(__file__).resolve().parents[2]


def ny_ns(*args) -> int:
    return int(datetime(*args, tzinfo=NY).timestamp()) * NS


T0 = ny_ns(2026, 11, 30, 10, 0)  # a Monday, 10:00 in New York


class Host:
    """A fake StrategyHost: records intents and data requests; its clock is set by hand."""

    def __init__(self, t: int = T0) -> None:
        self.intents = []
        self.requests = []
        self.t = t
        self.wake = None
        self.bars: list[Bar] = []

    def send_intent(self, intent) -> None:
        self.intents.append(intent)

    def request_data(self, symbol, kind) -> None:
        self.requests.append((symbol, kind))

    def now_ns(self) -> int:
        return self.t

    def wake_at(self, t_ns: int) -> None:
        self.wake = t_ns

    def history(self, symbol, bar_size, count, what_to_show, use_rth, timeout):
        self.asked = (symbol, bar_size, count, what_to_show, use_rth)
        return self.bars


class Recorder(Strategy):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.got_bars: list[Bar] = []
        self.trades = []
        self.calls = []

    def on_bar(self, bar) -> None:
        self.got_bars.append(bar)

    def on_trade(self, trade) -> None:
        self.trades.append(trade)


def make(cls=Recorder, t: int = T0):
    host = Host(t)
    return cls("s", ["AAPL"], {}, host, Instruments(TEST_INSTRUMENTS)), host


def five(start_ns: int, o: float, h: float, lo: float, c: float, v: float = 100.0,
         symbol: str = "AAPL") -> Bar:
    return Bar(symbol=symbol, start_ns=start_ns, seconds=5, open=o, high=h, low=lo, close=c,
               volume=v, wap=(h + lo + c) / 3, count=2)


def minute_of_5s(start_ns: int, base: float) -> list[Bar]:
    return [five(start_ns + i * 5 * NS, base + i, base + i + 0.5, base + i - 0.5, base + i + 0.25)
            for i in range(12)]


def update(coid: str, state: str, qty: float = 100, filled: float = 0.0, side: str = "BUY",
           **kw) -> OrderUpdate:
    return OrderUpdate(strategy="s", client_order_id=coid, state=state, symbol="AAPL",
                       side=side, quantity=qty, filled=filled, **kw)


# -- bar sizes ----------------------------------------------------------------------------------
def test_bar_sizes_are_ibs_strings_from_one_second_to_one_day_and_nothing_else():
    assert [bar_seconds(s) for s in ("1 secs", "5 secs", "30 secs", "1 min", "2 mins",
                                     "15 mins", "1 hour", "4 hours", "1 day")] == \
        [1, 5, 30, 60, 120, 900, 3600, 14400, 86400]
    assert bar_seconds("1 minute") == bar_seconds("1 MIN") == bar_seconds(60) == 60
    assert bar_seconds("2 hours") == bar_seconds("2 hour") == 7200
    for bad in ("7 mins", "1 week", "minute", "", 7, "0 secs"):
        with pytest.raises(BarSizeError):
            bar_seconds(bad)


def test_one_minute_bars_are_aggregated_from_5s_bars_and_emitted_with_the_last_one():
    agg = BarAggregator("AAPL", 60)
    bars = minute_of_5s(T0, 100.0)
    out = []
    for i, b in enumerate(bars):
        got = agg.add_bar(b)
        assert got == [] or i == 11
        out += got
    [m] = out
    assert (m.start_ns, m.seconds) == (T0, 60)
    assert (m.open, m.high, m.low, m.close) == (100.0, 111.5, 99.5, 111.25)
    assert (m.volume, m.count) == (1200.0, 24)
    assert m.low <= m.wap <= m.high


def test_the_window_joined_midway_is_dropped_and_windows_align_on_the_exchange_clock():
    # joined at 10:00:30: that minute is incomplete and not delivered; 10:01 is
    bars = minute_of_5s(T0, 100.0)[6:] + minute_of_5s(T0 + 60 * NS, 200.0)
    out = aggregate(bars, 60)
    assert [b.start_ns for b in out] == [T0 + 60 * NS]
    # an hour bar starts on the hour, a day bar at midnight New York (not UTC)
    assert BarAggregator("AAPL", 3600).clock.start(T0 + 1234 * NS) == T0
    assert BarAggregator("AAPL", 86400).clock.start(T0) == ny_ns(2026, 11, 30, 0, 0)
    assert BarAggregator("AAPL", 14400).clock.start(T0) == ny_ns(2026, 11, 30, 8, 0)


def test_subscribe_bars_asks_ib_for_5s_bars_and_delivers_only_the_size_asked_for():
    s, host = make()
    s.subscribe_bars("AAPL", "1 min")
    assert host.requests == [("AAPL", "bar")]
    for b in minute_of_5s(T0, 100.0) + minute_of_5s(T0 + 60 * NS, 110.0):
        s.handle_market_data(b)
    assert [(b.seconds, b.start_ns) for b in s.got_bars] == [(60, T0), (60, T0 + 60 * NS)]
    # the raw 5 s bars too once subscribed as such; the same through subscribe(kind="bar")
    s.subscribe("AAPL", "bar")
    s.subscribe("AAPL", "bar", bar_size="5 mins")
    s.got_bars.clear()
    for b in minute_of_5s(T0 + 120 * NS, 120.0):
        s.handle_market_data(b)
    assert [b.seconds for b in s.got_bars] == [5] * 11 + [60, 5]
    with pytest.raises(BarSizeError):
        s.subscribe_bars("AAPL", "7 mins")


def test_bars_under_5_seconds_are_built_from_trades_without_calling_on_trade():
    s, host = make()
    s.subscribe_bars("AAPL", "1 secs")
    assert host.requests == [("AAPL", "trade")]
    for i, (ms, px) in enumerate([(0, 10.0), (1200, 10.5), (1500, 10.2), (2100, 10.1),
                                  (3000, 10.3)]):
        s.handle_market_data(TradeTick(symbol="AAPL", price=px, size=100,
                                       exch_ts=T0 + 500 * 1_000_000 + ms * 1_000_000))
    # the first second was joined midway; 1 s and 2 s complete when a later print comes
    assert [(b.start_ns - T0) // NS for b in s.got_bars] == [1, 2]
    assert (s.got_bars[0].open, s.got_bars[0].high, s.got_bars[0].close) == (10.5, 10.5, 10.5)
    assert (s.got_bars[1].open, s.got_bars[1].low, s.got_bars[1].close) == (10.2, 10.1, 10.1)
    assert s.trades == []
    s.subscribe("AAPL", "trade")
    s.handle_market_data(TradeTick(symbol="AAPL", price=10.0, size=1, exch_ts=T0 + 5 * NS))
    assert len(s.trades) == 1


# -- the order handle ---------------------------------------------------------------------------
def test_submit_returns_a_handle_that_is_the_client_order_id_and_outlives_the_order():
    s, host = make()
    h = s.submit("AAPL", "BUY", 100, "LMT", 100.0)
    assert isinstance(h, OrderHandle) and isinstance(h, str)
    assert h == host.intents[0].client_order_id == h.client_order_id
    assert {h: 1}[host.intents[0].client_order_id] == 1  # a dict key like the id
    assert type(codec.decode(codec.encode(host.intents))[0].client_order_id) is str
    assert (h.status, h.filled, h.remaining, h.done) == ("new", 0.0, 100.0, False)
    seen = []
    h.on("fill", lambda hh, f: seen.append(("fill", f.quantity))).on(
        "done", lambda hh: seen.append(("done", hh.status)))
    s.handle_update(update(h, "submitted", ib_order_id=7))
    s.handle_update(update(h, "partially_filled", filled=40, avg_fill_price=100.0,
                           exec_id="e1", last_fill_qty=40, last_fill_price=100.0))
    s.handle_commission(Commission(exec_id="e2", commission=0.3))  # before its fill
    s.handle_update(update(h, "filled", filled=100, avg_fill_price=99.94, exec_id="e2",
                           last_fill_qty=60, last_fill_price=99.9))
    s.handle_commission(Commission(exec_id="e1", commission=1.0))  # after its fill
    assert (h.status, h.filled, h.remaining, h.avg_fill_price, h.ib_order_id) == \
        ("filled", 100, 0.0, 99.94, 7)
    assert [(f.exec_id, f.quantity, f.price, f.commission) for f in h.fills] == \
        [("e1", 40, 100.0, 1.0), ("e2", 60, 99.9, 0.3)]
    assert h.commission == pytest.approx(1.3)
    assert [e.status for e in h.events] == ["new", "submitted", "partially_filled", "filled"]
    assert seen == [("fill", 40), ("fill", 60), ("done", "filled")]
    assert s.order(h) is None and s.handle(h) is h and s.handles[h] is h  # kept when done
    with pytest.raises(ValueError):
        h.on("exploded", print)


def test_a_refused_intent_leaves_a_rejected_handle_with_the_reason():
    s, _ = make()
    h = s.submit("AAPL", "BUY", 100, "LMT", 100.0)
    s.handle_decision(RiskDecision(strategy="s", client_order_id=h, approved=False,
                                   reason="max_position", text="over 500"))
    assert (h.status, h.done, h.reason) == ("rejected", True, "max_position: over 500")


def test_orders_known_from_executions_snapshot_get_handles_after_a_restart():
    s, _ = make()
    s.resync([update("s-old-3", "submitted", limit_price=99.0)])
    h = s.handle("s-old-3")
    assert h is not None and h.status == "submitted" and h.limit_price == 99.0


# -- modify -------------------------------------------------------------------------------------
def test_modify_takes_keywords_for_what_changes_only():
    s, host = make()
    h = s.submit("AAPL", "BUY", 100, "LMT", 100.0)
    assert s.modify(h, limit_price=100.013) is h
    intent = host.intents[-1]
    assert (intent.action, intent.quantity, intent.limit_price) == ("modify", 0.0, 100.01)
    assert math.isnan(intent.stop_price)
    s.modify(h, quantity=50)
    assert host.intents[-1].quantity == 50 and math.isnan(host.intents[-1].limit_price)
    with pytest.raises(TypeError):
        s.modify(h, 50)  # positional: refused, 0.0 / NaN no longer mean "unchanged"
    for bad in (dict(), dict(quantity=0), dict(limit_price=math.nan), dict(stop_price=-1)):
        with pytest.raises(InvalidOrder):
            s.modify(h, **bad)
    s.handle_update(update(h, "cancelled"))
    n = len(host.intents)
    assert s.modify(h, quantity=10) is None and len(host.intents) == n


# -- bracket ------------------------------------------------------------------------------------
def test_bracket_returns_parent_take_profit_stop_loss_and_enters_at_market_by_default():
    s, host = make()
    parent, take, stop = s.bracket("AAPL", "BUY", 100, stop_loss=99.0, take_profit=102.0)
    legs = {i.client_order_id: i for i in host.intents}
    assert (legs[parent].order_type, legs[parent].transmit) == ("MKT", False)
    assert (legs[take].order_type, legs[take].side, legs[take].limit_price) == \
        ("LMT", "SELL", 102.0)
    assert (legs[stop].order_type, legs[stop].stop_price, legs[stop].transmit) == \
        ("STP", 99.0, True)
    assert legs[take].parent_id == legs[stop].parent_id == parent
    assert legs[take].oca_group == legs[stop].oca_group != ""
    # a limit entry with a stop only; a short with a target only
    p2, t2, s2 = s.bracket("AAPL", "BUY", 10, entry=100.0, stop_loss=99.5)
    assert t2 is None and host.intents[-2].order_type == "LMT" and host.intents[-1].transmit
    p3, t3, s3 = s.bracket("AAPL", "SELL", 10, take_profit=98.0)
    assert s3 is None and host.intents[-1].side == "BUY" and host.intents[-1].transmit
    for bad in (dict(), dict(entry=100.0, stop_loss=101.0), dict(entry=100.0, take_profit=99)):
        with pytest.raises(InvalidOrder):
            s.bracket("AAPL", "BUY", 10, **bad)
    with pytest.raises(TypeError):
        s.bracket("AAPL", "BUY", 10, 99.0)  # keywords only


# -- target_position ----------------------------------------------------------------------------
def test_target_position_sends_the_difference_once_and_replaces_its_own_order():
    s, host = make()
    h = s.target_position("AAPL", 100)
    assert (h.side, h.quantity, h.order_type) == ("BUY", 100, "MKT")
    assert s.target_position("AAPL", 100) is None and len(host.intents) == 1  # on its way
    assert s.target_position("AAPL", -50) is None  # the old one is cancelled first
    assert (host.intents[-1].action, host.intents[-1].client_order_id) == ("cancel", h)
    assert s.target_position("AAPL", -50) is None and len(host.intents) == 2  # no 2nd cancel
    s.handle_update(update(h, "cancelled"))
    h2 = s.target_position("AAPL", -50)
    assert (h2.side, h2.quantity) == ("SELL", 50)
    s.handle_update(update(h2, "filled", qty=50, filled=50, side="SELL"))
    s.handle_execution(StrategyPosition(strategy="s", symbol="AAPL", quantity=-50))
    assert s.target_position("AAPL", -50) is None
    h3 = s.target_position("AAPL", 0, "LMT", 100.0)
    assert (h3.side, h3.quantity, h3.order_type, h3.limit_price) == ("BUY", 50, "LMT", 100.0)
    s.bracket("AAPL", "BUY", 10, stop_loss=90.0)  # other orders are not touched
    n = len(host.intents)
    assert s.target_position("AAPL", 0) is None and len(host.intents) == n


# -- history, account -----------------------------------------------------------------------------
def test_history_asks_the_host_with_ibs_bar_size_and_returns_the_last_count():
    s, host = make()
    host.bars = [five(T0 + i * 60 * NS, 1, 1, 1, i) for i in range(5)]
    got = s.history("AAPL", "1 minute", 3)
    assert host.asked == ("AAPL", "1 min", 3, "TRADES", True)
    assert [b.close for b in got] == [2, 3, 4]
    with pytest.raises(ValueError):
        s.history("AAPL", "1 min", 0)


def test_a_live_history_request_asks_ib_for_enough_and_drops_the_bar_in_progress():
    assert history_duration("1 min", 30) == "2 D"
    assert history_duration("1 min", 1000, use_rth=False) == "2 D"
    assert history_duration("5 secs", 10) == "100 S"
    assert history_duration("1 day", 20).endswith(" D")
    bars = [five(T0 + i * 60 * NS, 1, 1, 1, 1) for i in (2, 0, 1)]
    bars = [msgspec.structs.replace(b, seconds=60) for b in bars]
    assert [b.start_ns for b in complete_bars(bars, T0 + 150 * NS)] == [T0, T0 + 60 * NS]


def test_account_values_are_mirrored_as_numbers():
    s, _ = make()
    s.handle_account(AccountValue(account="DU1", key="NetLiquidation", value="1000.50",
                                  currency="USD"))
    s.handle_account(AccountValue(account="DU1", key="AccountType", value="INDIVIDUAL"))
    s.handle_account(AccountValue(account="DU1", key="NetLiquidation", value="9",
                                  currency="BASE"))
    assert s.account["NetLiquidation"] == 1000.5 and s.account.currency("NetLiquidation") == "USD"
    assert s.account["AccountType"] == "INDIVIDUAL" and s.account.id == "DU1"
    assert s.account.get("BuyingPower") is None


# -- timers -------------------------------------------------------------------------------------
def test_every_and_at_fire_on_the_hosts_clock_and_can_be_cancelled():
    s, host = make()
    fired = []
    t1 = s.every(0.5, lambda: fired.append(("every", host.t)))
    s.at("10:00:01", lambda: fired.append(("at", host.t)))
    assert host.wake == T0 + NS // 2
    for step in range(1, 5):
        host.t = T0 + step * NS // 2
        s.run_timers(host.t)
    assert fired == [("every", T0 + NS // 2), ("at", T0 + NS), ("every", T0 + NS),
                     ("every", T0 + 3 * NS // 2), ("every", T0 + 2 * NS)]
    t1.cancel()
    host.t = T0 + 10 * NS
    s.run_timers(host.t)
    assert len(fired) == 5
    assert host.wake == ny_ns(2026, 12, 1, 10, 0, 1)  # tomorrow's "at"
    with pytest.raises(ValueError):
        s.every(0, print)
    with pytest.raises(ValueError):
        s.at("25h", print)


def test_market_open_and_close_follow_the_calendar_in_new_york():
    class Session(Strategy):
        def on_start(self):
            self.seen = []

        def on_market_open(self, now_ns):
            self.seen.append(("open", now_ns))

        def on_market_close(self, now_ns):
            self.seen.append(("close", now_ns))

    friday_night = ny_ns(2026, 12, 4, 20, 0)
    host = Host(friday_night)
    s = Session("s", ["AAPL"], {}, host)
    s.handle_start()
    for _ in range(3):  # Monday's open, Monday's close, Tuesday's open
        host.t = host.wake
        s.run_timers(host.t)
    assert s.seen == [("open", ny_ns(2026, 12, 7, 9, 30)), ("close", ny_ns(2026, 12, 7, 16)),
                      ("open", ny_ns(2026, 12, 8, 9, 30))]
    cal = TradingCalendar()
    assert cal.is_open(ny_ns(2026, 12, 7, 9, 30)) and not cal.is_open(ny_ns(2026, 12, 7, 16))


# -- in a backtest ------------------------------------------------------------------------------
class Everything(Strategy):
    """Uses the new API in a backtest: warm-up history, 1-minute bars built from the trade
    prints, a market bracket, an `every` timer, the account."""

    def on_start(self):
        self.warm = self.history("AAPL", "1 min", 5)
        self.account_at_start = dict(self.account)
        self.subscribe_bars("AAPL", "1 min")
        self.minutes, self.ticks, self.legs = [], 0, None
        self.every(30, self._tick)

    def _tick(self):
        self.ticks += 1

    def on_bar(self, bar):
        self.minutes.append(bar)
        if len(self.minutes) == 2 and self.legs is None:
            self.legs = self.bracket("AAPL", "BUY", 100, stop_loss=bar.close - 0.5,
                                     take_profit=bar.close + 0.5)


def test_the_backtest_serves_history_bars_timers_account_and_commissions():
    cfg = StrategyConfig(name="s", class_path="x:y", symbols=["AAPL"],
                         risk={"max_position": 1000})
    engine = BacktestEngine(cfg, Settings(warmup_ns=10 * 60 * NS), strategy_class=Everything)
    msgs = [(t, m) for t, ms in random_walk(seed=3, steps=1800, step_ns=NS) for m in ms]
    result = engine.run(msgs)
    s = engine.strategy
    assert result.callback_errors == 0
    assert len(s.warm) == 5 and all(b.seconds == 60 and b.request for b in s.warm)
    assert s.warm[-1].start_ns + 60 * NS <= result.start_ns
    assert s.account_at_start["NetLiquidation"] == 1_000_000.0
    assert len(s.minutes) >= 15 and all(b.seconds == 60 for b in s.minutes)
    assert s.minutes[0].start_ns >= s.warm[-1].start_ns + 60 * NS
    assert s.ticks >= 35  # every 30 s over 20 minutes
    parent, take, stop = s.legs
    assert parent.order_type == "MKT" and parent.status == "filled"
    assert parent.fills and parent.commission > 0
    assert all(math.isfinite(f.commission) for f in parent.fills)
    assert {take.status, stop.status} <= {"filled", "cancelled", "submitted"}
    assert s.account["NetLiquidation"] != 1_000_000.0


# -- the reference page -------------------------------------------------------------------------
def test_the_committed_reference_page_is_what_the_docstrings_generate():
    from services.strategy.apidoc import render
    page = (REPO / "docs" / "strategy_api.md").read_text()
    assert page == render(), ("docs/strategy_api.md is out of date: run "
                              "`python -m services.strategy.apidoc > docs/strategy_api.md`")
