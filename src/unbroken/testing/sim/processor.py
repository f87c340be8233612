"""The simulated partition processor and the observed in-memory store.

:class:`SimProcessor` replaces the writer thread of ``runtime.processor.Processor`` with a task on the
virtual loop, and keeps everything else: each batch goes through the production
``Processor._apply_batch`` (``state_machine.apply`` per record inside one store transaction, commit,
and the one-by-one fallback when a batch fails). What the simulator adds is *where it perturbs*:

* records are queued per *channel* (the records of one invocation keep their order, as the transport
  guarantees; independent records — different invocations, timers, clients — interleave in a seeded
  random order, some of them late);
* a batch takes a seeded random number of ready records and some virtual "fsync" time to commit, while
  handlers keep running (pipelining, as in production);
* committed actions reach the runtime after a seeded delay, in commit order.

:class:`SimStore` is the memory store whose transactions can fail at commit (rolled back) and report, on
commit, what the sim's invariants watch: invocations created, invocations completed, ``ctx.run`` results
made durable.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unbroken.core import records as r
from unbroken.core.actions import Action
from unbroken.core.journal import Entry, Notification, Result
from unbroken.core.model import HandlerKind, Invocation, Schemas, Status, Target
from unbroken.runtime.clock import Clock
from unbroken.runtime.processor import Processor, StorageFailed, log
from unbroken.storage.codec import decode_invocation
from unbroken.storage.memory import MemoryStore, MemoryTransaction
from unbroken.testing.sim.faults import InjectedStorageError

if TYPE_CHECKING:
    from unbroken.testing.sim.world import World


# ------------------------------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class Created:
    invocation_id: str
    target: Target
    handler_kind: HandlerKind | None
    delayed: bool


@dataclass(frozen=True, slots=True)
class Finished:
    invocation_id: str
    result: Result


@dataclass(frozen=True, slots=True)
class RunDurable:
    invocation_id: str
    completion_id: int
    result: Result


Event = Created | Finished | RunDurable


class ObservedTransaction(MemoryTransaction):
    """A memory transaction that notes the events the invariants need (reported only if it commits)."""

    def __init__(self, store: SimStore) -> None:
        super().__init__(store, None)
        self.sim = store
        self.snap: tuple[Any, ...] | None = store._snapshot()
        store.committed_timers = self.snap[5]
        self.events: list[Event] = []

    def commit(self) -> None:
        if self.sim.world.faults.storage_error():
            self.sim.failed_commits += 1
            self.rollback()
            raise InjectedStorageError(5, "injected: disk I/O error at commit")
        self.snap = None
        self.sim.committed_timers = None
        self.sim.world.on_commit(self.events)

    def rollback(self) -> None:
        if self.snap is not None:
            next_timer_id = self.sim.next_timer_id  # never handed out twice (the timer window may hold one)
            self.sim._restore(self.snap)
            self.sim.next_timer_id = next_timer_id
            self.snap = None
        self.sim.committed_timers = None

    def put_invocation(self, inv: Invocation) -> None:
        prev = self.s.invocations.get(inv.id)
        if prev is None:
            delayed = inv.status is Status.SCHEDULED
            self.events.append(Created(inv.id, inv.target, inv.handler_kind, delayed))
        if inv.status is Status.COMPLETED and (
            prev is None or decode_invocation(prev, inv.id, check=False).status is not Status.COMPLETED
        ):  # created and completed by one record is possible now that rows are written once per record
            assert inv.result is not None
            self.events.append(Finished(inv.id, inv.result))
        super().put_invocation(inv)

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        if isinstance(entry, Notification) and entry.kind == "run":
            self.events.append(RunDurable(invocation_id, entry.completion_id, entry.result))
        super().append_journal(invocation_id, index, entry, appended_at_ms)


class SimStore(MemoryStore):
    """Memory store with seeded commit failures and commit-time event reports.

    A transaction works in place on the store and is undone from a snapshot if anything raises (as
    ``MemoryStore.transaction`` does, with cheaper copies: values are immutable bytes, only the
    containers that transactions mutate in place are copied).
    """

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.transactions = 0
        self.failed_commits = 0

    def _snapshot(self) -> tuple[Any, ...]:
        return (
            dict(self.invocations),
            {k: list(v) for k, v in self.journals.items()},
            {k: dict(v) for k, v in self.state.items()},
            dict(self.locks),
            {k: list(v) for k, v in self.inboxes.items()},
            dict(self.timer_rows),
            dict(self.promises),
            {k: set(v) for k, v in self.signals.items()},
            self.next_timer_id,
            dict(self.overrides),
        )

    def _restore(self, snap: tuple[Any, ...]) -> None:
        (self.invocations, self.journals, self.state, self.locks, self.inboxes, self.timer_rows,
         self.promises, self.signals, self.next_timer_id, self.overrides) = snap  # fmt: skip

    def begin(self) -> ObservedTransaction:
        self.transactions += 1
        return ObservedTransaction(self)

    # ------------------------------------------------------------------ read helpers for the invariants
    def invocation(self, invocation_id: str) -> Invocation | None:
        data = self.invocations.get(invocation_id)
        return None if data is None else decode_invocation(data, invocation_id, check=False)

    def all_invocations(self) -> list[Invocation]:
        return [decode_invocation(b, i, check=False) for i, b in self.invocations.items()]

    def journal_of(self, invocation_id: str) -> list[Entry]:
        return MemoryTransaction(self, None).journal(invocation_id)


# -------------------------------------------------------------------------------------- processor
_INVOCATION_RECORDS = (r.JournalCommand, r.ProposeRunCompletion, r.AttemptSuspended, r.AttemptFailed)


class SimProcessor(Processor):
    """The processor on the virtual loop (no thread): same batch code, seeded perturbations."""

    def __init__(
        self,
        world: World,
        store: Any,
        schemas: Callable[[], Schemas],
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_actions: Callable[[list[Action]], None],
    ) -> None:
        super().__init__(store, schemas, clock, loop, on_actions)
        self.world = world
        self.alive = True
        self._channels: dict[object, deque[tuple[float, r.Record]]] = {}
        self._wake = asyncio.Event()
        self._outbox: deque[list[Action]] = deque()
        self._deliver_at = 0.0
        self._solo = 0
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[r.Record] = []  # taken from the queue, not committed yet

    # ---------------------------------------------------------------------------- Processor API
    def start(self) -> None:
        self._task = self._loop.create_task(self._main())

    def submit(self, record: r.Record) -> None:
        if not self.alive:
            return  # a dead process's queue
        now = self._loop.time()
        ready = now + self.world.faults.record_delay_s(isinstance(record, r.TimerFired))
        channel = self._channel(record)
        queue = self._channels.get(channel)
        if queue is None:
            queue = self._channels[channel] = deque()
        elif queue:
            ready = max(ready, queue[-1][0])  # one channel stays FIFO
        queue.append((ready, record))
        if ready <= now:
            self._wake.set()
        else:
            self._loop.call_at(ready, self._poke)

    def stop(self) -> None:
        """Graceful stop, as ``Processor.stop``: the writer applies what is queued, then exits."""
        if not self.alive:
            return
        pending = list(self._inflight)
        while self._channels:
            pending += self._take(drain=True)
        self._inflight = []
        while pending:
            try:
                actions = self._apply_batch(pending)
            except StorageFailed as failed:
                log.error("storage failed; retrying %d records", len(failed.rest), exc_info=failed.__cause__)
                self.world.on_batch(pending[: len(pending) - len(failed.rest)], failed.actions)
                self._act(failed.actions)
                pending = failed.rest
                continue
            self.world.on_batch(pending, actions)
            self._act(actions)
            break
        while self.alive and self._outbox:  # the loop still runs what was handed to it
            self._on_actions(self._outbox.popleft())
        self.kill()

    def kill(self) -> None:
        """The process died: queued records and undelivered actions are gone."""
        self.alive = False
        self._channels.clear()
        self._outbox.clear()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def pending(self) -> int:
        return sum(len(q) for q in self._channels.values()) + len(self._outbox)

    # ------------------------------------------------------------------------------- internals
    def _channel(self, record: r.Record) -> object:
        if isinstance(record, _INVOCATION_RECORDS):
            return record.invocation_id
        self._solo += 1
        return self._solo  # independent of everything else

    def _poke(self) -> None:
        if self.alive:
            self._wake.set()

    def _take(self, drain: bool = False) -> list[r.Record]:
        now = float("inf") if drain else self._loop.time()
        rng = self.world.faults.rng
        want = self.world.faults.batch_size()
        heads = [ch for ch, q in self._channels.items() if q and q[0][0] <= now]
        batch: list[r.Record] = []
        while heads and len(batch) < want:
            i = rng.randrange(len(heads)) if len(heads) > 1 else 0
            channel = heads[i]
            queue = self._channels[channel]
            batch.append(queue.popleft()[1])
            if not queue:
                del self._channels[channel]
                heads.pop(i)
            elif queue[0][0] > now:
                heads.pop(i)
        return batch

    async def _main(self) -> None:
        while self.alive:
            batch = self._take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.batches += 1
            self.records += len(batch)
            delay = 0.01
            while True:  # as Processor._run: a batch the store failed to commit is applied again
                self._inflight = batch
                await asyncio.sleep(self.world.faults.commit_latency_s())  # fsync: handlers keep running
                if not self.alive:
                    return
                self._inflight = []
                try:
                    actions = self._apply_batch(batch)
                except StorageFailed as failed:
                    log.error("storage failed; retrying %d records in %.2fs", len(failed.rest), delay,
                              exc_info=failed.__cause__)  # fmt: skip
                    self.world.on_batch(batch[: len(batch) - len(failed.rest)], failed.actions)
                    self._act(failed.actions)
                    # Still owed, ahead of what is queued: a graceful stop during the pause applies these
                    # first (as Processor puts them back at the head of its queue), never the later records
                    # of the same invocation without them.
                    batch = self._inflight = failed.rest
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                self.world.on_batch(batch, actions)
                self._act(actions)
                break

    def _act(self, actions: list[Action]) -> None:
        if not self.alive or not actions:  # crashed right after the commit (before acting)
            return
        self._outbox.append(actions)
        at = max(self._deliver_at, self._loop.time() + self.world.faults.action_delay_s())
        self._deliver_at = at
        if at <= self._loop.time():
            self._loop.call_soon(self._deliver)
        else:
            self._loop.call_at(at, self._deliver)

    def _deliver(self) -> None:
        if self.alive and self._outbox:  # one call per batch, in commit order
            self._on_actions(self._outbox.popleft())

    def _apply_batch(self, batch: list[r.Record]) -> list[Action]:
        now = self._clock.now_ms()
        for record in batch:  # a timer must never fire before its time
            if isinstance(record, r.TimerFired):
                timer = self.world.store.timer_rows.get(record.timer_id)
                if timer is not None and timer.fire_at_ms > now:
                    self.world.violation(f"timer {timer} fired at {now}, {timer.fire_at_ms - now} ms early")
        return super()._apply_batch(batch)


def digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
