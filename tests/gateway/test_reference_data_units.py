"""Reference data units (issue 13): the front-month rule, market rules' price bands, the
gateway's Instrument messages and the processes' mirror of them."""
from __future__ import annotations

from decimal import Decimal

import datetime as dt

import pytest
from ibapi.contract import Contract, ContractDetails

from proto import codec
from proto.schema import Instrument
from services.bus.broker import LastValueCache
from services.gateway.contracts import (ContractBook, FrontMonth, canonical_symbol,
                                        instrument_message, query_for, rule_for)
from services.runtime.config import ConfigError
from services.runtime.instruments import STOCK_DEFAULT, InstrumentInfo, Instruments, \
    UnknownInstrument


def _fut(local: str, last: str, con_id: int) -> ContractDetails:
    d = ContractDetails()
    c = d.contract
    c.symbol, c.secType, c.exchange, c.currency = "ES", "FUT", "CME", "USD"
    c.localSymbol, c.lastTradeDateOrContractMonth, c.conId = local, last, con_id
    c.multiplier, c.tradingClass = "50", "ES"
    d.minTick, d.marketRuleIds, d.validExchanges = 0.25, "67", "CME"
    d.timeZoneId, d.tradingHours = "US/Central", "20261129:1700-20261130:1600"
    d.liquidHours, d.longName = "20261130:0830-20261130:1500", "E-mini S&P 500"
    d.sizeIncrement, d.minSize = 1, 1
    return d


EXPIRIES = [_fut("ESH7", "20270319", 2), _fut("ESZ6", "20261218", 1), _fut("ESM7", "20270618", 3)]


# -- the front-month rule ---------------------------------------------------------------------
@pytest.mark.parametrize("today, rule, local, roll", [
    (dt.date(2026, 11, 30), "days_before_expiry=8", "ESZ6", "20261210"),
    (dt.date(2026, 12, 9), "days_before_expiry=8", "ESZ6", "20261210"),
    (dt.date(2026, 12, 10), "days_before_expiry=8", "ESH7", "20270311"),  # the roll date
    (dt.date(2026, 12, 17), "days_before_expiry=0", "ESZ6", "20261218"),
    (dt.date(2026, 12, 18), "days_before_expiry=0", "ESH7", "20270319"),
    (dt.date(2026, 12, 1), "volume", "ESZ6", "20261210"),  # approximated: 8 days
    (dt.date(2027, 6, 10), "days_before_expiry=8", None, None),  # all rolled
])
def test_front_month_picks_the_earliest_expiry_not_yet_rolled(today, rule, local, roll):
    picked = FrontMonth.parse(rule).pick([d.contract for d in EXPIRIES], today)
    if local is None:
        assert picked is None
        return
    contract, roll_date = picked
    assert contract.localSymbol == local and roll_date.strftime("%Y%m%d") == roll


@pytest.mark.parametrize("bad", ["days_before_expiry=-1", "days_before_expiry=x", "oi", "3"])
def test_a_bad_roll_rule_is_refused(bad):
    with pytest.raises(ValueError):
        FrontMonth.parse(bad)


def test_es_configured_as_a_future_is_never_queried_as_a_stock():
    q = query_for("ES", {"sec_type": "FUT", "exchange": "CME", "roll": "volume"})
    assert (q.symbol, q.secType, q.exchange, q.currency) == ("ES", "FUT", "CME", "USD")
    q = query_for("ESZ6@CME")
    assert (q.localSymbol, q.exchange, q.secType) == ("ESZ6", "CME", "")
    q = query_for("MS")
    assert (q.symbol, q.secType, q.exchange) == ("MS", "STK", "SMART")


def test_the_contract_book_resolves_a_front_month_among_every_expiry_ib_lists():
    today = [dt.date(2026, 11, 30)]
    book = ContractBook({"ES": {"sec_type": "FUT", "exchange": "CME",
                                "roll": "days_before_expiry=8"}}, today=lambda: today[0])
    book.start(1, "ES")
    for d in EXPIRIES:
        book.add_details(1, d)
    symbol, contract, text = book.end(1)
    assert (symbol, contract.localSymbol, contract.conId, text) == ("ES", "ESZ6", 1, "")
    details, (rule, roll) = book.details["ES"]
    assert roll == dt.date(2026, 12, 10) and rule.rule == "days_before_expiry=8"
    assert book.due_to_roll() == []
    today[0] = dt.date(2026, 12, 10)
    assert book.due_to_roll() == ["ES"] and book.get("ES") is None  # resolved again
    book.start(2, "ES")
    for d in EXPIRIES:
        book.add_details(2, d)
    assert book.end(2)[1].localSymbol == "ESH7"


def test_without_a_roll_rule_a_future_by_symbol_stays_ambiguous_only_by_local_symbol():
    book = ContractBook()
    book.start(1, "ESZ6@CME")
    book.add_details(1, EXPIRIES[1])
    assert book.end(1)[1].conId == 1


# -- the Instrument message -------------------------------------------------------------------
def test_the_instrument_message_carries_what_ib_said():
    d = EXPIRIES[1]
    contract = Contract()
    contract.exchange = "CME"
    msg = instrument_message("ES", d, contract, [(0.0, 0.25)],
                             (FrontMonth.parse("volume"), dt.date(2026, 12, 10)))
    assert (msg.symbol, msg.con_id, msg.local_symbol, msg.multiplier, msg.min_tick) == \
        ("ES", 1, "ESZ6", 50.0, 0.25)
    assert msg.topic() == "ref.instrument.ES"
    assert msg.time_zone_id == "US/Central" and msg.trading_hours.startswith("20261129:1700")
    assert (msg.roll_rule, msg.roll_date, msg.last_trade_date) == ("volume", "20261210",
                                                                   "20261218")
    again = codec.decode(codec.encode([msg]))[0]
    assert again.price_bands == [(0.0, 0.25)] and again == msg
    assert canonical_symbol("ES", d.contract) == "ESZ6@CME"


@pytest.mark.parametrize("sec_type, increment, min_size, expected", [
    # a US stock as IB describes it (G200 AAPL: 0.0001 / 0.0001), traded in whole shares
    # through the API (321 "Order size does not conform to market rule": vnpy_ib issue 75)
    ("STK", Decimal("0.0001"), Decimal("0.0001"), (1.0, 1.0)),
    ("STK", Decimal("1"), Decimal("100"), (1.0, 100.0)),   # an odd-lot rule is kept
    ("FUT", Decimal("1"), Decimal("1"), (1.0, 1.0)),
    ("CASH", Decimal("0.01"), Decimal("1"), (0.01, 1.0)),  # others: as IB says
])
def test_a_stocks_size_rules_are_whole_shares_for_api_orders(sec_type, increment, min_size,
                                                               expected):
    d = ContractDetails()
    d.contract.symbol, d.contract.secType, d.contract.conId = "X", sec_type, 9
    d.sizeIncrement, d.minSize, d.minTick = increment, min_size, 0.01
    msg = instrument_message("X", d, Contract(), [])
    assert (msg.size_increment, msg.min_size) == expected
    info = InstrumentInfo.from_message(msg)
    assert info.on_size_increment(3.0) and (sec_type != "STK" or not info.on_size_increment(0.5))


def test_the_market_rule_of_the_routing_exchange():
    d = ContractDetails()
    d.marketRuleIds, d.validExchanges = "26,26,557", "SMART,NASDAQ,IEX"
    assert rule_for(d, "IEX") == 557 and rule_for(d, "SMART") == 26
    assert rule_for(d, "ELSEWHERE") == 26
    d.marketRuleIds = ""
    assert rule_for(d, "SMART") is None


def test_the_bus_keeps_the_last_instrument_of_each_symbol():
    lvc = LastValueCache()
    for con_id in (1, 2):
        msg = Instrument(symbol="ES", con_id=con_id, sec_type="FUT", min_tick=0.25)
        msg.src, msg.tseq = "gateway.1", con_id
        lvc.apply("ref.instrument.ES", msg)
    items, _ = lvc.snapshot("ref.instrument.")
    assert [m.con_id for t, m in items if t.startswith("ref.instrument.")] == [2]


# -- price bands and the mirror ---------------------------------------------------------------
def test_price_bands_set_the_tick_by_price():
    info = InstrumentInfo("XYZ", 0.0001, price_bands=((1.0, 0.01), (0.0, 0.0001)))
    assert info.tick_at(0.5) == 0.0001 and info.tick_at(1.0) == 0.01 and info.tick_at(55) == 0.01
    assert info.on_tick(0.1234) and not info.on_tick(1.234) and info.on_tick(1.23)
    assert info.round_price(0.12345) == pytest.approx(0.1234) or \
        info.round_price(0.12345) == pytest.approx(0.1235)
    assert info.round_price(10.006) == 10.01
    es = InstrumentInfo("ES", 0.25, multiplier=50.0)
    assert es.on_tick(5200.25) and not es.on_tick(5200.10) and es.round_price(5200.1) == 5200.0


def test_the_mirror_knows_only_what_the_gateway_or_the_config_said():
    mirror = Instruments()
    with pytest.raises(UnknownInstrument):
        mirror.get("AAPL")  # no built-in table any more
    assert "ES" not in mirror
    msg = Instrument(symbol="MS", con_id=4948, sec_type="STK", min_tick=0.01,
                     price_bands=[(0.0, 0.0001), (1.0, 0.01)])
    assert mirror.apply(msg) and not mirror.apply(msg)
    ms = mirror.get("MS")
    assert ms.source == "ib" and ms.min_tick == 0.01 and ms.tick_at(95.0) == 0.01
    assert ms.tick_at(0.5) == 0.0001
    assert "MSFT" not in mirror


def test_a_config_override_stays_and_resolution_keys_are_not_reference_data():
    mirror = Instruments({"AAPL": {"min_tick": 0.005},
                          "ES": {"sec_type": "FUT", "exchange": "CME", "roll": "volume"}})
    assert mirror.get("AAPL").min_tick == 0.005
    assert "ES" not in mirror  # how to resolve it, not what it is: IB says that
    mirror.apply(Instrument(symbol="AAPL", con_id=265598, sec_type="STK", min_tick=0.01))
    assert mirror.get("AAPL").min_tick == 0.005  # the operator's override wins (logged)
    with pytest.raises(ConfigError):
        Instruments({"X": {"min_tick": 0.01, "nonsense": 1}})


def test_a_backtest_default_gives_way_to_the_recordings_reference_data():
    mirror = Instruments(default=STOCK_DEFAULT)
    assert mirror.get("AAPL").min_tick == 0.01 and mirror.defaulted == {"AAPL"}
    mirror.apply(Instrument(symbol="AAPL", con_id=1, sec_type="STK", min_tick=0.01,
                            price_bands=[(0.0, 0.0001), (1.0, 0.01)]))
    assert mirror.get("AAPL").source == "ib" and not mirror.defaulted
