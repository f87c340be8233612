"""One simulated world: the real engine on the virtual loop, its crashes and restarts, and the ledgers the
invariants are checked against (kept here, *outside* the engine).

The engine is the production one, built by the production wiring (``unbroken.wiring.build``): the
engine (invoker, timers, action execution, reply futures), the batch loop (``runtime.processor``), the
in-process SDK (``sdk.local.LocalTransport``: real sessions running real handler coroutines) and the pure
state machine, with the virtual clock and :class:`~unbroken.testing.sim.processor.SimCommitter` in place
of the writer thread. A crash drops everything in memory — the processor's queue and undelivered actions,
sessions and their tasks, the timer heap, the callers' reply futures (their connection breaks) — and a
new engine is built from the store after a downtime, exactly as ``unbroken serve`` starting on an existing
data dir does (``Node.start``: re-arm the stored timers, ``Recover`` the running invocations).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.errors import PartitionNotLed
from unbroken.core.ids import partition_key_for_key, partition_key_of_any
from unbroken.core.journal import Notification, Result, RunCommand
from unbroken.core.schema import HandlerKind, OnMaxAttempts, RetryPolicy, Schemas
from unbroken.core.storage import NotLeader
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.node import EngineOptions, Node
from unbroken.sdk.app import App
from unbroken.sdk.exceptions import TerminalError
from unbroken.testing.sim.faults import FaultPlan, InjectedHandlerError, InjectedStorageError, stream
from unbroken.testing.sim.leases import NODES, LeaseWorld
from unbroken.testing.sim.loop import OWNER, LoopClock, VirtualEventLoop
from unbroken.testing.sim.processor import Created, Event, Finished, RunDurable, SimProcessor, SimStore
from unbroken.wiring import Parts, build, local_transport


class ConnectionLost(ConnectionError):
    """What a client sees when the engine it talks to crashes (or is down)."""


@dataclass
class SimConfig:
    fault_phase_s: float = 60.0  # virtual seconds with faults on
    liveness_budget_s: float = 3600.0  # then faults off: everything must finish within this
    ops: tuple[int, int] = (8, 40)  # client operations per seed (min, max)
    intensity: float = 1.0  # scales the fault probabilities (0 = no faults at all)
    verbose: bool = False
    # 2: two nodes over two views of the store, each leading one of two partitions (``Cluster``): every
    # effect across them goes through the partition inbox
    nodes: int = 1
    # with ``nodes == 2``: leadership moves (``leases.py``): four partitions leased with epochs, every commit
    # fenced, takeovers, renewal failures and handovers at seeded times
    leases: bool = False


@dataclass
class RunExec:
    attempt: int
    at_ms: int
    value: Any  # what the action produced (None when it raised)


@dataclass
class Ledger:
    """What happened, as observed at commit points and by the handlers' side effects."""

    created: dict[str, Created] = field(default_factory=dict)
    creations: dict[str, int] = field(default_factory=dict)
    finished: dict[str, list[Result]] = field(default_factory=dict)
    accepted: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # exclusive, not delayed
    durable_runs: dict[tuple[str, int], Result] = field(default_factory=dict)
    run_execs: dict[tuple[str, str], list[RunExec]] = field(default_factory=dict)
    mailbox: dict[str, str] = field(default_factory=dict)  # invocation id -> awakeable id it published
    published: dict[str, int] = field(default_factory=dict)  # invocation id -> how many times it did
    sleeps: dict[str, list[int]] = field(default_factory=dict)  # invocation id -> when it issued its sleep


class _LogCapture(logging.Handler):
    """Routes the engine's log records to the current world (errors there are invariant violations)."""

    world: World | None = None

    def emit(self, record: logging.LogRecord) -> None:
        world = _LogCapture.world
        if world is not None:
            world.on_log(record)


_capture = _LogCapture(level=logging.DEBUG)
_schemas_cache: dict[int, Schemas] = {}


class World:
    def __init__(self, seed: int, make_app: Callable[[World], App], config: SimConfig) -> None:
        """``make_app(world)``: the services, built for this world (their handlers act on it)."""
        self.seed = seed
        self.config = config
        self.loop = VirtualEventLoop()
        self.clock = LoopClock(self.loop)
        self.faults = (
            FaultPlan.from_seed(seed, config.intensity) if config.intensity > 0 else FaultPlan.none(seed)
        )
        self.client_rng = stream(seed, "clients")
        self.values = stream(seed, "values")
        self.store = SimStore(self)
        self.views: list[SimStore] = [self.store]
        self.leases: LeaseWorld | None = None
        if config.nodes == 2:
            self.store.partitions, self.store.led = (4, frozenset()) if config.leases else (2, frozenset({0}))
            self.views.append(cast(SimStore, self.store.peer(set() if config.leases else {1})))
        if config.nodes == 2 and config.leases:
            self.leases = LeaseWorld(self, list(self.views))
            for view, node in zip(self.views, self.leases.nodes.values(), strict=True):
                view.leases, view.lease_world = node, self.leases
        setup = stream(seed, "setup")
        self.inactivity_timeout_ms = setup.choice([200, 1_000, 5_000, 60_000])
        app = make_app(self)
        self.schemas = _schemas(app, self.inactivity_timeout_ms)
        self.app = app
        # the node's parts, as ``unbroken serve`` wires them but virtual: the clock, the commit, no armed faults
        self.parts = Parts(
            clock=self.clock, faults=FaultPoints(), processor_factory=functools.partial(SimProcessor, self)
        )
        self.transport = local_transport(app, self.parts)
        self.options = EngineOptions(inactivity_timeout_ms=self.inactivity_timeout_ms)
        self.engine: Node | Cluster | None = None
        self.epoch = 0
        self.crashes = 0
        self.restarts = 0
        self.restarts_pending = 0
        self.ledger = Ledger()
        self.violations: list[str] = []
        self.trace_lines: list[str] = []
        self._hash = hashlib.sha256()
        self.sim_context = contextvars.copy_context()
        self.sim_context.run(OWNER.set, 0)  # the simulator's own tasks (clients, faults) survive crashes
        self.loop.set_exception_handler(self._loop_exception)
        self.batches = 0
        self.records = 0
        self.applied: dict[str, int] = {}  # records applied, by type

    # -------------------------------------------------------------------------------------- time
    def now_ms(self) -> int:
        return self.clock.now_ms()

    def t(self) -> str:
        return f"{self.loop.time():10.4f}"

    # ------------------------------------------------------------------------------------- trace
    def trace(self, line: str) -> None:
        text = f"{self.t()} {line}"
        self._hash.update(text.encode())
        self._hash.update(b"\n")
        if self.config.verbose:
            self.trace_lines.append(text)

    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    def violation(self, message: str) -> None:
        text = f"t={self.loop.time():.4f}s: {message}"
        self.violations.append(text)
        self.trace(f"VIOLATION {message}")

    def on_log(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.config.verbose and record.levelno >= logging.INFO:
            self.trace_lines.append(
                f"{self.t()}   log {record.name} {record.levelname}: {message.splitlines()[0]}"
            )
        if record.levelno < logging.ERROR:
            return
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InjectedStorageError):
            return  # the engine reporting a storage failure we injected
        if isinstance(exc, NotLeader) and self.leases is not None:
            return  # a node fenced itself for want of a renewal: the store refuses its commits for a while
        detail = f" ({exc!r})" if exc is not None else ""
        self.violation(f"engine logged {record.levelname} [{record.name}]: {message.splitlines()[0]}{detail}")

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception nobody handled (a callback raising, a task's exception never retrieved)."""
        exc = context.get("exception")
        self.violation(f"unhandled in the event loop: {context.get('message')} {exc!r}")

    # ------------------------------------------------------------------------------- engine life
    def start_engine(self) -> None:
        assert self.engine is None
        self.epoch += 1
        ctx = self.sim_context.copy()
        ctx.run(OWNER.set, self.epoch)
        self.engine = ctx.run(self._build_engine)
        self.trace(f"engine #{self.epoch} started")

    def _build_engine(self) -> Node | Cluster:
        if self.config.nodes == 2:
            if self.leases is not None:  # a start: each node takes its leases (back), new epochs
                self.leases.start_up(contextvars.copy_context())
            cluster = Cluster(
                [build(self.schemas, v, self.transport, self.parts, self.options) for v in self.views],
                self.leases,
            )
            cluster.start()
            return cluster
        engine = build(self.schemas, self.store, self.transport, self.parts, self.options)
        engine.start()
        return engine

    def crash(self, why: str) -> None:
        """The process dies now: nothing in memory survives; a new one starts after a downtime."""
        engine = self.engine
        if engine is None:
            return
        self.engine = None
        self.crashes += 1
        self.trace(f"CRASH #{self.crashes} ({why})")
        self._exit(engine)

    async def graceful_restart(self) -> None:
        """SIGTERM: ``Node.stop()`` (sessions aborted, the processor drains its queue), the process
        exits, a new one starts after a downtime."""
        engine = self.engine
        if engine is None:
            return
        self.engine = None
        self.restarts += 1
        self.trace(f"graceful restart #{self.restarts}")
        await engine.stop()
        self._exit(engine)

    def _exit(self, engine: Node | Cluster) -> None:
        """The process is gone: whatever the old engine still had in memory dies with it."""
        futures: list[asyncio.Future[a.Reply]] = []
        for partition in engine.partitions:
            processor = partition.processor
            assert isinstance(processor, SimProcessor)
            processor.kill()
            futures += partition._waiters.futures.values()
            partition._waiters.futures.clear()
            partition._waiters.by_invocation.clear()
            partition.timers.stop()
            partition.invoker.abort_all()  # sessions end: nothing they do reaches anything any more
        if self.leases is not None:
            self.leases.crash()  # the lease memory dies with the process (the lease rows stay)
        self.loop.cancel_owned_by(self.epoch)  # handler tasks, ctx.run tasks, the processor, the cleaner
        for fut in futures:
            if not fut.done():
                fut.set_exception(ConnectionLost("the engine crashed"))
        self.restarts_pending += 1
        self.loop.call_later(self.faults.downtime_s(), self._restart, context=self.sim_context)

    def _restart(self) -> None:
        self.restarts_pending -= 1
        if self.engine is None and self.restarts_pending == 0:
            self.start_engine()

    async def request(self, make: Callable[[int], r.Record]) -> a.Reply:
        """A client request through the current engine (ConnectionLost if it is down or crashes)."""
        engine = self.engine
        if engine is None:
            raise ConnectionLost("the engine is down")
        return await engine.request(make)

    # ------------------------------------------------------------------------ processor callbacks
    def on_commit(self, events: list[Event]) -> None:
        led = self.ledger
        for ev in events:
            if isinstance(ev, Created):
                led.created[ev.invocation_id] = ev
                led.creations[ev.invocation_id] = led.creations.get(ev.invocation_id, 0) + 1
                if ev.handler_kind is HandlerKind.EXCLUSIVE and not ev.delayed:
                    assert ev.target.key is not None
                    led.accepted.setdefault((ev.target.service, ev.target.key), []).append(ev.invocation_id)
            elif isinstance(ev, Finished):
                done = led.finished.setdefault(ev.invocation_id, [])
                done.append(ev.result)
                if len(done) > led.creations.get(ev.invocation_id, 0):
                    self.violation(f"{ev.invocation_id} completed {len(done)} times: {done}")
            elif isinstance(ev, RunDurable):
                key = (ev.invocation_id, ev.completion_id)
                if key in led.durable_runs:
                    self.violation(f"run {key} made durable twice")
                led.durable_runs[key] = ev.result

    def on_batch(self, batch: list[r.Record], actions: list[a.Action], node: str = "") -> None:
        self.batches += 1
        self.records += len(batch)
        for rec in batch:
            name = type(rec).__name__
            self.applied[name] = self.applied.get(name, 0) + 1
        now = self.now_ms()
        self.trace(f"batch{node} @{now}: " + " | ".join(_brief_record(x) for x in batch))
        if actions:
            self.trace("  -> " + " | ".join(_brief_action(x) for x in actions))
        if self.faults.crash_after_commit():
            self.crash("right after a commit")

    # --------------------------------------------------------------------- handler-side ledgers
    def run_action(
        self,
        invocation_id: str,
        attempt: int,
        name: str,
        terminal: str | None = None,
        latency_s: float = 0.0,
        sync: bool = False,
    ) -> Callable[[], Any]:
        """A ``ctx.run`` action whose executions are recorded outside the engine (``sync``: a plain
        ``def``, which the SDK hands to the loop's executor — inline on the virtual loop)."""

        async def action() -> int:
            if latency_s:
                await asyncio.sleep(latency_s)  # the external call takes a while
            return effect()

        def effect() -> int:
            self._check_not_durable(invocation_id, name)
            execs = self.ledger.run_execs.setdefault((invocation_id, name), [])
            if self.faults.run_error():
                execs.append(RunExec(attempt, self.now_ms(), None))
                raise _transient(f"run {name!r}")
            value = self.values.randrange(1 << 30)
            execs.append(RunExec(attempt, self.now_ms(), value))
            if terminal is not None:
                raise TerminalError(terminal, 500)
            return value

        return effect if sync else action

    def _check_not_durable(self, invocation_id: str, name: str) -> None:
        """Invariant: a ``ctx.run`` whose result is durable never runs again."""
        journal = self.store.journal_of(invocation_id)
        cids = {e.completion_id for e in journal if isinstance(e, RunCommand) and e.name == name}
        for e in journal:
            if isinstance(e, Notification) and e.kind == "run" and e.completion_id in cids:
                if self.leases is not None and self.leases.zombie(invocation_id):
                    # an attempt of a leader deposed without knowing it yet (paused, cut off): its side
                    # effects still run, as they would in production; none of its commits lands
                    self.leases.zombie_runs += 1
                    return
                self.violation(f"ctx.run {name!r} of {invocation_id} ran again after its result was durable")

    def body_fault(self, where: str) -> None:
        """Maybe raise a transient error from handler code (outside ctx.run)."""
        if self.faults.body_error():
            raise _transient(where)


def _transient(where: str) -> Exception:
    return InjectedHandlerError(f"injected transient error in {where}")


def _schemas(app: App, inactivity_timeout_ms: int) -> Schemas:
    cached = _schemas_cache.get(inactivity_timeout_ms)
    if cached is None:
        # retries never give up in the simulation: a paused invocation would be a liveness failure
        policy = RetryPolicy(
            initial_interval_ms=100,
            exponentiation_factor=2.0,
            max_interval_ms=5_000,
            max_attempts=1_000_000,
            on_max_attempts=OnMaxAttempts.PAUSE,
        )
        day = 86_400_000
        cached = app.schemas(policy, inactivity_timeout_ms, 600_000, day, day, day)
        _schemas_cache[inactivity_timeout_ms] = cached
    return cached


_saved_logger: tuple[int, bool] | None = None


def install_log_capture(world: World | None) -> None:
    """While a world runs, the engine's log records go to it (and nowhere else); then as before."""
    global _saved_logger
    logger = logging.getLogger("unbroken")
    if world is None:
        _LogCapture.world = None
        logger.removeHandler(_capture)
        if _saved_logger is not None:
            logger.setLevel(_saved_logger[0])
            logger.propagate = _saved_logger[1]
            _saved_logger = None
        return
    _LogCapture.world = world
    if _saved_logger is None:
        _saved_logger = (logger.level, logger.propagate)
    if _capture not in logger.handlers:
        logger.addHandler(_capture)
    logger.setLevel(logging.INFO if world.config.verbose else logging.WARNING)
    logger.propagate = False


# ------------------------------------------------------------------------------------ trace text
def _short(invocation_id: str | None) -> str:
    return (invocation_id or "-")[-6:]


def _brief_record(rec: r.Record) -> str:
    name = type(rec).__name__
    match rec:
        case r.Invoke():
            return f"Invoke({rec.target} {_short(rec.invocation_id)} idem={rec.idempotency_key} {rec.argument!r})"
        case r.JournalCommand():
            return f"Cmd({_short(rec.invocation_id)}#{rec.attempt} {rec.command!r})"
        case r.ProposeRunCompletion():
            return f"RunDone({_short(rec.invocation_id)}#{rec.attempt} c{rec.completion_id} {rec.result!r})"
        case r.AttemptSuspended():
            return f"Suspended({_short(rec.invocation_id)}#{rec.attempt} {rec.waiting_completions} {rec.waiting_signals})"
        case r.AttemptFailed():
            return (
                f"Failed({_short(rec.invocation_id)}#{rec.attempt} {rec.code} {rec.message.splitlines()[0]})"
            )
        case r.TimerFired():
            return f"TimerFired({rec.timer_id})"
    return f"{name}({_short(getattr(rec, 'invocation_id', None))})"


def _brief_action(act: a.Action) -> str:
    match act:
        case a.StartAttempt():
            inv = act.invocation
            return f"Start({_short(inv.id)}#{inv.attempts} j={len(act.journal)})"
        case a.Deliver():
            n = act.notification
            return f"Deliver({_short(act.invocation_id)}#{act.attempt} {n.kind} c{n.completion_id} s{n.signal_idx})"
        case a.Completed():
            return f"Completed({_short(act.invocation_id)} {act.result!r})"
        case a.ArmTimer():
            return f"Arm({act.timer_id}@{act.fire_at_ms})"
        case a.Reply():
            return f"Reply({act.request_id} {type(act.outcome).__name__} {_short(getattr(act.outcome, 'invocation_id', None))})"
        case a.AwaitCompletion():
            return f"Await({act.request_id} {_short(act.invocation_id)})"
        case a.AbortAttempt():
            return f"Abort({_short(act.invocation_id)})"
        case a.Log():
            return f"Log({_short(act.invocation_id)} {act.message.splitlines()[0]})"
    return repr(act)


class Cluster:
    """Two nodes of one process (they crash and restart together), each over its view of the store leading
    one of two partitions (or, with ``leases``, those its leases give it now): a client's request goes to
    the node leading its invocation's partition, as a forwarding ingress would send it."""

    def __init__(self, nodes: list[Node], leases: LeaseWorld | None = None) -> None:
        self.nodes = nodes
        self.leases = leases
        self.partitions = [p for node in nodes for p in node.partitions]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()

    def request(self, make: Callable[[int], r.Record]) -> asyncio.Future[a.Reply]:
        record = make(0)
        invocation_id = getattr(record, "invocation_id", None)
        if invocation_id:
            key = partition_key_of_any(invocation_id)
        elif isinstance(record, r.SetStateFromAdmin):
            key = partition_key_for_key(record.key)
        else:
            key = None
        if self.leases is None:
            return self.nodes[((key or 0) * 2) >> 64].request(make)
        if key is None:
            return self.nodes[0].request(make)  # of no partition: any node takes it
        holder = self.leases.table.holder[self.nodes[0].store.partition_of(key)]
        if holder is None:
            raise ConnectionLost("no node leads the partition now (a handover): retry")
        try:
            return self.nodes[NODES.index(holder)].request(make)
        except PartitionNotLed as exc:  # the ingress answers 503: the client retries
            raise ConnectionLost(str(exc)) from None
