"""The standing fault matrix (issue 12, item 7): one harness, many scenarios.

A ``Rig`` is one whole fleet of real processes (simulator on loopback, bus, gateway, execution,
risk, the recorder and the ``Flow`` strategy of ``tests/faults/flow_strategy.py``, which keeps
a place, a modify and a cancel on their way), with each durable writer's state directory on a
small tmpfs of its own, so a scenario can fill it (a real ENOSPC: tests run as root, ``chmod``
would not stop root). Scenarios share a rig, one after another.

``run_scenario`` waits for order flow, injects the fault, measures the recovery time, then
throws the kill switch and checks, with the simulator's ledger as the truth:
``assert_books_match_the_simulator``, the audit (``tests/support/audit.py``) and no
unapproved order. Its result record (one JSON line appended to ``$IBFLEET_FAULT_RESULTS`` if
set) is what ``tests/faults/table.py`` turns into the table of docs/reliability.md."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from proto.schema import Alert, GatewayState, OrderUpdate, RiskDecision, Tick
from tests.support.audit import assert_audit, views
from tests.support.fleet import (Fleet, assert_books_match_the_simulator, duplicate_orders,
                                 live_orders, unapproved_orders)
from tests.support.processes import REPO, ProcessGroup, free_port, port_open

FLOW = "tests.faults.flow_strategy:Flow"
STRATEGY = "flow"
RISK = {"max_position": 1000, "order_rate": 50, "order_burst": 50, "max_open_orders": 10}
WRITERS = ("execution", "gateway", "risk", "simulator", "recorder")
DISK = "64m"  # per writer: room for a long soak; filled in well under a second


# -- a full disk, for real -----------------------------------------------------------------------
def can_mount() -> bool:
    probe = Path(tempfile.mkdtemp(prefix="ibf-mnt-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                              capture_output=True)
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(probe)], capture_output=True)
        return done.returncode == 0
    finally:
        probe.rmdir()


def mount_tmpfs(path: Path, size: str = DISK) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs on {path}: {done.stderr.strip()}")


def fill_disk(path: Path, leave_pages: int = 0) -> Path:
    """Write a file until the filesystem refuses (ENOSPC); then give back ``leave_pages``
    whole pages (tmpfs allocates by page), so the writer's next records fit for a while and
    the one that does not is cut short by the kernel: a short write, then ENOSPC. Returns
    the file: delete it to free the disk."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        if leave_pages:
            size = os.fstat(fd).st_size
            os.ftruncate(fd, max(0, (size // 4096 - leave_pages) * 4096))
    finally:
        os.close(fd)
    return filler


# -- the rig: one fleet, its processes by role ------------------------------------------------------
class Rig:
    """One fleet for a run of scenarios (``transport`` "ipc" or "tcp", keys on either way)."""

    def __init__(self, tmp: Path, transport: str = "ipc") -> None:
        self.tmp = Path(tmp)
        self.transport = transport
        self.procs = ProcessGroup(self.tmp / "logs")
        extra: dict = {}
        if transport == "tcp":
            extra["bus"] = {"transport": "tcp", "host": "127.0.0.1", "base_port": _free_range()}
        self.fleet = Fleet(self.procs, self.tmp, extra)
        self.disks: dict[str, Path] = {}
        self.role: dict[str, subprocess.Popen] = {}
        self.generation = 0
        self.recording = self.tmp / "recorder"

    # disks, then processes
    def start(self) -> "Rig":
        f = self.fleet
        for writer in WRITERS:
            path = self.recording if writer == "recorder" else f.state_dir / writer
            mount_tmpfs(path)
            self.disks[writer] = path
        f.start_core()
        for proc in self.procs.procs:
            self.role[proc.name] = proc
        f.add_strategy(STRATEGY, FLOW, ["AAPL"], {"quantity": 10}, risk=RISK)
        self.start_role("strategy")
        self.start_role("recorder")
        return self

    def start_role(self, role: str) -> subprocess.Popen:
        self.generation += 1
        name = f"{role}-{self.generation}"
        f = self.fleet
        if role == "strategy":
            proc = f.start_strategy(STRATEGY, proc_name=name)
        elif role == "gateway":
            proc = f.start_gateway(name)
        elif role == "execution":
            proc = f.start_execution(name)
        elif role == "risk":
            proc = f.start_risk(name)
        elif role == "bus":
            proc = f.procs.start(name, [sys.executable, "-m", "services.cli", "bus", "--config",
                                        str(f.config_path)])
        elif role == "simulator":
            proc = f.start_simulator()
        elif role == "recorder":
            proc = f.procs.start(name, [sys.executable, "-m", "services.cli", "record",
                                        "--config", str(f.config_path), "--out",
                                        str(self.recording / "rec"), "--flush-ms", "20",
                                        "--retry-seconds", "0.5"])
        else:
            raise ValueError(role)
        self.role[role] = proc
        return proc

    def kill9(self, role: str) -> None:
        proc = self.role[role]
        self.procs.kill(proc)
        proc.wait(30)

    def stop(self, role: str) -> None:
        self.procs.terminate(self.role[role])

    def dead(self) -> list[str]:
        return [r for r, p in self.role.items() if p.poll() is not None]

    def close(self) -> None:
        try:
            self.procs.stop_all()  # before the unmounts: nothing may hold the disks
        finally:
            self.fleet.close()
            for path in self.disks.values():
                subprocess.run(["umount", "-l", str(path)], capture_output=True)

    # the simulator's truth
    def exec_ids(self) -> set[str]:
        return {f["exec_id"] for f in self.fleet.sim.fills()}

    def refs(self) -> set[str]:
        refs = {o["order_ref"] for o in self.fleet.sim.orders()}
        return refs - {""}

    def fills_of_orders_not_in(self, refs: set[str]) -> list[dict]:
        return [f for f in self.fleet.sim.fills() if f["order_ref"] and f["order_ref"] not in refs]

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "services.cli", *args, "--config",
                               str(self.fleet.config_path)], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"ibfleet {' '.join(args)}: {done.stderr}{done.stdout}"
        return done

    def alerts_since(self, mark: int, code: str) -> list[Alert]:
        return [m for _, m in self.fleet.seen[mark:] if isinstance(m, Alert) and m.code == code]


def _free_range(span: int = 9) -> int:
    """A base port with ``span`` free ports above it (the tcp bus's TCP_OFFSETS)."""
    for _ in range(200):
        base = free_port()
        if base + span < 65000 and not any(port_open(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free range of tcp ports")


# -- scenarios ------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """``inject(rig, ctx)`` injects the fault and returns when it is lifted (a held fault: a
    full disk, the fleet down) or at once; it may put ``t0`` (time.monotonic) in ctx, the
    moment the recovery is timed from (by default the injection's). ``recovered(rig, ctx)``
    optionally replaces the default recovery condition (the gateway synchronised and a fill
    at the simulator of an order placed after ``t0``) and returns the recovery in seconds.
    ``verify(rig, ctx)``: scenario-specific checks after the recovery."""
    name: str
    description: str
    inject: Callable[[Rig, dict], None]
    recovered: Callable[[Rig, dict], float] | None = None
    verify: Callable[[Rig, dict], None] | None = None
    transport: str = "ipc"
    needs_mount: bool = False


@dataclass
class Result:
    scenario: str
    orders: int
    fills: int
    lost: int
    duplicated: int
    unapproved: int
    recovery_s: float
    audit: str
    transport: str
    commit: str = ""
    ts: float = field(default_factory=time.time)


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True)
    return done.stdout.strip()


def lifted(ctx: dict) -> None:
    """The fault is lifted now (or was injected now): the recovery is timed from here."""
    ctx["t0"], ctx["t0_ns"] = time.monotonic(), time.time_ns()


def traded_since(rig: Rig, ctx: dict) -> list[dict]:
    """Fills at the simulator of orders risk approved after ``t0`` (an intent approved after
    a kill -9 went through the restarted processes); after a strategy's restart, only its new
    incarnation's orders count (client order ids are ``NAME-INCARNATION-N``)."""
    f = rig.fleet
    decisions = [d for d in f.decisions(STRATEGY) if d.approved]
    old = {d.client_order_id.rsplit("-", 1)[0] for d in decisions if d.ts <= ctx["t0_ns"]}
    fresh = {d.client_order_id for d in decisions if d.ts > ctx["t0_ns"]
             and not (ctx.get("new_incarnation") and d.client_order_id.rsplit("-", 1)[0] in old)}
    return [x for x in f.sim.fills() if x["order_ref"] in fresh]


def _default_recovery(rig: Rig, ctx: dict) -> float:
    f = rig.fleet
    f.wait(lambda: traded_since(rig, ctx), deadline=120,
           what="a fill of an order approved after the fault")
    f.wait(lambda: f.gateway_state() == "synchronised", deadline=120,
           what="the gateway synchronised")
    return time.monotonic() - ctx["t0"]


def wait_for_flow(rig: Rig, n: int = 3) -> None:
    f = rig.fleet
    before = rig.refs()
    f.wait(lambda: len(rig.fills_of_orders_not_in(before)) >= n, deadline=120,
           what="order flow")


def ensure_trading(rig: Rig) -> None:
    """Whatever an earlier scenario left: every process up, the kill switch lifted."""
    for role in rig.dead():
        rig.start_role(role)
    rig.cli("resume")


def run_scenario(rig: Rig, scenario: Scenario) -> Result:
    f = rig.fleet
    ensure_trading(rig)
    refs0, execs0 = rig.refs(), rig.exec_ids()
    wait_for_flow(rig)
    f.pump()
    ctx: dict = {"mark": len(f.seen), "t_inject": time.monotonic(),
                 "t_inject_ns": time.time_ns()}
    scenario.inject(rig, ctx)
    if "t0" not in ctx:
        ctx["t0"], ctx["t0_ns"] = ctx["t_inject"], ctx["t_inject_ns"]
    recovery = (scenario.recovered or _default_recovery)(rig, ctx)
    if scenario.recovered is not None:  # and trading, too
        f.wait(lambda: traded_since(rig, ctx), deadline=120,
               what="a fill of an order approved after the fault")
    if scenario.verify is not None:
        scenario.verify(rig, ctx)

    # stop the flow, then the checks, the simulator's ledger as the truth
    f.kill_switch()
    f.wait(lambda: not live_orders(f), deadline=60, what="every order cancelled")
    sim_execs = rig.exec_ids()
    try:
        f.wait(lambda: sim_execs <= set(f.fills()) and
               views(f, [STRATEGY])["execution"]["fills"] == len(sim_execs), deadline=60,
               what="every fill on the bus and booked by execution")
    except TimeoutError:
        pass  # counted below, then failed on
    booked = views(f, [STRATEGY])["execution"]["fills"]
    new_execs = sim_execs - execs0
    lost = len(new_execs - set(f.fills())) + max(0, len(sim_execs) - booked)
    duplicated = sum(len(ids) - 1 for ids in duplicate_orders(f).values()) + \
        max(0, booked - len(sim_execs))
    unapproved = unapproved_orders(f)
    audit = "held"
    problem: BaseException | None = None
    try:
        assert_books_match_the_simulator(f)
        assert_audit(f, [STRATEGY], deadline=90)
    except (AssertionError, TimeoutError) as exc:
        audit, problem = "failed", exc
    result = Result(scenario=scenario.name, orders=len(rig.refs() - refs0),
                    fills=len(new_execs), lost=lost, duplicated=duplicated,
                    unapproved=len(unapproved), recovery_s=round(recovery, 3), audit=audit,
                    transport=rig.transport, commit=commit())
    record(result)
    if problem is not None:
        raise problem
    assert (lost, duplicated, unapproved) == (0, 0, []), result
    return result


def record(result: Result) -> None:
    path = os.environ.get("IBFLEET_FAULT_RESULTS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(asdict(result)) + "\n")


# -- the faults ---------------------------------------------------------------------------------
# forged peers: the forger of tests/support/forger.py posing as execution at the gateway and as
# risk at execution, with another role's real key, a key of its own making, or none
FORGERIES = [(target, key) for target in ("gateway", "execution")
             for key in ("strategy.evil", "own", "none")]


def _forge(rig: Rig, target: str, key: str, config: Path | None = None,
           user: str | None = None) -> dict:
    kwargs = {"user": user} if user else {}
    done = subprocess.run([sys.executable, "-m", "tests.support.forger",
                           str(config or rig.fleet.config_path), target, key], cwd=REPO,
                          capture_output=True, text=True, timeout=60, **kwargs)
    lines = done.stdout.strip().splitlines()
    got = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    return {"rc": done.returncode, "acks": got.get("acks", []), "stderr": done.stderr[-400:]}


def _forged_orders(rig: Rig) -> list[dict]:
    return [o for o in rig.fleet.sim.orders() if o["order_ref"].startswith("forged")]


def inject_forged(rig: Rig, ctx: dict) -> None:
    from services.bus import keys
    keys.ensure_keys(rig.fleet.state_dir, ["strategy.evil"])
    ctx["forged"] = []
    for target, key in FORGERIES:
        got = _forge(rig, target, key)
        assert got["rc"] == 0, got
        # a real key of the wrong role: refused by role; no key or an unknown one: no answer
        if key == "strategy.evil":
            assert got["acks"] and not any(a["ok"] for a in got["acks"]), got
        else:
            assert got["acks"] == [], got
        ctx["forged"].append((target, key, got["acks"]))
    lifted(ctx)  # the fleet traded throughout; timed from the last forgery


def inject_forged_other_uid(rig: Rig, ctx: dict) -> None:
    """A peer of another uid (``nobody``): tests/faults/foreign_peer.py dials the gateway's and
    execution's endpoints as execution and risk would, without a key (it can read none).
    Over ipc the 0700 run directory refuses it before any byte; over tcp the CURVE server
    closes the connection at the handshake. Either way nothing it sends is taken."""
    import pwd
    pwd.getpwnam("nobody")
    peer = Path(tempfile.mkdtemp(prefix="ibf-nobody-")) / "foreign_peer.py"
    try:
        os.chmod(peer.parent, 0o755)
        shutil.copy(Path(__file__).with_name("foreign_peer.py"), peer)
        os.chmod(peer, 0o644)
        ctx["forged"] = []
        for name in ("gateway", "execution"):
            endpoint = rig.fleet.config.bus.endpoint(name)
            done = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3",
                                   str(peer), endpoint], capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, done.stderr
            got = json.loads(done.stdout.strip().splitlines()[-1])
            if endpoint.startswith("ipc://"):
                assert not got["connected"] and "Permission" in got["error"], got
            else:
                # closed at the handshake (libzmq may close before its whole greeting)
                assert got["connected"] and got["server_mechanism"] in ("CURVE", None) \
                    and got["closed_by_server"], got
            ctx["forged"].append(got)
    finally:
        shutil.rmtree(peer.parent, ignore_errors=True)
    lifted(ctx)


def verify_forged(rig: Rig, ctx: dict) -> None:
    assert not _forged_orders(rig), _forged_orders(rig)


def _disk_full(writer: str, held: Callable[[Rig, dict], None], leave_pages: int = 0):
    def inject(rig: Rig, ctx: dict) -> None:
        if writer in rig.role:
            ctx["log_at_fill"] = len(rig.procs.log(rig.role[writer].name))
        filler = fill_disk(rig.disks[writer], leave_pages)
        try:
            held(rig, ctx)
        finally:
            filler.unlink()
            lifted(ctx)
    return inject


def _execution_refuses(rig: Rig, ctx: dict) -> None:
    f, mark = rig.fleet, ctx["mark"]
    f.wait(lambda: [d for _, d in f.seen[mark:] if isinstance(d, RiskDecision)
                    and d.reason == "execution_refused" and "journal cannot write" in d.text],
           deadline=90, what="an intent refused by execution for its journal")
    assert rig.role["execution"].poll() is None, "execution died of a full disk"


def _gateway_refuses(rig: Rig, ctx: dict) -> None:
    f, mark = rig.fleet, ctx["mark"]
    f.wait(lambda: [u for _, u in f.seen[mark:] if isinstance(u, OrderUpdate)
                    and u.state == "rejected" and "gateway journal cannot write" in u.reason],
           deadline=90, what="a place refused by the gateway for its journal")
    assert rig.role["gateway"].poll() is None


def _risk_cannot_save(rig: Rig, ctx: dict) -> None:
    """Risk writes its trading state on a change: pausing the strategy is one."""
    rig.cli("pause", STRATEGY)
    rig.fleet.wait(lambda: rig.alerts_since(ctx["mark"], "state_save_failed"), deadline=60,
                   what="risk's alert that its state was not saved")
    rig.cli("unpause", STRATEGY)


def _risk_saved_again(rig: Rig, ctx: dict) -> None:
    rig.fleet.wait(lambda: "trading state saved after failures" in
                   rig.procs.log(rig.role["risk"].name), deadline=60,
                   what="risk saving its state once the disk has room")


def _simulator_fails_stop(rig: Rig, ctx: dict) -> None:
    """The paper account cannot be written: the simulator stops (fail-stop, exit 75) rather
    than tell anything it did not make durable; the disk freed, it is started again on the
    same account and the fleet reconnects."""
    sim = rig.role["simulator"]
    sim.wait(90)
    assert sim.returncode == 75, sim.returncode
    assert "state_write_failed" in rig.procs.log("simulator")


def inject_simulator_disk_full(rig: Rig, ctx: dict) -> None:
    filler = fill_disk(rig.disks["simulator"])
    try:
        _simulator_fails_stop(rig, ctx)
    finally:
        filler.unlink()
        lifted(ctx)
    rig.start_role("simulator")


def _recorder_stops(rig: Rig, ctx: dict) -> None:
    rig.fleet.wait(lambda: rig.alerts_since(ctx["mark"], "recorder.write_failed"), deadline=90,
                   what="the recorder's disk-full alert")
    assert rig.role["recorder"].poll() is None


def _recorder_resumed(rig: Rig, ctx: dict) -> float:
    rig.fleet.wait(lambda: rig.alerts_since(ctx["mark"], "recorder.resumed"), deadline=60,
                   what="the recorder to resume")
    return time.monotonic() - ctx["t0"]


def verify_recording(rig: Rig, ctx: dict) -> None:
    from services.recorder.check import check_recording
    report = check_recording(rig.recording / "rec").report
    assert report.corrupt_records == 0 and not report.bad_segments, report


# short write: execution's journal given one free page, then a restart (kill -9) reads it back
def _short_write(rig: Rig, ctx: dict) -> None:
    """Wait for execution's journal to fail a write. It failed at ``offset``: the end of its
    last whole record. An offset inside a page (not a multiple of 4096) means the failed
    record had room up to the page's end, which tmpfs had already allocated: the kernel wrote
    that much (a short write) and refused the rest (ENOSPC); the journal cut it off."""
    f, mark = rig.fleet, ctx["mark"]
    f.wait(lambda: rig.alerts_since(mark, "journal_write_failed"), deadline=90,
           what="execution's journal to fail a write")
    assert rig.role["execution"].poll() is None, "execution died of a full disk"

    def offsets():
        out = []
        log = rig.procs.log(rig.role["execution"].name)[ctx["log_at_fill"]:]
        for line in log.splitlines():
            if '"journal append failed"' in line:
                out.append(json.loads(line).get("offset"))
        return out
    got = f.wait(offsets, deadline=30, what="the failed append in execution's log")
    ctx["short"] = [o for o in got if o % 4096]
    assert ctx["short"], f"no failed append inside a page (offsets {got}): no short write"


def verify_short_write(rig: Rig, ctx: dict) -> None:
    """The journal that took a cut-short record must read back whole: kill -9 execution and
    start it again on it (it refuses to start on a journal it cannot read)."""
    rig.kill9("execution")
    rig.start_role("execution")
    rig.fleet.wait_heartbeats({"execution.1"})
    before = rig.refs()
    rig.fleet.wait(lambda: rig.fills_of_orders_not_in(before), deadline=120,
                   what="trading after execution restarted on its journal")


def _kill9(role: str):
    def inject(rig: Rig, ctx: dict) -> None:
        ledger = rig.fleet.sim.ledger()
        modifies = sum(1 for r in ledger["order_requests"] if r.get("modify"))
        cancels = len(ledger["cancels"])
        # the flow is carrying modifies and cancels as well as places right now
        rig.fleet.wait(lambda: _ledger_moves(rig, modifies, cancels), deadline=60,
                       what="modifies and cancels in the flow")
        lifted(ctx)
        ctx["new_incarnation"] = role == "strategy"
        rig.kill9(role)
        rig.start_role(role)
    return inject


def _ledger_moves(rig: Rig, modifies: int, cancels: int) -> bool:
    ledger = rig.fleet.sim.ledger()
    return (sum(1 for r in ledger["order_requests"] if r.get("modify")) > modifies
            and len(ledger["cancels"]) > cancels)


def _bad_length(size: int):
    def inject(rig: Rig, ctx: dict) -> None:
        f = rig.fleet
        ctx["states"] = len(f.messages(GatewayState))
        lifted(ctx)
        ctx["t_inject_ns"] = ctx["t0_ns"]
        got = f.sim.bad_length(client_id=f.config.gateway.client_id, size=size)
        assert got == {"sessions": 1}, got
    return inject


def _first_tick_after_drop(rig: Rig, ctx: dict) -> float:
    """Recovery of the market data: the first tick published after the gateway dropped the
    session for the bad frame (so on the new session), timed from the injection."""
    f = rig.fleet

    def drop_index():
        for i, (_, m) in enumerate(f.seen[ctx["mark"]:]):
            if isinstance(m, GatewayState) and m.state == "disconnected":
                return ctx["mark"] + i + 1
        return None
    start = f.wait(drop_index, deadline=30, what="the gateway to drop the session")
    tick = f.wait(lambda: next((m for _, m in f.seen[start:] if isinstance(m, Tick)), None),
                  deadline=60, what="market data after the reconnect")
    f.wait(lambda: f.gateway_state() == "synchronised", deadline=60, what="synchronised")
    recovery = (tick.ts - ctx["t_inject_ns"]) / 1e9
    assert recovery < 5.0, f"market data back after {recovery:.2f} s, not within 5 s"
    return recovery


def inject_broker_cancels_while_down(rig: Rig, ctx: dict) -> None:
    f = rig.fleet
    f.wait(lambda: [o for o in live_orders(f) if o["order_ref"].startswith(STRATEGY)],
           deadline=60, what="a fleet order working")
    for role in ("strategy", "risk", "execution", "gateway"):  # the fleet goes down
        rig.stop(role)
    gone = [o for o in live_orders(f) if o["order_ref"]]
    assert gone
    for o in gone:  # cancelled at the broker (a trader in TWS) while the fleet is down
        f.sim.broker_cancel(o["order_id"], client_id=o["client_id"], by="trader")
    assert not [o for o in live_orders(f) if o["order_ref"]]
    ctx["gone"] = [o["order_ref"] for o in gone]
    lifted(ctx)
    for role in ("gateway", "execution", "risk", "strategy"):
        rig.start_role(role)


def verify_closed_by_execution(rig: Rig, ctx: dict) -> None:
    f = rig.fleet
    for ref in ctx["gone"]:
        f.wait(lambda ref=ref: [u for u in f.updates(STRATEGY) if u.client_order_id == ref
                                and u.state == "cancelled"], deadline=90,
               what=f"execution to close {ref}")


def inject_kill_switch_risk_disk_full(rig: Rig, ctx: dict) -> None:
    f = rig.fleet
    filler = fill_disk(rig.disks["risk"])
    try:
        f.wait(lambda: live_orders(f), deadline=60, what="an order working")
        rig.cli("kill")
        f.wait(lambda: not live_orders(f), deadline=30, what="the kill switch to cancel all")
        f.wait(lambda: rig.alerts_since(ctx["mark"], "state_save_failed"), deadline=60,
               what="risk's alert that the kill was not saved")
    finally:
        filler.unlink()
    f.wait(lambda: "trading state saved after failures" in rig.procs.log(rig.role["risk"].name),
           deadline=60, what="risk saving the halted state once the disk has room")
    lifted(ctx)
    rig.cli("resume")


SCENARIOS: list[Scenario] = [
    Scenario("forged peer, ipc", "a forger posing as execution at the gateway and as risk at "
             "execution (another role's key, its own key, none), bus over ipc",
             inject_forged, verify=verify_forged),
    Scenario("forged peer, tcp", "the same over a bus on tcp://127.0.0.1 with keys",
             inject_forged, verify=verify_forged, transport="tcp"),
    Scenario("forged peer, another uid (tcp)", "the forger as nobody (no key readable), over tcp",
             inject_forged_other_uid, verify=verify_forged, transport="tcp"),
    Scenario("forged peer, another uid (ipc)", "the forger as nobody, bus over ipc",
             inject_forged_other_uid, verify=verify_forged),
    Scenario("disk full: execution journal", "execution's tmpfs filled until it refuses "
             "intents, then freed", _disk_full("execution", _execution_refuses),
             needs_mount=True),
    Scenario("disk full: gateway state", "the gateway's tmpfs filled until it refuses places, "
             "then freed", _disk_full("gateway", _gateway_refuses), needs_mount=True),
    Scenario("disk full: risk state", "risk's tmpfs filled, a pause it cannot save, freed",
             _disk_full("risk", _risk_cannot_save), verify=_risk_saved_again,
             needs_mount=True),
    Scenario("disk full: simulator account", "the paper account's tmpfs filled: the simulator "
             "stops (fail-stop); freed, started again on the same account",
             inject_simulator_disk_full, needs_mount=True),
    Scenario("disk full: recorder", "the recording's tmpfs filled until the recorder stops "
             "recording, then freed", _disk_full("recorder", _recorder_stops),
             recovered=_recorder_resumed, verify=verify_recording, needs_mount=True),
    Scenario("short write: execution journal", "execution's tmpfs filled but one page, so a "
             "record is cut short by the kernel; freed; then kill -9 and a restart on that "
             "journal", _disk_full("execution", _short_write, leave_pages=1),
             verify=verify_short_write, needs_mount=True),
    *[Scenario(f"kill -9: {role}", f"SIGKILL of {role} with places, modifies and cancels "
               f"flowing, restarted at once", _kill9(role))
      for role in ("gateway", "execution", "risk", "strategy", "bus")],
    Scenario("bad length prefix 0", "a bare length prefix 0 from TWS; recovery: the first "
             "tick after the drop", _bad_length(0), recovered=_first_tick_after_drop),
    Scenario("bad length prefix 0x7fffffff", "an oversized length prefix from TWS",
             _bad_length(0x7FFFFFFF), recovered=_first_tick_after_drop),
    Scenario("broker orders gone while down", "strategy, risk, execution and gateway stopped; "
             "their working orders cancelled at the broker; started again",
             inject_broker_cancels_while_down, verify=verify_closed_by_execution),
    Scenario("kill switch, risk's disk full", "`ibfleet kill` with risk's tmpfs full: every "
             "order cancelled, the failed save alerted; freed, resumed",
             inject_kill_switch_risk_disk_full, needs_mount=True),
]
BY_NAME = {s.name: s for s in SCENARIOS}
