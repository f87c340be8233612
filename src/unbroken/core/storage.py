"""The storage interface: one Protocol per table, composed into ``Transaction``; ``Store`` opens them.

As Restate's storage traits (``crates/storage-api``), each table is its own interface, so a backend
(``unbroken.storage.memory``, ``unbroken.storage.sqlite``, later PostgreSQL) is written and tested table by
table; ``tests/contract/test_store.py`` runs the same suite against every backend.

A ``Transaction`` is what one batch of records sees: reads observe the batch's own earlier writes, nothing
is visible outside it before ``commit()``, and ``rollback()`` (or a failed ``commit()``) leaves no trace.
The state machine never commits: the processor does. Times written into rows come from the record being
applied (``Step.now_ms``), never from the database's clock, so a replay or a simulation writes the same rows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import msgspec

from unbroken.core.deployments import Deployment
from unbroken.core.invocation import Invocation, Sink
from unbroken.core.journal import Entry, Result
from unbroken.core.records import Record
from unbroken.core.schema import ServiceOverride


class StoreError(Exception):
    """The backend failed (the connection was lost, the server refused, an I/O error): the transaction was
    rolled back, and the batch loop applies the same records again later. Backends raise it for failures
    their driver reports in its own error types (SQLite's ``sqlite3.Error`` and ``OSError`` are recognised
    as they are)."""


class NotLeader(StoreError):
    """The store does not lead a partition the transaction wrote: its lease expired or another node took it
    (the fencing epoch no longer matches). Nothing of the transaction was committed, and the store commits
    nothing more for that partition."""


class PartitionLost(NotLeader):
    """A transaction wrote a partition this node does not lead any more (released, or taken by another
    node): unlike a lease not renewed in time, this does not pass. The records that wrote it are given up
    here (their callers answered 503); the partition's new leader recovers its invocations from storage.

    ``parts``: the partitions found lost, when the store knows them (the batch loop applies a record again
    whose own partition is still led: its effects on those go through their inbox now)."""

    def __init__(self, message: str, parts: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.parts = parts


class TimerKind(enum.StrEnum):
    """What a timer does when it fires. Stored as these strings (the SQLite ``timer.kind`` column)."""

    SLEEP = "sleep"  # completes ``completion_id``
    INVOKE = "invoke"  # a delayed invocation becomes due
    RETRY = "retry"  # a backing-off invocation tries again


class Timer(msgspec.Struct, frozen=True):
    """A durable timer (see :class:`TimerKind`)."""

    timer_id: int
    fire_at_ms: int
    kind: TimerKind
    invocation_id: str
    completion_id: int = 0


class Promise(msgspec.Struct, frozen=True):
    """A workflow's durable promise: its result once completed, and who waits for it until then."""

    result: Result | None
    waiters: tuple[Sink, ...] = ()


class InvocationTable(Protocol):
    def get_invocation(self, invocation_id: str) -> Invocation | None:
        """The stored row, its invariants checked (``check_invocation``) on the way out."""
        ...

    def put_invocation(self, inv: Invocation) -> None: ...

    def delete_invocation(self, invocation_id: str) -> None:
        """Delete the row and its journal (and the journal's signal index)."""
        ...

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` ids with ``0 < cleanup_due_ms(inv) <= now_ms``."""
        ...


class JournalTable(Protocol):
    def journal(self, invocation_id: str) -> list[Entry]:
        """The whole journal in index order (empty if none)."""
        ...

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        """Append at ``index`` (the journal's current length). A notification carrying a signal index
        is also recorded in the signal index (``has_signal``)."""
        ...

    def delete_journal(self, invocation_id: str) -> None:
        """Delete the journal and its signal index."""
        ...

    def has_signal(self, invocation_id: str, signal_idx: int) -> bool:
        """Whether the journal holds a notification of signal ``signal_idx``: one indexed lookup, so a
        signal costs the same against a journal of 40,000 entries as against one of 4."""
        ...


class StateTable(Protocol):
    """Keyed state: (service, key, name) -> value."""

    def state_all(self, service: str, key: str) -> dict[str, bytes]: ...
    def state_get(self, service: str, key: str, name: str) -> bytes | None:
        """One entry (lazy state reads only what a handler asks for)."""
        ...

    def state_keys(self, service: str, key: str) -> list[str]:
        """The names of the key's entries, sorted (without their values)."""
        ...

    def state_set(self, service: str, key: str, name: str, value: bytes) -> None: ...
    def state_clear(self, service: str, key: str, name: str) -> None: ...
    def state_clear_all(self, service: str, key: str) -> None: ...


class LockInboxTable(Protocol):
    """The lock of a keyed service and the FIFO inbox of invocations waiting for it."""

    def lock_holder(self, service: str, key: str) -> str | None: ...
    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None: ...
    def inbox_push(self, service: str, key: str, invocation_id: str, pushed_at_ms: int) -> None: ...
    def inbox_pop(self, service: str, key: str) -> str | None:
        """The oldest entry of the key's inbox, removed; None when empty."""
        ...

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None: ...


class TimerTable(Protocol):
    def add_timer(self, fire_at_ms: int, kind: TimerKind, invocation_id: str, completion_id: int) -> int:
        """Store a timer; returns its id (ids only grow, never reused)."""
        ...

    def get_timer(self, timer_id: int) -> Timer | None: ...
    def delete_timer(self, timer_id: int) -> None: ...


class PromiseTable(Protocol):
    """Workflow promises: (service, key, name) -> Promise."""

    def get_promise(self, service: str, key: str, name: str) -> Promise | None: ...
    def put_promise(self, service: str, key: str, name: str, promise: Promise) -> None: ...
    def clear_promises(self, service: str, key: str) -> None: ...


class ServiceOverrideTable(Protocol):
    """Service options changed through the admin API (``ModifyService``): service name -> ServiceOverride."""

    def get_service_override(self, service: str) -> ServiceOverride | None: ...
    def put_service_override(self, service: str, override: ServiceOverride) -> None: ...


class DeploymentTable(Protocol):
    """Remote deployments registered through the admin API: deployment id -> Deployment."""

    def get_deployment(self, deployment_id: str) -> Deployment | None: ...
    def put_deployment(self, deployment: Deployment) -> None: ...
    def delete_deployment(self, deployment_id: str) -> None: ...


class PartitionInbox(Protocol):
    """Cross-partition work (docs/architecture.md, "Cross-partition work: the partition inbox").

    A batch writes the rows of the partitions its node leads. An effect on an invocation (or key) of a
    partition led by another node is ``send``-t as a record to that partition's inbox instead, written in
    this transaction (so it is sent exactly when this batch commits) and not fenced (an append to another
    partition's inbox, never a row of it). The leader of that partition takes it with ``take_inbox`` in one
    of its own batches and applies it there (so it is applied exactly once, with that batch).

    A store of one node (SQLite, the memory store by default) leads every partition: ``all_led`` is True,
    ``is_led`` always too, nothing is sent, its inbox is empty."""

    all_led: bool  # every partition is led by this node (checked before anything computes a partition)

    def is_led(self, partition_key: int) -> bool:
        """Whether the partition holding ``partition_key`` is led by this node (as of this batch's start)."""
        ...

    def send(self, partition_key: int, record: Record, source_key: int = 0) -> None:
        """Append ``record`` to the inbox of the partition of ``partition_key``; ``source_key`` is the
        partition key of the invocation it comes from (the same record sent again from there is one row)."""
        ...

    def take_inbox(self, limit: int) -> list[Record]:
        """Up to ``limit`` records from the inboxes of the partitions led here, oldest first, deleted in this
        transaction (a rollback puts them back)."""
        ...


class Transaction(
    PartitionInbox,
    InvocationTable,
    JournalTable,
    StateTable,
    LockInboxTable,
    TimerTable,
    PromiseTable,
    ServiceOverrideTable,
    DeploymentTable,
    Protocol,
):
    """Every table, inside one transaction. Used by one thread at a time; ``commit`` may run on another
    thread than the one that applied (the processor's writer thread), never concurrently with it."""

    def prefetch_invocations(self, invocation_ids: list[str], new_ids: Sequence[str] = ()) -> None:
        """A hint, before a batch is applied: it is about to read these invocations' rows (some may not
        exist), and those of ``new_ids``, which were minted from fresh random bytes and so exist nowhere. A
        store whose every read is a round trip (PostgreSQL) reads those it does not hold in one, and knows
        the new ones absent without reading; the others ignore it. Changes nothing the transaction answers."""
        ...

    def commit(self) -> None:
        """Make the writes durable and visible. If it raises, the transaction was rolled back."""
        ...

    def rollback(self) -> None:
        """Undo every write of the transaction."""
        ...


class Leadership(msgspec.Struct, frozen=True):
    """The partitions a leased store (PostgreSQL) lets this node lead, and how its leases went (``GET
    /metrics``): ``led`` is the partitions whose lease this node holds and may commit to (0 while it fences
    itself for want of a renewal); the counts add up since the store opened."""

    led: int
    acquired: int = 0  # leases taken, each with a new epoch (at start, or back after an expiry)
    renewals: int = 0  # renewal rounds the database acknowledged
    renewal_failures: int = 0  # renewal rounds that failed (the database did not answer or refused)
    lost: int = 0  # partitions whose leadership this node lost (taken by another node)


LeadershipChanged = Callable[[frozenset[int], frozenset[int]], None]  # (gained, lost) storage partitions


@dataclass(frozen=True)
class NodeInfo:
    """A node of a cluster sharing one store (the ``node`` table): where it listens, whether it is alive
    (its heartbeat is younger than the lease TTL)."""

    name: str
    ingress_url: str
    admin_url: str
    heartbeat_age_s: float
    alive: bool
    backlog: int = 0  # records queued at its batch loop at its last heartbeat (its lag; -1: unknown)


@dataclass(frozen=True)
class PartitionLeader:
    """Who leads a storage partition (None: nobody now), with which epoch, and for how long yet."""

    part: int
    node: str | None
    epoch: int
    lease_expires_in_s: float


@dataclass(frozen=True)
class ClusterView:
    """The nodes of a cluster and the leader of each storage partition, as the store last read them."""

    partitions: int
    nodes: tuple[NodeInfo, ...]
    leaders: tuple[PartitionLeader, ...]

    def leader_of(self, part: int) -> NodeInfo | None:
        """The alive node leading ``part`` (None: none, e.g. during a failover)."""
        if not 0 <= part < len(self.leaders):
            return None
        leader = self.leaders[part]
        if leader.node is None or leader.lease_expires_in_s <= 0:
            return None
        return next((n for n in self.nodes if n.name == leader.node and n.alive), None)


class Store(Protocol):
    """A backend: opens transactions and answers the recovery reads made before the processor starts.

    Each partition has one transaction open at a time. A store several partitions share (the memory store;
    PostgreSQL next) isolates their transactions: none sees another's uncommitted writes, a rollback undoes
    its own only, and of two that touch one row (a partition admitting a call to an object another owns)
    the second commit fails with ``core.errors.TransactionConflict``, rolled back, for the processor to
    apply again (``tests/contract/test_store.py``). SQLite has one writer: one partition."""

    def begin(self) -> Transaction: ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """``begin`` as a context manager: commit at the end of the block, roll back if it raises
        (backends return ``transaction(self)``)."""
        ...

    def running_invocation_ids(self, parts: Collection[int] | None = None) -> list[str]:
        """Invocations an attempt was running for when the process stopped, oldest first (a store shared by
        several nodes: of the partitions this node leads, or only of ``parts`` of them, those just gained;
        a store of one node may ignore ``parts``: the caller keeps its own)."""
        ...

    def service_overrides(self) -> dict[str, ServiceOverride]:
        """Every committed service override (the engine applies them over the app's schemas at start)."""
        ...

    def deployments(self) -> list[Deployment]:
        """Every committed deployment (the engine serves their services from start)."""
        ...

    def timers(self) -> list[Timer]:
        """Every stored timer (tests and tools; the engine reads windows with ``timers_after``)."""
        ...

    def timers_after(self, after: tuple[int, int] | None, limit: int) -> list[Timer]:
        """Up to ``limit`` committed timers whose ``(fire_at_ms, timer_id)`` is greater than ``after`` (from
        the first if None), in that order: the engine keeps only a window of timers in memory. A store
        shared by several nodes returns those of the partitions this node leads."""
        ...

    def watch_inbox(self, wake: Callable[[], None]) -> bool:
        """Whether partitions led by other nodes may send records to this node's inbox (a store of one node:
        False, and ``wake`` is never called). If so, ``wake`` is called (from any thread, maybe spuriously)
        when records may have arrived: a hint; the processor polls the inbox anyway."""
        ...

    def leadership(self) -> Leadership | None:
        """The partitions this node leads through this store now and its lease counts (cheap: no I/O).
        None for a store of one node (SQLite, memory): the node leads its partitions for good."""
        ...

    def leads(self, part: int) -> bool:
        """Whether this node leads storage partition ``part`` now (no I/O; True on a one-node store)."""
        ...

    def partition_of(self, partition_key: int) -> int:
        """The storage partition of a partition key: ``(key * P) >> 64`` (P = 1 on a one-node store)."""
        ...

    def cluster(self) -> ClusterView | None:
        """The cluster as last read by the lease thread (None: a one-node store, SQLite or memory)."""
        ...

    def on_leadership(self, changed: LeadershipChanged) -> None:
        """Call ``changed(gained, lost)`` whenever the storage partitions this node leads change. It is
        called from another thread (the lease thread, or the writer's when a fence is refused): the runtime
        hops to its loop. Never called by a one-node store."""
        ...

    def close(self) -> None: ...


@contextmanager
def transaction(store: Store) -> Iterator[Transaction]:
    """``with transaction(store) as txn:`` begin, then commit, or roll back if the block raises."""
    txn = store.begin()
    try:
        yield txn
    except BaseException:
        txn.rollback()
        raise
    txn.commit()
