"""Both example strategies trade against the simulator through risk, execution and the
gateway, and what risk and execution believe matches the simulator's ledger exactly."""
from __future__ import annotations


from proto.schema import PnL
from tests.support.fleet import execution_positions, live_orders, positions_from_fills, sim_positions

MR = "services.strategy.examples.mean_reversion:MeanReversion"
IMB = "services.strategy.examples.imbalance:ImbalanceMomentum"


def test_both_example_strategies_trade_and_positions_match_the_simulator(fleet):
    fleet.start_core()
    fleet.add_strategy("mr", MR, ["MSFT"], {"window": 20, "entry_z": 1.0, "stop_sigmas": 1.0,
                                            "risk_fraction": 0.0002, "max_quantity": 200,
                                            "entry_timeout_s": 5})
    fleet.add_strategy("imb", IMB, ["AAPL"], {"threshold": 0.1, "span": 5, "quantity": 50,
                                              "max_position": 200, "stale_after_s": 2,
                                              "cooldown_s": 0.5})
    fleet.start_strategy("mr")
    fleet.start_strategy("imb")

    # mean reversion: an entry filled and one of its bracket's exits filled after it
    def bracket_exited():
        fills = fleet.fills("mr").values()
        return any(u.parent_id for u in fills) and any(not u.parent_id for u in fills)

    fleet.wait(bracket_exited, deadline=240, what="a mean-reversion bracket to enter and exit")
    fleet.wait(lambda: fleet.fills("imb"), deadline=240, what="the imbalance strategy to fill")
    # a strategy may start before risk has a fresh mark for its symbol: those are refused
    unexpected = [d for d in fleet.decisions() if not d.approved
                  and d.reason not in ("order_rate", "stale_market_data")]
    assert not unexpected, [(d.strategy, d.reason, d.text) for d in unexpected]

    fleet.kill_switch()  # stop the flow so the books can be compared at rest
    fleet.wait(lambda: not live_orders(fleet), deadline=60,
               what="every order at the simulator to be cancelled")
    sim_fill_ids = {f["exec_id"] for f in fleet.sim.fills()}
    fleet.wait(lambda: set(fleet.fills()) >= sim_fill_ids, deadline=60,
               what="every simulator fill to reach the bus")
    assert set(fleet.fills()) == sim_fill_ids  # nothing extra, nothing missing
    truth = sim_positions(fleet)
    assert positions_from_fills(fleet.fills().values()) == truth
    fleet.wait(lambda: execution_positions(fleet) == truth, deadline=30,
               what="execution's positions to equal the simulator's")
    # risk's gross per strategy equals the simulator's, strategy by strategy
    risk_pnl = {p.strategy: p for p in fleet.messages(PnL) if p.src == "risk.1"}
    for name, symbol in (("mr", "MSFT"), ("imb", "AAPL")):
        expected = abs(positions_from_fills(fleet.fills(name).values()).get(symbol, 0.0))
        fleet.wait(lambda: {p.strategy: p for p in fleet.messages(PnL) if p.src == "risk.1"}
                   .get(name) and {p.strategy: p for p in fleet.messages(PnL)
                                   if p.src == "risk.1"}[name].position == expected,
                   deadline=30, what=f"risk's position for {name}")
    assert risk_pnl is not None
