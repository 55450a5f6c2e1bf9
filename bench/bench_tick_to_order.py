"""Tick to order: the fleet's full path against one ib_async process, same simulator, same rule.

Run: .venv/bin/python bench/bench_tick_to_order.py [--blocks 12] [--ticks 150] [--quick]
     [--tree PATH]                  the gateway from another checkout (before/after)
     [--capacity 50,100,200,400]    instead: 4 strategies, ticks/s they sustain (capacity())

Method (docs/benchmarks.md, "Tick to order"):

- One simulator (``services.simulator``, in memory), its market frozen (``bench_freeze``: the
  price processes do not step, nothing moves unless injected). Every ``--interval-ms`` (30)
  the bench injects one bid change through the control socket (``inject_bid``: top of book
  to bid / bid + 1 tick, one cent above the last, so every bid of a run is unique and no
  resting buy ever fills); the simulator writes it to the subscribers at once and stamps the
  write (``time_ns`` right after the socket write, per session), and stamps every
  ``placeOrder`` it reads (``time_ns`` before parsing) with its limit price and orderRef.
- (a) the fleet: real processes as in tests/support/fleet.py (bus broker with role keys,
  gateway, execution with its fsync'd journal, risk, one strategy ``bench/tto_strategy.py``)
  on AAPL; (b) ``bench/tto_ib_async.py``, one asyncio process with ib_async, on MSFT. Both
  run the same rule: on a bid change, one resting buy limit of 1 at the bid. Both stay
  connected the whole run; blocks of ``--ticks`` injections alternate a, b, a, b... on their
  own instrument, so the idle one gets no data and a drift of the (shared, noisy) machine
  hits both alike.
- Latency = placeOrder read at the simulator - tick written to that client, matched by the
  order's limit price (unique per tick). Working orders are cancelled between blocks
  (``expire_day_orders``) so neither side accumulates open orders.
- Per hop (fleet only), from the bus headers (``ts``, ns, stamped at publish) and the
  strategy's log: tick written -> gateway publishes ``Tick`` -> strategy sent the intent ->
  execution publishes the order's first ``OrderUpdate`` (after risk, execution's journal
  fsync and the command's send to the gateway) -> placeOrder read at the simulator; and the
  risk decision's ``ts`` (published once execution acknowledged).
- CPU: utime + stime of every process (``/proc/PID/stat``) over the blocks of each side, per
  1,000 injected ticks.
"""
from __future__ import annotations

import argparse
import signal
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.schema import Heartbeat, OrderUpdate, RiskDecision, Tick  # noqa: E402
from tests.support.fleet import FAST_GATEWAY, Fleet  # noqa: E402
from tests.support.processes import ProcessGroup, wait_for  # noqa: E402

CON_ID = {"AAPL": 265598, "MSFT": 272093}
START = {"AAPL": 150.00, "MSFT": 300.00}
FLEET_CLIENT, IBA_CLIENT = 1, 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
RISK_OFF = {"order_rate": 0, "max_open_orders": 0, "max_position": 0,
            "max_gross_exposure": 0, "max_order_notional": 0, "stale_after_s": 0,
            "price_band": 0}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def fmt_us(v: float) -> str:
    return "n/a" if v != v else f"{v:,.0f}"


class Injector:
    def __init__(self, fleet: Fleet, interval_s: float) -> None:
        self.fleet, self.sim, self.interval = fleet, fleet.sim, interval_s
        self.next_bid = dict(START)
        self.tick_id = 0

    def block(self, symbol: str, n: int, pump=None) -> list[int]:
        ids = []
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i * self.interval
            while True:
                left = due - time.perf_counter()
                if left <= 0:
                    break
                if pump is not None and left > 0.005:
                    pump()
                    continue
                time.sleep(left)
            self.tick_id += 1
            bid = round(self.next_bid[symbol], 2)
            self.next_bid[symbol] = bid + 0.01
            self.sim.inject_bid(CON_ID[symbol], bid, self.tick_id)
            ids.append(self.tick_id)
        return ids


def match(stamps: dict, client_id: int, con_id: int, symbol: str):
    """[(tick_id, bid, written_ns, order_ns or None, order_ref)] for one block of one side."""
    written = {}
    for tick_id, cid, client, bid, t_ns in stamps["ticks"]:
        if client == client_id and cid == con_id:
            written[round(bid, 2)] = (tick_id, t_ns)
    orders = defaultdict(list)
    for client, _oid, sym, lmt, ref, t_ns in stamps["orders"]:
        if client == client_id and sym == symbol and lmt is not None:
            orders[round(lmt, 2)].append((t_ns, ref))
    rows, dup = [], 0
    for bid, (tick_id, w_ns) in written.items():
        got = sorted(orders.get(bid, []))
        dup += max(0, len(got) - 1)
        rows.append((tick_id, bid, w_ns, got[0][0] if got else None, got[0][1] if got else ""))
    return rows, dup


def strategy_intents(log_text: str) -> dict[str, tuple[float, int]]:
    out = {}
    for line in log_text.splitlines():
        if '"tto_intent"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out[rec["coid"]] = (round(float(rec["bid"]), 2), int(rec["t_ns"]))
    return out


CAPACITY_EVERY = 200  # each strategy orders on 1 bid change in 200 (4 strategies: 1 in 50)


def capacity(fleet: Fleet, procs: ProcessGroup, rates: list[float], seconds: float) -> int:
    """4 strategies (``tto1``..``tto4``) on AAPL; at each rate, ``seconds`` of injected bid
    changes. Every strategy takes every tick (its callback runs), and orders on 1 bid change
    in ``CAPACITY_EVERY`` (a different one each: the pacer's 45 msg/s, not the fleet, would
    bound a fleet ordering on every tick). Reported per rate: the rate achieved by the
    injector, the tick -> order latency of the sampled ticks, the sampled ticks without an
    order (the gateway conflates bid changes drained together into one quote, as IB does),
    the strategies' bus gaps (their heartbeats' ``gaps``/``missing``), and CPU per 1,000
    ticks per process. Sustained: the injector kept the rate (95 %), no bus gap, latency
    bounded (sampled orders' p99 under 100 ms)."""
    names = [f"tto{i}" for i in range(1, 5)]
    for i, name in enumerate(names):
        fleet.add_strategy(name, "bench.tto_strategy:TickToOrder", ["AAPL"],
                           {"every": CAPACITY_EVERY, "slot": i * CAPACITY_EVERY // 4})
        fleet.start_strategy(name)
    fleet.wait_heartbeats({f"strategy.{n}" for n in names})
    fleet.watch.unsubscribe("")
    for name in names:
        fleet.watch.subscribe(f"hb.strategy.{name}")
    inj = Injector(fleet, 0.03)
    fleet.sim.bench_freeze(True, stamps=True)
    # warm-up: one full turn of the bid, every strategy orders once
    inj.interval = 0.01
    inj.block("AAPL", CAPACITY_EVERY + 10)
    time.sleep(1.0)
    fleet.sim.expire_day_orders()
    time.sleep(1.0)
    fleet.sim.stamps()
    pids = {p.name: p.pid for p in procs.procs}  # type: ignore[attr-defined]

    def gaps() -> int:
        fleet.pump(0)
        last: dict[str, Heartbeat] = {}
        for _, m in fleet.seen:
            if isinstance(m, Heartbeat):
                last[m.src] = m
        return sum(int(h.counters.get("gaps", 0)) + int(h.counters.get("missing", 0))
                   for h in last.values())

    def run_rates(symbol: str, client: int, pids: dict[str, int], watch_gaps: bool) -> list:
        rows = []
        for rate in rates:
            n = int(rate * seconds)
            inj.interval = 1.0 / rate
            g0 = gaps() if watch_gaps else 0
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            t0 = time.perf_counter()
            inj.block(symbol, n)
            achieved = n / (time.perf_counter() - t0)
            time.sleep(1.0)
            after = {k: cpu_seconds(p) for k, p in pids.items()}
            stamps = fleet.sim.stamps()
            written = {round(bid, 2): t for _tid, _cid, c, bid, t in stamps["ticks"]
                       if c == client}
            sampled = [b for b in written if round(b * 100) % (CAPACITY_EVERY // 4) == 0]
            orders = {}
            for c, _oid, sym, lmt, _ref, t_ns in stamps["orders"]:
                if c == client and sym == symbol and lmt is not None:
                    orders.setdefault(round(lmt, 2), t_ns)
            lat = [(orders[b] - written[b]) / 1e3 for b in sampled if b in orders]
            fleet.sim.expire_day_orders()
            time.sleep(2.5)  # two heartbeats: the strategies' gap counters are in
            g1 = gaps() if watch_gaps else 0
            cpu = {k: (after[k] - before[k]) / n * 1000 for k in pids}
            rows.append((rate, achieved, len(sampled), len(sampled) - len(lat), lat, g1 - g0,
                         cpu))
            print(f"{symbol} rate {rate:g}/s: achieved {achieved:,.0f}/s, p50 "
                  f"{pct(lat, 50):,.0f} µs, p99 {pct(lat, 99):,.0f} µs, gaps {g1 - g0}",
                  file=sys.stderr, flush=True)
        return rows

    rows = run_rates("AAPL", FLEET_CLIENT, pids, True)
    # (b) the same rule in one ib_async process with 4 handlers, at the same rates
    iba = procs.start("ib_async_capacity", [sys.executable, "bench/tto_ib_async.py",
                                            str(fleet.port), str(IBA_CLIENT), "MSFT",
                                            str(CAPACITY_EVERY), "4"])
    wait_for(lambda: "ready" in procs.log("ib_async_capacity"), deadline=60,
             what="ib_async ready")
    inj.interval = 0.01
    inj.block("MSFT", CAPACITY_EVERY + 10)  # warm-up: every handler orders once
    time.sleep(1.0)
    fleet.sim.expire_day_orders()
    time.sleep(1.0)
    fleet.sim.stamps()
    iba_rows = run_rates("MSFT", IBA_CLIENT, {"ib_async": iba.pid, "simulator":
                                              pids.get("simulator", 0)}, False)
    print(f"\nCapacity: 4 strategies on AAPL, each tick to every strategy, 1 order per "
          f"{CAPACITY_EVERY // 4} ticks (the strategies in turn), {seconds:g} s per rate\n")
    print("| ticks/s asked | achieved | sampled ticks | without an order | bus gaps | "
          "tick -> order p50 | p99 | sustained |")
    print("|---:|---:|---:|---:|---:|---:|---:|:-:|")
    for rate, achieved, ns, missing, lat, g, _cpu in rows:
        ok = g == 0 and bool(lat) and pct(lat, 99) < 100_000 and achieved >= 0.95 * rate
        print(f"| {rate:g} | {achieved:,.0f} | {ns} | {missing} | {g} | "
              f"{fmt_us(pct(lat, 50))} µs | {fmt_us(pct(lat, 99))} µs | "
              f"{'yes' if ok else 'no'} |")
    print("\nCPU time per 1,000 ticks, per process, at each rate\n")
    names_ = sorted(pids)
    print("| ticks/s | " + " | ".join(names_) + " |")
    print("|---:|" + "---:|" * len(names_))
    for rate, *_rest, cpu in rows:
        print(f"| {rate:g} | " + " | ".join(f"{cpu[k] * 1000:,.0f} ms" for k in names_) + " |")
    print(f"\nThe same rule in one ib_async process (4 handlers on MSFT, each taking every "
          f"tick, 1 order per {CAPACITY_EVERY // 4} ticks in turn), the same rates, in the "
          f"same run\n")
    print("| ticks/s asked | achieved | sampled ticks | without an order | tick -> order p50 "
          "| p99 | CPU per 1,000 ticks: ib_async | simulator |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (rate, achieved, ns, missing, lat, _g, cpu), fleet_row in zip(iba_rows, rows):
        print(f"| {rate:g} | {achieved:,.0f} | {ns} | {missing} | {fmt_us(pct(lat, 50))} µs | "
              f"{fmt_us(pct(lat, 99))} µs | {cpu['ib_async'] * 1000:,.0f} ms | "
              f"{cpu['simulator'] * 1000:,.0f} ms |")
    print("\nCPU per 1,000 ticks, all processes: fleet " + ", ".join(
        f"{r[0]:g}/s {sum(v for k, v in r[6].items() if k != 'simulator') * 1000:,.0f} ms"
        for r in rows) + "; ib_async " + ", ".join(
        f"{r[0]:g}/s {r[6]['ib_async'] * 1000:,.0f} ms" for r in iba_rows)
        + " (simulator excluded from both)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=12, help="blocks per side (default 12)")
    ap.add_argument("--ticks", type=int, default=150, help="injections per block (default 150)")
    ap.add_argument("--interval-ms", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="4 blocks of 100 per side")
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--capacity", metavar="RATES",
                    help="instead: 4 strategies on AAPL, ticks injected at each of these rates "
                         "(per second, comma separated, e.g. 50,100,200,400) for "
                         "--capacity-seconds each; see capacity()")
    ap.add_argument("--capacity-seconds", type=float, default=5.0)
    ap.add_argument("--tree", help="run the gateway from this checkout (a before/after of the "
                                   "gateway on the same machine; see bench/pairs_trading.py)")
    args = ap.parse_args()
    # stopped with SIGTERM: the finally below still stops every process it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.blocks, args.ticks = 4, 100
    tmp = Path(tempfile.mkdtemp(prefix="ibf-tto-"))
    procs = ProcessGroup(tmp / "logs")
    fleet = Fleet(procs, tmp, {"risk": RISK_OFF})
    samples: dict[str, list[float]] = {"a": [], "b": []}
    missed = {"a": 0, "b": 0}
    dups = {"a": 0, "b": 0}
    hops: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, dict[str, float]] = {"a": defaultdict(float), "b": defaultdict(float)}
    ticks_done = {"a": 0, "b": 0}
    fleet_rows: list[tuple] = []
    try:
        fleet.start_simulator(state=None)
        fleet.sim.bench_freeze(True, stamps=False)
        fleet.start_broker()
        if args.tree:
            boot = (f"import sys, runpy; sys.path.insert(0, {args.tree!r}); "
                    f"runpy.run_module('services.cli', run_name='__main__', alter_sys=True)")
            procs.start("gateway", [sys.executable, "-c", boot, "gateway", *FAST_GATEWAY,
                                    "--config", str(fleet.config_path)])
        else:
            fleet.start_gateway()
        fleet.start_execution()
        fleet.start_risk()
        fleet.wait_heartbeats({"bus.1", "gateway.1", "execution.1", "risk.1"})
        fleet.wait_gateway("synchronised")
        if not args.capacity:
            fleet.add_strategy("tto", "bench.tto_strategy:TickToOrder", ["AAPL"], {})
            fleet.start_strategy("tto")
            fleet.wait_heartbeats({"strategy.tto"})
        if args.capacity:
            return capacity(fleet, procs, [float(r) for r in args.capacity.split(",")],
                            args.capacity_seconds)
        iba = procs.start("ib_async", [sys.executable, "bench/tto_ib_async.py",
                                       str(fleet.port), str(IBA_CLIENT), "MSFT"])
        wait_for(lambda: "ready" in procs.log("ib_async"), deadline=60, what="ib_async ready")
        fleet.watch.unsubscribe("")
        for prefix in ("md.tick.AAPL", "ord.update.tto", "ord.decision.tto"):
            fleet.watch.subscribe(prefix)
        inj = Injector(fleet, args.interval_ms / 1000.0)
        fleet.sim.bench_freeze(True, stamps=True)

        # warm-up: both sides place an order on an injected tick before anything is counted
        def warmed(symbol: str, client: int) -> bool:
            inj.block(symbol, 3)
            time.sleep(0.3)
            return any(o[0] == client for o in fleet.sim.stamps()["orders"])
        wait_for(lambda: warmed("AAPL", FLEET_CLIENT), deadline=60, what="fleet's first order")
        wait_for(lambda: warmed("MSFT", IBA_CLIENT), deadline=60, what="ib_async's first order")
        for symbol in ("AAPL", "MSFT"):
            inj.block(symbol, 30)
        time.sleep(0.5)
        fleet.sim.expire_day_orders()
        fleet.sim.stamps()
        time.sleep(0.5)
        fleet.pump(0)
        fleet.seen.clear()

        pids = {p.name: p.pid for p in procs.procs}  # type: ignore[attr-defined]
        for block in range(2 * args.blocks):
            side = "ab"[block % 2]
            symbol = "AAPL" if side == "a" else "MSFT"
            client = FLEET_CLIENT if side == "a" else IBA_CLIENT
            before = {n: cpu_seconds(p) for n, p in pids.items()}
            inj.block(symbol, args.ticks, pump=lambda: fleet.pump(0))
            time.sleep(0.4)
            after = {n: cpu_seconds(p) for n, p in pids.items()}
            for n in pids:
                cpu[side][n] += after[n] - before[n]
            ticks_done[side] += args.ticks
            rows, dup = match(fleet.sim.stamps(), client, CON_ID[symbol], symbol)
            dups[side] += dup
            for _tid, _bid, w_ns, o_ns, _ref in rows:
                if o_ns is None:
                    missed[side] += 1
                else:
                    samples[side].append((o_ns - w_ns) / 1000.0)
            if side == "a":
                fleet_rows.extend(rows)
            fleet.sim.expire_day_orders()
            time.sleep(0.4)
            fleet.pump(0)
            print(f"block {block + 1}/{2 * args.blocks} ({side}): "
                  f"p50 {statistics.median(samples[side]):,.0f} µs, n {len(samples[side])}",
                  file=sys.stderr, flush=True)
        fleet.pump(50)
        # per hop (fleet): Tick by bid, the strategy's intent by bid, execution's first
        # update and risk's decision by client order id
        tick_ts: dict[float, int] = {}
        for _, m in fleet.seen:
            if isinstance(m, Tick) and m.symbol == "AAPL":
                tick_ts.setdefault(round(m.bid, 2), m.ts)
        update_ts: dict[str, int] = {}
        decision_ts: dict[str, int] = {}
        for _, m in fleet.seen:
            if isinstance(m, OrderUpdate):
                update_ts.setdefault(m.client_order_id, m.ts)
            elif isinstance(m, RiskDecision):
                decision_ts.setdefault(m.client_order_id, m.ts)
        intents = strategy_intents(procs.log("strategy-tto"))
        ticks_published = sum(1 for _, m in fleet.seen if isinstance(m, Tick))
        for _tid, bid, w_ns, o_ns, ref in fleet_rows:
            if o_ns is None or ref not in intents or bid not in tick_ts \
                    or ref not in update_ts:
                continue
            t_tick, t_int, t_upd = tick_ts[bid], intents[ref][1], update_ts[ref]
            hops["tick written -> gateway publishes Tick"].append((t_tick - w_ns) / 1e3)
            hops["Tick -> strategy sent the intent"].append((t_int - t_tick) / 1e3)
            hops["intent -> execution publishes the order (risk, journal fsync, send)"].append(
                (t_upd - t_int) / 1e3)
            hops["execution's order -> placeOrder read at the simulator"].append(
                (o_ns - t_upd) / 1e3)
            if ref in decision_ts:
                hops["(side) intent -> risk publishes its decision"].append(
                    (decision_ts[ref] - t_int) / 1e3)
    finally:
        fleet.close()
        procs.stop_all()

    a, b = samples["a"], samples["b"]
    print(f"\nTick to order, {len(a)} + {len(b)} samples, blocks of {args.ticks} alternating "
          f"a/b x {args.blocks}, one bid change every {args.interval_ms:g} ms\n")
    print("| figure | ibfleet (a) | ib_async 2.1, one process (b) | ratio a/b |")
    print("|---|---:|---:|---:|")
    for p in (50, 90, 99, 99.9):
        va, vb = pct(a, p), pct(b, p)
        print(f"| tick -> order p{p:g} | {fmt_us(va)} µs | {fmt_us(vb)} µs | {va / vb:.2f}x |")
    print(f"| ticks without an order / duplicate orders | {missed['a']} / {dups['a']} | "
          f"{missed['b']} / {dups['b']} | |")
    print(f"\nPer hop (ibfleet, {len(hops.get('Tick -> strategy sent the intent', []))} orders "
          f"matched; {ticks_published} Tick messages for {ticks_done['a']} injected ticks)\n")
    print("| hop | p50 | p90 | p99 |")
    print("|---|---:|---:|---:|")
    for name, vals in hops.items():
        print(f"| {name} | {fmt_us(pct(vals, 50))} µs | {fmt_us(pct(vals, 90))} µs | "
              f"{fmt_us(pct(vals, 99))} µs |")
    print("\nCPU time per 1,000 injected ticks (utime + stime over each side's blocks)\n")
    print("| process | during (a) blocks | during (b) blocks |")
    print("|---|---:|---:|")
    names = sorted(set(cpu["a"]) | set(cpu["b"]))
    tot = {"a": 0.0, "b": 0.0}
    for n in names:
        va = cpu["a"][n] / max(1, ticks_done["a"]) * 1000
        vb = cpu["b"][n] / max(1, ticks_done["b"]) * 1000
        tot["a"] += va
        tot["b"] += vb
        print(f"| {n} | {va * 1000:,.0f} ms | {vb * 1000:,.0f} ms |")
    print(f"| all | {tot['a'] * 1000:,.0f} ms | {tot['b'] * 1000:,.0f} ms |")
    if args.json:
        Path(args.json).write_text(json.dumps({"a": a, "b": b, "hops": hops, "cpu": cpu,
                                               "missed": missed, "dups": dups}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
