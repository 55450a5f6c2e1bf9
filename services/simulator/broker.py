"""The simulated broker: market clock, order engine, ledger and the routing of every event to the
client sessions that should hear about it. One asyncio loop drives all of it."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .config import SimConfig
from .contracts import Instrument, Universe
from .encoders import ib_time, qty
from .feeds import DepthSub, MktSub, RtbSub, TbtSub
from .ledger import Fill, Ledger
from .logs import log
from .market import Market
from .orders import OrderEngine, SimOrder

if TYPE_CHECKING:
    from .faults import FaultController
    from .session import Session

MAX_CATCH_UP_STEPS = 2000


class Broker:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.universe = Universe(cfg.instruments)
        start = cfg.start_time if cfg.start_time is not None else time.time()
        self.market = Market(self.universe.instruments, cfg.seed, cfg.depth_levels, cfg.step_ms, start,
                             cfg.mean_reversion)
        self.ledger = Ledger(cfg.account, cfg.cash)
        self.engine = OrderEngine(self.market, self.ledger, self, cfg.seed)
        self.sessions: dict[int, "Session"] = {}
        self.connections: set["Session"] = set()
        self.faults: "FaultController | None" = None
        # subscriptions by conId, so one market step touches only what is subscribed
        self.mkt_subs: dict[int, list[MktSub]] = {i.con_id: [] for i in self.universe.instruments}
        self.tbt_subs: dict[int, list[TbtSub]] = {i.con_id: [] for i in self.universe.instruments}
        self.depth_subs: dict[int, list[DepthSub]] = {i.con_id: [] for i in self.universe.instruments}
        self.rtb_subs: dict[int, list[RtbSub]] = {i.con_id: [] for i in self.universe.instruments}
        # fault state the sessions consult
        self.data_stopped = 0          # >0: no market data flows (reset, farm flap, competing session)
        self.exec_delayed = False      # order/execution reports are held back (server reset)
        self.hung = False
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.reject_until = 0.0        # gateway restart: connections are closed on accept until then
        self.locked_ids: dict[int, float] = {}
        self.late_replies = False
        self.stats: dict[str, int] = {"connections": 0, "bad_frames": 0, "errors_sent": 0,
                                      "pacing_violations": 0, "steps": 0}
        self._clock_task: asyncio.Task | None = None
        self._last_sample = 0.0
        self._last_pnl = 0.0
        self._last_rtb_second = int(self.market.now())

    # ---- lifecycle
    def start(self) -> None:
        self._clock_task = asyncio.get_running_loop().create_task(self._clock())

    async def stop(self) -> None:
        if self._clock_task:
            self._clock_task.cancel()
            try:
                await self._clock_task
            except (asyncio.CancelledError, Exception):
                pass
        for s in list(self.connections):
            s.close("shutdown")

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        step_s = self.cfg.step_ms / 1000.0
        sample_s = self.cfg.mktdata_ms / 1000.0
        pnl_s = self.cfg.pnl_ms / 1000.0
        base = loop.time()
        done = 0
        while True:
            try:
                now = loop.time()
                due = int((now - base) / step_s) - done
                if due > MAX_CATCH_UP_STEPS:   # fell far behind: let simulated time dilate instead
                    base += (due - MAX_CATCH_UP_STEPS) * step_s
                    due = MAX_CATCH_UP_STEPS
                for _ in range(due):
                    self._step()
                done += max(0, due)
                if now - self._last_sample >= sample_s:
                    self._last_sample = now
                    self._sample()
                if now - self._last_pnl >= pnl_s:
                    self._last_pnl = now
                    self._push_pnl()
                delay = base + (done + 1) * step_s - loop.time()
                await asyncio.sleep(max(0.0, min(delay, sample_s)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # a bug in one step must not stop the market
                log("internal_error", where="clock", error=repr(exc))
                await asyncio.sleep(0.01)

    def _step(self) -> None:
        market = self.market
        market.step()
        self.stats["steps"] += 1
        self.engine.on_step()
        if self.data_stopped or self.hung:
            return
        now = int(market.now())
        for con_id, proc in market.processes.items():
            for d in self.depth_subs[con_id]:
                d.emit(proc)
            for t in self.tbt_subs[con_id]:
                t.emit(proc, now)
        if now - self._last_rtb_second >= self.cfg.rtb_seconds and now % self.cfg.rtb_seconds == 0:
            self._last_rtb_second = now
            self._emit_rtb(now)

    def _sample(self) -> None:
        if self.data_stopped or self.hung:
            return
        for con_id, subs in self.mkt_subs.items():
            if subs:
                proc = self.market.processes[con_id]
                for sub in subs:
                    sub.emit(proc)

    def _emit_rtb(self, now: int) -> None:
        span = self.cfg.rtb_seconds
        for con_id, subs in self.rtb_subs.items():
            if not subs:
                continue
            inst = self.universe.by_con_id[con_id]
            (t0, o, h, l, c, v, n), = self.market.bars(con_id, now, span, 1)
            wap = inst.fmt(round((o + h + l + c) / 4))
            for sub in subs:
                sub.session.send_md(sub.session.enc.realtime_bar(
                    sub.req_id, t0, inst.fmt(o), inst.fmt(h), inst.fmt(l), inst.fmt(c), qty(v), wap, n))

    # ---- subscriptions
    def drop_market_data(self, session: "Session | None" = None) -> int:
        """Forget market-data subscriptions (of one session, or all): what IB does on data loss."""
        dropped = 0
        for table in (self.mkt_subs, self.tbt_subs, self.depth_subs, self.rtb_subs):
            for con_id, subs in table.items():
                keep = [s for s in subs if session is not None and s.session is not session]
                dropped += len(subs) - len(keep)
                table[con_id] = keep
        for s in ([session] if session else list(self.connections)):
            s.mkt.clear(); s.tbt.clear(); s.depth.clear(); s.rtb.clear()
        return dropped

    def count(self, table: dict[int, list]) -> int:
        return sum(len(v) for v in table.values())

    # ---- OrderSink
    def order_changed(self, order: SimOrder, send_open_order: bool) -> None:
        s = self.sessions.get(order.client_id)
        if s is None:
            return
        if send_open_order:
            s.send_exec(s.enc.open_order(order))
        s.send_exec(s.enc.order_status(order))

    def order_filled(self, order: SimOrder, fill: Fill) -> None:
        s = self.sessions.get(order.client_id)
        inst = order.inst
        if s is not None:
            s.send_exec(s.enc.exec_details(-1, fill, inst))
            if order.status == "Filled":
                s.send_exec(s.enc.open_order(order))
            s.send_exec(s.enc.order_status(order))
            s.send_exec(s.enc.commission_report(fill, inst.spec.currency))
        log("fill", client_id=order.client_id, order_id=order.order_id, exec_id=fill.exec_id,
            symbol=inst.symbol, side=fill.side, qty=fill.qty, price=fill.price)
        pos = self.ledger.positions[inst.con_id]
        for sess in list(self.connections):
            if sess.positions_sub:
                sess.send_exec(sess.enc.position(self.ledger.account, inst, pos.qty, pos.avg_cost))
            if sess.account_updates:
                self.send_portfolio(sess, inst)
                self.send_account_values(sess)
            if sess.pnl or sess.pnl_single:
                self.send_pnl(sess)

    def order_error(self, client_id: int, order_id: int, code: tuple[int, str], **fmt: object) -> None:
        s = self.sessions.get(client_id)
        if s is not None:
            s.error(order_id, code, **fmt)

    # ---- account views
    def mark(self, inst: Instrument) -> float:
        proc = self.market.processes[inst.con_id]
        return inst.price(int(round(proc.mid_ticks))) if inst.sec_type == "CASH" else inst.price(proc.last_ticks)

    def unrealized(self) -> tuple[float, float]:
        """(market value of non-futures positions, total unrealized P&L)."""
        value = unreal = 0.0
        for con_id, pos in self.ledger.positions.items():
            if not pos.qty:
                continue
            inst = self.universe.by_con_id[con_id]
            mv = pos.qty * self.mark(inst) * inst.multiplier
            unreal += mv - pos.qty * pos.avg_cost
            if inst.sec_type != "FUT":
                value += mv
        return value, unreal

    def account_values(self) -> dict[str, float]:
        value, unreal = self.unrealized()
        fut_unreal = unreal - (value - sum(p.qty * p.avg_cost for c, p in self.ledger.positions.items()
                                           if self.universe.by_con_id[c].sec_type != "FUT"))
        net_liq = self.ledger.cash + value + fut_unreal
        return {"NetLiquidation": net_liq, "TotalCashValue": self.ledger.cash,
                "GrossPositionValue": abs(value), "BuyingPower": net_liq * 4,
                "AvailableFunds": net_liq - abs(value) * 0.25, "ExcessLiquidity": net_liq - abs(value) * 0.25,
                "EquityWithLoanValue": net_liq, "InitMarginReq": abs(value) * 0.25,
                "MaintMarginReq": abs(value) * 0.25, "UnrealizedPnL": unreal,
                "RealizedPnL": self.ledger.realized}

    def send_account_values(self, s: "Session") -> None:
        acct = self.ledger.account
        for key, val in self.account_values().items():
            s.send(s.enc.account_value(key, f"{val:.2f}", "USD", acct))
        s.send(s.enc.account_value("AccountCode", acct, "", acct))
        s.send(s.enc.account_value("AccountType", "INDIVIDUAL", "", acct))
        s.send(s.enc.account_time(time.strftime("%H:%M", time.gmtime(self.market.now()))))

    def send_portfolio(self, s: "Session", inst: Instrument) -> None:
        pos = self.ledger.positions.get(inst.con_id)
        if pos is None:
            return
        mark = self.mark(inst)
        mv = pos.qty * mark * inst.multiplier
        s.send(s.enc.portfolio_value(inst, pos.qty, mark, round(mv, 2), pos.avg_cost,
                                     round(mv - pos.qty * pos.avg_cost, 2), round(pos.realized, 2),
                                     self.ledger.account))

    def send_pnl(self, s: "Session") -> None:
        _, unreal = self.unrealized()
        for req_id in s.pnl:
            s.send(s.enc.pnl(req_id, round(unreal + self.ledger.realized, 2), round(unreal, 2),
                             round(self.ledger.realized, 2)))
        for req_id, con_id in s.pnl_single.items():
            inst = self.universe.by_con_id.get(con_id)
            pos = self.ledger.positions.get(con_id)
            if inst is None:
                continue
            q = pos.qty if pos else 0.0
            mark = self.mark(inst)
            value = q * mark * inst.multiplier
            unreal = value - q * (pos.avg_cost if pos else 0.0)
            realized = pos.realized if pos else 0.0
            s.send(s.enc.pnl_single(req_id, q, round(unreal + realized, 2), round(unreal, 2),
                                    round(realized, 2), round(value, 2)))

    def _push_pnl(self) -> None:
        if self.hung:
            return
        for s in list(self.connections):
            if s.pnl or s.pnl_single:
                self.send_pnl(s)

    # ---- client registry
    def client_id_blocked(self, client_id: int) -> bool:
        until = self.locked_ids.get(client_id)
        if until is not None and until <= time.monotonic():
            del self.locked_ids[client_id]
            until = None
        return client_id in self.sessions or until is not None

    def clients(self) -> list[dict[str, Any]]:
        return [{"client_id": s.client_id, "server_version": s.version, "peer": s.peer,
                 "mkt": len(s.mkt), "tbt": len(s.tbt), "depth": len(s.depth), "rtb": len(s.rtb)}
                for s in self.sessions.values()]

    def fill_time(self, fill: Fill) -> str:
        return ib_time(fill.time)

    def status(self) -> dict[str, Any]:
        return {"sim_time": self.market.now(), "steps": self.market.steps, "clients": self.clients(),
                "stats": dict(self.stats), "data_stopped": bool(self.data_stopped), "hung": self.hung,
                "exec_delayed": self.exec_delayed, "rejecting": self.reject_until > time.monotonic(),
                "late_replies": self.late_replies,
                "locked_ids": [c for c, t in self.locked_ids.items() if t > time.monotonic()],
                "subscriptions": {"mkt": self.count(self.mkt_subs), "tbt": self.count(self.tbt_subs),
                                  "depth": self.count(self.depth_subs), "rtb": self.count(self.rtb_subs)}}

    def orders_view(self) -> list[dict[str, Any]]:
        return [{"client_id": o.client_id, "order_id": o.order_id, "perm_id": o.perm_id,
                 "symbol": o.inst.symbol, "con_id": o.inst.con_id, "action": o.req.action,
                 "qty": o.req.total_qty, "order_type": o.req.order_type, "lmt_price": o.req.lmt_price,
                 "aux_price": o.req.aux_price, "tif": o.req.tif, "status": o.status, "filled": o.filled,
                 "remaining": o.remaining, "avg_fill_price": o.avg_fill_price, "order_ref": o.req.order_ref,
                 "parent_id": o.req.parent_id, "oca_group": o.req.oca_group, "transmitted": o.transmitted,
                 "commission": o.commission_paid}
                for o in self.engine.orders.values()]
