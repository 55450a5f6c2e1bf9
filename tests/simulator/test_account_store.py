"""The paper account's state directory, in process: the store's crash cases, a full round trip of
the account through a reopened broker, and the completedOrder frame against IB's capture."""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from ibapi import comm
from ibapi.decoder import Decoder
from ibapi.wrapper import EWrapper

from services.simulator import protocol as P
from services.simulator.broker import Broker
from services.simulator.config import SimConfig
from services.simulator.contracts import ContractQuery
from services.simulator.encoders import TextEncoder
from services.simulator.orders import BY_SYSTEM, OrderRequest
from services.simulator.store import StateError, StateStore

# IB Gateway's completedOrder (101) frame at server version 200, an AAPL SELL 1 LMT 500 GTC order
# cancelled by IB ("Cancelled by System:\\n"), ids and account sanitised; recorded from a live paper
# gateway by ThomasMarcelis/ibkr-go (MIT), testdata/transcripts/completed_orders_cancelled_system_live.txt
CAPTURED_COMPLETED_ORDER = (
    "AAABvjEwMQAyNjU1OTgAQUFQTABTVEsAADAAPwAAU01BUlQAVVNEAEFBUEwATk1TAFNFTEwAMQBMTVQANTAwLjAAMC4w"
    "AEdUQwAxMDAxAERVMTIzNDUAADAAADEwMDIAMAAwADAAAAAAAAAAMAAAADAAAC0xAAAAAAAAMjE0NzQ4MzY0NwAwADAA"
    "ADMAMAAAMABOb25lAAAwADAAMAAAMAAwAAAAADAAMAAwADIxNDc0ODM2NDcAMjE0NzQ4MzY0NwAAAABJQgAwADAAADAA"
    "Q2FuY2VsbGVkADAAMAAwADEuNzk3NjkzMTM0ODYyMzE1N0UzMDgAMS43OTc2OTMxMzQ4NjIzMTU3RTMwOAAwADEAMAAy"
    "MDI2MDkzMCAyMjowMDowMCBDZW50cmFsIEV1cm9wZWFuIFN0YW5kYXJkIFRpbWUAMAAyMTQ3NDgzNjQ3ADAATm90IGFu"
    "IGluc2lkZXIgb3Igc3Vic3RhbnRpYWwgc2hhcmVob2xkZXIAMAAwADEwMDEAMjAyNjA0MTEgMjI6MTg6NTMgVVMvRWFz"
    "dGVybgBDYW5jZWxsZWQgYnkgU3lzdGVtOgoAAAAAAAAAMAAA"
)


# ---- the store ------------------------------------------------------------------------------
def _store(path: Path, snapshot: dict | None = None) -> StateStore:
    st = StateStore(path)
    st.load()
    if snapshot is not None:
        st.write_snapshot(snapshot)
    return st


def test_a_torn_journal_tail_is_cut_and_the_next_append_starts_on_a_clean_boundary(tmp_path):
    st = _store(tmp_path, {"n": "snap"})
    for i in range(3):
        st.append({"n": i})
    st.close()
    journal = tmp_path / "journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-5])                     # a write cut short by a crash
    st = StateStore(tmp_path)
    snap, recs = st.load()
    assert snap["n"] == "snap" and [r["n"] for r in recs] == [0, 1] and st.torn_bytes > 0
    st.append({"n": "after"})
    st.close()
    st = StateStore(tmp_path)
    _, recs = st.load()
    assert [(r["seq"], r["n"]) for r in recs] == [(1, 0), (2, 1), (3, "after")] and st.torn_bytes == 0
    st.close()


def test_a_corrupt_record_ends_the_journal_there(tmp_path):
    st = _store(tmp_path, {})
    for i in range(3):
        st.append({"n": i, "pad": "x" * 50})
    st.close()
    journal = tmp_path / "journal"
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0xFF                       # a flipped byte in the second record
    journal.write_bytes(bytes(data))
    st = StateStore(tmp_path)
    _, recs = st.load()
    assert [r["n"] for r in recs] == [0]
    st.close()


def test_records_already_in_the_snapshot_are_skipped_after_a_crash_before_the_journal_was_emptied(tmp_path):
    st = _store(tmp_path, {})
    st.append({"n": 0})
    st.append({"n": 1})
    before = (tmp_path / "journal").read_bytes()
    st.write_snapshot({"n": "both"})                   # then "crash": the journal was not emptied
    st.close()
    (tmp_path / "journal").write_bytes(before)
    st = StateStore(tmp_path)
    snap, recs = st.load()
    assert snap["n"] == "both" and snap["seq"] == 2 and recs == []
    assert st.append({"n": 2}) == 3
    st.close()


def test_a_state_dir_has_one_owner_and_refuses_damage(tmp_path):
    st = _store(tmp_path, {})
    with pytest.raises(StateError, match="in use"):
        StateStore(tmp_path)
    st.close()
    snap = tmp_path / "snapshot"
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    snap.write_bytes(bytes(data))
    st = StateStore(tmp_path)
    with pytest.raises(StateError, match="damaged"):
        st.load()
    st.close()
    with pytest.raises(StateError, match="damaged"):
        Broker(SimConfig(state_dir=str(tmp_path)))
    with pytest.raises(StateError, match="damaged"):            # not "in use": the lock was released
        Broker(SimConfig(state_dir=str(tmp_path)))
    other = tmp_path / "other"
    st = _store(other)                                 # no snapshot written: records without one
    st.append({"n": 0})
    st.close()
    with pytest.raises(StateError, match="no snapshot"):
        StateStore(other).load()


# ---- the account through a reopened broker ---------------------------------------------------
def _req(order_id: int, action: str, qty: float, order_type: str = "MKT", lmt: float | None = None,
         aux: float | None = None, tif: str = "DAY", ref: str = "", parent: int = 0,
         transmit: bool = True) -> OrderRequest:
    return OrderRequest(order_id=order_id, contract=ContractQuery(symbol="AAPL", sec_type="STK",
                                                                  exchange="SMART", currency="USD"),
                        action=action, total_qty=qty, order_type=order_type, lmt_price=lmt,
                        aux_price=aux, tif=tif, order_ref=ref, parent_id=parent, transmit=transmit)


def _account(b: Broker) -> dict:
    e = b.engine
    return {"orders": b.orders_view(), "ledger": b.ledger.snapshot(), "completed": b.completed_orders_view(),
            "max_id": e.max_id, "next_perm": e.next_perm, "exec_seq": e.exec_seq,
            "token": b.identity.token, "next_valid": {c: e.next_valid_id(c) for c in (1, 2, 3)}}


def _close(b: Broker) -> None:
    """A crash: the store is released without the clean stop's snapshot."""
    b.journal.store.close()


def test_every_part_of_the_account_survives_a_reopen_from_the_journal_and_from_a_snapshot(tmp_path):
    cfg = SimConfig(state_dir=str(tmp_path / "acct"))
    b = Broker(cfg)
    inst = b.universe.by_con_id[265598]
    q = b.market.processes[265598]
    bid, ask = inst.price(q.bid), inst.price(q.ask)
    e = b.engine
    e.place(1, _req(1, "BUY", 100, ref="mkt"), inst)                          # filled
    e.place(1, _req(2, "BUY", 10, "LMT", lmt=round(bid - 20, 2), tif="GTC", ref="rest"), inst)
    e.place(1, _req(3, "BUY", 10, "LMT", lmt=round(bid - 30, 2), ref="gone"), inst)
    e.cancel(1, 3)                                                            # cancelled by the client
    e.place(1, _req(4, "BUY", 5, "REL", aux=1.0, ref="bad"), inst)            # rejected: Inactive
    e.place(2, _req(7, "BUY", 50, "LMT", lmt=round(bid - 10, 2), transmit=False, ref="br"), inst)
    e.place(2, _req(8, "SELL", 50, "LMT", lmt=round(ask + 50, 2), parent=7, transmit=False), inst)
    e.place(2, _req(9, "SELL", 50, "STP", aux=round(bid - 50, 2), parent=7), inst)  # a held bracket
    e.place(1, _req(1, "BUY", 1), inst)                                       # 103: id reused
    fill = b.ledger.fills[0]
    b.correct_execution(fill.exec_id, quantity=60)
    b.commit()
    before = _account(b)
    assert before["ledger"]["positions"]["265598"]["qty"] == 60
    assert {o["status"] for o in before["completed"]} == {"Filled", "Cancelled", "Inactive"}
    _close(b)

    again = Broker(cfg)                                                       # from the journal
    assert _account(again) == before
    assert len(again.engine.open_orders()) == 4
    asyncio.run(again.stop())                                                 # writes a snapshot
    assert (tmp_path / "acct" / "journal").stat().st_size == 0

    third = Broker(cfg)                                                       # from the snapshot
    assert _account(third) == before
    third.engine.place(1, _req(5, "SELL", 60, ref="flat"), inst)
    third.commit()
    ids = [f["exec_id"] for f in third.ledger.snapshot()["fills"]]
    assert len(ids) == len(set(ids)) and ids[-1].split(".")[1] > ids[0].split(".")[1]
    _close(third)


def test_a_new_state_dir_is_a_new_account_and_no_dir_is_one_per_run(tmp_path):
    tokens = {Broker(SimConfig()).identity.token for _ in range(3)}
    a = Broker(SimConfig(state_dir=str(tmp_path / "a")))
    b = Broker(SimConfig(state_dir=str(tmp_path / "b")))
    tokens |= {a.identity.token, b.identity.token}
    assert len(tokens) == 5
    _close(a)
    _close(b)


# ---- completedOrder on the wire ---------------------------------------------------------------
def _capture_fields() -> list[str]:
    body = base64.b64decode(CAPTURED_COMPLETED_ORDER)[4:]
    return body.decode("latin-1").split("\0")[:-1]


class _Collect(EWrapper):
    def __init__(self):
        super().__init__()
        self.got = []

    def completedOrder(self, contract, order, state):
        self.got.append((contract, order, state))

    def error(self, *args):
        raise AssertionError(f"ibapi decode error {args}")


def _decode(frame: bytes, version: int):
    w = _Collect()
    body = frame[4:]
    text = body[body.index(b"\0") + 1:]
    Decoder(w, version).interpret(comm.read_fields(text), 101)
    (got,) = w.got
    return got


def _cancelled_sell_order():
    """The captured order, rebuilt in the simulator: AAPL SELL 1 LMT 500 GTC, cancelled by IB."""
    b = Broker(SimConfig())
    inst = b.universe.by_con_id[265598]
    b.engine.place(0, _req(1001, "SELL", 1, "LMT", lmt=500.0, tif="GTC"), inst)
    order = b.engine.orders[(0, 1001)]
    b.engine.broker_cancel(0, 1001)
    return order


def test_the_completed_order_frame_has_the_layout_of_ib_gateways_at_v200():
    order = _cancelled_sell_order()
    ours = TextEncoder(200).completed_order(order, None, "DU12345")[4:].decode("latin-1").split("\0")[:-1]
    live = _capture_fields()
    assert len(ours) == len(live) == 103
    # fields that carry this order's identity or the account's, not layout
    own = {5: "strike", 6: "right", 10: "localSymbol", 11: "tradingClass", 15: "lmtPrice", 18: "ocaGroup",
           23: "permId", 85: "autoCancelDate", 92: "parentPermId", 93: "completedTime"}
    diff = {i: (ours[i], live[i]) for i in range(len(live)) if ours[i] != live[i] and i not in own}
    assert diff == {}
    assert ours[94] == live[94] == BY_SYSTEM


@pytest.mark.parametrize("version", [P.MIN_SERVED, P.FA_PROFILE_DESUPPORT - 1, P.FA_PROFILE_DESUPPORT,
                                     P.CUSTOMER_ACCOUNT, P.SUBMITTER - 1, P.MAX_TEXT])
def test_ibapi_decodes_the_completed_order_at_every_served_version(version):
    order = _cancelled_sell_order()
    order.req.order_ref = "ref-1"
    contract, o, state = _decode(TextEncoder(version).completed_order(order, 777, "DU1"), version)
    assert (contract.conId, contract.symbol, contract.secType) == (265598, "AAPL", "STK")
    assert (o.action, o.orderType, o.lmtPrice, o.tif, o.account) == ("SELL", "LMT", 500.0, "GTC", "DU1")
    assert (o.orderRef, o.permId, o.parentPermId) == ("ref-1", order.perm_id, 777)
    assert (int(o.totalQuantity), int(o.filledQuantity)) == (1, 0)
    assert (state.status, state.completedStatus) == ("Cancelled", BY_SYSTEM)
    assert state.completedTime.endswith(" America/New_York")


def test_an_account_trading_instruments_the_universe_lacks_refuses_to_open(tmp_path):
    cfg = SimConfig(state_dir=str(tmp_path / "acct"))
    b = Broker(cfg)
    b.engine.place(1, _req(1, "BUY", 10), b.universe.by_con_id[265598])
    b.commit()
    _close(b)
    without_aapl = tuple(i for i in cfg.instruments if i.con_id != 265598)
    with pytest.raises(StateError, match="conId 265598"):
        Broker(SimConfig(state_dir=cfg.state_dir, instruments=without_aapl))
    Broker(cfg).journal.store.close()                  # the refusal released the directory


def test_a_failed_or_short_write_is_cut_back_and_the_store_goes_on(tmp_path, monkeypatch):
    """ENOSPC after a short write: nothing of the record stays in the file (the next record
    would otherwise follow garbage and be lost at the next load); the sequence is unchanged."""
    import errno
    import os

    from services.simulator import store as store_mod
    s = _store(tmp_path / "acct", {"v": 0})
    s.append({"a": 1})
    size, seq = s.journal_bytes, s.seq
    real = os.write
    calls = {"n": 0}

    def failing(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "write", failing)
    with pytest.raises(OSError):
        s.append({"a": 2})
    monkeypatch.undo()
    assert (s.journal_path.stat().st_size, s.seq) == (size, seq)
    assert s.stats["write_errors"] == 1
    s.append({"a": 3})
    s.close()
    again = StateStore(tmp_path / "acct")
    _, kept = again.load()
    assert [r["a"] for r in kept] == [1, 3] and again.torn_bytes == 0
    again.close()
