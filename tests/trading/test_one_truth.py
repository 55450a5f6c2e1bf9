"""One truth for orders, fills and positions: the nine cases that broke it, each on real
processes (simulator, bus, gateway, execution, risk, strategies), each ending with the audit
(every view equals execution's, execution equals the simulator's ledger)."""
from __future__ import annotations

import datetime as dt
import signal
import sys
import time


from proto.schema import (GatewayError, GatewayState, OrderCommand, OrderStatus,
                          OrderUpdate, StrategyPosition)
from tests.support.audit import views
from services.bus.reliable import ReliableClient
from tests.support.audit import assert_audit
from tests.support.fleet import Fleet, live_orders, sim_positions

PROBE = "tests.support.probe_strategy:Probe"


def _updates(fleet, coid=None, state=None):
    return [u for u in fleet.messages(OrderUpdate)
            if (coid is None or u.client_order_id == coid) and (state is None or u.state == state)]


def _working_at_sim(fleet, ref=None):
    return [o for o in live_orders(fleet) if ref is None or o["order_ref"] == ref]


# 1 ---------------------------------------------------------------------------------------------
def test_a_modify_ib_refuses_leaves_the_order_working_and_the_kill_switch_cancels_it(procs,
                                                                                     tmp_path):
    # our reference data allows a half-cent; IB (the simulator) does not: it answers 110
    fleet = Fleet(procs, tmp_path, {"instruments": {"AAPL": {"min_tick": 0.005}}})
    try:
        fleet.start_core()
        fleet.add_strategy("mod", PROBE, ["AAPL"], {"mode": "modify_off_tick",
                                                    "grid": 0.01, "modify_by": 0.005})
        fleet.start_strategy("mod")
        refused = fleet.wait(lambda: [u for u in _updates(fleet)
                                      if "modify refused" in u.reason], deadline=90,
                             what="the refused modify to reach execution")
        coid = refused[-1].client_order_id
        assert refused[-1].state == "submitted"
        assert [e.code for e in fleet.messages(GatewayError) if e.ref == coid] == [110]
        assert not _updates(fleet, coid, "inactive")
        [at_sim] = _working_at_sim(fleet, coid)
        assert at_sim["lmt_price"] == refused[-1].limit_price  # the old terms, at both ends
        assert_audit(fleet, ["mod"])
        fleet.kill_switch()
        fleet.wait(lambda: not _working_at_sim(fleet), what="the kill switch to cancel it")
        fleet.wait(lambda: _updates(fleet, coid, "cancelled"), what="execution to see it")
        assert_audit(fleet, ["mod"])
    finally:
        fleet.close()


# 2 ---------------------------------------------------------------------------------------------
def test_orders_cancelled_or_expired_while_the_fleet_was_down_are_closed_after_up(fleet):
    fleet.start_core()
    fleet.add_strategy("rest", PROBE, ["AAPL"], {"mode": "rest", "count": 3},
                       risk={"max_open_orders": 10})
    strategy = fleet.start_strategy("rest")
    fleet.wait(lambda: len(_working_at_sim(fleet)) == 3, deadline=90, what="3 resting orders")
    by_name = {p.name: p for p in fleet.procs.procs}
    for name in ("strategy-rest", "risk", "execution", "gateway"):  # the fleet goes down
        fleet.procs.terminate(by_name[name] if name != "strategy-rest" else strategy)
    cancelled, expired, expired_too = sorted(_working_at_sim(fleet), key=lambda o: o["order_id"])
    fleet.sim.broker_cancel(cancelled["order_id"], client_id=1, by="trader")  # in TWS
    fleet.sim.call("expire_day_orders")  # every DAY order: the other two
    assert not _working_at_sim(fleet)
    fleet.start_gateway()
    fleet.start_execution()
    fleet.start_risk()
    fleet.start_strategy("rest", "strategy-rest-2")
    for o in (cancelled, expired, expired_too):
        fleet.wait(lambda o=o: [u for u in _updates(fleet, o["order_ref"])
                                if u.state in ("cancelled", "expired")],
                   deadline=90, what=f"execution to close {o['order_ref']}")
    assert _updates(fleet, cancelled["order_ref"])[-1].state == "cancelled"
    assert _updates(fleet, expired["order_ref"])[-1].state == "expired"
    assert _updates(fleet, expired_too["order_ref"])[-1].state == "expired"
    # the strategy, free of its stale orders, rests three new ones; the audit holds
    fleet.wait(lambda: len(_working_at_sim(fleet)) == 3, deadline=90,
               what="the strategy to rest new orders")
    assert_audit(fleet, ["rest"])
    fleet.kill_switch()
    fleet.wait(lambda: not _working_at_sim(fleet), what="the kill switch")
    assert_audit(fleet, ["rest"])
    refused_cancels = [e for e in fleet.messages(GatewayError) if e.code in (10147, 10148)]
    assert len(refused_cancels) <= 3, refused_cancels  # no endless cancel loop


# 3 ---------------------------------------------------------------------------------------------
def test_an_execution_correction_replaces_the_fill_it_corrects(fleet):
    fleet.start_core()
    fleet.add_strategy("tgt", PROBE, ["AAPL"], {"mode": "target", "target": 100})
    fleet.start_strategy("tgt")
    fleet.wait(lambda: fleet.fills("tgt"), deadline=90, what="the first fill")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 100, what="100 at the simulator")
    [fill] = fleet.sim.fills()
    fleet.sim.correct_execution(fill["exec_id"], price=round(fill["price"] + 0.5, 2))
    corrected = fleet.wait(lambda: [u for u in fleet.updates("tgt")
                                    if u.exec_id and u.exec_id != fill["exec_id"]],
                           what="the correction on the bus")
    assert corrected[-1].exec_id.endswith(".02") and corrected[-1].filled == 100
    assert_audit(fleet, ["tgt"])
    assert sim_positions(fleet) == {"AAPL": 100}  # 100, not 200


# 4 ---------------------------------------------------------------------------------------------
def test_a_fill_update_dropped_at_a_strategys_high_water_mark_is_recovered(fleet):
    fleet.start_core()
    fleet.add_strategy("slow", PROBE, ["AAPL"], {"mode": "target", "target": 100,
                                                 "bars": True})
    strategy = fleet.start_strategy("slow")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 100, deadline=90, what="a fill")
    assert_audit(fleet, ["slow"])
    [fill] = fleet.sim.fills()
    fleet.ignore_market_data()
    strategy.send_signal(signal.SIGSTOP)  # a strategy too slow to read: its queues fill up
    try:
        # more bars than the broker's and the strategy's queues hold (2 x 200,000)
        flood = fleet.procs.start("flood", [sys.executable, "-m", "tests.support.flooder",
                                            fleet.config.bus.endpoint("bus-in"), "AAPL",
                                            "600000", str(fleet.config_path)])
        assert flood.wait(180) == 0
        # IB corrects the fill meanwhile: execution's update for it meets a full queue
        fleet.sim.correct_execution(fill["exec_id"], quantity=150)
        fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 150, what="the correction")
        fleet.wait(lambda: [p for p in fleet.messages(StrategyPosition)
                            if p.strategy == "slow" and p.quantity == 150],
                   what="execution to book the correction")
    finally:
        strategy.send_signal(signal.SIGCONT)
    assert_audit(fleet, ["slow"], deadline=180)
    log = fleet.procs.log("strategy-slow")
    assert "re-joining execution's snapshot" in log  # it did lose the update, and recovered


# 5 ---------------------------------------------------------------------------------------------
def test_a_restarted_fleet_and_a_reset_paper_account_converge_and_trade(fleet, tmp_path):
    fleet.start_core()
    fleet.add_strategy("tgt", PROBE, ["MSFT"], {"mode": "target", "target": 100})
    fleet.add_strategy("churn", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10})
    fleet.start_strategy("tgt")
    fleet.start_strategy("churn")
    fleet.wait(lambda: sim_positions(fleet).get("MSFT") == 100 and len(fleet.fills("churn")) >= 3,
               deadline=120, what="both strategies to trade")
    fleet.procs.stop_all()  # Ctrl-C: everything stops, the simulator too
    fleet.seen.clear()
    fleet.start_core()  # `make run` again: the same paper account, persisted
    fleet.start_strategy("tgt", "strategy-tgt-2")
    fleet.start_strategy("churn", "strategy-churn-2")
    before = len(fleet.sim.fills())
    fleet.wait(lambda: len(fleet.sim.fills()) >= before + 3, deadline=120,
               what="the strategies to trade after the restart")
    fleet.wait(lambda: not [u for u in fleet.updates() if u.state == "pending_cancel"
                            and time.time_ns() - u.ts > 30e9], what="nothing stuck")
    assert_audit(fleet, ["tgt", "churn"], deadline=90)
    # the broker resets the account (a fresh state directory): the fleet detects, alerts and
    # adopts the broker's truth, and keeps trading
    by_name = {p.name: p for p in fleet.procs.procs}
    fleet.procs.terminate(by_name["simulator"])
    fleet.start_simulator(state=tmp_path / "fresh-account")
    fleet.wait(lambda: fleet.alerts("broker_positions_adopted"), deadline=120,
               what="the fleet to adopt the reset account's positions")
    fills = len(fleet.sim.fills())
    fleet.wait(lambda: len(fleet.sim.fills()) >= fills + 3, deadline=120,
               what="trading on the new account")
    fleet.wait(lambda: sim_positions(fleet).get("MSFT") == 100, deadline=120,
               what="tgt to rebuild its position on the new account")
    assert_audit(fleet, ["tgt", "churn"], deadline=90, check_fills=False)


# 6 ---------------------------------------------------------------------------------------------
def test_a_torn_gateway_journal_still_recognises_a_resent_place(fleet):
    fleet.start_core()
    by_name = {p.name: p for p in fleet.procs.procs}
    client = ReliableClient(fleet.context_as("execution"), fleet.config.bus.endpoint("gateway"),
                            "execution.test",
                            resend_after=60)

    def place(coid: str) -> int:
        client.send(OrderCommand(command="place", client_order_id=coid, symbol="AAPL",
                                 side="BUY", quantity=1, limit_price=1.0))
        got: list = []
        fleet.wait(lambda: got.extend(m for m in client.poll(100)
                                      if isinstance(m, OrderStatus)) or got,
                   what=f"the gateway's answer to {coid}")
        return got[0].ib_order_id
    first = place("torn-1")
    fleet.procs.kill(by_name["gateway"])  # SIGKILL, then a torn record at the journal's end
    journal = next((fleet.state_dir / "gateway").glob("orders*"))
    with open(journal, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")
    seen = len(fleet.messages(GatewayState))
    by_name["gateway"] = fleet.start_gateway("gateway-2")
    fleet.wait_gateway("synchronised", after=seen)
    second = place("torn-2")
    fleet.procs.kill(by_name["gateway"])
    seen = len(fleet.messages(GatewayState))
    fleet.start_gateway("gateway-3")
    fleet.wait_gateway("synchronised", after=seen)
    assert place("torn-2") == second and place("torn-1") == first  # recognised, not re-placed
    # the place the killed gateway held is resent after its successor's first reconciliation:
    # asynchronously, so it is waited for; then it must be there once
    fleet.wait(lambda: {"torn-1", "torn-2"} <= {o["order_ref"] for o in fleet.sim.orders()},
               what="both places at the simulator")
    refs = [o["order_ref"] for o in fleet.sim.orders()]
    assert sorted(refs) == ["torn-1", "torn-2"]
    client.close()


# 7 ---------------------------------------------------------------------------------------------
def test_a_lower_case_side_is_a_buy_live(fleet):
    fleet.start_core()
    fleet.add_strategy("low", PROBE, ["AAPL"], {"mode": "target", "target": 100,
                                                "side": "buy"})
    fleet.start_strategy("low")
    fleet.wait(lambda: sim_positions(fleet).get("AAPL") == 100, deadline=90,
               what="the buy to fill")
    assert {u.side for u in fleet.updates("low")} == {"BUY"}
    assert not [d for d in fleet.decisions("low") if not d.approved
                and d.reason not in ("stale_market_data", "gateway_not_synchronised")]
    assert_audit(fleet, ["low"])


# 8 ---------------------------------------------------------------------------------------------
def test_daily_loss_is_net_of_commissions_and_rolls_with_the_trading_day(procs, tmp_path):
    roll = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=75)).time()
    fleet = Fleet(procs, tmp_path, {"trading": {"zone": "UTC",
                                                "day_roll": roll.strftime("%H:%M:%S")}})
    try:
        fleet.start_core()
        # churn crosses the spread: every round trip loses the spread and two commissions
        fleet.add_strategy("loser", PROBE, ["AAPL"], {"mode": "churn", "quantity": 10},
                           risk={"daily_loss_limit": 0.5, "order_rate": 100})
        fleet.start_strategy("loser")
        fleet.wait(lambda: [a for a in fleet.alerts("daily_loss") if "loser" in a.text],
                   deadline=90, what="the daily loss limit")
        assert any(d.reason == "reducing_only" for d in fleet.wait(
            lambda: [d for d in fleet.decisions("loser") if d.reason == "reducing_only"],
            what="reducing only"))
        # realized PnL net of commissions: execution's equals the broker's books
        assert_audit(fleet, ["loser"])
        fleet.wait(lambda: not _working_at_sim(fleet), what="no order working")
        ledger = fleet.sim.ledger()
        # IB's realized PnL (as the simulator keeps it) is already net of commissions
        broker_net = sum(p["realized"] for p in ledger["positions"].values())
        ours = views(fleet, ["loser"])["execution"]["realized"]["loser"]
        assert abs(ours - broker_net) < 0.01, (ours, broker_net)
        assert sum(f["commission"] for f in ledger["fills"]) > 0
        fleet.wait(lambda: fleet.alerts("daily_loss_reset"), deadline=150,
                   what="the next trading day")
        # the new day starts with a new budget: the strategy trades again, its fills are booked
        # on the new trading day, and that day's own losses trip the limit again
        first_day = [m for m in fleet.messages(StrategyPosition) if m.strategy == "loser"][0]
        fresh = fleet.wait(lambda: [m for m in fleet.messages(StrategyPosition)
                                    if m.strategy == "loser"
                                    and m.trading_day != first_day.trading_day],
                           deadline=90, what="a fill booked on the new trading day")
        new_day = fresh[0].trading_day
        fleet.wait(lambda: [a for a in fleet.alerts("daily_loss") if new_day in a.text],
                   deadline=90, what=f"the daily loss limit tripped again on {new_day}")
    finally:
        fleet.close()


# 9 ---------------------------------------------------------------------------------------------
def test_a_bracket_is_approved_or_refused_as_a_whole_and_sent_as_a_whole(fleet):
    fleet.start_core()
    fleet.add_strategy("small", PROBE, ["AAPL"], {"mode": "bracket"},
                       risk={"max_open_orders": 2})
    fleet.add_strategy("big", PROBE, ["MSFT"], {"mode": "bracket"},
                       risk={"max_open_orders": 3})
    fleet.start_strategy("small")
    fleet.start_strategy("big")
    refused = fleet.wait(lambda: [d for d in fleet.decisions("small")
                                  if d.reason == "max_open_orders"], deadline=90,
                         what="the 3-leg bracket refused by max_open_orders=2")
    assert len({d.client_order_id for d in refused}) == 3  # all three legs, together
    fleet.wait(lambda: len([o for o in fleet.sim.orders() if o["symbol"] == "MSFT"]) == 3,
               deadline=90, what="the approved bracket's three legs at the simulator")
    assert not [o for o in fleet.sim.orders() if o["symbol"] == "AAPL"]
    assert_audit(fleet, ["small", "big"])
    assert "lost with the connection" not in fleet.procs.log("gateway")
