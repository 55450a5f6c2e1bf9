"""Issue 13 item 7, the pure parts: delayed tick types map onto the live fields and mark the
Tick delayed; old recordings (a Tick without the field) decode as live; the permission codes."""
from __future__ import annotations

import math

import msgpack

from proto import codec
from proto.schema import QuoteTick, Tick, TradeTick
from services.gateway import errors, translate


def test_delayed_tick_types_fill_the_live_fields_and_mark_the_tick():
    live, delayed = translate.TopOfBook("AAPL"), translate.TopOfBook("AAPL")
    for top, (bid, ask, last, bs, as_, ls, vol) in ((live, (1, 2, 4, 0, 3, 5, 8)),
                                                    (delayed, (66, 67, 68, 69, 70, 71, 74))):
        assert top.price(bid, 189.5) and top.price(ask, 189.6) and top.price(last, 189.55)
        assert top.size(bs, 300) and top.size(as_, 200) and top.size(ls, 100)
        assert top.size(vol, 12345)
        assert not top.price(72 if top is delayed else 6, 191.0)   # high: no Tick field
    a, b = live.message(), delayed.message()
    assert not a.delayed and b.delayed
    fields = ("bid", "ask", "last", "bid_size", "ask_size", "last_size", "volume")
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    # IB's marketDataType(3) before any tick marks it too
    said = translate.TopOfBook("MSFT", delayed=translate.is_delayed(3))
    said.price(1, 410.0)
    assert said.message().delayed and not translate.is_delayed(1)


def test_a_recording_from_before_the_field_decodes_as_live():
    for msg in (Tick(symbol="AAPL", bid=1.0, ask=2.0, bid_size=3.0, ask_size=4.0),
                TradeTick(symbol="AAPL", price=1.0, size=2.0),
                QuoteTick(symbol="AAPL", bid=1.0, ask=2.0, bid_size=3.0, ask_size=4.0)):
        row = msgpack.unpackb(codec.encode_one(msg))[0]
        assert row[-1] is False                 # the new field is last ...
        old = msgpack.packb([row[:-1]])         # ... so an old writer's frame lacks it
        (decoded,) = codec.decode(old)
        assert type(decoded) is type(msg) and decoded.delayed is False
        assert decoded.symbol == "AAPL" and not math.isnan(getattr(decoded, "bid", 1.0))
    new = Tick(symbol="AAPL", bid=1.0, ask=2.0, bid_size=3.0, ask_size=4.0, delayed=True)
    assert codec.decode(codec.encode_one(new))[0].delayed is True


def test_permission_codes():
    assert errors.MARKET_DATA_PERMISSION_CODES == {354, 10089, 10167, 10168}
    assert errors.classify(10167) == errors.Kind.INFO       # an advisory: data follows
    assert errors.classify(10089) == errors.Kind.REQUEST    # stays open at IB: not "dead"
    assert 10089 not in errors.SUBSCRIPTION_DEAD_CODES
    assert {354, 10168} <= errors.SUBSCRIPTION_DEAD_CODES
