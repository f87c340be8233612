"""Run one seed: build the world, play the workload under faults, then the liveness phase, then check."""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field

from unbroken.testing.sim import invariants
from unbroken.testing.sim.app import build_app
from unbroken.testing.sim.client import Client
from unbroken.testing.sim.faults import stream
from unbroken.testing.sim.generate import generate, model_of
from unbroken.testing.sim.loop import SimStuck
from unbroken.testing.sim.ops import Await, Op
from unbroken.testing.sim.world import SimConfig, World, install_log_capture


@dataclass
class SimResult:
    seed: int
    violations: list[str]
    trace_hash: str
    stats: dict[str, float] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        head = f"seed {self.seed}: " + ("ok" if self.ok else f"FAILED ({len(self.violations)} violations)")
        lines = [head, "  " + ", ".join(f"{k}={v:g}" for k, v in self.stats.items())]
        lines += [f"  - {v}" for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"  ... and {len(self.violations) - 20} more")
        if not self.ok:
            lines.append(f"  reproduce: python -m unbroken.testing.sim --seed {self.seed} -v")
        return "\n".join(lines)


def run_seed(seed: int, config: SimConfig | None = None) -> SimResult:
    config = config or SimConfig()
    world = World(seed, build_app, config)
    rng = stream(seed, "workload")
    count = rng.randint(*config.ops) if rng.random() < 0.9 else rng.randint(config.ops[1], 4 * config.ops[1])
    ops = generate(world, rng, count, config.fault_phase_s * 0.8)
    install_log_capture(world)
    started = time.perf_counter()
    try:
        world.trace(
            f"seed {seed}: {len(ops)} ops; faults: {world.faults.describe()}; "
            f"inactivity timeout {world.inactivity_timeout_ms} ms"
        )
        try:
            world.loop.run_until_complete(_play(world, ops))
        except SimStuck as exc:
            world.violation(str(exc))
        except Exception as exc:  # a bug in the simulator or an engine crash that escaped
            world.violation(f"simulation raised {exc!r}\n{traceback.format_exc()}")
        _teardown(world)
    finally:
        install_log_capture(None)
    stats = {
        "ops": len(ops),
        "invocations": len(world.ledger.creations),
        "crashes": world.crashes,
        "graceful_restarts": world.restarts,
        "storage_errors": world.store.failed_commits,
        "batches": world.batches,
        "records": world.records,
        "suspensions": world.applied.get("AttemptSuspended", 0),
        "failed_attempts": world.applied.get("AttemptFailed", 0),
        "timers_fired": world.applied.get("TimerFired", 0),
        "recovered": world.applied.get("Recover", 0),
        "lease_moves": world.leases.moves if world.leases is not None else 0,
        "zombie_runs": world.leases.zombie_runs if world.leases is not None else 0,
        # resolves refused because no durable record or live attempt had the awakeable yet, and the
        # publications of an id done again by a later attempt (every refusal must be followed by one)
        "awakeables_refused": sum(len(op.refused_at) for op in ops if isinstance(op, Await)),
        "republished": sum(n - 1 for n in world.ledger.published.values()),
        "virtual_s": round(world.loop.time(), 1),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    return SimResult(seed, world.violations, world.trace_hash(), stats, world.trace_lines)


async def _play(w: World, ops: list[Op]) -> None:
    w.start_engine()
    client = Client(w)
    tasks = [asyncio.ensure_future(_run_op(w, client, op)) for op in ops]
    crasher = asyncio.ensure_future(_crash_at_random(w, w.config.fault_phase_s))
    if w.leases is not None:  # not cancelled: a move under way completes (every partition ends up led)
        mover = asyncio.ensure_future(w.leases.move_leases(w.config.fault_phase_s))
    await asyncio.sleep(w.config.fault_phase_s)
    w.faults.active = False
    crasher.cancel()
    w.trace("fault phase over: faults off, liveness phase")
    deadline = w.loop.time() + w.config.liveness_budget_s
    await asyncio.wait(tasks, timeout=w.config.liveness_budget_s)
    while not invariants.quiescent(w) and w.loop.time() < deadline:
        await asyncio.sleep(1.0)
    if w.leases is not None:
        await asyncio.wait([mover], timeout=w.config.liveness_budget_s)
        # (continue checking quiescence after the last move)
        while not invariants.quiescent(w) and w.loop.time() < deadline:
            await asyncio.sleep(1.0)
    w.trace("checking invariants")
    for v in invariants.check_liveness(w, ops):
        w.violation(v)
    for v in invariants.check_safety(w, ops, model_of(ops)):
        w.violation(v)
    if w.engine is not None:
        await w.engine.stop()


async def _run_op(w: World, client: Client, op: Op) -> None:
    await asyncio.sleep(op.start_s)
    w.trace(f"{op.name} starts: {op}")
    try:
        await op.run(w, client)
    except Exception as exc:
        w.violation(f"{op.name} raised {exc!r}")
        return
    op.done = True
    w.trace(f"{op.name} answered: {[type(x).__name__ for x in op.answers]}")


async def _crash_at_random(w: World, until: float) -> None:
    while True:
        delay = w.faults.next_crash_in_s()
        if delay is None:
            return
        await asyncio.sleep(delay)
        if w.loop.time() >= until or not w.faults.active:
            return
        if w.faults.rng.random() < 0.2:
            await w.graceful_restart()
        else:
            w.crash("at a random instant")


def _teardown(w: World) -> None:
    loop = w.loop
    for _ in range(3):
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        except SimStuck:
            continue
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    except SimStuck:
        pass
    loop.close()


# ------------------------------------------------------------------------- worker processes (the CLI)
_worker_config: SimConfig | None = None


def worker_init(config: SimConfig) -> None:
    global _worker_config
    _worker_config = config


def worker_run(seed: int) -> tuple[int, bool, str, str, dict[str, float]]:
    res = run_seed(seed, _worker_config)
    return seed, res.ok, res.report(), res.trace_hash, res.stats
