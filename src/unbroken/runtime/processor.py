"""The partition processor: read records, apply them in one transaction, commit, then act.

Records are applied on the event loop's thread and committed on a writer thread. The loop (ingress,
handlers, timers) appends records to a queue; when no commit is in flight, a loop callback takes up to
``batch_records_max`` of them, opens a transaction and applies each with the pure state machine. The
writer thread then commits it (one fsync for the whole batch: group commit) and only then are the actions
handed back to the loop. While the writer waits on fsync (which releases the GIL) the loop keeps serving
requests and running handlers, so the next batch fills up.

Why the apply is on the loop: the records are Python work either way, and when a second thread applied
them it had to win the GIL back from the loop after each of its ~4 SQLite calls per record. Measured at W1
with 128 connections: 45 us per record in that thread against 17 us alone, and +21% throughput once the
apply moved to the loop (BENCHMARKS.md). The writer thread now takes the GIL once per batch. A batch of
one record is committed on the loop itself (``INLINE_COMMIT_RECORDS``).

Where and when a batch's COMMIT happens is the injected committer's business (``runtime/committer.py``:
the writer thread in production, a virtual-time committer in the simulator); everything else here — what is
scheduled, the commit in flight, the pause and retry delay, the stop, the crash-only recovery — is the one
batch loop both run.

Errors (crash-only; the tree is drawn in ``core/errors.py``):

* a ``TransactionConflict`` (another partition sharing the store changed a row; PostgreSQL's serialization
  failures in strict mode): the batch was rolled back and is applied again at once, an INFO line, no 503;
  ``conflict_retries_max`` of them in a row and they are handled as a store failure (below).
* the store fails (a statement or the COMMIT: disk full, I/O error, busy): the batch is rolled back and goes
  back to the head of the queue; nothing of it was acknowledged and nothing is dropped. Until a commit
  succeeds again the records go one per transaction, control records (kill, cancel, ...) first, and the
  engine refuses new requests (503). A record the store refuses ``record_store_attempts_max`` times alone,
  for its size (disk or database full, a value too big), is given up: its caller is answered
  ``store_failed``, or its invocation is failed (``FailInvocation``); on an I/O error it waits.
* ``apply`` raises anything else (an ``InvariantViolation``, a bug, a corrupt row): the batch is rolled
  back, the engine drops its memory (attempts, timers, queued records nobody waits on) and recovers from
  storage; queued requests stay queued. The same violation again stops the partition for good, loudly.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable

from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Action, Reply, StoreFailed, Unavailable
from unbroken.core.errors import TransactionConflict
from unbroken.core.journal import Failure
from unbroken.core.records import Record
from unbroken.core.schema import Schemas
from unbroken.core.state_machine import apply
from unbroken.core.storage import PartitionLost, Store, StoreError, Transaction
from unbroken.runtime.clock import Clock
from unbroken.runtime.committer import Batch, Committer, ThreadCommitter
from unbroken.runtime.faults import FaultPoints, InjectedFault
from unbroken.runtime.stats import EngineStats
from unbroken.runtime.takeover import record_partition_key

log = logging.getLogger("unbroken.processor")

# Records that never wait behind one the store keeps refusing (they are small and unblock the operator).
CONTROL_RECORDS = (
    r.KillInvocation,
    r.CancelInvocation,
    r.PauseInvocation,
    r.ResumeInvocation,
    r.PurgeInvocation,
    r.PurgeJournal,
)
# What a running attempt sends: when the store keeps refusing one, its invocation is failed.
ATTEMPT_RECORDS = (r.JournalCommand, r.ProposeRunCompletion)
# sqlite3 errors that are the record's or the code's fault, not the store's: a constraint, a misuse.
_NOT_STORE_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def _may_never_fit(exc: BaseException) -> bool:
    """Whether ``exc`` is about the record's size (the disk or the database is full, a value is too big):
    only then may a record the store keeps refusing be given up. An I/O error fails every record alike, so
    the engine waits for the store instead (503 meanwhile): giving up would turn a transient fault into
    failed work (the simulator's seed 94935 at --intensity 3: an approval lost, its workflow stuck)."""
    text = str(exc).lower()
    return getattr(exc, "errno", None) == errno.ENOSPC or "full" in text or "too big" in text


class StorageFailed(Exception):
    """The store failed (a statement or the COMMIT: I/O error, disk full, busy); the transaction rolled back.

    A store may raise it for a failure that is not an ``OSError``/``sqlite3`` error (the batch loop treats it
    as one, ``is_store_error``). The records are not lost: ``rest`` must be applied again (after a pause), in
    order; ``actions`` are those of records that did commit before the failure.
    """

    def __init__(self, actions: list[Action], rest: list[Record]) -> None:
        super().__init__(f"storage failed with {len(rest)} records to apply")
        self.actions = actions
        self.rest = rest


def is_store_error(exc: BaseException) -> bool:
    """The store failed, not the record nor the code: roll back and apply the same records again later."""
    if isinstance(exc, sqlite3.Error):
        return not isinstance(exc, _NOT_STORE_ERRORS)
    return isinstance(exc, OSError | MemoryError | StorageFailed | StoreError | TransactionConflict)


def describe(record: Record) -> str:
    """A record for the log: its type, ids and sizes, never its values (a value can be 32 MiB)."""
    parts = [type(record).__name__]
    invocation_id = getattr(record, "invocation_id", None)
    if invocation_id:
        parts.append(str(invocation_id))
    command = getattr(record, "command", None)
    if command is not None:
        parts.append(type(command).__name__)
    request_id = getattr(record, "request_id", 0)
    if request_id:
        parts.append(f"request {request_id}")
    size = _payload_bytes(record)
    if size:
        parts.append(f"{size} bytes")
    return " ".join(parts)


def _payload_bytes(record: Record) -> int:
    total = 0
    for holder in (record, getattr(record, "command", None), getattr(record, "result", None)):
        for name in ("argument", "value", "parameter", "body"):
            value = getattr(holder, name, None)
            if isinstance(value, bytes | str):
                total += len(value)
    return total


def _failed_reply(
    request_id: int, outcome: type[StoreFailed | Unavailable], code: int, message: str
) -> Reply:
    """A request refused without being applied: the HTTP status and message in the outcome's failure."""
    return Reply(request_id, outcome(Failure(code, message)))


class Processor:
    """The batch loop: applies records on the event loop, hands each batch to its committer, acts in order.

    The same class runs in production (``ThreadCommitter``: the writer thread) and in the simulator (a
    virtual-time committer): only where and when a batch's COMMIT happens differs.

    ``submit`` may be called from any thread (records from other threads are passed to the loop first).
    ``aclose`` (on the loop) or ``stop`` (from another thread) drains what is queued, then stops.
    ``on_violation(message)`` is called on the loop after an invariant violation rolled a batch back: the
    engine drops its memory and recovers from storage; ``on_store_failing()`` when commits start failing.
    ``store_error`` and ``halted`` say why the processor cannot take new work (both None when healthy).
    """

    def __init__(
        self,
        store: Store,
        schemas: Callable[[], Schemas],
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_actions: Callable[[list[Action]], None],
        committer: Committer | None = None,
        faults: FaultPoints | None = None,
    ) -> None:
        self._store = store
        self._schemas = schemas
        self._clock = clock
        self._loop = loop
        self._on_actions = on_actions
        self._faults = faults if faults is not None else FaultPoints()
        self._committer = committer if committer is not None else ThreadCommitter(loop, self._faults)
        self.on_violation: Callable[[str], None] = lambda message: None
        self.on_store_failing: Callable[[], None] = lambda: None
        self._queue: deque[Record] = deque()
        self._scheduled = False  # a _drain callback is pending on the loop
        self._committing = False  # a batch is with the committer
        self._paused = False  # the store failed: waiting before the batch is applied again
        self._retry_delay = limits.store_retry_delay_min_s
        self._failures: dict[int, int] = {}  # id(record) -> commits of it alone the store refused
        self._conflicts = 0  # transaction conflicts in a row (each batch applied again at once)
        self._withdrawn: set[int] = set()  # request ids whose callers left before their record was applied
        self._violations: set[str] = set()
        self._suspects = 0  # records of a batch that broke an invariant: applied one per transaction
        self.store_error: str | None = None  # the last store failure, until a commit succeeds
        self.halted: str | None = None  # the same invariant broke twice: stopped for good
        self._idle: asyncio.Future[None] | None = None  # set while stopping: resolved once drained
        self._loop_thread = 0
        self._running = True
        self.batches = 0
        self.records = 0
        self.stats = EngineStats()  # the node's replaces it (``Partition``): batch sizes, commit latency
        # The partition inbox (records other nodes' batches sent to the partitions this node leads): looked
        # in by the next batch when due, every ``inbox_poll_interval_s`` and when the store hints.
        self._inbox_due = False
        self._inbox_poll: asyncio.TimerHandle | None = None
        self.inbox_records = 0  # records taken from the inbox and committed or tried
        # stamps a record taken from the inbox with what the runtime knows now (the live awakeable count of
        # the attempt a ResolveSignal is for: it runs here, not on the node that sent it)
        self.stamp_inbox: Callable[[Record], Record] | None = None

    def start(self) -> None:
        """Start the committer; called on the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._committer.start(self)
        if self._store.watch_inbox(self._inbox_hint):  # a store of one node: never (no work, no timer)
            self._poll_inbox()

    def _inbox_hint(self) -> None:
        """The store says records may have arrived (a NOTIFY; any thread)."""
        try:
            self._loop.call_soon_threadsafe(self._inbox_wake)
        except RuntimeError:  # the loop is closed: the node is gone, and the next leader looks itself
            pass

    def _inbox_wake(self) -> None:
        self._inbox_due = True
        self._schedule()

    def _poll_inbox(self) -> None:
        """Look in the inbox now and every ``inbox_poll_interval_s``: a lost hint delays a record by that
        much at most."""
        if self._running:
            self._inbox_wake()
            self._inbox_poll = self._loop.call_later(limits.inbox_poll_interval_s, self._poll_inbox)

    def _stop_polling(self) -> None:
        if self._inbox_poll is not None:
            self._inbox_poll.cancel()
            self._inbox_poll = None

    def submit(self, record: Record) -> None:
        """Append a record. It is applied in a later batch, in submission order."""
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.submit, record)
            return
        self._queue.append(record)
        self._schedule()

    def purge(self, drop: Callable[[Record], bool], message: str) -> None:
        """Drop the queued records ``drop`` names (their partition moved to another node): never applied;
        their callers are answered 503 with ``message`` (nothing of their request was accepted)."""
        kept: deque[Record] = deque()
        replies: list[Action] = []
        for record in self._queue:
            if not drop(record):
                kept.append(record)
            elif request_id := getattr(record, "request_id", 0):
                replies.append(_failed_reply(request_id, Unavailable, 503, message))
        self._queue = kept
        self._suspects = min(self._suspects, len(kept))
        if replies:
            self._on_actions(replies)

    def queued(self) -> int:
        return len(self._queue)

    def idle(self) -> bool:
        """Nothing queued, being applied, committed or waiting out a store failure (virtual time in tests
        jumps only when every partition is idle)."""
        return not (self._queue or self._scheduled or self._committing or self._paused)

    def withdraw(self, request_id: int) -> None:
        """The caller of ``request_id`` left: if its record is still queued, it is never applied."""
        if any(getattr(record, "request_id", 0) == request_id for record in self._queue):
            self._withdrawn.add(request_id)

    async def aclose(self) -> None:
        """Graceful stop, on the loop: what is queued is applied and committed, then the committer stops."""
        if self._running:
            self._idle = self._loop.create_future()
            self._check_idle()
            wait_s = limits.processor_stop_timeout_s
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), wait_s)
            except TimeoutError:
                log.error("stop: %d records still queued after %.0fs", len(self._queue), wait_s)
            self._running = False
        self._stop_polling()
        await self._committer.stop()

    def stop(self) -> None:
        """Graceful stop from another thread than the loop's, while the loop runs (``asyncio.to_thread``)."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("Processor.stop() would wait on its own loop: call it from another thread")
        asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result(
            timeout=2 * limits.processor_stop_timeout_s + 1
        )

    def drop(self) -> None:
        """The process died (the simulator's crash): nothing queued is applied, nothing more is acted on."""
        self._running = False
        self._queue.clear()
        self._stop_polling()

    # ---------------------------------------------------------------------------------- the loop's side
    def _schedule(self) -> None:
        if (
            not (self._scheduled or self._committing or self._paused)
            and (self._queue or self._inbox_due)
            and self._running
        ):
            if self.halted is None:
                self._scheduled = True
                self._loop.call_soon(self._drain)  # after the callbacks ready now: they may add to the batch
                return
        self._check_idle()

    def _check_idle(self) -> None:
        idle = self._idle
        if idle is None or idle.done():
            return
        if self.halted is not None or not (
            self._queue or self._committing or self._paused or self._scheduled
        ):
            idle.set_result(None)

    def _drain(self) -> None:
        self._scheduled = False
        if (
            self._committing
            or self._paused
            or self.halted is not None
            or not (self._queue or self._inbox_due)
            or not self._running
        ):
            self._check_idle()
            return
        batch = self._take() if self._queue else []
        inbox, self._inbox_due = self._inbox_due, False
        if not batch and not inbox:  # only withdrawn records were left
            if not self._queue and self.store_error is not None:
                # nothing waits on the store now: let new requests in, the next one finds out
                self.store_error = None
                self._failures.clear()
            self._schedule()
            return
        now = self._clock.now_ms()
        schemas = self._schemas()
        try:
            txn = self._store.begin()
        except Exception as exc:
            self._store_failed(batch, exc)
            return
        try:
            records = batch
            if inbox:
                taken = self._take_inbox(txn, batch)
                if taken is None:
                    return  # nothing arrived, and nothing else to apply
                records = taken + batch
            self.batches += 1
            self.records += len(records)
            actions = self._apply_all(txn, records, now, schemas)
        except BaseException as exc:
            try:
                txn.rollback()
            except Exception as rollback:  # noqa: BLE001 - the rollback failed too: the store is failing
                log.error("rollback failed: %r", rollback)
            self._apply_failed(batch, exc)
            return
        self._committing = True
        self.stats.batch_records.observe(len(batch))
        self._committer.commit(Batch(txn, batch, actions, time.perf_counter()))

    def _take_inbox(self, txn: Transaction, batch: list[Record]) -> list[Record] | None:
        """The records other nodes' batches sent to the partitions led here (oldest first), taken in ``txn``
        and applied before ``batch``: exactly once, with it. They are never queued here: should the batch
        fail, the rollback leaves them in the inbox for the next look. None: nothing arrived and ``batch``
        is empty (the transaction was rolled back)."""
        limit = limits.inbox_records_per_batch_max
        taken = txn.take_inbox(limit)
        if not taken and not batch:
            txn.rollback()
            self._schedule()
            return None
        self._inbox_due = len(taken) == limit  # more may wait: the next batch looks again
        self.inbox_records += len(taken)
        stamp = self.stamp_inbox
        return taken if stamp is None else [stamp(record) for record in taken]

    def _batch_records_max(self) -> int:
        return limits.batch_records_max

    def _take(self) -> list[Record]:
        """The next batch. While the store fails: one record, a queued control record first."""
        queue_ = self._queue
        if self._suspects:  # after a violation: the culprit alone breaks it again, the others commit
            self._suspects -= 1
            return self._skip_withdrawn([queue_.popleft()])
        if self.store_error is not None:
            if self._failures:
                for i, record in enumerate(queue_):
                    if isinstance(record, CONTROL_RECORDS):
                        del queue_[i]
                        return [record]
            return self._skip_withdrawn([queue_.popleft()])
        batch = [queue_.popleft() for _ in range(min(len(queue_), self._batch_records_max()))]
        return self._skip_withdrawn(batch) if self._withdrawn else batch

    def _skip_withdrawn(self, batch: list[Record]) -> list[Record]:
        if not self._withdrawn:
            return batch
        kept = []
        for record in batch:
            request_id = getattr(record, "request_id", 0)
            if request_id in self._withdrawn:
                self._withdrawn.discard(request_id)
                log.warning("not applied, its caller left: %s", describe(record))
            else:
                kept.append(record)
        return kept

    def _apply_all(self, txn: Transaction, batch: list[Record], now: int, schemas: Schemas) -> list[Action]:
        actions: list[Action] = []
        # the rows the batch will read first (most records name one): on PostgreSQL one round trip, not one each
        named: list[str] = []
        new: list[str] = []  # minted from fresh bytes: no row holds them (``records.Invoke.new_id``)
        for record in batch:
            if type(record) is r.Invoke and record.new_id:
                new.append(record.invocation_id)
            elif hasattr(record, "invocation_id"):
                named.append(record.invocation_id)
        txn.prefetch_invocations(named, new)
        for i, record in enumerate(batch):
            actions.extend(apply(txn, record, now, schemas))
            if i == 0 and len(batch) > 1:
                self._faults.point("processor.mid_batch")  # one record applied, the others not yet
        self._faults.point("processor.before_commit")
        return actions

    def _apply_failed(self, batch: list[Record], exc: BaseException) -> None:
        if isinstance(exc, InjectedFault) or not isinstance(exc, Exception):
            raise exc
        if is_store_error(exc):
            self._store_failed(batch, exc)  # a statement failed: exactly like a failed COMMIT
        else:
            self._violated(batch, exc)

    def committed(self, batch: Batch) -> None:
        """The committer committed ``batch``: act on it (on the loop, in commit order)."""
        actions = batch.actions
        self._committing = False
        self.stats.commit_s.observe(time.perf_counter() - batch.applied_s)
        self._retry_delay = limits.store_retry_delay_min_s
        self._failures.clear()
        self._conflicts = 0
        if self.store_error is not None:
            log.warning("the store commits again")
            self.store_error = None
        self._act(actions)

    def commit_failed(self, batch: Batch, exc: BaseException) -> None:
        """The store refused ``batch``'s COMMIT (and rolled it back): nothing of it happened."""
        self._committing = False
        self.stats.commit_failures += 1
        self._store_failed(batch.records, exc)

    def _act(self, actions: list[Action]) -> None:
        if actions:
            self._on_actions(actions)
        self._schedule()

    # ------------------------------------------------------------------------------------ failures
    def _store_failed(self, batch: list[Record], exc: BaseException) -> None:
        """Nothing of ``batch`` was stored nor acknowledged: it goes back to the head of the queue."""
        self._inbox_due = self._inbox_poll is not None  # what the batch took from the inbox is still there
        if isinstance(exc, PartitionLost):
            self._partition_lost(batch, exc)
            return
        if isinstance(exc, TransactionConflict) and self._conflicts < limits.conflict_retries_max:
            self._conflicts += 1
            log.info("a transaction conflict, %d records applied again: %s", len(batch), exc)
            self._queue.extendleft(reversed(batch))
            self._schedule()
            return
        first = self.store_error is None
        self.store_error = f"the store is failing: {exc}"
        if first:
            self.on_store_failing()
        if len(batch) == 1:
            record = batch[0]
            failures = self._failures[id(record)] = self._failures.get(id(record), 0) + 1
            if (
                failures >= limits.record_store_attempts_max
                and _may_never_fit(exc)
                and self._give_up(record, exc, failures)
            ):
                batch = []
        log.error(
            "storage failed; retrying %d records in %.2fs (%s): %s",
            len(batch),
            self._retry_delay,
            exc,
            ", ".join(describe(record) for record in batch[:3]),
            exc_info=exc,
        )
        self._queue.extendleft(reversed(batch))
        self._paused = True
        self._loop.call_later(self._retry_delay, self._resume)
        self._retry_delay = min(self._retry_delay * 2, limits.store_retry_delay_max_s)

    def _partition_lost(self, batch: list[Record], exc: PartitionLost) -> None:
        """The batch wrote a storage partition led by another node now (it was handed over or taken while
        the batch was applied): that does not pass. Alone, the record is given up (its caller answered
        503, to retry where the partition is led; its partition's new leader recovers the rest from
        storage); in a batch, the records go one per transaction, so the others commit."""
        if len(batch) != 1:  # (none: the batch applied records from the inbox only, which stay there)
            self._queue.extendleft(reversed(batch))
            self._suspects = len(batch)
            self._schedule()
            return
        record = batch[0]
        key = record_partition_key(record)
        store = self._store
        if (
            key is not None
            and exc.parts
            and store.leads(store.partition_of(key))
            and not any(store.leads(part) for part in exc.parts)
        ):
            # Its own partition is still led here: those lost are where its effects wrote (a call to a key
            # there). The store knows they are lost now, so applied again those go through their inbox.
            # Given up, the attempt's journal would have a hole (found by the simulator, --leases seed 62:
            # a CallCommand dropped, its invocation suspended for ever on the call's result).
            log.info("applied again, a partition it wrote is led by another node now (%s)", exc)
            self._queue.appendleft(record)
            self._schedule()
            return
        log.warning("not applied, its partition is led by another node (%s): %s", exc, describe(record))
        request_id = getattr(record, "request_id", 0)
        if request_id:
            self._on_actions([_failed_reply(request_id, Unavailable, 503, f"{exc}; retry")])
        self._schedule()

    def _give_up(self, record: Record, exc: BaseException, failures: int) -> bool:
        """The store refused ``record`` alone ``failures`` times: answer its caller, or fail its invocation.

        Records nobody waits on and that no attempt sent (timers, recovery, suspensions) are small and are
        never given up: if the store refuses them it refuses everything, and they wait for it.
        """
        code = 507 if "full" in str(exc).lower() else 500
        message = (
            f"the engine could not store {describe(record)} after {failures} attempts ({exc}); "
            "nothing of it was kept"
        )
        del self._failures[id(record)]
        request_id = getattr(record, "request_id", 0)
        if request_id:
            log.error("given up, caller answered %d: %s", code, message)
            self._on_actions([_failed_reply(request_id, StoreFailed, code, message)])
            return True
        if isinstance(record, ATTEMPT_RECORDS):
            log.error("given up, invocation failed with %d: %s", code, message)
            self._queue.appendleft(r.FailInvocation(record.invocation_id, record.attempt, code, message))
            return True
        return False

    def _violated(self, batch: list[Record], exc: Exception) -> None:
        """An invariant broke (or apply raised a bug): recover from storage, or stop if it broke before."""
        message = f"{type(exc).__name__}: {exc}"
        records = ", ".join(describe(record) for record in batch[:3]) + (", ..." if len(batch) > 3 else "")
        log.critical(
            "invariant violated applying %d records (%s): %s", len(batch), records, message, exc_info=exc
        )
        again = message in self._violations
        self._violations.add(message)
        # what a caller waits on stays queued (never acknowledged); the rest comes back from storage
        waiting = [record for record in batch if getattr(record, "request_id", 0)]
        self._queue.extendleft(reversed(waiting))
        if again or len(self._violations) > limits.invariant_recoveries_max:
            self.halted = (
                f"stopped: an invariant broke again ({message}); fix the cause and restart the server"
            )
            log.critical("partition %s", self.halted)
            self._answer_queued(self.halted)
            self.on_violation(self.halted)
            self._check_idle()
            return
        self._queue = deque(record for record in self._queue if getattr(record, "request_id", 0))
        self._suspects = len(waiting)
        self.on_violation(message)  # the engine drops its memory and submits what recovery needs
        self._schedule()

    def _answer_queued(self, message: str) -> None:
        """Answer every queued caller 503 (their records were never applied) and empty the queue."""
        replies: list[Action] = [
            _failed_reply(request_id, Unavailable, 503, message)
            for request_id in (getattr(record, "request_id", 0) for record in self._queue)
            if request_id
        ]
        self._queue.clear()
        if replies:
            self._on_actions(replies)

    def _resume(self) -> None:
        self._paused = False
        self._schedule()
