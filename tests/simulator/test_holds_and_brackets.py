"""Issue 13 item 4, fidelity rows F27 and F28 (docs/simulator.md): a bracket's children work once
the parent has any fill (not only when it is Filled), never closing more than the parent
opened; a short sale of a hard-to-borrow instrument is held PreSubmitted with whyHeld "locate"
until the control command `locate` releases it, or it is cancelled. Through ibapi's EClient
against a simulator on loopback, at server version 200 (text) and the newest (protobuf)."""
from __future__ import annotations

import time

import pytest
from ibapi.order_cancel import OrderCancel

from services.simulator.broker import Broker
from services.simulator.config import InstrumentSpec, SimConfig
from services.simulator.contracts import ContractQuery
from services.simulator.control import SimControlError
from services.simulator.orders import OrderRequest
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, OrderRecorder, order, stock
from tests.support.processes import wait_for

AAPL, MSFT = 265598, 272093
start_sim_v = start_sim_at_versions()     # v200 (text) and v226 (protobuf) simulators

#: AAPL hard to borrow, MSFT not (the rest of the default universe left out)
HARD_TO_BORROW = """
[[instruments]]
symbol = "AAPL"
sec_type = "STK"
con_id = 265598
exchange = "SMART"
currency = "USD"
min_tick = 0.01
price = 190.0
primary_exchange = "NASDAQ"
trading_class = "NMS"
long_name = "APPLE INC"
isin = "US0378331005"
hard_to_borrow = true

[[instruments]]
symbol = "MSFT"
sec_type = "STK"
con_id = 272093
exchange = "SMART"
currency = "USD"
min_tick = 0.01
price = 410.0
primary_exchange = "NASDAQ"
trading_class = "NMS"
long_name = "MICROSOFT CORP"
"""


def _client(port: int, client_id: int) -> IbapiClient:
    return IbapiClient(port, client_id, OrderRecorder()).connect()


def _mine(sim, client_id: int) -> dict[int, dict]:
    return {o["order_id"]: o for o in sim.control.orders() if o["client_id"] == client_id}


def _round_trip(c: IbapiClient) -> None:
    """reqAllOpenOrders answered: everything the simulator sent before it has arrived."""
    c.rec.clear("openOrderEnd")
    c.client.reqAllOpenOrders()
    c.wait("openOrderEnd", deadline=60)


# ------------------------------------------------------------------------------------ F27
def test_bracket_children_work_on_the_parents_first_fill_within_its_filled_quantity(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 71)
    try:
        q = sim.control.quote(AAPL)
        qty = 1_000_000                    # far more than the book ever holds: never all filled
        parent = c.next_order_id()
        tp, sl = parent + 1, parent + 2
        c.rec.next_id = parent + 3
        c.client.placeOrder(parent, stock("AAPL"), order("BUY", qty, "LMT", lmt=round(q["bid"] - 1, 2),
                                                         transmit=False))
        c.client.placeOrder(tp, stock("AAPL"), order("SELL", qty, "LMT", lmt=round(q["ask"] + 5, 2),
                                                     transmit=False, parent=parent))
        c.client.placeOrder(sl, stock("AAPL"), order("SELL", qty, "STP", aux=round(q["bid"] - 10, 2),
                                                     transmit=True, parent=parent))
        c.wait("status", lambda e: e[0] == parent and e[1] == "Submitted", deadline=60)
        for child in (tp, sl):             # no fill yet: the children are held
            c.wait("status", lambda e, child=child: e[0] == child and e[4] == "child", deadline=60)
        # the market dips through the parent's limit for a moment: the parent is partly filled
        sim.control.shift_price(AAPL, -200)
        c.wait("execDetails", lambda e: e[2].orderId == parent, deadline=60)
        sim.control.shift_price(AAPL, 200)
        # the children work at once: the take-profit Submitted, the stop waiting for its trigger
        c.wait("status", lambda e: e[0] == tp and e[1] == "Submitted", deadline=60)
        c.wait("status", lambda e: e[0] == sl and e[1] == "PreSubmitted" and e[4] == "trigger", deadline=60)
        timeline = c.rec.timeline
        first_fill = next(i for i, t in enumerate(timeline) if t[0] == "execDetails")
        released = next(i for i, t in enumerate(timeline)
                        if t[0] == "status" and t[1][0] == tp and t[1][1] == "Submitted")
        assert first_fill < released
        time.sleep(0.3)
        _round_trip(c)
        mine = _mine(sim, 71)
        bought = mine[parent]["filled"]
        assert 0 < bought < qty and mine[parent]["status"] == "Submitted"
        # the market jumps through the take-profit: it sells what the parent bought and no more
        # (the book keeps offering), and stays working for the rest
        sim.control.shift_price(AAPL, 1500)
        wait_for(lambda: _mine(sim, 71)[tp]["filled"] >= bought, 60, what="the take-profit's fills")
        time.sleep(0.5)
        _round_trip(c)
        mine = _mine(sim, 71)
        assert mine[parent]["filled"] == bought
        assert mine[tp]["filled"] == pytest.approx(bought)
        assert mine[tp]["status"] == "Submitted" and mine[tp]["remaining"] > 0
        # the stop-loss is reduced by the take-profit's fills (the bracket's implicit OCA)
        assert mine[sl]["qty"] == pytest.approx(qty - bought)
        assert sim.control.positions()[str(AAPL)]["qty"] == 0
        c.client.reqGlobalCancel(OrderCancel())
        for oid in (parent, tp, sl):
            c.wait("status", lambda e, oid=oid: e[0] == oid and e[1] == "Cancelled", deadline=60)
    finally:
        c.disconnect()


def test_children_still_wait_while_the_parent_has_no_fill(start_sim_v):
    sim = start_sim_v()
    c = _client(sim.port, 72)
    try:
        q = sim.control.quote(AAPL)
        parent = c.next_order_id()
        tp = parent + 1
        c.rec.next_id = parent + 2
        c.client.placeOrder(parent, stock("AAPL"), order("BUY", 100, "LMT", lmt=round(q["bid"] - 20, 2),
                                                         transmit=False))
        c.client.placeOrder(tp, stock("AAPL"), order("SELL", 100, "LMT", lmt=round(q["ask"] + 20, 2),
                                                     parent=parent))
        c.wait("status", lambda e: e[0] == parent and e[1] == "Submitted", deadline=60)
        c.wait("status", lambda e: e[0] == tp and e[1] == "PreSubmitted" and e[4] == "child", deadline=60)
        time.sleep(0.3)
        _round_trip(c)
        assert {(e[1], e[4]) for e in c.rec.get("status", lambda e: e[0] == tp)} == {("PreSubmitted", "child")}
        c.client.cancelOrder(parent, OrderCancel())           # the parent's cancel takes the child
        c.wait("status", lambda e: e[0] == tp and e[1] == "Cancelled", deadline=60)
    finally:
        c.disconnect()


# ------------------------------------------------------------------------------------ F28
def test_short_sale_of_a_hard_to_borrow_stock_is_held_for_a_locate(start_sim_v):
    sim = start_sim_v(toml=HARD_TO_BORROW)
    c = _client(sim.port, 73)
    try:
        held = c.next_order_id()
        c.client.placeOrder(held, stock("AAPL"), order("SELL", 100, "MKT"))
        c.wait("status", lambda e: e[0] == held and e[1] == "PreSubmitted" and e[4] == "locate", deadline=60)
        # a short sale of an easy-to-borrow stock is not held
        easy = c.next_order_id()
        c.client.placeOrder(easy, stock("MSFT"), order("SELL", 10, "MKT"))
        c.wait("status", lambda e: e[0] == easy and e[1] == "Filled", deadline=60)
        # nor is selling what the account holds
        buy, sell = c.next_order_id(), c.next_order_id()
        c.client.placeOrder(buy, stock("AAPL"), order("BUY", 50, "MKT"))
        c.wait("status", lambda e: e[0] == buy and e[1] == "Filled", deadline=60)
        c.client.placeOrder(sell, stock("AAPL"), order("SELL", 50, "MKT"))
        c.wait("status", lambda e: e[0] == sell and e[1] == "Filled", deadline=60)
        assert all(e[4] != "locate" for e in c.rec.get("status", lambda e: e[0] in (easy, buy, sell)))
        # the held sale stays held, unfilled; reqOpenOrders shows it so
        time.sleep(0.3)
        c.rec.clear("status")
        _round_trip(c)
        assert c.rec.get("status", lambda e: e[0] == held) and \
            all((e[1], e[4]) == ("PreSubmitted", "locate") for e in c.rec.get("status", lambda e: e[0] == held))
        assert _mine(sim, 73)[held]["filled"] == 0
        assert not c.rec.get("execDetails", lambda e: e[2].orderId == held)
        # shares located: the sale goes out and fills
        result = sim.control.locate(held, client_id=73)
        assert result["order_id"] == held and result["notified"]
        c.wait("status", lambda e: e[0] == held and e[1] == "Filled", deadline=60)
        assert sim.control.positions()[str(AAPL)]["qty"] == -100
        # a second held sale, cancelled by the client: Cancelled, then 202
        limit = c.next_order_id()
        q = sim.control.quote(AAPL)
        c.client.placeOrder(limit, stock("AAPL"), order("SELL", 10, "LMT", lmt=round(q["ask"] + 30, 2)))
        c.wait("status", lambda e: e[0] == limit and e[4] == "locate", deadline=60)
        c.client.cancelOrder(limit, OrderCancel())
        c.wait("status", lambda e: e[0] == limit and e[1] == "Cancelled", deadline=60)
        c.wait_error(202, limit, deadline=60)
        with pytest.raises(SimControlError):                 # no longer held: nothing to locate
            sim.control.locate(limit, client_id=73)
    finally:
        c.disconnect()


def test_a_located_stop_waits_for_its_trigger(start_sim_v):
    sim = start_sim_v(toml=HARD_TO_BORROW)
    c = _client(sim.port, 74)
    try:
        q = sim.control.quote(AAPL)
        stp = c.next_order_id()
        c.client.placeOrder(stp, stock("AAPL"), order("SELL", 10, "STP", aux=round(q["bid"] - 20, 2)))
        c.wait("status", lambda e: e[0] == stp and e[4] == "locate", deadline=60)
        sim.control.locate(stp, client_id=74)
        c.wait("status", lambda e: e[0] == stp and e[1] == "PreSubmitted" and e[4] == "trigger", deadline=60)
        sim.control.shift_price(AAPL, -3000)
        c.wait("status", lambda e: e[0] == stp and e[1] == "Filled", deadline=60)
    finally:
        c.disconnect()


# ------------------------------------------------------------------------------------ in process
def _req(oid: int, action: str, qty: float, typ: str = "MKT", **kw) -> OrderRequest:
    return OrderRequest(order_id=oid, contract=ContractQuery(symbol="AAPL", sec_type="STK",
                                                             exchange="SMART", currency="USD"),
                        action=action, total_qty=qty, order_type=typ, lmt_price=kw.pop("lmt", None),
                        aux_price=kw.pop("aux", None), **kw)


def test_holds_and_trailing_stops_survive_a_restart(tmp_path):
    """With --state-dir: a locate hold and a trailing stop's ratcheted stop are part of the
    account's journal (OrderRequest and whyHeld persist)."""
    htb = tuple(InstrumentSpec(**{**vars(s), "hard_to_borrow": True}) if s.con_id == AAPL else s
                for s in SimConfig().instruments)
    cfg = SimConfig(state_dir=str(tmp_path / "acct"), instruments=htb)
    b = Broker(cfg)
    inst = b.universe.by_con_id[AAPL]
    b.engine.place(1, _req(1, "SELL", 10), inst)                              # held: locate
    b.engine.place(1, _req(2, "BUY", 10), inst)                               # filled
    b.engine.place(1, _req(3, "SELL", 10, "TRAIL", aux=2.0), inst)            # closes: not held
    b.shift_price(AAPL, 500)
    for _ in range(50):
        b.market.step()
        b.engine.on_step()
    stop = b.engine.orders[(1, 3)].req.trail_stop_price
    assert b.engine.orders[(1, 1)].why_held == "locate"
    assert b.engine.orders[(1, 3)].status == "PreSubmitted" and stop is not None
    b.commit()
    b.journal.store.close()                                                   # a crash
    again = Broker(cfg)
    held, trail = again.engine.orders[(1, 1)], again.engine.orders[(1, 3)]
    assert (held.status, held.why_held, held.filled) == ("PreSubmitted", "locate", 0)
    assert trail.req.trail_stop_price == stop and trail.req.aux_price == 2.0
    again.engine.locate(1, 1)
    assert held.why_held == "" and held.status == "Filled"
    again.journal.store.close()
