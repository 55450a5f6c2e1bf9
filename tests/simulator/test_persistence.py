"""The simulator as a persistent paper account (--state-dir): real processes, SIGKILL and SIGTERM,
restarted on the same directory; and new directories as new accounts."""
from __future__ import annotations

from ibapi.execution import ExecutionFilter

from tests.simulator.ibapi_client import IbapiClient, order, stock
from tests.support.processes import free_port

AAPL, MSFT = 265598, 272093


def _exec_parts(exec_id: str) -> tuple[str, int, str]:
    """(account token, counter, correction) of an execId like 0000e0d5.6575a7f3.01.01"""
    token, counter, _, correction = exec_id.split(".")
    return token, int(counter, 16), correction


def _place(c: IbapiClient, contract, o) -> int:
    oid = c.next_order_id()
    c.client.placeOrder(oid, contract, o)
    return oid


def test_a_working_order_positions_and_ids_survive_sigkill_and_the_order_still_fills(start_sim, tmp_path):
    state = str(tmp_path / "account")
    sim = start_sim("--state-dir", state)
    c = IbapiClient(sim.port, 31).connect()
    try:
        mkt = _place(c, stock("AAPL"), order("BUY", 100, ref="pos"))
        c.wait("orderStatus", lambda e: e[0] == mkt and e[1] == "Filled")
        (first,) = [e[2] for e in c.wait("execDetails", lambda e: e[2].orderId == mkt)]
        bid = sim.control.quote(AAPL)["bid"]
        rest = _place(c, stock("AAPL"), order("BUY", 10, "LMT", lmt=round(bid - 20, 2), tif="GTC", ref="rest"))
        c.wait("orderStatus", lambda e: e[0] == rest and e[1] == "Submitted")
        ledger, orders = sim.control.ledger(), sim.control.orders()
    finally:
        c.disconnect()
    sim.kill()

    sim = start_sim("--state-dir", state)
    assert sim.control.ledger() == ledger                     # fills, positions, cash, commissions
    assert sim.control.orders() == orders
    (working,) = [o for o in orders if o["order_id"] == rest]
    assert working["status"] == "Submitted" and working["filled"] == 0
    c = IbapiClient(sim.port, 31).connect()
    try:
        assert c.rec.next_id > rest                           # nextValidId is above every id used
        c.client.reqOpenOrders()
        c.wait("openOrderEnd")
        (oo,) = c.rec.get("openOrder")
        assert (oo[0], oo[2].permId, oo[2].orderRef, oo[3]) == (rest, working["perm_id"], "rest", "Submitted")
        c.client.placeOrder(mkt, stock("AAPL"), order("BUY", 1))   # a used id is still a duplicate
        c.wait_error(103, mkt)
        # the working order still works: made marketable, it fills under its old id and permId
        ask = sim.control.quote(AAPL)["ask"]
        c.client.placeOrder(rest, stock("AAPL"), order("BUY", 10, "LMT", lmt=round(ask + 1, 2), tif="GTC", ref="rest"))
        c.wait("orderStatus", lambda e: e[0] == rest and e[1] == "Filled")
        (ex,) = [e[2] for e in c.wait("execDetails", lambda e: e[2].orderId == rest)]
        assert ex.permId == working["perm_id"]
        token, counter, _ = _exec_parts(ex.execId)
        assert token == _exec_parts(first.execId)[0] and counter > _exec_parts(first.execId)[1]
        fills = sim.control.fills()
        assert [f["exec_id"] for f in fills] == [first.execId, ex.execId]
        assert sim.control.positions()[str(AAPL)]["qty"] == 110
    finally:
        c.disconnect()


def test_fills_a_client_was_told_about_survive_sigkill_mid_trading_and_exec_ids_never_repeat(start_sim, tmp_path):
    state = str(tmp_path / "account")
    seen: set[str] = set()
    ledger_ids: list[str] = []
    side = ["BUY", "SELL"]
    for round_ in range(3):
        sim = start_sim("--state-dir", state)
        before = {f["exec_id"] for f in sim.control.fills()}
        assert seen <= before, "a fill a client saw was lost"
        c = IbapiClient(sim.port, 32).connect()
        try:
            # batches of orders, each waited for; then one more batch and a SIGKILL at once,
            # while its fills are being booked and reported
            for batch in range(3):
                ids = [_place(c, stock("MSFT"), order(side[(round_ + i) % 2], 10, ref=f"r{round_}"))
                       for i in range(5)]
                c.wait("execDetails", lambda e: e[2].orderId in ids, count=5)
            for i in range(5):
                _place(c, stock("MSFT"), order("BUY", 10, ref=f"r{round_}-last"))
            sim.kill()
        finally:
            c.disconnect()
        seen |= {e[2].execId for e in c.rec.get("execDetails")}
    sim = start_sim("--state-dir", state)
    fills = sim.control.fills()
    ids = [f["exec_id"] for f in fills]
    assert seen <= set(ids) and len(ids) == len(set(ids))
    assert len({_exec_parts(i)[0] for i in ids}) == 1                 # one account, one token
    counters = [_exec_parts(i)[1] for i in ids]
    assert counters == sorted(counters) == list(range(counters[0], counters[0] + len(ids)))
    net = sum(f["qty"] if f["side"] == "BOT" else -f["qty"] for f in fills)
    assert sim.control.positions()[str(MSFT)]["qty"] == net
    c = IbapiClient(sim.port, 32).connect()
    try:
        c.client.reqExecutions(1, ExecutionFilter())
        c.wait("execDetailsEnd", lambda e: e[0] == 1)
        assert {e[2].execId for e in c.rec.get("execDetails", lambda e: e[0] == 1)} == set(ids)
        oid = _place(c, stock("MSFT"), order("SELL", 10, ref="after"))
        (ex,) = [e[2] for e in c.wait("execDetails", lambda e: e[0] == -1 and e[2].orderId == oid)]
        assert _exec_parts(ex.execId)[1] == counters[-1] + 1
    finally:
        c.disconnect()


def test_a_fresh_state_dir_is_a_new_account_whose_exec_ids_never_meet_the_old_ones(start_sim, tmp_path):
    def trade(state: str, n: int) -> tuple[list[str], str]:
        sim = start_sim("--state-dir", state)
        c = IbapiClient(sim.port, 33).connect()
        try:
            ids = [_place(c, stock("IBM"), order("BUY", 1)) for _ in range(n)]
            c.wait("execDetails", lambda e: e[2].orderId in ids, count=n)
            status = sim.control.status()["account"]
        finally:
            c.disconnect()
        sim.stop()
        return [e[2].execId for e in c.rec.get("execDetails")], status["exec_token"]

    old, old_token = trade(str(tmp_path / "old"), 3)
    new, new_token = trade(str(tmp_path / "new"), 3)          # a broker-side reset: a new account
    again, again_token = trade(str(tmp_path / "old"), 2)      # the old account, restarted (SIGTERM)
    assert old_token == again_token != new_token
    assert {_exec_parts(i)[0] for i in old + again} == {old_token}
    assert not set(new) & set(old + again)
    assert len(set(old + again)) == 5
    assert [_exec_parts(i)[1] for i in old + again] == list(range(1, 6))


def test_a_second_simulator_on_the_same_state_dir_is_refused(start_sim, procs, tmp_path):
    state = str(tmp_path / "account")
    sim = start_sim("--state-dir", state)
    other = procs.start_python("second", "services.simulator", "--port", str(free_port()),
                               "--state-dir", state)
    assert other.wait(60) == 2
    assert "in use by another simulator" in procs.log("second")
    assert sim.proc.poll() is None and sim.control.ping() == "pong"
