"""The partition processor: read records, apply them in one transaction, commit, then act.

One writer thread owns the store. The event loop (ingress, handlers) appends records to a queue; the
writer drains up to ``batch_records_max`` records, applies each with the pure state machine inside one
transaction and commits (one fsync for the whole batch: group commit). Only then are the actions handed
back to the event loop. While the writer waits on fsync (which releases the GIL) the loop keeps running
handlers, so the next batch fills up: that overlap is where the throughput comes from.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from unbroken.core import limits
from unbroken.core.actions import Action, Reply
from unbroken.core.model import Schemas
from unbroken.core.records import Record
from unbroken.core.state_machine import apply
from unbroken.runtime import faults
from unbroken.runtime.clock import Clock

log = logging.getLogger("unbroken.processor")


class Store(Protocol):
    def transaction(self) -> Any: ...


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


def _apply_one(txn: Any, record: Record, now: int, schemas: Schemas) -> list[Action]:
    try:
        return apply(txn, record, now, schemas)
    except Exception as exc:
        raise _ApplyFailed(repr(exc)) from exc


class Processor:
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
        self._cv = threading.Condition()
        self._idle = False
        self._running = True
        self._thread = threading.Thread(target=self._run, name="unbroken-processor", daemon=True)
        self.batches = 0
        self.records = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Append a record (any thread). It is applied in a later batch, in submission order."""
        self._queue.append(record)
        if self._idle:
            with self._cv:
                self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        self._thread.join(timeout=10)

    def _next_batch(self) -> list[Record] | None:
        queue = self._queue
        if not queue:
            with self._cv:
                while not queue and self._running:
                    self._idle = True
                    self._cv.wait()
                self._idle = False
            if not self._running and not queue:
                return None
        n = min(len(queue), limits.batch_records_max)
        return [queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self.batches += 1
            self.records += len(batch)
            delay = 0.01
            while True:  # a batch is never dropped because the store failed: retry it until it commits
                try:
                    actions = self._apply_batch(batch)
                    break
                except StorageFailed as failed:
                    log.error("storage failed; retrying %d records in %.2fs", len(failed.rest), delay,
                              exc_info=failed.__cause__)  # fmt: skip
                    if failed.actions:
                        self._loop.call_soon_threadsafe(self._on_actions, failed.actions)
                    batch = failed.rest
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            if actions:
                self._loop.call_soon_threadsafe(self._on_actions, actions)

    def _apply_batch(self, batch: list[Record]) -> list[Action]:
        now = self._clock.now_ms()
        schemas = self._schemas()
        actions: list[Action] = []
        try:
            with self._store.transaction() as txn:
                for i, record in enumerate(batch):
                    actions.extend(_apply_one(txn, record, now, schemas))
                    if i == 0 and len(batch) > 1:
                        faults.point("processor.mid_batch")  # one record applied, the others not yet
                faults.point("processor.before_commit")
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
