"""The simulated partition processor and the observed in-memory store.

:class:`SimProcessor` is the production ``runtime.processor.Processor`` — the same batch loop: scheduling,
``state_machine.apply`` per record inside one store transaction, the pause and retry after a failed commit,
the stop, the crash-only recovery — with :class:`SimCommitter` in place of the writer thread. What the
simulator adds is *where it perturbs*:

* records are queued per *channel* (the records of one invocation keep their order, as the transport
  guarantees; independent records — different invocations, timers, clients — interleave in a seeded
  random order, some of them late). A record resolving an awakeable is not independent of its target's
  records sent before it: the partition stamps it, as it takes it in, with the live awakeable count of the
  target's attempt, which reflects them (``records.ResolveSignal.live_awakeables``); in production both
  enter one FIFO queue in that order, so here it arrives after them too (``_resolving``);
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
from unbroken.core.ids import InvalidId, parse_awakeable_id
from unbroken.core.invocation import Invocation, Status
from unbroken.core.journal import (
    FIRST_AWAKEABLE_SIGNAL,
    CompleteAwakeableCommand,
    Entry,
    Notification,
    Result,
    SendSignalCommand,
)
from unbroken.core.schema import HandlerKind, Schemas, Target
from unbroken.core.storage import ClusterView, Leadership, LeadershipChanged
from unbroken.runtime.clock import Clock
from unbroken.runtime.committer import Batch, CommitSink
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.processor import Processor
from unbroken.storage.codec import decode_entry, decode_invocation
from unbroken.storage.memory import MemoryStore, MemoryTransaction
from unbroken.testing.sim.faults import InjectedStorageError
from unbroken.testing.sim.leases import LeaseWorld, NodeLeases, cluster_view

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
        super().__init__(store)
        self.sim = store
        self.events: list[Event] = []
        self.leases = store.leases
        self.begun = {} if store.leases is None else dict(store.leases.epochs)  # the batch's leadership

    def commit(self) -> None:
        if self.sim.world.faults.storage_error():
            self.sim.failed_commits += 1
            self.rollback()
            raise InjectedStorageError(5, "injected: disk I/O error at commit")
        if self.leases is not None:
            try:
                self.leases.fence(self, self.begun)
            except Exception:
                self.rollback()
                raise
        super().commit()
        self.sim.world.on_commit(self.events)

    def put_invocation(self, inv: Invocation) -> None:
        prev = self._invocations.get(inv.id)
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

    # With leases, a write of a partition not led is refused by the fence at commit, as PostgreSQL's is (a
    # record of a partition lost while it waited in the queue): not a broken invariant.
    def _fence_id(self, invocation_id: str) -> None:
        if self.leases is None:
            super()._fence_id(invocation_id)

    def _fence_key(self, key: str) -> None:
        if self.leases is None:
            super()._fence_key(key)


class SimStore(MemoryStore):
    """Memory store with seeded commit failures and commit-time event reports."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.transactions = 0
        self.failed_commits = 0
        self.leases: NodeLeases | None = None  # this view's node's leases (``--leases``)
        self.lease_world: LeaseWorld | None = None

    def begin(self) -> ObservedTransaction:
        self.transactions += 1
        return ObservedTransaction(self)

    # ------------------------------------------------------------------ leadership (``--leases``)
    def leadership(self) -> Leadership | None:
        return None if self.leases is None else self.leases.leadership()

    def leads(self, part: int) -> bool:
        return super().leads(part) if self.leases is None else part in self.leases.leading

    def cluster(self) -> ClusterView | None:
        if self.lease_world is None:
            return None
        return cluster_view(self.lease_world.table, self.lease_world.nodes)

    def on_leadership(self, changed: LeadershipChanged) -> None:
        if self.leases is not None:
            self.leases.listeners.append(changed)

    @property
    def node(self) -> str:
        return "this node" if self.leases is None else self.leases.node

    # ------------------------------------------------------------------ read helpers for the invariants
    def invocation(self, invocation_id: str) -> Invocation | None:
        data = self.invocations.get(invocation_id)
        return None if data is None else decode_invocation(data, invocation_id, check=False)

    def all_invocations(self) -> list[Invocation]:
        return [decode_invocation(b, i, check=False) for i, b in self.invocations.items()]

    def journal_of(self, invocation_id: str) -> list[Entry]:
        """The committed journal."""
        return [decode_entry(b) for b in self.journals.get(invocation_id, ())]


# -------------------------------------------------------------------------------------- processor
_INVOCATION_RECORDS = (r.JournalCommand, r.ProposeRunCompletion, r.AttemptSuspended, r.AttemptFailed)


_AFTER_S = 1e-6  # a record that must arrive after another: this much later


def _resolving(record: r.Record) -> str | None:
    """The invocation whose awakeable ``record`` resolves, whose live count it was stamped with."""
    if isinstance(record, r.ResolveSignal):
        return record.invocation_id
    if isinstance(record, r.JournalCommand):
        command = record.command
        if isinstance(command, CompleteAwakeableCommand):
            try:
                return str(parse_awakeable_id(command.awakeable_id)[0])
            except InvalidId:
                return None
        if isinstance(command, SendSignalCommand) and command.idx >= FIRST_AWAKEABLE_SIGNAL:
            return command.target_invocation_id
    return None


class SimCommitter:
    """The committer of the production batch loop on the virtual loop: a batch's COMMIT happens after a
    seeded virtual "fsync" time (handlers keep running meanwhile, as they do during a real fsync), may fail
    (``SimStore``: rolled back, the processor retries it) and may be followed by a crash before any of the
    batch's actions ran."""

    def __init__(self, world: World, faults: FaultPoints) -> None:
        self.world = world
        self.faults = faults
        self.alive = True
        self._sink: CommitSink | None = None
        self.batch: Batch | None = None  # with the committer: applied, not committed yet

    def start(self, sink: CommitSink) -> None:
        self._sink = sink

    def commit(self, batch: Batch) -> None:
        self.batch = batch
        loop = asyncio.get_running_loop()
        loop.call_later(self.world.faults.commit_latency_s(), self._commit)

    def _commit(self) -> None:
        batch, self.batch = self.batch, None
        if not self.alive or batch is None:
            return  # the process died meanwhile: kill() rolled the transaction back
        sink = self._sink
        assert sink is not None
        try:
            batch.transaction.commit()
        except Exception as exc:  # InjectedStorageError: rolled back, nothing of it happened
            sink.commit_failed(batch, exc)
            return
        self.faults.point("processor.after_commit")
        txn = batch.transaction
        node = f" [{txn.leases.node}]" if isinstance(txn, ObservedTransaction) and txn.leases else ""
        self.world.on_batch(batch.records, batch.actions, node)  # may crash the process right here
        if self.alive:
            sink.committed(batch)

    async def stop(self) -> None:
        pass

    def kill(self) -> None:
        self.alive = False
        batch, self.batch = self.batch, None
        if batch is not None:
            batch.transaction.rollback()  # never committed: the process died during its fsync


class SimProcessor(Processor):
    """The production ``Processor`` with :class:`SimCommitter`, and the simulator's perturbations of what
    surrounds it: records reach its queue late (per channel: the records of one invocation keep their
    order, independent ones interleave), batches take a seeded number of records, and committed actions
    reach the engine after a seeded delay, in commit order. The batching itself (scheduling, the pause and
    retries after a store failure, stop, the crash-only recovery) is the production code's, unchanged."""

    def __init__(
        self,
        world: World,
        store: Any,
        schemas: Callable[[], Schemas],
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_actions: Callable[[list[Action]], None],
        faults: FaultPoints,
    ) -> None:
        self.committer = SimCommitter(world, faults)
        super().__init__(store, schemas, clock, loop, self._push, self.committer, faults)
        self.world = world
        self.alive = True
        self._act_now = on_actions
        self._channels: dict[object, deque[tuple[float, r.Record]]] = {}
        self._outbox: deque[list[Action]] = deque()
        self._deliver_at = 0.0
        self._solo = 0
        self._stopping = False

    # ------------------------------------------------------------------------------- arrivals
    def submit(self, record: r.Record) -> None:
        if not self.alive:
            return  # a dead process's queue
        now = self._loop.time()
        ready = (
            now
            if self._stopping
            else now + self.world.faults.record_delay_s(isinstance(record, r.TimerFired))
        )
        target = _resolving(record)
        if target is not None:  # after what its target's attempt sent before it (see the module's doc)
            sent = self._channels.get(target)
            if sent:  # strictly later: records due at the same instant arrive in no set order
                ready = max(ready, sent[-1][0] + _AFTER_S)
        channel = self._channel(record)
        queue = self._channels.get(channel)
        if queue is None:
            if ready <= now:
                super().submit(record)
                return
            queue = self._channels[channel] = deque()
        elif queue:
            ready = max(ready, queue[-1][0])  # one channel stays FIFO
        queue.append((ready, record))
        self._loop.call_at(ready, self._arrive, channel)

    def _channel(self, record: r.Record) -> object:
        if isinstance(record, _INVOCATION_RECORDS):
            return record.invocation_id
        self._solo += 1
        return self._solo  # independent of everything else

    def _arrive(self, channel: object) -> None:
        queue = self._channels.get(channel)
        if not self.alive or queue is None:
            return
        now = self._loop.time()
        while queue and queue[0][0] <= now:
            super().submit(queue.popleft()[1])
        if not queue:
            del self._channels[channel]

    def _flush_arrivals(self) -> None:
        """Everything in transit arrives now, earliest first (a graceful stop applies what was sent)."""
        pending = sorted(
            ((ready, n, record) for ch, q in self._channels.items() for n, (ready, record) in enumerate(q)),
            key=lambda x: (x[0], x[1]),
        )
        self._channels.clear()
        for _, _, record in pending:
            super().submit(record)

    def purge(self, drop: Callable[[r.Record], bool], message: str) -> None:
        """Records still in transit here are queued ones in production (``submit`` queues at once): the
        purge of a partition let go drops them too."""
        for channel, queue in list(self._channels.items()):
            gone = [record for _, record in queue if drop(record)]
            if gone:
                self._channels[channel] = deque(x for x in queue if not drop(x[1]))
                self._queue.extend(gone)
        super().purge(drop, message)

    def _batch_records_max(self) -> int:
        return self.world.faults.batch_size()

    def _take(self) -> list[r.Record]:
        batch = super()._take()
        now = self._clock.now_ms()
        for record in batch:  # a timer must never fire before its time
            if isinstance(record, r.TimerFired):
                timer = self.world.store.timer_rows.get(record.timer_id)
                if timer is not None and timer.fire_at_ms > now:
                    self.world.violation(f"timer {timer} fired at {now}, {timer.fire_at_ms - now} ms early")
        return batch

    # ------------------------------------------------------------------------------- actions
    def _push(self, actions: list[Action]) -> None:
        if not self.alive or not actions:
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
            self._act_now(self._outbox.popleft())

    # ------------------------------------------------------------------------------- life
    async def aclose(self) -> None:
        """Graceful stop: what was sent arrives, the production stop drains the queue (waiting out a retry
        pause), the actions already committed run, then the process exits."""
        if not self.alive:
            return
        self._stopping = True
        self._flush_arrivals()
        await super().aclose()
        while self.alive and self._outbox:  # the loop still runs what was handed to it
            self._act_now(self._outbox.popleft())
        self.kill()

    def kill(self) -> None:
        """The process died: queued records, the batch being committed and undelivered actions are gone."""
        self.alive = False
        self.committer.kill()
        self.drop()
        self._channels.clear()
        self._outbox.clear()

    def pending(self) -> int:
        in_flight = 1 if self.committer.batch is not None else 0
        return sum(len(q) for q in self._channels.values()) + len(self._outbox) + self.queued() + in_flight


def digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
