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
            actions = self._apply_batch(batch)
            self.batches += 1
            self.records += len(batch)
            if actions:
                self._loop.call_soon_threadsafe(self._on_actions, actions)

    def _apply_batch(self, batch: list[Record]) -> list[Action]:
        now = self._clock.now_ms()
        schemas = self._schemas()
        actions: list[Action] = []
        try:
            with self._store.transaction() as txn:
                for record in batch:
                    actions.extend(apply(txn, record, now, schemas))
                faults.point("processor.before_commit")
            faults.point("processor.after_commit")
            return actions
        except faults.InjectedFault:
            raise
        except Exception:
            log.exception("batch of %d records failed; applying them one by one", len(batch))
        return self._apply_one_by_one(batch, now, schemas)

    def _apply_one_by_one(self, batch: list[Record], now: int, schemas: Schemas) -> list[Action]:
        """Isolate a record whose apply raises so that the others still go through."""
        actions: list[Action] = []
        for record in batch:
            try:
                with self._store.transaction() as txn:
                    produced = apply(txn, record, now, schemas)
                actions.extend(produced)
            except Exception as exc:
                log.critical("record dropped, apply failed: %r", record, exc_info=True)
                request_id = getattr(record, "request_id", 0)
                if request_id:
                    actions.append(Reply(request_id, "error", result=None, invocation_id=str(exc)))
        return actions
