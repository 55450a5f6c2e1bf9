"""Risk's checks on the gateway's reference data (issue 13): exact configured symbols, no
order without reference data, the tick of the price's band, notional with the multiplier."""
from __future__ import annotations

from proto.schema import Instrument
from tests.risk.test_engine import _engine, _intent


def test_a_strategy_may_only_trade_its_configured_symbols_exactly():
    engine, _ = _engine()
    engine.symbols = {"s": frozenset({"MS"})}
    engine.instruments.apply(Instrument(symbol="MSFT", con_id=272093, sec_type="STK",
                                        min_tick=0.01))
    engine.on_mark("MSFT", 409.99, 410.01)
    decision = engine.check(_intent(symbol="MSFT", price=410.0))
    assert (decision.approved, decision.reason) == (False, "symbol_not_configured")
    assert "'MSFT' is not one of s's symbols (MS)" in decision.text
    engine.symbols = {}  # a strategy without a file: no such check (the others still apply)
    assert engine.check(_intent(symbol="MSFT", price=410.0)).approved


def test_no_reference_data_no_order():
    engine, _ = _engine()
    decision = engine.check(_intent(symbol="ESZ6@CME", price=5000.0, qty=1))
    assert (decision.approved, decision.reason) == (False, "unknown_symbol")
    assert "no reference data" in decision.text


def test_ibs_reference_data_sets_tick_by_band_and_notional_by_multiplier():
    engine, _ = _engine(max_order_notional=400_000, price_band=0.5)
    engine.instruments.apply(Instrument(symbol="ESZ6@CME", con_id=1, sec_type="FUT",
                                        multiplier=50.0, min_tick=0.25,
                                        price_bands=[(0.0, 0.25)]))
    engine.instruments.apply(Instrument(symbol="PENNY", con_id=2, sec_type="STK", min_tick=0.01,
                                        price_bands=[(0.0, 0.0001), (1.0, 0.01)]))
    engine.on_mark("ESZ6@CME", 5000.0, 5000.25)
    engine.on_mark("PENNY", 0.8, 0.8002)
    es = dict(symbol="ESZ6@CME", qty=1)
    assert engine.check(_intent(price=5000.25, **es)).approved
    assert engine.check(_intent(price=5000.1, **es)).reason == "min_tick"
    refused = engine.check(_intent(price=5000.0, symbol="ESZ6@CME", qty=2))
    assert refused.reason == "max_order_notional" and "500,000" in refused.text
    assert engine.check(_intent(price=0.8001, symbol="PENNY", qty=10)).approved  # sub-dollar
    assert engine.check(_intent(price=1.0001, symbol="PENNY", qty=10,
                                coid="s-2")).reason == "min_tick"


def test_a_configured_symbol_still_being_resolved_is_refused_for_now_only():
    engine, _ = _engine()
    engine.symbols = {"s": frozenset({"IBM"})}
    decision = engine.check(_intent(symbol="IBM", price=180.0))
    assert (decision.approved, decision.reason) == (False, "stale_market_data")
    engine.on_mark("IBM", 179.99, 180.01)  # data without reference data: not a passing state
    assert engine.check(_intent(symbol="IBM", price=180.0)).reason == "unknown_symbol"
