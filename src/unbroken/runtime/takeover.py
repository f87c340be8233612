"""Storage partitions changing hands between nodes (PostgreSQL, several nodes): recover what is gained, let
go of what is lost.

On a leased store a node keeps one batch loop for every storage partition it leads (docs/architecture.md,
"one batch loop per node"); the store's lease thread says when that set changes (``Store.on_leadership``)
and this hops to the loop:

* gained: the partitions' running invocations get ``Recover`` (as at start, for those partitions only)
  and the timer window is read again, now with their timers;
* lost (handed over to balance the cluster, or taken by another node): their queued records are dropped
  (a waiting caller is answered 503: nothing of it was accepted, it retries or is forwarded), their
  attempts aborted, their callers waiting on a result answered 503 naming the invocation (``goes_on``: a
  cluster's ingress attaches to it through the new leader), their timers dropped from the window.
  The store's fence already refuses any commit for them.

``led`` is what the loop has taken on: the recovery at start and the timer scans read by it, so a partition
is recovered once however its gain and the start interleave. A gained partition whose running invocations
cannot be read (the store fails) is taken on ``limits.store_retry_delay_max_s`` later, if still led here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.ids import InvalidId, partition_key_for_key, partition_key_of
from unbroken.core.storage import Store, StoreError

log = logging.getLogger("unbroken.engine")


def partition_key_of_id(invocation_id: str) -> int:
    """The partition key an invocation id carries (an id that is not one, as tests name them, is hashed as
    a key, as the PostgreSQL store does)."""
    try:
        return partition_key_of(invocation_id)
    except InvalidId:
        return partition_key_for_key(invocation_id)


def record_partition_key(record: r.Record) -> int | None:
    """The partition key a record belongs to; None for one of no partition (a timer, known by its row;
    cluster-wide changes; the retention sweep)."""
    invocation_id = getattr(record, "invocation_id", None)
    if invocation_id:
        return partition_key_of_id(invocation_id)
    if isinstance(record, r.SetStateFromAdmin):
        return partition_key_for_key(record.key)
    return None


class Takeover:
    """The storage partitions the node's batch loop has taken on, kept in step with the store's leases."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.led: set[int] = set()
        # the node's batch loop (``Partition.let_go``: is a partition key's partition lost, and which)
        self.let_go: Callable[[Callable[[int], bool], list[int]], None] = lambda lost, parts: None
        self.took_over: Callable[[list[str], list[int]], None] = lambda recovering, parts: None

    def snapshot(self) -> None:
        """At start, before the first recovery: what the store leads now is what the loop takes on."""
        view = self.store.cluster()
        count = 1 if view is None else view.partitions
        self.led = {part for part in range(count) if self.store.leads(part)}

    def owns(self, invocation_id: str) -> bool:
        return self.store.partition_of(partition_key_of_id(invocation_id)) in self.led

    def owns_record(self, record: r.Record) -> bool:
        key = record_partition_key(record)
        return key is None or self.store.partition_of(key) in self.led

    def changed(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        """From the lease thread: hop to the loop."""
        self.loop.call_soon_threadsafe(self._apply, gained, lost)

    def _apply(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        lost = frozenset(p for p in lost if p in self.led)
        gained = frozenset(p for p in gained if p not in self.led and self.store.leads(p))
        if not (gained or lost):
            return
        self.led -= lost
        if lost:
            log.warning("letting go of partitions %s: another node leads them now", sorted(lost))
            self.let_go(lambda key: self.store.partition_of(key) in lost, sorted(lost))
        recovering = []
        if gained:
            try:
                # the gained partitions' only, read and kept (a store of one node may answer more)
                running = self.store.running_invocation_ids(sorted(gained))
            except StoreError as exc:
                log.warning("cannot recover partitions %s (%s): trying again", sorted(gained), exc)
                self.loop.call_later(limits.store_retry_delay_max_s, self._apply, gained, frozenset())
                return
            recovering = [i for i in running if self._part(i) in gained]
            self.led |= gained
        self.took_over(recovering, sorted(gained))

    def _part(self, invocation_id: str) -> int:
        return self.store.partition_of(partition_key_of_id(invocation_id))
