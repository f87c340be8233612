"""A partition processor: the batch loop, the invoker, the timers and the waiting callers of the
invocations whose partition key it owns (``runtime/node.py`` routes records and actions to it).

Leadership: ``start`` recovers (submits ``Recover`` for its running invocations) and loads its timer
window, then processes; ``stop`` aborts its attempts, drains its queue (what was submitted is committed and
answered) and answers the callers still waiting 503 (the node is going away: they retry later or
elsewhere). Everything here runs on the event loop thread
except the processor's writer thread. Actions arrive from the processor in commit order and are executed in
that order, which is what makes registering a waiter (``AwaitCompletion``) and answering it (``Completed``)
race-free.

Health (``health()``, shown by both health endpoints): the processor's store failing, or the partition
stopped after an invariant broke twice. While either holds, new requests are refused at once (503 with
Retry-After, ``EngineUnavailable``), and so are requests past the named bounds (queued records, waiting
callers). When the store starts failing, the engine watches the callers still waiting: one that leaves
before its record was applied has it withdrawn (never acknowledged, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import assert_never

import msgspec

from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.errors import EngineUnavailable
from unbroken.core.journal import Failure
from unbroken.core.schema import Schemas
from unbroken.core.storage import Store, Timer
from unbroken.protocol.transport import HandlerTransport
from unbroken.runtime.clock import Clock
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.invoker import Invoker
from unbroken.runtime.processor import Processor
from unbroken.runtime.stats import EngineStats
from unbroken.runtime.takeover import partition_key_of_id, record_partition_key
from unbroken.runtime.timers import TimerService

log = logging.getLogger("unbroken.engine")
Owns = Callable[[str], bool]  # does this partition own the invocation with this id

# How the engine builds its processor: the production batch loop everywhere; the simulator
# (``unbroken.testing.sim``) gives it a virtual-time committer instead of the writer thread.
ProcessorFactory = Callable[
    [
        Store,
        Callable[[], Schemas],
        Clock,
        asyncio.AbstractEventLoop,
        Callable[[list[a.Action]], None],
        FaultPoints,
    ],
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


class Partition:
    """One partition processor. ``owns`` (None: every invocation) says which invocations are its own:
    it recovers those and loads their timers when it becomes leader. ``route`` (None: run them here) takes
    the actions its batches produced when several partitions share the node, so that each reaches the
    partition holding the attempt or the waiting caller it is for."""

    def __init__(
        self,
        store: Store,
        schemas: Callable[[], Schemas],
        # the node's: every partition sees a committed service change or deployment (re)registration
        update_schemas: Callable[[a.UpdateService | a.UpdateDeployments], None],
        transport: HandlerTransport,
        clock: Clock,
        options: EngineOptions,
        faults: FaultPoints,
        on_log: Callable[[str, str], None] | None = None,
        processor_factory: ProcessorFactory | None = None,
        owns: Owns | None = None,
        route: Callable[[Partition, list[a.Action]], None] | None = None,
        index: int = 0,
        live_awakeables: Callable[[str], int] | None = None,  # several partitions: the node's lookup
        stats: EngineStats | None = None,
    ) -> None:
        self.index = index
        self.stats = stats if stats is not None else EngineStats()
        self.store = store
        self.schemas = schemas
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.owns = owns
        self._route = route
        self._update_schemas = update_schemas
        factory = processor_factory or _production_processor
        self.faults = faults
        self.processor = factory(store, schemas, clock, self.loop, self._committed, faults)
        self.processor.stats = self.stats
        self.invoker = Invoker(
            transport,
            self.processor,
            clock,
            options.inactivity_timeout_ms,
            options.dev,
            schemas=schemas,
            faults=faults,
            stats=self.stats,
        )
        if live_awakeables is not None:
            self.invoker.live_awakeables_of = live_awakeables
        scan = store.timers_after if owns is None else functools.partial(_own_timers, store, owns)
        self.timers = TimerService(clock, self.processor.submit, scan, faults=faults)
        self._waiters = _Waiters()
        # several nodes (a leased store): whether an invocation's storage partition is still led here
        self.led_here: Owns | None = None
        self._on_log = on_log
        self._cleaner: asyncio.Task[None] | None = None
        self.processor.on_violation = self._recover
        self.processor.on_store_failing = self._watch_clients
        self.processor.stamp_inbox = self._stamp_live_awakeables

    # ------------------------------------------------------------------------------------ leadership
    def start(self) -> None:
        """Become leader: recover from storage (running invocations restart, timers re-arm), then process."""
        self.processor.start()
        self._load_from_store()
        self._cleaner = self.loop.create_task(self._clean_periodically())

    def _load_from_store(self) -> None:
        self.timers.load()  # the earliest ones; the others are read when these have fired
        recovering = self.store.running_invocation_ids()
        if self.owns is not None:
            recovering = [invocation_id for invocation_id in recovering if self.owns(invocation_id)]
        for invocation_id in recovering:
            self.processor.submit(r.Recover(invocation_id))
        if recovering:
            log.info("partition %d: recovering %d running invocations", self.index, len(recovering))

    def let_go(self, lost: Callable[[int], bool], parts: list[int]) -> None:
        """Storage partitions ``parts`` are led by another node now (``lost(partition_key)`` says whether a
        key is in one): drop their queued records, end their attempts, answer their waiting callers 503,
        drop their timers. Nothing of theirs commits here again (the store's fence refuses it)."""
        message = f"partitions {parts} moved to another node: retry"

        def is_lost(invocation_id: str) -> bool:
            return lost(partition_key_of_id(invocation_id))

        self.processor.purge(lambda record: _record_in(record, lost), message)
        for invocation_id in [i for i in self.invoker.running if is_lost(i)]:
            self.invoker.abort(invocation_id)
        for invocation_id in [i for i in self._waiters.by_invocation if is_lost(i)]:
            # accepted: its caller attaches to it (or retries with its idempotency key) on the new leader
            accepted = _goes_on(invocation_id)
            for request_id in self._waiters.by_invocation.pop(invocation_id):
                self._reply(a.Reply(request_id, a.Unavailable(Failure(503, accepted), invocation_id)))
        self.timers.reload()  # the window again, without their timers (``owns`` says no now)

    def took_over(self, recovering: list[str], parts: list[int]) -> None:
        """Storage partitions ``parts`` are led here now: ``recovering`` (their running invocations) restart
        as at start, and the timer window is read again with their timers."""
        for invocation_id in recovering:
            self.processor.submit(r.Recover(invocation_id))
        if parts:
            log.info("leading partitions %s: recovering %d running invocations", parts, len(recovering))
            # led here, their Recover records queued (none committed), their timers not read yet
            self.faults.point("takeover.mid_recovery")
            self.timers.reload()

    def _recover(self, message: str) -> None:
        """Crash-only, in process: an invariant broke and the batch rolled back. Drop what memory holds
        (running attempts, armed timers) and start again from storage, as a restart would."""
        self.invoker.abort_all()
        self.timers.reset()
        if self.processor.halted is not None:
            log.critical("engine stopped: %s", message)
            self._fail_waiters(message)  # nothing will answer them now
            return
        log.warning("recovering from storage after: %s", message)
        self._load_from_store()

    def health(self) -> str | None:
        """Why the partition cannot serve now (None: healthy)."""
        return self.processor.halted or self.processor.store_error

    async def stop(self) -> None:
        """Give up leadership: attempts end, what is queued is committed, waiting callers get 503."""
        if self._cleaner is not None:
            self._cleaner.cancel()
        self.timers.stop()
        self.invoker.abort_all()
        await self.processor.aclose()
        self._fail_waiters(f"partition {self.index} stopped: the server is shutting down; retry later")

    def kill(self, message: str) -> None:
        """The process died (an in-process crash in tests): attempts end, nothing queued is applied, timers
        and the cleaner stop; callers still waiting are answered 503 (their connection would have broken).
        What was committed is all that remains: a new node on the same store recovers from it."""
        if self._cleaner is not None:
            self._cleaner.cancel()
        self.timers.stop()
        self.invoker.abort_all()
        self.processor.drop()
        self._fail_waiters(message)

    def _fail_waiters(self, message: str) -> None:
        for request_id in list(self._waiters.futures):
            self._reply(a.Reply(request_id, a.Unavailable(Failure(503, message))))
        self._waiters.by_invocation.clear()

    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.options.clean_interval_ms / 1000)
            self.processor.submit(r.CleanExpired())

    # ------------------------------------------------------------------------------------ requests
    def request(
        self,
        request_id: int,
        record: r.Record,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> asyncio.Future[a.Reply]:
        """Submit ``record``, which answers ``request_id`` with a Reply; returns the future of that reply."""
        fut: asyncio.Future[a.Reply] = self.loop.create_future()
        self._waiters.futures[request_id] = fut
        if client_gone is not None:
            self._waiters.clients[request_id] = client_gone
        # type() is, not isinstance(): a miss through msgspec's metaclass costs ~1k instructions a class
        if type(record) is r.ResolveSignal or type(record) is r.PauseInvocation:
            record = self._stamp_live_awakeables(record)
        self.processor.submit(record)
        return fut

    def _stamp_live_awakeables(self, record: r.Record) -> r.Record:
        """A resolve (or pause) of an awakeable's invocation, from a request or another node's partition:
        what its running attempt allocated, now (an id it handed out may be ahead of its records)."""
        if isinstance(record, r.ResolveSignal | r.PauseInvocation):
            live = self.invoker.live_awakeables_of(record.invocation_id)
            record = msgspec.structs.replace(record, live_awakeables=live)
        return record

    def admit(self, bounded: bool) -> None:
        """Raise :class:`EngineUnavailable` if a request cannot be taken now (``bounded``: an ingress one,
        refused while the store fails or a bound is reached; admin ones must get through meanwhile)."""
        processor = self.processor
        if processor.halted is not None:
            raise EngineUnavailable(processor.halted, retry_after_s=limits.retry_after_s)
        if not bounded:
            return
        if processor.store_error is not None:
            raise EngineUnavailable(
                f"{processor.store_error}; retry later", retry_after_s=limits.retry_after_s
            )
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

    def waits_for(self, request_id: int) -> bool:
        return request_id in self._waiters.futures

    def _watch_clients(self) -> None:
        """The store started failing: watch every waiting HTTP caller, to withdraw the records of those
        who leave (cheaper than watching each caller all the time)."""
        for request_id, client_gone in list(self._waiters.clients.items()):
            self.loop.create_task(self._withdraw_when_gone(request_id, client_gone))
        self._waiters.clients.clear()

    async def _withdraw_when_gone(
        self, request_id: int, client_gone: Callable[[], Awaitable[object]]
    ) -> None:
        await client_gone()
        fut = self._waiters.futures.get(request_id)
        if fut is not None and not fut.done():
            self.processor.withdraw(request_id)
            self._reply(a.Reply(request_id, a.Gone()))

    def forget(self, request_id: int) -> None:
        """The caller of ``request_id`` left (the ingress saw it hang up): its reply goes nowhere. While the
        store fails its record, if still queued, is withdrawn too: it was never acknowledged, and applying
        it when space returns would only fill the disk again for nobody."""
        self._waiters.futures.pop(request_id, None)
        self._waiters.clients.pop(request_id, None)
        if self.processor.store_error is not None:
            self.processor.withdraw(request_id)

    # ------------------------------------------------------------------------------------ actions
    def _committed(self, actions: list[a.Action]) -> None:
        if self._route is None:
            self.run_actions(actions)
        else:
            self._route(self, actions)

    def run_actions(self, actions: list[a.Action]) -> None:
        for action in actions:
            try:
                self._run_action(action)
            except Exception:
                # type and id only: an action can carry a whole journal or a 32 MiB value
                log.exception(
                    "action failed: %s %s", type(action).__name__, getattr(action, "invocation_id", "")
                )

    def _run_action(self, action: a.Action) -> None:
        # The cases in the order of how often they come (every call: start, await, completed, log): each
        # case that does not match is an isinstance() through msgspec's metaclass, ~600 instructions.
        match action:
            case a.StartAttempt():
                if self.led_here is not None and not self.led_here(action.invocation.id):
                    return  # committed just before its partition moved: its new leader recovers it
                self.invoker.start(action)
            case a.Deliver():
                self.invoker.deliver(action)
            case a.AwaitCompletion():
                if self.led_here is not None and not self.led_here(action.invocation_id):
                    # committed just before its partition moved, after ``let_go`` answered the others:
                    # nothing here will see it complete (the simulator's --leases handovers)
                    self._reply(
                        a.Reply(
                            action.request_id, a.Unavailable(Failure(503, _goes_on(action.invocation_id)))
                        )
                    )
                    return
                self._waiters.by_invocation.setdefault(action.invocation_id, []).append(action.request_id)
            case a.Completed():
                self._completed(action)
            case a.Log():
                if action.warning:  # a failed attempt: logged once, in serve and dev alike
                    log.warning("%s %s", action.invocation_id, action.message)
                elif self._on_log is not None:
                    self._on_log(action.invocation_id, action.message)
            case a.Reply():
                self._reply(action)
            case a.ArmTimer():
                self.timers.arm(action.timer_id, action.fire_at_ms)
            case a.AbortAttempt():
                self.invoker.abort(action.invocation_id)
            case a.UpdateService() | a.UpdateDeployments():  # committed: later batches see the change
                self._update_schemas(action)
            case _:
                assert_never(action)

    def _reply(self, reply: a.Reply) -> None:
        self._waiters.clients.pop(reply.request_id, None)
        fut = self._waiters.futures.pop(reply.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _completed(self, done: a.Completed) -> None:
        for request_id in self._waiters.by_invocation.pop(done.invocation_id, ()):
            self._reply(a.Reply(request_id, a.Output(done.invocation_id, done.result, done.expires_at_ms)))


def _goes_on(invocation_id: str) -> str:
    return f"invocation {invocation_id} goes on on another node (its partition moved): attach to it"


def _record_in(record: r.Record, lost: Callable[[int], bool]) -> bool:
    key = record_partition_key(record)
    return key is not None and lost(key)


def _own_timers(store: Store, owns: Owns, after: tuple[int, int] | None, limit: int) -> list[Timer]:
    """``store.timers_after`` restricted to this partition's invocations (scans on past the others')."""
    out: list[Timer] = []
    while len(out) < limit:
        rows = store.timers_after(after, limit)
        out += [timer for timer in rows if owns(timer.invocation_id)]
        if len(rows) < limit:
            break
        after = (rows[-1].fire_at_ms, rows[-1].timer_id)
    return out[:limit]


def _production_processor(
    store: Store,
    schemas: Callable[[], Schemas],
    clock: Clock,
    loop: asyncio.AbstractEventLoop,
    on_actions: Callable[[list[a.Action]], None],
    faults: FaultPoints,
) -> Processor:
    return Processor(store, schemas, clock, loop, on_actions, faults=faults)
