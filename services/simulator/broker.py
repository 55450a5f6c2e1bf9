"""The simulated broker: market clock, order engine, ledger and the routing of every event to the
client sessions that should hear about it. One asyncio loop drives all of it.

With `cfg.state_dir` the account persists (see `account.py`): `commit()` journals every change,
and it runs before any session writes to its socket (`Session._flush`) and before every control
reply, so whatever a client was told survives a crash of this process.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from .account import AccountJournal, Identity
from .config import SimConfig
from .contracts import Instrument, Universe
from .encoders import ib_time, qty, zone_info
from .feeds import DepthSub, MktSub, RtbSub, TbtSub
from .ledger import Fill, Ledger, Position
from .logs import log
from .market import Market
from .orders import OrderEngine, SimOrder
from .protocol import Code
from .store import StateStore

if TYPE_CHECKING:
    from .faults import FaultController
    from .orders import OrderRequest
    from .session import Session

MAX_CATCH_UP_STEPS = 2000
#: the whatIf margin model: (initial, maintenance) as a fraction of a position's gross value.
#: Stocks: Reg T (50% initial, 25% maintenance); futures and FX: flat fractions standing in for
#: exchange (SPAN) and IB's FX margins. Not IB's numbers: docs/simulator.md "whatIf orders".
MARGIN_RATES = {"STK": (0.50, 0.25), "FUT": (0.08, 0.06), "CASH": (0.03, 0.02)}


class Broker:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.time_zone = cfg.time_zone               # the account's: execution times
        self.host_zone = cfg.host_zone or cfg.time_zone  # the gateway host's: connection time
        self.universe = Universe(cfg.instruments)
        start = cfg.start_time if cfg.start_time is not None else time.time()
        self.market = Market(self.universe.instruments, cfg.seed, cfg.depth_levels, cfg.step_ms, start,
                             cfg.mean_reversion)
        self.universe.clock[0] = self.market.now  # contract details' trading hours: sim time
        self.universe.calendars[0] = getattr(cfg, "sessions", "off") == "on"
        self.journal: AccountJournal | None = None
        self._dirty = False
        self._commit_scheduled = False
        store = StateStore(cfg.state_dir) if cfg.state_dir else None
        try:
            snapshot, records = store.load() if store else (None, [])
            self.identity = Identity(**snapshot["identity"]) if snapshot else Identity.new(cfg)
            self.ledger = Ledger(self.identity.account, self.identity.initial_cash)
            self.engine = OrderEngine(self.market, self.ledger, self, self.identity.token,
                                      self.identity.perm_start)
            if store is not None:
                self.journal = AccountJournal(store, self.engine, self.ledger, self.universe, self.identity)
                self.journal.restore(snapshot, records)
                self.journal.snapshot()        # a new account's first snapshot, or a compaction
        except BaseException:
            if store is not None:
                store.close()
            raise
        if store is not None:
            if self.identity.account != cfg.account:
                log("state_account_kept", account=self.identity.account, configured=cfg.account)
            log("account_restored" if snapshot else "account_created", dir=str(store.dir),
                account=self.identity.account, token=f"{self.identity.token:08x}",
                orders=len(self.engine.orders), working=len(self.engine.open_orders()),
                fills=len(self.ledger.fills), exec_seq=self.engine.exec_seq,
                journal_records=len(records), torn_bytes=store.torn_bytes)
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
        # benchmarks (bench/bench_tick_to_order.py): a frozen market does not step; with
        # ``stamps`` on, each injected tick written and each placeOrder received is stamped
        self.frozen = False
        self.stamps: dict[str, list] | None = None
        # --sessions on: orders and market data follow the exchange calendars (sessions.py)
        self.hours = None
        if getattr(cfg, "sessions", "off") == "on":
            from .sessions import TradingHours
            self.hours = TradingHours(self)
        self.engine.hours = self.hours

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
        self.commit()
        if self.journal is not None:
            self.journal.snapshot()            # a clean stop leaves an empty journal
            self.journal.store.close()
            self.journal = None                # nothing after this is persisted (nothing happens)

    # ---- persistence
    def state_changed(self) -> None:
        """The account changed: journal it at the latest before the next socket write."""
        self._dirty = True
        if not self._commit_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.commit)
                self._commit_scheduled = True
            except RuntimeError:       # no loop (unit use): the next explicit commit does it
                pass

    def commit(self) -> None:
        """Make every change so far durable (a no-op without a state directory). Fail-stop: an
        account that cannot be written must not tell anyone anything more."""
        self._commit_scheduled = False
        if not self._dirty:
            return
        self._dirty = False
        if self.journal is None:
            self.engine.dirty.clear()
            self.ledger.replaced.clear()
            return
        try:
            self.journal.commit()
        except Exception as exc:
            log("state_write_failed", error=repr(exc), dir=str(self.journal.store.dir))
            os._exit(75)

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
                for _ in range(0 if self.frozen else due):
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
        if self.hours is not None:
            self.hours.advance(market.now())
        self.engine.on_step()
        if self.data_stopped or self.hung:
            return
        now = int(market.now())
        for con_id, proc in market.processes.items():
            for d in self.depth_subs[con_id]:
                d.emit(proc)
            for t in self.tbt_subs[con_id]:
                t.emit(proc, now)
        # the 5-second grid point just passed (with a faster clock a step can pass one by)
        aligned = now - now % self.cfg.rtb_seconds
        if aligned - self._last_rtb_second >= self.cfg.rtb_seconds:
            self._last_rtb_second = aligned
            self._emit_rtb(aligned)

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
        closed = self.market.closed
        for con_id, subs in self.rtb_subs.items():
            if not subs or con_id in closed:      # out of hours (sessions on): no bars
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
            s.mkt.clear(); s.tbt.clear(); s.depth.clear(); s.rtb.clear(); s.mkt_silent.clear()
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
        timing = self.cfg.commission_timing
        if s is not None:
            s.send_exec(s.enc.exec_details(-1, fill, inst))
            if timing == "early":
                s.send_exec(s.enc.commission_report(fill, inst.spec.currency))
            if order.status == "Filled":
                s.send_exec(s.enc.open_order(order))
            s.send_exec(s.enc.order_status(order))
            if timing == "normal":
                s.send_exec(s.enc.commission_report(fill, inst.spec.currency))
        if timing == "late":
            self._commission_later(fill, inst)
        log("fill", client_id=order.client_id, order_id=order.order_id, exec_id=fill.exec_id,
            symbol=inst.symbol, side=fill.side, qty=fill.qty, price=fill.price)
        self._push_account_after_fill(inst)

    def _commission_later(self, fill: Fill, inst: Instrument) -> None:
        """commission_timing "late": the report goes to the fill's client ``commission_delay``
        seconds on, if it is connected then (a reconnect's reqExecutions brings it otherwise)."""
        def send() -> None:
            s = self.sessions.get(fill.client_id)
            if s is not None:
                s.send_exec(s.enc.commission_report(fill, inst.spec.currency))
            log("commission_late", exec_id=fill.exec_id, notified=s is not None)
        asyncio.get_running_loop().call_later(self.cfg.commission_delay, send)

    def _push_account_after_fill(self, inst: Instrument) -> None:
        """Positions, portfolio, account values and P&L to the sessions that subscribed."""
        pos = self.ledger.positions.get(inst.con_id) or Position()
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

    def order_cancel_seen(self, client_id: int, order: SimOrder, reason: str) -> None:
        """Another client (0) cancelled this order: it hears Cancelled and 202 too."""
        s = self.sessions.get(client_id)
        if s is not None:
            s.send_exec(s.enc.order_status(order, client_id=client_id))
            s.error(order.order_id, Code.ORDER_CANCELLED, reason=reason)

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

    # ---- whatIf: a margin preview, never an order
    def _margin(self, inst: Instrument, position: float, price: float) -> tuple[float, float]:
        """(initial, maintenance) margin of one position under the simulator's model
        (MARGIN_RATES: a fraction of the position's gross value)."""
        init_rate, maint_rate = MARGIN_RATES.get(inst.sec_type, MARGIN_RATES["STK"])
        gross = abs(position) * price * inst.multiplier
        return gross * init_rate, gross * maint_rate

    def margin_preview(self, req: "OrderRequest", inst: Instrument) -> dict[str, str]:
        """The OrderState fields IB fills in a whatIf answer: the account's margins and equity
        with loan before the order, their change, and after it; the commission it would pay."""
        init_before = maint_before = 0.0
        for con_id, pos in self.ledger.positions.items():
            held = self.universe.by_con_id.get(con_id)
            if pos.qty and held is not None:
                i, m = self._margin(held, pos.qty, self.mark(held))
                init_before += i
                maint_before += m
        mark = self.mark(inst)
        price = req.lmt_price if req.order_type in ("LMT", "STP LMT") and req.lmt_price else \
            (req.aux_price if req.order_type == "STP" and req.aux_price else mark)
        held = self.ledger.positions.get(inst.con_id)
        old = held.qty if held is not None else 0.0
        new = old + (req.total_qty if req.action == "BUY" else -req.total_qty)
        i_old, m_old = self._margin(inst, old, mark)
        i_new, m_new = self._margin(inst, new, price)
        init_after = init_before - i_old + i_new
        maint_after = maint_before - m_old + m_new
        spec = inst.spec
        commission = req.total_qty * price * spec.commission_per_unit if inst.sec_type == "CASH" \
            else req.total_qty * spec.commission_per_unit
        commission = round(max(commission, spec.commission_min), 4)
        ewl_before = self.account_values()["EquityWithLoanValue"]
        ewl_after = ewl_before - commission
        money = lambda x: f"{x:.2f}"   # noqa: E731
        return {"initMarginBefore": money(init_before), "maintMarginBefore": money(maint_before),
                "equityWithLoanBefore": money(ewl_before),
                "initMarginChange": money(init_after - init_before),
                "maintMarginChange": money(maint_after - maint_before),
                "equityWithLoanChange": money(ewl_after - ewl_before),
                "initMarginAfter": money(init_after), "maintMarginAfter": money(maint_after),
                "equityWithLoanAfter": money(ewl_after),
                "commissionAndFees": repr(commission), "minCommissionAndFees": repr(commission),
                "maxCommissionAndFees": repr(commission), "commissionAndFeesCurrency": spec.currency,
                "marginCurrency": "USD"}

    def what_if(self, s: "Session", req: "OrderRequest", inst: Instrument | None) -> None:
        """A whatIf placeOrder: validated as an order is; answered with one openOrder whose
        OrderState carries the margin preview; nothing is placed (no orderStatus, no execution,
        no position change, the order id stays free)."""
        if inst is None:
            s.error(req.order_id, Code.NO_SECDEF)
            return
        reason = self.engine._validate(req, inst)
        if reason is not None:
            code, text = reason
            if code == Code.ORDER_REJECTED:
                s.error(req.order_id, code, reason=text)
            else:
                s.error(req.order_id, code)
            return
        preview = SimOrder(req, s.client_id or 0, 0, inst, status="PreSubmitted",
                           preview=self.margin_preview(req, inst))
        log("what_if", client_id=s.client_id, order_id=req.order_id, symbol=inst.symbol,
            init_margin_change=preview.preview["initMarginChange"])
        s.send_exec(s.enc.open_order(preview))

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
        return ib_time(fill.time, self.time_zone)

    def shift_price(self, con_id: int, ticks: float) -> dict[str, float]:
        """Move an instrument's market (its mid and the level it reverts to) by ``ticks``: a
        test makes resting orders fill, or not, when it wants."""
        inst = self.universe.by_con_id[con_id]
        proc = self.market.processes[con_id]
        proc.mid += ticks
        proc.anchor += ticks
        return {"mid": inst.price(proc.mid)}

    # ---- benchmark hooks (bench/bench_tick_to_order.py)
    def bench_freeze(self, frozen: bool = True, stamps: bool = True) -> dict[str, Any]:
        """Freeze the market (no steps: nothing moves unless injected) and start or stop
        stamping injected ticks and received orders."""
        self.frozen = frozen
        self.stamps = {"ticks": [], "orders": []} if stamps else None
        return {"frozen": self.frozen, "stamps": stamps}

    def inject_bid(self, con_id: int, bid: float, tick_id: int) -> dict[str, Any]:
        """Set the instrument's top of book to ``bid`` / bid + 1 tick and write it at once to
        every market-data subscriber of it; each session's write is stamped (``time_ns`` just
        after the socket write) under ``tick_id``."""
        inst = self.universe.by_con_id[con_id]
        proc = self.market.processes[con_id]
        ticks = inst.to_ticks(bid)
        proc.spread = 1
        proc.mid = proc.anchor = ticks + 0.5
        proc._rebuild()
        sessions = []
        for sub in self.mkt_subs[con_id]:
            sub.emit(proc)
            sessions.append(sub.session)
        now = int(self.market.now())
        for t in self.tbt_subs[con_id]:
            if t.kind in ("BidAsk", "MidPoint"):
                t.emit(proc, now)
                sessions.append(t.session)
        for d in self.depth_subs[con_id]:
            d.emit(proc)
            sessions.append(d.session)
        written = []
        for s in dict.fromkeys(sessions):
            s.flush_now()
            written.append((s.client_id, time.time_ns()))
        if self.stamps is not None:
            for client_id, t_ns in written:
                self.stamps["ticks"].append((tick_id, con_id, client_id, inst.price(ticks), t_ns))
        return {"bid": inst.price(ticks), "written": written}

    def stamp_order(self, client_id: int | None, order_id: int, symbol: str,
                    lmt_price: float | None, order_ref: str, t_ns: int) -> None:
        if self.stamps is not None:
            self.stamps["orders"].append((client_id, order_id, symbol, lmt_price, order_ref, t_ns))

    def take_stamps(self) -> dict[str, list]:
        out = self.stamps or {"ticks": [], "orders": []}
        if self.stamps is not None:
            self.stamps = {"ticks": [], "orders": []}
        return out

    def set_clock(self, at: float | None = None, speed: float | None = None) -> dict[str, Any]:
        """The clock control: jump the simulated clock to `at` (epoch seconds) and/or run it
        `speed` times the wall clock (each market step then covers step_ms x speed). With
        sessions on, every open, close and GTD expiry crossed is handled at its own time, in
        order. Neither given: the clock as it is."""
        market = self.market
        if (at is not None or speed is not None) and market.clock is not None:
            raise ValueError("the simulated clock follows the replayed data (--market)")
        before = market.now()
        events: list = []
        if at is not None or speed is not None:
            market.set_clock(at, speed)
            now = market.now()
            rtb = self.cfg.rtb_seconds
            self._last_rtb_second = int(now) - int(now) % rtb
            if self.hours is not None:
                events = self.hours.advance(now)
            log("clock", at=at, speed=speed, before=before, now=now, events=len(events))
        names = {i.con_id: i.symbol for i in self.universe.instruments}
        out: dict[str, Any] = {"sim_time": market.now(), "speed": market.speed, "before": before,
                               "sessions": self.cfg.sessions,
                               "events": [{"time": w, "kind": kind,
                                           "symbols": sorted({names[c] for c in arg}) if kind != "gtd"
                                           else [], "order": list(arg) if kind == "gtd" else None}
                                          for w, kind, arg in events]}
        if self.hours is not None:
            out["hours"] = self.hours.view()
        return out

    def set_time_zone(self, time_zone: str | None = None, host_zone: str | None = None) -> dict[str, str]:
        """Change the account's zone (execution times from now on) and/or the host's (the next
        handshakes' connection time); ValueError if a name is unknown."""
        for name in (time_zone, host_zone):
            if name:
                zone_info(name)
        if time_zone:
            self.time_zone = time_zone
            for s in list(self.sessions.values()):
                s.enc.zone = time_zone
        if host_zone:
            self.host_zone = host_zone
        return {"time_zone": self.time_zone, "host_zone": self.host_zone}

    def status(self) -> dict[str, Any]:
        account = {"account": self.identity.account, "exec_token": f"{self.identity.token:08x}",
                   "exec_seq": self.engine.exec_seq, "persistent": self.journal is not None,
                   "market_data": self.cfg.market_data}
        if self.journal is not None:
            account["state"] = self.journal.stats()
        return {"sim_time": self.market.now(), "steps": self.market.steps, "clients": self.clients(),
                "account": account,
                "stats": dict(self.stats), "data_stopped": bool(self.data_stopped), "hung": self.hung,
                "exec_delayed": self.exec_delayed, "rejecting": self.reject_until > time.monotonic(),
                "awaiting_login": bool(getattr(self.faults, "awaiting_login", False)),
                "late_replies": self.late_replies,
                "locked_ids": [c for c, t in self.locked_ids.items() if t > time.monotonic()],
                # reqMktData answered 10089 (no live permission): open at IB, and silent
                "mkt_silent": sum(len(c.mkt_silent) for c in self.connections),
                "subscriptions": {"mkt": self.count(self.mkt_subs), "tbt": self.count(self.tbt_subs),
                                  "depth": self.count(self.depth_subs), "rtb": self.count(self.rtb_subs)}}

    def orders_view(self) -> list[dict[str, Any]]:
        return [{"client_id": o.client_id, "order_id": o.order_id, "perm_id": o.perm_id,
                 "symbol": o.inst.symbol, "con_id": o.inst.con_id, "action": o.req.action,
                 "qty": o.req.total_qty, "order_type": o.req.order_type, "lmt_price": o.req.lmt_price,
                 "aux_price": o.req.aux_price, "tif": o.req.tif, "status": o.status, "filled": o.filled,
                 "remaining": o.remaining, "avg_fill_price": o.avg_fill_price, "order_ref": o.req.order_ref,
                 "parent_id": o.req.parent_id, "oca_group": o.req.oca_group, "transmitted": o.transmitted,
                 "commission": o.commission_paid, "completed_status": o.completed_status}
                for o in self.engine.orders.values()]

    # ---- broker-side events (control socket)
    def broker_cancel(self, order_id: int, client_id: int = 0, by: str = "system") -> dict[str, Any]:
        order = self.engine.broker_cancel(client_id, order_id, by=by)
        log("broker_cancel", client_id=client_id, order_id=order_id, perm_id=order.perm_id,
            notified=client_id in self.sessions)
        return {"order_id": order_id, "client_id": client_id, "perm_id": order.perm_id,
                "status": order.status, "filled": order.filled, "notified": client_id in self.sessions}

    def expire_day_orders(self, which=None, by: str = "command") -> dict[str, Any]:
        """The close: the working DAY orders (or those `which` picks: the trading hours' closes
        and GTD expiries, sessions on) are cancelled by the system."""
        expired = self.engine.expire_day_orders(which)
        log("expire_day_orders", by=by, orders=[[o.client_id, o.order_id] for o in expired])
        return {"expired": [{"client_id": o.client_id, "order_id": o.order_id, "perm_id": o.perm_id}
                            for o in expired]}

    def correct_execution(self, exec_id: str, quantity: float | None = None,
                          price: float | None = None) -> dict[str, Any]:
        """IB's correction of an execution: a new execDetails (execId's last field raised) and its
        commission report to the owner if connected; positions, account and P&L follow."""
        order, old, new = self.engine.correct_execution(exec_id, quantity, price)
        inst = self.universe.by_con_id.get(new.con_id)
        s = self.sessions.get(new.client_id)
        if s is not None and inst is not None:
            s.send_exec(s.enc.exec_details(-1, new, inst))
            if self.cfg.commission_timing in ("normal", "early"):
                s.send_exec(s.enc.commission_report(new, inst.spec.currency))
        if inst is not None and self.cfg.commission_timing == "late":
            self._commission_later(new, inst)
        log("exec_correction", exec_id=new.exec_id, corrects=old.exec_id, qty=new.qty, price=new.price,
            old_qty=old.qty, old_price=old.price, client_id=new.client_id, order_id=new.order_id)
        if inst is not None:
            self._push_account_after_fill(inst)
        return {"exec_id": new.exec_id, "corrects": old.exec_id, "qty": new.qty, "price": new.price,
                "commission": new.commission, "order_id": new.order_id, "client_id": new.client_id,
                "notified": s is not None}

    def completed_orders_view(self) -> list[dict[str, Any]]:
        return [{"client_id": o.client_id, "order_id": o.order_id, "perm_id": o.perm_id,
                 "symbol": o.inst.symbol, "status": o.status, "filled": o.filled, "qty": o.req.total_qty,
                 "order_ref": o.req.order_ref, "completed_time": o.completed_time,
                 "completed_status": o.completed_status}
                for o in self.engine.completed_orders()]
