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
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from unbroken.core import limits
from unbroken.core.actions import Action, Reply
from unbroken.core.model import Schemas
from unbroken.core.records import Record
from unbroken.core.state_machine import apply
from unbroken.core.storage import Store, Transaction
from unbroken.runtime import faults
from unbroken.runtime.clock import Clock

log = logging.getLogger("unbroken.processor")

RETRY_DELAY_MIN_S = 0.01  # the first pause after the store failed; doubled per failure in a row
RETRY_DELAY_MAX_S = 1.0
STOP_TIMEOUT_S = 10.0
# A batch this small is committed on the loop itself: nothing else is queued, so the fsync holds up little,
# and it saves the two thread hand-offs (W1 at one connection: p50 0.90 -> 0.77 ms; no change at 16).
INLINE_COMMIT_RECORDS = 1  # bound of each wait in stop(): the queue to drain, the writer thread to exit


class StorageFailed(Exception):
    """The store could not commit (I/O error, disk full, busy): the failed transaction left no trace.

    The records are not lost: ``rest`` must be applied again (after a pause), in order. ``actions`` are
    those of the records that did commit before the failure (when applying one by one).
    """

    def __init__(self, actions: list[Action], rest: list[Record]) -> None:
        super().__init__(f"storage failed with {len(rest)} records to apply")
        self.actions = actions
        self.rest = rest


class _ApplyFailed(Exception):
    """``apply`` itself raised on a record (a bug or a poison record): only that record is dropped."""


@dataclass(slots=True)
class _Commit:
    """A batch applied on the loop, for the writer thread to commit (``transaction`` is the open one)."""

    transaction: Transaction
    batch: list[Record]
    actions: list[Action]


def _apply_one(txn: Transaction, record: Record, now: int, schemas: Schemas) -> list[Action]:
    try:
        return apply(txn, record, now, schemas)
    except Exception as exc:
        raise _ApplyFailed(repr(exc)) from exc


class Processor:
    """Applies records on the event loop, commits them on the writer thread, hands actions back in order.

    ``submit`` may be called from any thread (records from other threads are passed to the loop first).
    ``stop`` must be called from another thread than the loop's, while the loop runs (``asyncio.to_thread``).
    """

    def __init__(
        self,
        store: Store,
        schemas: Callable[[], Schemas],
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_actions: Callable[[list[Action]], None],
    ) -> None:
        self._store = store
        self._schemas = schemas
        self._clock = clock
        self._loop = loop
        self._on_actions = on_actions
        self._queue: deque[Record] = deque()
        self._commits: queue.SimpleQueue[_Commit | None] = queue.SimpleQueue()
        self._scheduled = False  # a _drain callback is pending on the loop
        self._committing = False  # a batch is with the writer thread
        self._paused = False  # the store failed: waiting before the batch is applied again
        self._retry_delay = RETRY_DELAY_MIN_S
        self._idle = threading.Event()
        self._loop_thread = 0
        self._running = True
        self._thread = threading.Thread(target=self._write, name="unbroken-processor", daemon=True)
        self.batches = 0
        self.records = 0

    def start(self) -> None:
        """Start the writer thread; called on the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Append a record. It is applied in a later batch, in submission order."""
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.submit, record)
            return
        self._queue.append(record)
        self._schedule()

    def stop(self) -> None:
        """Graceful stop: what is queued is applied and committed, then the writer thread exits."""
        assert threading.get_ident() != self._loop_thread, "stop() would wait on its own loop"
        self._idle.clear()
        self._loop.call_soon_threadsafe(self._stop_when_idle)
        self._idle.wait(timeout=STOP_TIMEOUT_S)
        self._running = False
        self._commits.put(None)
        self._thread.join(timeout=STOP_TIMEOUT_S)

    # ---------------------------------------------------------------------------------- the loop's side
    def _schedule(self) -> None:
        if not (self._scheduled or self._committing or self._paused) and self._queue and self._running:
            self._scheduled = True
            self._loop.call_soon(self._drain)  # after the callbacks ready now: they may add to the batch

    def _stop_when_idle(self) -> None:
        if not self._queue and not self._committing and not self._paused:
            self._running = False
            self._idle.set()
        else:
            self._loop.call_later(0.001, self._stop_when_idle)

    def _drain(self) -> None:
        self._scheduled = False
        if self._committing or self._paused or not self._queue:
            return
        queue_ = self._queue
        batch = [queue_.popleft() for _ in range(min(len(queue_), limits.batch_records_max))]
        self.batches += 1
        self.records += len(batch)
        now = self._clock.now_ms()
        schemas = self._schemas()
        try:
            txn = self._store.begin()
        except Exception as exc:
            self._retry_later(batch, [], exc)
            return
        try:
            actions = self._apply_all(txn, batch, now, schemas)
        except BaseException as exc:
            txn.rollback()
            if isinstance(exc, _ApplyFailed):
                log.exception("batch of %d records failed; applying them one by one", len(batch))
                self._one_by_one(batch, now, schemas)
            elif isinstance(exc, Exception) and not isinstance(exc, faults.InjectedFault):
                self._retry_later(batch, [], exc)  # the store, not a record: apply it all again later
            else:
                raise
            return
        self._committing = True
        commit = _Commit(txn, batch, actions)
        if len(batch) <= INLINE_COMMIT_RECORDS:
            self._commit(commit)()  # on the loop itself: nothing else is queued
        else:
            self._commits.put(commit)

    def _apply_all(self, txn: Transaction, batch: list[Record], now: int, schemas: Schemas) -> list[Action]:
        actions: list[Action] = []
        for i, record in enumerate(batch):
            actions.extend(_apply_one(txn, record, now, schemas))
            if i == 0 and len(batch) > 1:
                faults.point("processor.mid_batch")  # one record applied, the others not yet
        faults.point("processor.before_commit")
        return actions

    def _one_by_one(self, batch: list[Record], now: int, schemas: Schemas) -> None:
        """The rare path (a record whose apply raises): each record in its own transaction, on the loop."""
        try:
            actions = self._apply_one_by_one(batch, now, schemas)
        except StorageFailed as failed:
            self._retry_later(failed.rest, failed.actions, failed.__cause__)
            return
        self._act(actions)

    def _committed(self, actions: list[Action]) -> None:
        self._committing = False
        self._retry_delay = RETRY_DELAY_MIN_S
        self._act(actions)

    def _commit_failed(self, batch: list[Record], exc: BaseException) -> None:
        self._committing = False
        self._retry_later(batch, [], exc)

    def _act(self, actions: list[Action]) -> None:
        if actions:
            self._on_actions(actions)
        self._schedule()

    def _retry_later(self, rest: list[Record], actions: list[Action], exc: BaseException | None) -> None:
        """A batch is never dropped because the store failed: it goes back to the head of the queue."""
        log.error("storage failed; retrying %d records in %.2fs", len(rest), self._retry_delay, exc_info=exc)
        if actions:
            self._on_actions(actions)
        self._queue.extendleft(reversed(rest))
        self._paused = True
        self._loop.call_later(self._retry_delay, self._resume)
        self._retry_delay = min(self._retry_delay * 2, RETRY_DELAY_MAX_S)

    def _resume(self) -> None:
        self._paused = False
        self._schedule()

    # ------------------------------------------------------------------------------ the writer's side
    def _write(self) -> None:
        while True:
            commit = self._commits.get()
            if commit is None:
                return
            self._loop.call_soon_threadsafe(self._commit(commit))

    def _commit(self, commit: _Commit) -> Callable[[], None]:
        """COMMIT (the fsync, without the GIL) on the calling thread; returns what the loop does next."""
        try:
            commit.transaction.commit()
        except Exception as exc:  # busy, I/O error, disk full: the store rolled back
            return functools.partial(self._commit_failed, commit.batch, exc)
        faults.point("processor.after_commit")
        return functools.partial(self._committed, commit.actions)

    # --------------------------------------------------------- a whole batch in the calling thread
    def _apply_batch(self, batch: list[Record]) -> list[Action]:
        """Apply and commit ``batch`` here and now (the simulator's processor drives this)."""
        now = self._clock.now_ms()
        schemas = self._schemas()
        try:
            with self._store.transaction() as txn:
                actions = self._apply_all(txn, batch, now, schemas)
            faults.point("processor.after_commit")
            return actions
        except faults.InjectedFault:
            raise
        except _ApplyFailed:
            log.exception("batch of %d records failed; applying them one by one", len(batch))
        except Exception as exc:  # the store, not a record: nothing was applied, apply it all again
            raise StorageFailed([], batch) from exc
        return self._apply_one_by_one(batch, now, schemas)

    def _apply_one_by_one(self, batch: list[Record], now: int, schemas: Schemas) -> list[Action]:
        """Isolate a record whose apply raises so that the others still go through."""
        actions: list[Action] = []
        for i, record in enumerate(batch):
            try:
                with self._store.transaction() as txn:
                    produced = _apply_one(txn, record, now, schemas)
                actions.extend(produced)
            except _ApplyFailed as exc:
                log.critical("record dropped, apply failed: %r", record, exc_info=exc.__cause__)
                request_id = getattr(record, "request_id", 0)
                if request_id:
                    actions.append(Reply(request_id, "error", result=None, invocation_id=str(exc)))
            except Exception as exc:  # the store failed: this record and the rest are applied again later
                raise StorageFailed(actions, batch[i:]) from exc
        return actions
