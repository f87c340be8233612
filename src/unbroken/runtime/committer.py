"""How a batch the processor applied gets committed: the one part of the batch loop that differs between
production and the simulator.

The processor (``runtime/processor.py``) owns everything else — the queue, what is scheduled, the commit in
flight, the pause and retry delay after a store failure, the stop, the crash-only recovery — and hands each
applied batch (its open transaction) to its committer. The committer commits it, wherever and whenever it
does, and then calls back on the loop, in commit order: ``processor.committed(batch)`` or
``processor.commit_failed(batch, exc)``. One batch is with the committer at a time.

* :class:`ThreadCommitter` (production): the COMMIT — the fsync, which releases the GIL — on a writer
  thread, while the loop keeps serving; a batch of ``INLINE_COMMIT_RECORDS`` is committed on the loop
  itself (nothing else was queued: the two thread hand-offs would cost more than they overlap). A batch
  whose transaction can send its COMMIT without waiting (``commit_nowait``: PostgreSQL's one simple query,
  ``storage/postgres_commit.py``) is sent by the loop, which then watches the socket for the answer: no
  thread, no wait. Only a failed answer goes to the writer thread to be settled (it may wait on the server).
* the simulator's committer (``testing/sim/processor.py``) commits after a seeded virtual "fsync" time on
  the virtual loop, and may fail the commit or crash the process right after it.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from unbroken.core import limits
from unbroken.core.actions import Action
from unbroken.core.records import Record
from unbroken.core.storage import Transaction
from unbroken.runtime.faults import FaultPoints

# A batch this small is committed on the loop itself: nothing else is queued, so the fsync holds up little,
# and it saves the two thread hand-offs (W1 at one connection: p50 0.90 -> 0.77 ms; no change at 16).
INLINE_COMMIT_RECORDS = 1


@dataclass(slots=True)
class Batch:
    """A batch applied on the loop, to commit (``transaction`` is the open one)."""

    transaction: Transaction
    records: list[Record]
    actions: list[Action]
    applied_s: float = 0.0  # perf_counter when it went to the committer (its commit latency starts)


class CommitSink(Protocol):
    """The processor's side: called on the loop once the batch's commit is decided."""

    def committed(self, batch: Batch) -> None: ...
    def commit_failed(self, batch: Batch, exc: BaseException) -> None: ...


class PendingCommit(Protocol):
    """A COMMIT sent without waiting for its answer (``storage/postgres_commit.py``)."""

    fd: int  # the socket the answer arrives on

    @property
    def failed(self) -> bool: ...
    def flush(self) -> bool: ...  # write what is left of the request; True once it is all sent
    def poll(self) -> bool: ...  # read what arrived; True once the answer is complete
    def finish(self) -> None: ...  # returns when committed, raises as ``Transaction.commit`` would


class Committer(Protocol):
    def start(self, sink: CommitSink) -> None: ...
    def commit(self, batch: Batch) -> None: ...
    async def stop(self) -> None: ...


class ThreadCommitter:
    """Commits on a writer thread (group commit: one fsync per batch, the loop keeps serving meanwhile)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, faults: FaultPoints) -> None:
        self._loop = loop
        self._faults = faults
        # batches to commit on the writer thread, each with how (its ``commit``, or a failed answer's settling)
        self._batches: queue.SimpleQueue[tuple[Batch, Callable[[], None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="unbroken-processor", daemon=True)
        self._sink: CommitSink | None = None

    def start(self, sink: CommitSink) -> None:
        self._sink = sink
        self._thread.start()

    def commit(self, batch: Batch) -> None:
        nowait = getattr(batch.transaction, "commit_nowait", None)
        if nowait is not None:
            try:
                pending = nowait()
            except Exception as exc:  # it could not be fenced (leadership lost or changed): nothing sent
                self._settled(batch, exc)
                return
            if pending is not None:
                self._send(batch, pending)
                return
        if len(batch.records) <= INLINE_COMMIT_RECORDS:
            self._commit(batch, batch.transaction.commit)()  # on the loop itself: nothing else is queued
        else:
            self._batches.put((batch, batch.transaction.commit))

    async def stop(self) -> None:
        self._batches.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, limits.processor_stop_timeout_s)

    def _write(self) -> None:
        while True:
            item = self._batches.get()
            if item is None:
                return
            self._loop.call_soon_threadsafe(self._commit(*item))

    def _commit(self, batch: Batch, commit: Callable[[], None]) -> Callable[[], None]:
        """``commit()`` (the COMMIT: the fsync, without the GIL) on the calling thread; returns what the loop
        does next."""
        try:
            commit()
        except Exception as exc:  # busy, I/O error, disk full: the store rolled back
            return functools.partial(self._settled, batch, exc)
        return functools.partial(self._settled, batch, None)

    def _settled(self, batch: Batch, exc: Exception | None) -> None:
        sink = self._sink
        assert sink is not None
        if exc is not None:
            sink.commit_failed(batch, exc)
            return
        self._faults.point("processor.after_commit")
        sink.committed(batch)

    # ------------------------------------------------------------------ a COMMIT awaited on its socket
    def _send(self, batch: Batch, pending: PendingCommit) -> None:
        sent = pending.failed or pending.flush()
        if pending.failed:  # nothing to wait for: its socket may be closed already
            self._batches.put((batch, pending.finish))
        elif sent:
            self._loop.add_reader(pending.fd, self._readable, batch, pending)
        else:  # the socket's buffer is full: the rest of the request when it drains
            self._loop.add_writer(pending.fd, self._writable, batch, pending)

    def _writable(self, batch: Batch, pending: PendingCommit) -> None:
        if pending.flush():
            self._loop.remove_writer(pending.fd)
            self._send(batch, pending)

    def _readable(self, batch: Batch, pending: PendingCommit) -> None:
        if not pending.poll():
            return
        self._loop.remove_reader(pending.fd)  # before anything may open a file that takes its number
        if pending.failed:  # settled on the writer thread: a rollback, maybe learning the outcome
            self._batches.put((batch, pending.finish))
        else:
            self._commit(batch, pending.finish)()
