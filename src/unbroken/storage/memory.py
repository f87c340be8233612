"""An in-memory store for unit tests and the simulator (never for a durability claim).

Values are kept encoded, as the SQLite store keeps them, so a test cannot pass by sharing mutable
objects between the state machine and the store.

Transactions are isolated from each other, as a database's are: several partitions of one node share this
store (``runtime/node.py``), each with a transaction open while its batch waits for its commit. A
transaction's writes stay in the transaction (:class:`_Writes`, one per table) until ``commit`` publishes
them all at once, under the store's lock (the commit may run on the processor's writer thread); a rollback
drops them. So no transaction sees another's uncommitted writes, and a rollback undoes only its own: no
snapshot of the whole store is taken or restored. Two transactions writing one row (a partition's batch
admitting a call to an object another partition owns, while that one releases the object's lock), or one
reading a row the other writes, are not both committed: the second commit fails with
``TransactionConflict`` and the processor applies its batch again (``_Writes``). Committed containers (a journal's list, a key's state) are
never changed in place: a transaction changes its own copy, which its commit puts in their place.

Several nodes (tests, the simulator): ``MemoryStore(partitions=P, led=...)`` leads only ``led`` of the P
storage partitions, and ``peer(led)`` is another node's view of the same rows leading others. Effects on a
partition not led are sent to its partition inbox (``Transaction.send``) and taken by the view that leads it
(``take_inbox``); a write to a row of a partition the view does not lead is a broken invariant (what
PostgreSQL's fence refuses), so a test finds a missed route at once.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from unbroken.core.deployments import Deployment, decode_deployment, encode_deployment
from unbroken.core.errors import TransactionConflict, invariant, violated
from unbroken.core.ids import partition_key_for_key, partition_key_of_any
from unbroken.core.invocation import Invocation, Status, cleanup_due_ms
from unbroken.core.journal import Entry
from unbroken.core.records import Record
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import (
    ClusterView,
    Leadership,
    LeadershipChanged,
    Promise,
    Timer,
    TimerKind,
    Transaction,
    transaction,
)
from unbroken.storage.codec import (
    decode_entry,
    decode_invocation,
    decode_message,
    decode_override,
    decode_promise,
    encode_entry,
    encode_invocation,
    encode_message,
    encode_override,
    encode_promise,
    message_seq,
    signal_index,
)

_Key = TypeVar("_Key", bound=Hashable)
_Row = TypeVar("_Row")


class _Counters:
    """Counters every view of one store shares (``MemoryStore.peer``)."""

    __slots__ = ("commits", "inbox", "timer")

    def __init__(self) -> None:
        self.timer = 1  # the next timer id: handed out at once, never twice, not even after a rollback
        self.commits = 0  # the version of every row a commit writes (conflicts, see ``_Writes``)
        self.inbox = 0  # the order of inbox rows (oldest first)


class MemoryStore:
    """The committed rows, table by table (the simulator's invariants and the read model read them)."""

    def __init__(self, *, partitions: int = 1, led: Collection[int] | None = None) -> None:
        self.invocations: dict[str, bytes] = {}
        self.journals: dict[str, list[bytes]] = {}
        self.state: dict[tuple[str, str], dict[str, bytes]] = {}
        self.locks: dict[tuple[str, str], str] = {}
        self.inboxes: dict[tuple[str, str], list[str]] = {}
        self.timer_rows: dict[int, Timer] = {}
        self.promises: dict[tuple[str, str, str], bytes] = {}
        self.signals: dict[str, set[int]] = {}  # the signal index of each journal
        self.overrides: dict[str, bytes] = {}  # service -> encoded ServiceOverride
        self.deployment_rows: dict[str, bytes] = {}  # deployment id -> encoded Deployment
        # the partition inbox: (part, source part, source seq) -> (order, encoded record)
        self.partition_inbox: dict[tuple[int, int, int], tuple[int, bytes]] = {}
        self.counters = _Counters()
        self.versions: dict[str, dict[Any, int]] = {}  # table -> row key -> the commit that last wrote it
        # held while a commit publishes its writes and while anything scans the committed rows
        self.lock = threading.Lock()
        self.partitions = partitions
        self.led: frozenset[int] | None = None if led is None else frozenset(led)  # None: all of them
        self.watchers: list[tuple[MemoryStore, Callable[[], None]]] = []  # every view's ``watch_inbox``

    def peer(self, led: Collection[int]) -> MemoryStore:
        """Another node's view of the same rows (every table, counter and lock shared), leading ``led``."""
        other = copy.copy(self)
        other.led = frozenset(led)
        return other

    def leads_id(self, invocation_id: str) -> bool:
        """Whether this view leads the partition of ``invocation_id``."""
        return self.led is None or (partition_key_of_any(invocation_id) * self.partitions) >> 64 in self.led

    def leads_key(self, key: str) -> bool:
        """Whether this view leads the partition of a keyed service's or workflow's ``key``."""
        return self.led is None or (partition_key_for_key(key) * self.partitions) >> 64 in self.led

    def begin(self) -> MemoryTransaction:
        return MemoryTransaction(self)

    def transaction(self) -> AbstractContextManager[Transaction]:
        return transaction(self)

    def running_invocation_ids(self, parts: Collection[int] | None = None) -> list[str]:
        # ``parts`` is ignored: the caller keeps the partitions it asked for
        with self.lock:
            rows = list(self.invocations.items())
        invs = [decode_invocation(b, i, check=False) for i, b in rows if self.leads_id(i)]
        return [inv.id for inv in invs if inv.status is Status.RUNNING]

    def service_overrides(self) -> dict[str, ServiceOverride]:
        with self.lock:
            rows = list(self.overrides.items())
        return {name: decode_override(data) for name, data in rows}

    def deployments(self) -> list[Deployment]:
        with self.lock:
            rows = list(self.deployment_rows.values())
        return [decode_deployment(data) for data in rows]

    def timers(self) -> list[Timer]:
        with self.lock:
            return list(self.timer_rows.values())

    def timers_after(self, after: tuple[int, int] | None, limit: int) -> list[Timer]:
        rows = sorted(self.timers(), key=lambda t: (t.fire_at_ms, t.timer_id))
        if self.led is not None:
            rows = [t for t in rows if self.leads_id(t.invocation_id)]
        return [t for t in rows if after is None or (t.fire_at_ms, t.timer_id) > after][:limit]

    def new_timer_id(self) -> int:
        with self.lock:
            timer_id = self.counters.timer
            self.counters.timer += 1
        return timer_id

    def new_inbox_order(self) -> int:
        with self.lock:
            self.counters.inbox += 1
            return self.counters.inbox

    def watch_inbox(self, wake: Callable[[], None]) -> bool:
        if self.led is None:
            return False  # every partition is led here: nothing is ever sent
        with self.lock:
            self.watchers.append((self, wake))
        wake()  # as PostgreSQL's listener does once it listens
        return True

    def woken(self, parts: set[int]) -> None:
        """A commit sent records to ``parts``: wake the views leading them (after the commit, a hint)."""
        with self.lock:
            watchers = list(self.watchers)
        for view, wake in watchers:
            if view.led is not None and not view.led.isdisjoint(parts):
                wake()

    def leadership(self) -> Leadership | None:
        return None  # one node's store: no leases

    def leads(self, part: int) -> bool:
        return self.led is None or part in self.led  # one node's store (None): it leads all for good

    def partition_of(self, partition_key: int) -> int:
        return (partition_key * self.partitions) >> 64

    def cluster(self) -> ClusterView | None:
        return None

    def on_leadership(self, changed: LeadershipChanged) -> None:
        pass  # leadership never changes

    def close(self) -> None:
        pass


class _Writes(Generic[_Key, _Row]):
    """One table's writes in an open transaction, over the store's committed rows: the transaction reads
    its own writes first, and nothing of them reaches the store before ``publish`` (the commit).

    ``seen`` keeps the version (the commit that last wrote it) of each row the transaction read or wrote, when
    it first did: a row another transaction committed since is a conflict at commit (first committer wins,
    as a database's serializable transactions: a lock taken by two partitions' batches at once, an inbox
    found empty by one while the other pushed to it, would otherwise lose a write). Scans (``items``: the
    retention sweep, clearing a workflow's promises) are not tracked."""

    __slots__ = ("lock", "name", "rows", "seen", "versions", "written")

    def __init__(
        self, name: str, rows: dict[_Key, _Row], versions: dict[_Key, int], lock: threading.Lock
    ) -> None:
        self.name = name
        self.rows = rows
        self.versions = versions
        self.lock = lock
        self.written: dict[_Key, _Row | None] = {}  # None: deleted
        self.seen: dict[_Key, int] = {}

    def _see(self, key: _Key) -> None:
        if key not in self.seen:
            self.seen[key] = self.versions.get(key, 0)  # read before the row: a newer row only conflicts

    def get(self, key: _Key) -> _Row | None:
        if key in self.written:
            return self.written[key]
        self._see(key)
        return self.rows.get(key)  # one lookup: a commit publishing meanwhile is seen whole or not at all

    def put(self, key: _Key, row: _Row) -> None:
        self._see(key)
        self.written[key] = row

    def delete(self, key: _Key) -> None:
        self._see(key)
        self.written[key] = None

    def own(self, key: _Key, copy: Callable[[_Row], _Row]) -> _Row | None:
        """The transaction's own copy of a container row, to change in place (None: there is no row)."""
        if key in self.written:
            return self.written[key]
        self._see(key)
        row = self.rows.get(key)
        if row is None:
            return None
        mine = self.written[key] = copy(row)
        return mine

    def items(self) -> list[tuple[_Key, _Row]]:
        with self.lock:
            committed = [(key, row) for key, row in self.rows.items() if key not in self.written]
        return committed + [(key, row) for key, row in self.written.items() if row is not None]

    def conflict(self) -> _Key | None:
        """A row this transaction read or wrote that another committed since this one first saw it (under
        the lock). Reads count: a batch that found an inbox empty and released the lock must not commit
        after another pushed to that inbox."""
        versions = self.versions
        return next((key for key, version in self.seen.items() if versions.get(key, 0) != version), None)

    def publish(self, version: int) -> None:
        """Under the store's lock: the rows first, then their versions (see ``_see``)."""
        rows = self.rows
        for key, row in self.written.items():
            if row is None:
                rows.pop(key, None)
            else:
                rows[key] = row
        for key in self.written:
            self.versions[key] = version
        self.discard()

    def discard(self) -> None:
        self.written = {}
        self.seen = {}


class MemoryTransaction:
    """Times (``appended_at_ms``, ``pushed_at_ms``) are not kept: nothing reads them from this store."""

    def __init__(self, store: MemoryStore) -> None:
        self.s = store

        def table(name: str, rows: dict[Any, Any]) -> _Writes[Any, Any]:
            return _Writes(name, rows, store.versions.setdefault(name, {}), store.lock)

        self._invocations: _Writes[str, bytes] = table("invocation", store.invocations)
        self._journals: _Writes[str, list[bytes]] = table("journal", store.journals)
        self._state: _Writes[tuple[str, str], dict[str, bytes]] = table("state", store.state)
        self._locks: _Writes[tuple[str, str], str] = table("lock", store.locks)
        self._inboxes: _Writes[tuple[str, str], list[str]] = table("inbox", store.inboxes)
        self._timers: _Writes[int, Timer] = table("timer", store.timer_rows)
        self._promises: _Writes[tuple[str, str, str], bytes] = table("promise", store.promises)
        self._signals: _Writes[str, set[int]] = table("signal", store.signals)
        self._overrides: _Writes[str, bytes] = table("service_override", store.overrides)
        self._deployments: _Writes[str, bytes] = table("deployment", store.deployment_rows)
        self._messages: _Writes[tuple[int, int, int], tuple[int, bytes]] = table(
            "partition_inbox", store.partition_inbox
        )
        self.all_led = store.led is None
        self._sent: set[int] = set()  # the partitions this transaction sent records to (woken at commit)
        self._tables: tuple[_Writes[Any, Any], ...] = (
            self._invocations,
            self._journals,
            self._state,
            self._locks,
            self._inboxes,
            self._timers,
            self._promises,
            self._signals,
            self._overrides,
            self._deployments,
            self._messages,
        )

    def commit(self) -> None:
        """Publish every write at once, or raise :class:`TransactionConflict` (rolled back) if another
        transaction committed one of the rows since this one first saw it."""
        store = self.s
        with store.lock:
            conflict = next(((t.name, k) for t in self._tables if (k := t.conflict()) is not None), None)
            if conflict is None:
                store.counters.commits += 1
                for table in self._tables:
                    table.publish(store.counters.commits)
        if conflict is not None:
            self.rollback()
            raise TransactionConflict(f"{conflict[0]} row {conflict[1]!r} was changed by another transaction")
        if self._sent:
            sent, self._sent = self._sent, set()
            store.woken(sent)

    def rollback(self) -> None:
        for table in self._tables:
            table.discard()
        self._sent = set()

    # ------------------------------------------------------------------------------------ partition inbox
    def is_led(self, partition_key: int) -> bool:
        led = self.s.led
        return led is None or (partition_key * self.s.partitions) >> 64 in led

    def send(self, partition_key: int, record: Record, source_key: int = 0) -> None:
        store = self.s
        part = (partition_key * store.partitions) >> 64
        invariant(
            not self.is_led(partition_key), f"{type(record).__name__} sent to partition {part}, led here"
        )
        data = encode_message(record)
        key = (part, (source_key * store.partitions) >> 64, message_seq(data))
        # The same message sent again is one row (as PostgreSQL's ON CONFLICT DO NOTHING): looked at without
        # reading it (a take of it committing meanwhile is no conflict: the message was applied once).
        if key in self._messages.written or key in store.partition_inbox:
            return
        self._messages.put(key, (store.new_inbox_order(), data))
        self._sent.add(part)

    def take_inbox(self, limit: int) -> list[Record]:
        led = self.s.led
        if led is None:
            return []  # nothing is sent to a store one node leads whole
        rows = sorted((row, key) for key, row in self._messages.items() if key[0] in led)[:limit]
        for _, key in rows:
            self._messages.delete(key)
        return [decode_message(data) for (_, data), _ in rows]

    def _fence_id(self, invocation_id: str) -> None:
        """A write to a partition another node leads would be refused by PostgreSQL's fence: here it is a
        broken invariant, so that a test finds the effect that should have gone through the inbox."""
        if not self.s.leads_id(invocation_id):
            violated(f"a batch wrote a row of {invocation_id}, whose partition another node leads")

    def _fence_key(self, key: str) -> None:
        if not self.s.leads_key(key):
            violated(f"a batch wrote a row of key {key!r}, whose partition another node leads")

    def prefetch_invocations(self, invocation_ids: list[str], new_ids: Sequence[str] = ()) -> None:
        pass  # every read is in memory

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        data = self._invocations.get(invocation_id)
        return None if data is None else decode_invocation(data, invocation_id)

    def put_invocation(self, inv: Invocation) -> None:
        if not self.all_led:
            self._fence_id(inv.id)
        self._invocations.put(inv.id, encode_invocation(inv))

    def delete_invocation(self, invocation_id: str) -> None:
        self._invocations.delete(invocation_id)
        self.delete_journal(invocation_id)

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        out = []
        for inv_id, data in self._invocations.items():
            if not self.all_led and not self.s.leads_id(inv_id):
                continue  # another node's to clean
            if 0 < cleanup_due_ms(decode_invocation(data, inv_id, check=False)) <= now_ms:
                out.append(inv_id)
        return out[:limit]

    def journal(self, invocation_id: str) -> list[Entry]:
        return [decode_entry(b) for b in self._journals.get(invocation_id) or ()]

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        if not self.all_led:
            self._fence_id(invocation_id)
        entries = self._journals.own(invocation_id, list)
        if entries is None:
            entries = []
            self._journals.put(invocation_id, entries)
        invariant(len(entries) == index, f"{invocation_id}: append at {index} but journal has {len(entries)}")
        entries.append(encode_entry(entry))
        signal_idx = signal_index(entry)
        if signal_idx:
            signals = self._signals.own(invocation_id, set)
            if signals is None:
                signals = set()
                self._signals.put(invocation_id, signals)
            signals.add(signal_idx)

    def delete_journal(self, invocation_id: str) -> None:
        self._journals.delete(invocation_id)
        self._signals.delete(invocation_id)

    def has_signal(self, invocation_id: str, signal_idx: int) -> bool:
        return signal_idx in (self._signals.get(invocation_id) or ())

    def state_all(self, service: str, key: str) -> dict[str, bytes]:
        return dict(self._state.get((service, key)) or {})

    def state_get(self, service: str, key: str, name: str) -> bytes | None:
        return (self._state.get((service, key)) or {}).get(name)

    def state_keys(self, service: str, key: str) -> list[str]:
        return sorted(self._state.get((service, key)) or ())

    def state_set(self, service: str, key: str, name: str, value: bytes) -> None:
        if not self.all_led:
            self._fence_key(key)
        values = self._state.own((service, key), dict)
        if values is None:
            values = {}
            self._state.put((service, key), values)
        values[name] = value

    def state_clear(self, service: str, key: str, name: str) -> None:
        values = self._state.own((service, key), dict)
        if values is not None:
            values.pop(name, None)

    def state_clear_all(self, service: str, key: str) -> None:
        self._state.delete((service, key))

    def lock_holder(self, service: str, key: str) -> str | None:
        return self._locks.get((service, key))

    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None:
        if not self.all_led:
            self._fence_key(key)
        if invocation_id is None:
            self._locks.delete((service, key))
        else:
            self._locks.put((service, key), invocation_id)

    def inbox_push(self, service: str, key: str, invocation_id: str, pushed_at_ms: int) -> None:
        queue = self._inboxes.own((service, key), list)
        if queue is None:
            queue = []
            self._inboxes.put((service, key), queue)
        queue.append(invocation_id)

    def inbox_pop(self, service: str, key: str) -> str | None:
        queue = self._inboxes.own((service, key), list)
        return queue.pop(0) if queue else None

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None:
        queue = self._inboxes.own((service, key), list)
        if queue and invocation_id in queue:
            queue.remove(invocation_id)

    def add_timer(self, fire_at_ms: int, kind: TimerKind, invocation_id: str, completion_id: int) -> int:
        if not self.all_led:
            self._fence_id(invocation_id)
        timer_id = self.s.new_timer_id()
        self._timers.put(timer_id, Timer(timer_id, fire_at_ms, kind, invocation_id, completion_id))
        return timer_id

    def get_timer(self, timer_id: int) -> Timer | None:
        return self._timers.get(timer_id)

    def delete_timer(self, timer_id: int) -> None:
        self._timers.delete(timer_id)

    def get_promise(self, service: str, key: str, name: str) -> Promise | None:
        data = self._promises.get((service, key, name))
        return None if data is None else decode_promise(data)

    def put_promise(self, service: str, key: str, name: str, promise: Promise) -> None:
        self._promises.put((service, key, name), encode_promise(promise))

    def clear_promises(self, service: str, key: str) -> None:
        for k, _ in self._promises.items():
            if k[:2] == (service, key):
                self._promises.delete(k)

    def get_service_override(self, service: str) -> ServiceOverride | None:
        data = self._overrides.get(service)
        return None if data is None else decode_override(data)

    def put_service_override(self, service: str, override: ServiceOverride) -> None:
        self._overrides.put(service, encode_override(override))

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        data = self._deployments.get(deployment_id)
        return None if data is None else decode_deployment(data)

    def put_deployment(self, deployment: Deployment) -> None:
        self._deployments.put(deployment.id, encode_deployment(deployment))

    def delete_deployment(self, deployment_id: str) -> None:
        self._deployments.delete(deployment_id)
