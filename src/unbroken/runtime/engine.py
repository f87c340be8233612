"""The engine: wires the processor, the invoker, the timers, and the waiting callers together.

Everything here runs on the event loop thread except the processor's writer thread. Actions arrive from
the processor in commit order and are executed in that order, which is what makes registering a waiter
(``AwaitCompletion``) and answering it (``Completed``) race-free.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.model import Schemas
from unbroken.core.storage import Store
from unbroken.protocol.transport import HandlerTransport
from unbroken.runtime.clock import Clock
from unbroken.runtime.invoker import Invoker
from unbroken.runtime.processor import Processor
from unbroken.runtime.timers import TimerService

log = logging.getLogger("unbroken.engine")

# How the engine builds its processor: the writer thread in production, a simulated one in the simulator
# (``unbroken.testing.sim``), which drives the same ``Processor._apply_batch`` from the event loop.
ProcessorFactory = Callable[
    [Store, Callable[[], Schemas], Clock, asyncio.AbstractEventLoop, Callable[[list[a.Action]], None]], Processor
]


@dataclass
class EngineOptions:
    inactivity_timeout_ms: int = 60_000
    clean_interval_ms: int = 60_000
    dev: bool = False


@dataclass
class _Waiters:
    by_invocation: dict[str, list[int]] = field(default_factory=dict)
    futures: dict[int, asyncio.Future[a.Reply]] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        store: Store,
        schemas: Schemas,
        transport: HandlerTransport,
        clock: Clock,
        options: EngineOptions | None = None,
        on_log: Callable[[str, str], None] | None = None,
        processor_factory: ProcessorFactory = Processor,
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.clock = clock
        self.options = options or EngineOptions()
        self.loop = asyncio.get_running_loop()
        self.processor = processor_factory(store, lambda: self.schemas, clock, self.loop, self._run_actions)
        self.invoker = Invoker(
            transport, self.processor, clock, self.options.inactivity_timeout_ms, self.options.dev,
            schemas=lambda: self.schemas,
        )  # fmt: skip
        self.timers = TimerService(clock, self.processor.submit, store.timers_after)
        self._waiters = _Waiters()
        self._request_ids = itertools.count(1)
        self._on_log = on_log
        self._cleaner: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Recover from storage (running invocations restart, timers re-arm), then process."""
        self.timers.load()  # the earliest ones; the others are read when these have fired
        recovering = self.store.running_invocation_ids()
        self.processor.start()
        for invocation_id in recovering:
            self.processor.submit(r.Recover(invocation_id))
        if recovering:
            log.info("recovering %d running invocations", len(recovering))
        self._cleaner = self.loop.create_task(self._clean_periodically())

    async def stop(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
        self.timers.stop()
        self.invoker.abort_all()
        await asyncio.to_thread(self.processor.stop)

    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.options.clean_interval_ms / 1000)
            self.processor.submit(r.CleanExpired())

    # ------------------------------------------------------------------------------------ requests
    def new_request_id(self) -> int:
        return next(self._request_ids)

    def request(self, make: Callable[[int], r.Record]) -> asyncio.Future[a.Reply]:
        """Submit a record that answers with a Reply; returns the future of that reply."""
        request_id = next(self._request_ids)
        fut: asyncio.Future[a.Reply] = self.loop.create_future()
        self._waiters.futures[request_id] = fut
        self.processor.submit(make(request_id))
        return fut

    def forget(self, request_id: int) -> None:
        self._waiters.futures.pop(request_id, None)

    # ------------------------------------------------------------------------------------ actions
    def _run_actions(self, actions: list[a.Action]) -> None:
        for action in actions:
            try:
                self._run_action(action)
            except Exception:
                log.exception("action failed: %r", action)

    def _run_action(self, action: a.Action) -> None:
        match action:
            case a.Deliver():
                self.invoker.deliver(action)
            case a.StartAttempt():
                self.invoker.start(action)
            case a.Reply():
                self._reply(action)
            case a.AwaitCompletion():
                self._waiters.by_invocation.setdefault(action.invocation_id, []).append(action.request_id)
            case a.Completed():
                self._completed(action)
            case a.ArmTimer():
                self.timers.arm(action.timer_id, action.fire_at_ms)
            case a.AbortAttempt():
                self.invoker.abort(action.invocation_id)
            case a.Log():
                if self._on_log is not None:
                    self._on_log(action.invocation_id, action.message)

    def _reply(self, reply: a.Reply) -> None:
        fut = self._waiters.futures.pop(reply.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _completed(self, done: a.Completed) -> None:
        for request_id in self._waiters.by_invocation.pop(done.invocation_id, ()):
            self._reply(
                a.Reply(request_id, "result", done.invocation_id, done.result, done.expires_at_ms)
            )
