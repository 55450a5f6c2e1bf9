"""Reference data from IB (issue 13): the gateway publishes what IB says about each instrument
(contract details and market rules) as ``Instrument`` messages; risk, execution and the
strategies mirror them. Real processes on the simulator."""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from proto.schema import Instrument, StrategyPosition
from tests.support.fleet import Fleet

REFDATA = "tests.support.refdata_strategy:RefData"
#: the simulator's ES expiries and their last trade dates (services/simulator/config.py)
ES_EXPIRIES = [("ESZ6", "20261218"), ("ESH7", "20270319")]
ROLL_DAYS = 8


def _read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _instruments(fleet: Fleet) -> dict[str, Instrument]:
    fleet.pump()
    return {m.symbol: m for _, m in fleet.seen if isinstance(m, Instrument)}


def _front_month(today: dt.date) -> tuple[str, str] | None:
    for local, last in ES_EXPIRIES:
        roll = dt.datetime.strptime(last, "%Y%m%d").date() - dt.timedelta(days=ROLL_DAYS)
        if roll > today:
            return local, roll.strftime("%Y%m%d")
    return None


def test_a_strategy_on_ms_gets_no_msft_data_and_cannot_trade_msft(procs, tmp_path):
    fleet = Fleet(procs, tmp_path)
    try:
        fleet.start_core()
        out = tmp_path / "ms.json"
        fleet.add_strategy("ms", REFDATA, ["MS"], {
            "out": str(out),
            "plan": [{"kind": "raw", "symbol": "MSFT", "quantity": 1, "price": "mid"}]})
        # another strategy keeps MSFT quotes flowing on the bus all along
        fleet.add_strategy("msft", REFDATA, ["MSFT"], {"out": str(tmp_path / "msft.json")})
        fleet.start_strategy("msft")
        # MSFT known to the fleet (else risk refuses it as unknown_symbol, a check earlier)
        fleet.wait(lambda: "MSFT" in _instruments(fleet), what="MSFT's reference data")
        time.sleep(0.5)
        fleet.start_strategy("ms")
        state = fleet.wait(lambda: (s := _read(out)) and s["results"]
                           and s["results"][0]["state"] == "refused" and s, deadline=90,
                           what="risk's answer to the MSFT intent of the MS strategy")
        assert state["results"][0]["reason"] == "symbol_not_configured", state["results"]
        time.sleep(2.0)  # more ticks of both
        state = _read(out)
        msft = _read(tmp_path / "msft.json")
        assert msft and msft["seen"].get("MSFT", 0) > 5, msft  # MSFT data was on the bus
        assert state["seen"].get("MS", 0) > 5 and set(state["seen"]) == {"MS"}, state["seen"]
        ms = state["instruments"]["MS"]
        assert ms["sec_type"] == "STK" and ms["source"] == "ib" and ms["con_id"] == 4948
        assert ms["bands"] == [[0.0, 0.0001], [1.0, 0.01]] or ms["bands"] == []  # rule late
        assert set(state["instruments"]) == {"MS"}
        # the gateway's reference data for both, as IB gave it
        ref = _instruments(fleet)
        assert ref["MS"].long_name == "MORGAN STANLEY" and ref["MSFT"].con_id == 272093
    finally:
        fleet.close()


def test_futures_by_local_symbol_and_front_month_trade_with_ibs_tick_and_multiplier(procs,
                                                                                 tmp_path):
    front = _front_month(dt.datetime.now(dt.timezone.utc).date())
    if front is None:
        pytest.skip("every ES expiry of the simulator's universe has rolled")
    fleet = Fleet(procs, tmp_path, {"instruments": {
        "ES": {"sec_type": "FUT", "exchange": "CME", "roll": f"days_before_expiry={ROLL_DAYS}"}}})
    try:
        fleet.start_core()
        budget = {"max_order_notional": 400_000.0, "price_band": 0.05}
        plan = [
            {"kind": "cross", "side": "BUY", "quantity": 1},
            {"kind": "cross", "side": "SELL", "quantity": 1},
            {"kind": "raw", "symbol": "", "quantity": 1, "price": "mid+half_tick"},
            # 2 x ~5,200 x 50 = ~520,000 over 400,000 (without the multiplier ~10,400)
            {"kind": "raw", "symbol": "", "quantity": 2, "price": "mid"},
        ]
        outs = {}
        for name, symbol in (("fz", "ESZ6@CME"), ("fes", "ES")):
            outs[name] = tmp_path / f"{name}.json"
            steps = [{**s, "symbol": s.get("symbol") or symbol} for s in plan]
            fleet.add_strategy(name, REFDATA, [symbol], {"out": str(outs[name]), "plan": steps},
                               risk=budget)
            fleet.start_strategy(name)
        states = {}
        for name, path in outs.items():
            states[name] = fleet.wait(
                lambda p=path: (s := _read(p)) and len(s["results"]) == 4
                and s["results"][-1]["state"] == "refused" and s,
                deadline=150, what=f"{name}'s plan to finish")
        ref = _instruments(fleet)
        es, esz6 = ref["ES"], ref["ESZ6@CME"]
        assert es.sec_type == "FUT" and es.local_symbol == front[0]
        assert es.roll_date == front[1] and es.roll_rule == f"days_before_expiry={ROLL_DAYS}"
        assert esz6.local_symbol == "ESZ6" and esz6.last_trade_date == "20261218"
        for msg in (es, esz6):
            assert msg.multiplier == 50.0 and msg.min_tick == 0.25
            assert msg.time_zone_id == "US/Central" and msg.trading_hours
            assert msg.market_rule_ids == "67"
        fleet.wait(lambda: _instruments(fleet)["ES"].price_bands == [(0.0, 0.25)],
                   what="the market rule's price bands")
        for name, state in states.items():
            symbol = "ESZ6@CME" if name == "fz" else "ES"
            buy, sell, off_tick, too_big = state["results"]
            assert buy["state"] == "filled" and sell["state"] == "filled", state["results"]
            for r in (buy, sell):
                assert (r["price"] / 0.25).is_integer() and (r["avg_fill_price"] / 0.25).is_integer()
            assert off_tick["reason"] == "min_tick", off_tick
            assert too_big["reason"] == "max_order_notional", too_big
            assert "notional" in too_big["text"]
            info = state["instruments"][symbol]
            assert info["multiplier"] == 50.0 and info["min_tick"] == 0.25
            # execution's numbers: the round trip's PnL with the multiplier
            fleet.pump()
            positions = [m for _, m in fleet.seen if isinstance(m, StrategyPosition)
                         and m.strategy == name]
            last = positions[-1]
            assert last.symbol == symbol and last.quantity == 0 and last.multiplier == 50.0
            gross = (sell["avg_fill_price"] - buy["avg_fill_price"]) * 50.0
            assert abs(last.realized - (gross - last.commissions)) < 1e-6, (last, gross)
            assert last.commissions > 0
        # no position mismatch between the fleet and the broker (ES and ESZ6@CME may be one
        # contract: IB reports it once, as ESZ6@CME)
        fleet.pump()
        assert not fleet.alerts("broker_positions_adopted")
    finally:
        fleet.close()


def test_a_late_strategy_gets_the_instruments_from_the_snapshot(procs, tmp_path):
    fleet = Fleet(procs, tmp_path)
    try:
        fleet.start_core()
        fleet.add_strategy("early", REFDATA, ["AAPL", "ESH7@CME"],
                           {"out": str(tmp_path / "early.json")})
        fleet.start_strategy("early")
        fleet.wait(lambda: {"AAPL", "ESH7@CME"} <= set(_instruments(fleet)),
                   what="the gateway's reference data")
        time.sleep(1.0)
        out = tmp_path / "late.json"
        # no market data subscription of its own: the instrument can only come from the
        # bus's cache (the gateway published it before this strategy started)
        fleet.add_strategy("late", REFDATA, ["ESH7@CME"], {"out": str(out)})
        fleet.start_strategy("late")
        state = fleet.wait(lambda: (s := _read(out)) and s, deadline=60, what="late's state")
        info = state["instruments"]["ESH7@CME"]
        assert info["source"] == "ib" and info["multiplier"] == 50.0
        assert info["local_symbol"] == "ESH7" and info["con_id"] == 495512564
    finally:
        fleet.close()
