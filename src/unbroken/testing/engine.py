"""A whole engine in the test's own event loop: the production node (``wiring.build``) on a SQLite file in a
temporary directory, in-process handlers, and virtual time.

Virtual time: the node's clock is a :class:`~unbroken.runtime.clock.ManualClock`. ``advance(delta)`` moves it
and fires what came due; with ``auto_advance`` (the default) a watcher jumps it to the next timer whenever
every invocation waits on a timer or on another invocation (``tracking.py``), so a 30-day sleep takes
milliseconds. A crash (``crash()``, or ``crash_at(...)`` a journal index or a named fault point) drops the
node's memory as a SIGKILL would — queued records, running attempts, armed timers, waiting callers — and
builds a new node on the same file, which recovers and replays: what a handler did before the crash and
journaled is not done again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from unbroken.config import Config
from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.invocation import Invocation
from unbroken.core.journal import Entry, Notification
from unbroken.core.schema import Schemas
from unbroken.core.storage import Store
from unbroken.http.asgi import Receive, Scope, Send
from unbroken.ingress.app import IngressApp
from unbroken.runtime.clock import Clock, ManualClock, SystemClock
from unbroken.runtime.committer import Batch, CommitSink
from unbroken.runtime.faults import POINTS, FaultPoints
from unbroken.runtime.node import EngineOptions, Node
from unbroken.runtime.processor import Processor
from unbroken.sdk.app import App
from unbroken.sdk.attempt import describe_entry
from unbroken.sdk.client_types import RestateClient
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_snapshot import SqliteSnapshot
from unbroken.testing.client import TestClient
from unbroken.testing.tracking import TrackingTransport, settle
from unbroken.wiring import Parts, app_schemas, build, local_transport

log = logging.getLogger("unbroken.testing")

AUTO_ADVANCE_POLL_S = 0.002  # how often the watcher looks whether everything waits on a timer
CRASHED = "the engine crashed (unbroken.testing): the invocation goes on after the restart"


class EngineCrashed(BaseException):
    """Raised at an armed fault point after the engine was killed there: what follows the point must not run.
    A BaseException, so that no ``except Exception`` on the way turns the crash into an ordinary error."""


class _KitFaults(FaultPoints):
    """The node's fault points: an armed one kills the engine where it stands."""

    def __init__(self, engine: TestEngine) -> None:
        super().__init__()
        self._engine = engine
        self._crash_points: set[str] = set()

    def crash_at(self, name: str) -> None:
        if name not in POINTS:
            raise ValueError(f"no fault point {name!r}: the points are {', '.join(sorted(POINTS))}")
        self._crash_points.add(name)
        self.arm(name, "kit-crash")

    def point(self, name: str) -> None:
        if name in self._crash_points:
            self._crash_points.discard(name)
            self.disarm_all()
            self._engine._die(f"fault point {name}")
            raise EngineCrashed(name)
        super().point(name)


class _LoopCommitter:
    """Commits on the loop, at once (a test needs no group commit), and crashes after a commit when armed."""

    def __init__(self, engine: TestEngine, faults: FaultPoints) -> None:
        self._engine = engine
        self._faults = faults
        self._sink: CommitSink | None = None

    def start(self, sink: CommitSink) -> None:
        self._sink = sink

    def commit(self, batch: Batch) -> None:
        sink = self._sink
        assert sink is not None
        try:
            batch.transaction.commit()
        except Exception as exc:
            sink.commit_failed(batch, exc)
            return
        try:
            self._faults.point("processor.after_commit")
            self._engine._after_commit(batch.records)
            sink.committed(batch)
        except EngineCrashed:
            pass  # committed, none of its actions ran: the new node recovers from what was committed

    async def stop(self) -> None:
        pass


class TestEngine:
    """The engine a test drives: start it with ``async with TestEngine(app) as engine``."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        app: App,
        *,
        data_dir: str | None = None,
        virtual_time: bool = True,
        auto_advance: bool = True,
        always_replay: bool = False,
        disable_retries: bool = False,
        start_at: datetime | None = None,
        config: Config | None = None,
        dev: bool = False,
    ) -> None:
        if not isinstance(app, App):
            raise TypeError(f"expected an unbroken App (from unbroken.app([...])), got {type(app).__name__}")
        self.app = app
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="unbroken-test-")
        base = config or Config()
        overrides: dict[str, Any] = {"data_dir": self.data_dir, "fsync": False}
        if always_replay:  # Restate's harness: suspend at every await, so every step is a replay
            overrides["inactivity_timeout_ms"] = 0
        if disable_retries:
            overrides.update(retry_max_attempts=1, retry_on_max_attempts="kill")
        self.config = _replace(base, overrides)
        start_ms = int((start_at or datetime.now(UTC)).timestamp() * 1000)
        self.clock: Clock = ManualClock(start_ms) if virtual_time else SystemClock()
        self.virtual_time = virtual_time
        self.always_replay = always_replay
        self.dev = dev  # log every step of every attempt (``unbroken dev``'s log)
        self.auto_advance = auto_advance and virtual_time
        self.faults = _KitFaults(self)
        self.node: Node | None = None
        self.store: SqliteStore | None = None
        self.transport: TrackingTransport | None = None
        self.crashes = 0  # how many times the engine died (each one a new node)
        self._crash_at_index: list[tuple[str | None, int]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart_pending = False
        self._closed = False
        self._previous_handler: Any = None
        self._ingress_app: IngressApp | None = None

    # ------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> TestEngine:
        self._loop = asyncio.get_running_loop()
        self._previous_handler = self._loop.get_exception_handler()  # restored by stop()
        self._loop.set_exception_handler(self._exception_handler)
        self._build()
        if self.auto_advance:
            self._watcher = self._loop.create_task(self._watch_timers())
        return self

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.node is not None:
            await self.node.stop()
        if self.store is not None:
            self.store.close()
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous_handler)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def __aenter__(self) -> TestEngine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _build(self) -> None:
        loop = self._loop
        assert loop is not None
        store = SqliteStore(self.data_dir, fsync=False)
        parts = Parts(clock=self.clock, faults=self.faults, processor_factory=self._processor, partitions=1)
        transport = TrackingTransport(local_transport(self.app, parts, loop), self.always_replay)
        options = EngineOptions(
            inactivity_timeout_ms=self.config.inactivity_timeout_ms,
            clean_interval_ms=self.config.cleanup_interval_ms,
            dev=self.dev,
        )
        node = build(app_schemas(self.app, self.config, store), store, transport, parts, options)
        self.store, self.transport, self.node = store, transport, node
        node.start()

    def _processor(
        self,
        store: Store,
        schemas: Callable[[], Schemas],
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_actions: Callable[[list[a.Action]], None],
        faults: FaultPoints,
    ) -> Processor:
        return Processor(store, schemas, clock, loop, on_actions, _LoopCommitter(self, faults), faults)

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), EngineCrashed):
            return  # the crash a test asked for, unwinding a callback of the dead node
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    # ------------------------------------------------------------------------------------- crashes
    def _die(self, why: str) -> None:
        """Kill the node now (memory gone, callers answered 503) and rebuild it on the next loop turn, once
        the code that was running when it died has unwound."""
        node = self.node
        if node is None or self._restart_pending:
            return
        log.info("unbroken.testing: crash at %s", why)
        self.crashes += 1
        node.kill(CRASHED)
        self._restart_pending = True
        assert self._loop is not None
        self._loop.call_soon(self._restart)

    def _restart(self) -> None:
        self._restart_pending = False
        if self._closed:
            return
        if self.store is not None:
            self.store.close()
        self._build()

    async def crash(self) -> None:
        """Kill the engine now and start a new one on the same store: it recovers from what was committed
        and replays every running invocation."""
        self._die("crash()")
        await settle()

    def crash_at(
        self, *, journal_index: int | None = None, point: str | None = None, invocation_id: str | None = None
    ) -> None:
        """Crash once, the next time entry ``journal_index`` of an invocation (of ``invocation_id``, else of
        the first invocation whose journal reaches it) has just been committed, before anything it causes
        ran; or at the named fault point ``point``
        (``runtime/faults.py`` lists them: ``sdk.run.before_propose``, ``invoker.before_start``, ...)."""
        if (journal_index is None) == (point is None):
            raise ValueError("crash_at() takes one of journal_index= or point=")
        if point is not None:
            self.faults.crash_at(point)
        else:
            assert journal_index is not None
            if journal_index < 0:
                raise ValueError(f"journal_index must be >= 0, not {journal_index}")
            self._crash_at_index.append((invocation_id, journal_index))

    def _after_commit(self, records: list[r.Record]) -> None:
        if not self._crash_at_index or self.store is None:
            return
        snapshot = SqliteSnapshot(self.store.conn)
        for record in records:
            invocation_id = getattr(record, "invocation_id", None)
            if not invocation_id:
                continue
            for wanted in list(self._crash_at_index):
                who, index = wanted
                if who is not None and who != invocation_id:
                    continue
                inv = snapshot.invocation(invocation_id)
                if inv is not None and inv.journal_length > index:
                    self._crash_at_index.remove(wanted)
                    self._die(f"journal entry {index} of {invocation_id}")
                    raise EngineCrashed(f"journal entry {index}")

    # ------------------------------------------------------------------------------------- time
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, UTC)

    async def advance(self, delta: timedelta, timeout_s: float = limits.testkit_idle_wait_s_max) -> None:
        """Once every invocation waits (``wait_idle``), move virtual time by ``delta``; the timers that came
        due fire, and this returns when what they woke waits again."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError("advance() needs virtual time (TestEngine(virtual_time=True))")
        ms = int(delta.total_seconds() * 1000)
        if ms < 0:
            raise ValueError(f"time only goes forward: advance({delta})")
        await self.wait_idle(timeout_s)
        self.clock.advance(ms)
        self._clock_moved()
        await self.wait_idle(timeout_s)

    async def wait_idle(self, timeout_s: float = limits.testkit_idle_wait_s_max) -> None:
        """Return once nothing can progress without time passing or the test acting: the engine has no
        record to apply and every invocation waits on a timer, another invocation, an awakeable or a
        promise (a handler computing or running a ``ctx.run`` action is not idle). ``TimeoutError`` after
        ``timeout_s`` seconds of real time."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        quiet = 0
        while quiet < 2:  # twice in a row, a poll apart: a record may be on its way between two callbacks
            await settle()
            why = self._busy()
            if why is None:
                quiet += 1
            else:
                quiet = 0
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"not idle after {timeout_s}s: {why}")
            await asyncio.sleep(AUTO_ADVANCE_POLL_S)

    def _busy(self) -> str | None:
        """Why the engine is not idle (see ``wait_idle``); with auto-advance, a timer it is about to jump to
        keeps it busy too."""
        why = self._blocker(outside_ok=True)
        if why is not None or not self.auto_advance or self._next_timer_ms() is None:
            return why
        if self._blocker() is None:
            return "auto-advance is about to fire a timer"
        return None

    def _clock_moved(self) -> None:
        if self.node is not None:
            for partition in self.node.partitions:
                partition.timers.clock_moved()

    def _blocker(self, outside_ok: bool = False) -> str | None:
        node, transport = self.node, self.transport
        if node is None or transport is None or self._restart_pending:
            return "the engine is restarting"
        for partition in node.partitions:
            if not partition.processor.idle():
                return "the engine has records to apply"
        return transport.blocker(outside_ok)

    def _next_timer_ms(self) -> int | None:
        if self.node is None:
            return None
        due = [t for p in self.node.partitions if (t := p.timers.next_due_ms()) is not None]
        return min(due) if due else None

    async def _watch_timers(self) -> None:
        """Auto-advance: when nothing can progress but by a timer (twice in a row, a poll apart), jump."""
        clock = self.clock
        assert isinstance(clock, ManualClock)
        quiet = 0
        while True:
            await asyncio.sleep(AUTO_ADVANCE_POLL_S)
            due = self._next_timer_ms()
            if due is None or due <= clock.now_ms() or self._blocker() is not None:
                quiet = 0
                continue
            quiet += 1
            if quiet >= 2:
                quiet = 0
                clock.advance(due - clock.now_ms())
                self._clock_moved()

    # ------------------------------------------------------------------------------------- inspection
    def _snapshot(self) -> SqliteSnapshot:
        if self.store is None:
            raise RuntimeError("the engine is not started")
        return SqliteSnapshot(self.store.conn)

    def invocation(self, invocation_id: str) -> Invocation | None:
        """The stored row of an invocation (status, attempts, last failure, result, ...)."""
        return self._snapshot().invocation(invocation_id)

    def journal(self, invocation_id: str) -> list[Entry]:
        """The committed journal of an invocation, entry 0 (its input) first."""
        return self._snapshot().journal(invocation_id)

    def invocation_ids(self) -> list[str]:
        """Every stored invocation, oldest first."""
        if self.store is None:
            raise RuntimeError("the engine is not started")
        rows = self.store.conn.execute("SELECT id FROM invocation ORDER BY seq")
        return [str(row[0]) for row in rows]

    def journal_commands(self, invocation_id: str) -> list[str]:
        """The journal as short names, for assertions: ``['Input', 'Run(\'charge\')', 'Sleep', ...]``
        (notifications left out)."""
        return [describe_entry(e) for e in self.journal(invocation_id) if not isinstance(e, Notification)]

    def state(self, service: str, key: str) -> dict[str, bytes]:
        """The stored state of a virtual object or workflow key (raw bytes; ``state_json`` decodes)."""
        return self._snapshot().state(service, key)

    def state_json(self, service: str, key: str) -> dict[str, Any]:
        import json

        return {name: json.loads(value) for name, value in self.state(service, key).items()}

    async def request(self, make: Callable[[int], r.Record]) -> a.Reply:
        """Submit a record that answers with a Reply (to the node of the moment: not a dead one)."""
        while self._restart_pending:
            await asyncio.sleep(0)
        if self.node is None or self._closed:
            raise RuntimeError("the engine is not started")
        return await self.node.request(make)

    @property
    def client(self) -> TestClient:
        """Calls, sends, attaches and awakeables, in process."""
        return TestClient(self)

    @contextlib.asynccontextmanager
    async def restate_client(self) -> AsyncIterator[RestateClient]:
        """restate-sdk's ingress client (``service_call``, ``object_send``, ``workflow_call``, ...) on this
        engine's real ingress, in process (no socket): tests written against ``create_test_harness``'s
        ``env.client`` run on the kit. A request in flight when the engine crashes is answered 503."""
        import httpx

        from unbroken.sdk.client import Client

        transport = httpx.ASGITransport(app=self._ingress)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://unbroken.test", timeout=None
        ) as http:
            yield Client(http)

    async def _ingress(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ingress of the node of the moment (a crash makes a new node)."""
        while self._restart_pending:
            await asyncio.sleep(0)
        node = self.node
        if node is None:
            raise RuntimeError("the engine is not started")
        if self._ingress_app is None or self._ingress_app.engine is not node:
            self._ingress_app = IngressApp(node)
        await self._ingress_app(scope, receive, send)


def _replace(config: Config, overrides: dict[str, Any]) -> Config:
    import dataclasses

    return dataclasses.replace(config, **overrides)


async def crash_at_every_journal_index(
    app: App, scenario: Callable[[TestEngine], Awaitable[object]], **engine_options: Any
) -> int:
    """Run ``scenario`` on a fresh engine once without a crash, then once per journal index it produced,
    each time crashing the engine just after that entry was committed (``crash_at(journal_index=i)``).
    ``scenario`` asserts what must hold whatever the crash (e.g. each side effect happened once); it is
    given the engine, and must reset what it counts. Returns how many runs crashed."""
    async with TestEngine(app, **engine_options) as engine:
        await scenario(engine)
        longest = max((len(engine.journal(i)) for i in engine.invocation_ids()), default=0)
    for index in range(longest):
        async with TestEngine(app, **engine_options) as engine:
            engine.crash_at(journal_index=index)
            await scenario(engine)
            if engine.crashes != 1:
                raise AssertionError(f"the crash at journal index {index} did not happen")
    return longest
