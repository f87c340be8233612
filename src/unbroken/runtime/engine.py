"""The engine: wires the processor, the invoker, the timers, and the waiting callers together.

Everything here runs on the event loop thread except the processor's writer thread. Actions arrive from
the processor in commit order and are executed in that order, which is what makes registering a waiter
(``AwaitCompletion``) and answering it (``Completed``) race-free.

Health (``health()``, shown by both health endpoints): the processor's store failing, or the partition
stopped after an invariant broke twice. While either holds, new requests are refused at once (503 with
Retry-After, ``EngineUnavailable``), and so are requests past the named bounds (queued records, waiting
callers). When the store starts failing, the engine watches the callers still waiting: one that leaves
before its record was applied has it withdrawn (never acknowledged, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import assert_never

from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.errors import EngineUnavailable
from unbroken.core.journal import Failure, Result
from unbroken.core.model import Schemas
from unbroken.core.storage import Store
from unbroken.protocol.transport import HandlerTransport
from unbroken.runtime.clock import Clock
from unbroken.runtime.entropy import RandomBytes
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.invoker import Invoker
from unbroken.runtime.processor import Processor
from unbroken.runtime.timers import TimerService

log = logging.getLogger("unbroken.engine")

# How the engine builds its processor: the production batch loop everywhere; the simulator
# (``unbroken.testing.sim``) gives it a virtual-time committer instead of the writer thread.
ProcessorFactory = Callable[
    [Store, Callable[[], Schemas], Clock, asyncio.AbstractEventLoop, Callable[[list[a.Action]], None], FaultPoints],
    Processor,
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
    # HTTP callers' "has the client left" awaitables, watched only while the store fails
    clients: dict[int, Callable[[], Awaitable[object]]] = field(default_factory=dict)
    watching: bool = False


class Engine:
    def __init__(
        self,
        store: Store,
        schemas: Schemas,
        transport: HandlerTransport,
        clock: Clock,
        options: EngineOptions | None = None,
        on_log: Callable[[str, str], None] | None = None,
        processor_factory: ProcessorFactory | None = None,
        faults: FaultPoints | None = None,
        entropy: RandomBytes | None = None,
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.clock = clock
        self.options = options or EngineOptions()
        self.loop = asyncio.get_running_loop()
        self.faults = faults if faults is not None else FaultPoints()
        self.entropy = entropy if entropy is not None else RandomBytes()  # ids of new invocations
        factory = processor_factory or _production_processor
        self.processor = factory(store, lambda: self.schemas, clock, self.loop, self._run_actions, self.faults)
        self.invoker = Invoker(
            transport, self.processor, clock, self.options.inactivity_timeout_ms, self.options.dev,
            schemas=lambda: self.schemas, faults=self.faults,
        )  # fmt: skip
        self.timers = TimerService(clock, self.processor.submit, store.timers_after, faults=self.faults)
        self._waiters = _Waiters()
        self._request_ids = itertools.count(1)
        self._on_log = on_log
        self._cleaner: asyncio.Task[None] | None = None
        self.processor.on_violation = self._recover
        self.processor.on_store_failing = self._watch_clients

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Recover from storage (running invocations restart, timers re-arm), then process."""
        self.processor.start()
        self._load_from_store()
        self._cleaner = self.loop.create_task(self._clean_periodically())

    def _load_from_store(self) -> None:
        self.timers.load()  # the earliest ones; the others are read when these have fired
        recovering = self.store.running_invocation_ids()
        for invocation_id in recovering:
            self.processor.submit(r.Recover(invocation_id))
        if recovering:
            log.info("recovering %d running invocations", len(recovering))

    def _recover(self, message: str) -> None:
        """Crash-only, in process: an invariant broke and the batch rolled back. Drop what memory holds
        (running attempts, armed timers) and start again from storage, as a restart would."""
        self.invoker.abort_all()
        self.timers.reset()
        if self.processor.halted is not None:
            log.critical("engine stopped: %s", message)
            for request_id in list(self._waiters.futures):  # nothing will answer them now
                self._reply(a.Reply(request_id, "unavailable", result=_failure(503, message)))
            return
        log.warning("recovering from storage after: %s", message)
        self._load_from_store()

    def health(self) -> str | None:
        """Why the engine cannot serve now (None: healthy)."""
        return self.processor.halted or self.processor.store_error

    async def stop(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
        self.timers.stop()
        self.invoker.abort_all()
        await self.processor.aclose()

    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.options.clean_interval_ms / 1000)
            self.processor.submit(r.CleanExpired())

    # ------------------------------------------------------------------------------------ requests
    def new_request_id(self) -> int:
        return next(self._request_ids)

    def request(
        self, make: Callable[[int], r.Record], client_gone: Callable[[], Awaitable[object]] | None = None,
        bounded: bool = False,
    ) -> asyncio.Future[a.Reply]:  # fmt: skip
        """Submit a record that answers with a Reply; returns the future of that reply.

        ``bounded`` (the ingress): refused with :class:`EngineUnavailable` while the store fails or a bound
        is reached. ``client_gone`` completes when the caller leaves; if that happens while the store fails
        and the record is still queued, it is withdrawn and the future answers ``gone``.
        """
        self._admit(bounded)
        request_id = next(self._request_ids)
        fut: asyncio.Future[a.Reply] = self.loop.create_future()
        self._waiters.futures[request_id] = fut
        if client_gone is not None:
            self._waiters.clients[request_id] = client_gone
        self.processor.submit(make(request_id))
        return fut

    def _admit(self, bounded: bool) -> None:
        processor = self.processor
        if processor.halted is not None:
            raise EngineUnavailable(processor.halted, retry_after_s=limits.retry_after_s)
        if not bounded:
            return  # admin requests (kill, cancel) must get through while the store fails
        if processor.store_error is not None:
            raise EngineUnavailable(f"{processor.store_error}; retry later", retry_after_s=limits.retry_after_s)
        if processor.queued() >= limits.records_queued_max:
            raise EngineUnavailable(
                f"overloaded: {limits.records_queued_max} records are queued; retry later",
                retry_after_s=limits.retry_after_s,
            )
        if len(self._waiters.futures) >= limits.reply_waiters_max:
            raise EngineUnavailable(
                f"overloaded: {limits.reply_waiters_max} callers are waiting; retry later",
                retry_after_s=limits.retry_after_s,
            )

    def _watch_clients(self) -> None:
        """The store started failing: watch every waiting HTTP caller, to withdraw the records of those
        who leave (cheaper than watching each caller all the time)."""
        for request_id, client_gone in list(self._waiters.clients.items()):
            self.loop.create_task(self._withdraw_when_gone(request_id, client_gone))
        self._waiters.clients.clear()

    async def _withdraw_when_gone(self, request_id: int, client_gone: Callable[[], Awaitable[object]]) -> None:
        await client_gone()
        fut = self._waiters.futures.get(request_id)
        if fut is not None and not fut.done():
            self.processor.withdraw(request_id)
            self._reply(a.Reply(request_id, "gone"))

    def forget(self, request_id: int) -> None:
        self._waiters.futures.pop(request_id, None)
        self._waiters.clients.pop(request_id, None)

    # ------------------------------------------------------------------------------------ actions
    def _run_actions(self, actions: list[a.Action]) -> None:
        for action in actions:
            try:
                self._run_action(action)
            except Exception:
                # type and id only: an action can carry a whole journal or a 32 MiB value
                log.exception("action failed: %s %s", type(action).__name__, getattr(action, "invocation_id", ""))

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
                if action.warning:  # a failed attempt: logged once, in serve and dev alike
                    log.warning("%s %s", action.invocation_id, action.message)
                elif self._on_log is not None:
                    self._on_log(action.invocation_id, action.message)
            case _:
                assert_never(action)

    def _reply(self, reply: a.Reply) -> None:
        self._waiters.clients.pop(reply.request_id, None)
        fut = self._waiters.futures.pop(reply.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _completed(self, done: a.Completed) -> None:
        for request_id in self._waiters.by_invocation.pop(done.invocation_id, ()):
            self._reply(
                a.Reply(request_id, "result", done.invocation_id, done.result, done.expires_at_ms)
            )


def _production_processor(
    store: Store, schemas: Callable[[], Schemas], clock: Clock, loop: asyncio.AbstractEventLoop,
    on_actions: Callable[[list[a.Action]], None], faults: FaultPoints,
) -> Processor:  # fmt: skip
    return Processor(store, schemas, clock, loop, on_actions, faults=faults)


def _failure(code: int, message: str) -> Result:
    return Result(failure=Failure(code, message))
