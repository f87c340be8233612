"""The rows of a key on PostgreSQL, cached by its leader: who holds the key's lock, the key's state, and the
queue of invocations waiting for its lock.

An exclusive handler's every invocation reads its key's lock (to take it or queue behind it) and its state
(eager state, sent with the start of an attempt), and its completion takes the next one off the key's queue,
all inside the chain of commits that serializes the key: each read a round trip on the event loop, three to
four per invocation of a hot key, and a batch that has read mid-way cannot go as one simple query
(``postgres_batch.py``). While a node leads a
partition no other node writes its rows (``postgres_lease.py``), so, as with the invocation rows
(``PostgresStore.rows``), what the leader read or committed is what the table holds.

``KeyCache`` (the store's) keeps committed lock holders and whole state maps of the led partitions, valid for
the leadership they were read or written under: the store empties it with the invocation rows when the led
partitions or their epochs change, or when it outgrows its bounds. A batch's own writes sit in its overlay
(``KeyRowsTransaction.locks``, ``.states``, ``.queues``), merged into the cache only once its COMMIT
succeeded. A write to a key's state or queue that is not known (neither cached nor read by the batch) marks
it unknown: the batch's later reads of it go to the server (after its held writes), and the commit drops it
from the cache. A queue is kept while it holds at most ``pg_key_cache_queue_max`` ids (a key with more waiting
is read from the server, one round trip per pop, as before the cache).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from unbroken.core import limits
from unbroken.storage.postgres_batch import (
    CLEAR_ALL_STATE,
    CLEAR_LOCK,
    CLEAR_STATE,
    PUSH_INBOX,
    REMOVE_FROM_INBOX,
    SET_LOCK,
    SET_STATE,
    Kind,
)

Key = tuple[str, str]  # (service, key)
K = TypeVar("K")
V = TypeVar("V")


def written(overlay: dict[K, V | None], cached: dict[K, V], key: K, copy: Callable[[V], V]) -> V | None:
    """What a batch's next write of ``key`` goes to: its overlay's value, made on the first write from a
    copy of the cached one (None: not known, the write is only held). The caches' one copy-on-write."""
    if key not in overlay:
        value = cached.get(key)
        overlay[key] = None if value is None else copy(value)
    return overlay[key]


class KeyCache:
    """Committed lock holders and state maps of the led partitions' keys (bounded; see the module)."""

    def __init__(self) -> None:
        self.locks: dict[Key, str | None] = {}  # None: no lock row
        self.states: dict[Key, dict[str, bytes]] = {}  # the whole map ({}: no state)
        self.queues: dict[Key, list[str]] = {}  # the ids waiting for the key's lock, first first

    def clear(self) -> None:
        self.locks.clear()
        self.states.clear()
        self.queues.clear()

    def full(self) -> bool:
        return max(len(self.locks), len(self.states), len(self.queues)) > limits.pg_key_cache_keys_max

    def merge(
        self,
        locks: dict[Key, str | None],
        states: dict[Key, dict[str, bytes] | None],
        queues: dict[Key, list[str] | None],
    ) -> None:
        """A batch committed: its overlay is what the rows hold now."""
        self.locks.update(locks)
        for key, state in states.items():
            if state is None or not _cacheable(state):
                self.states.pop(key, None)
            else:
                self.states[key] = state
        for key, queue in queues.items():
            if queue is None or len(queue) > limits.pg_key_cache_queue_max:
                self.queues.pop(key, None)
            else:
                self.queues[key] = queue

    def remember_state(self, key: Key, state: dict[str, bytes]) -> None:
        if _cacheable(state):
            self.states[key] = state


def _cacheable(state: dict[str, bytes]) -> bool:
    return sum(len(value) for value in state.values()) <= limits.pg_key_cache_state_bytes_max


class KeyRowsTransaction:
    """Locks and state of ``PostgresTransaction`` through the leader's ``KeyCache`` (``core.storage``)."""

    __slots__ = ()
    locks: dict[Key, str | None]  # this batch's lock writes
    states: dict[Key, dict[str, bytes] | None]  # this batch's state maps after its writes (None: unknown)
    queues: dict[Key, list[str] | None]  # this batch's key queues after its pushes and pops (None: unknown)
    epochs: dict[int, int]  # the leadership the batch started under
    touched: set[int]  # the partitions it wrote (fenced by their epochs)

    # the transaction's plumbing (``PostgresTransaction``)
    def _cache(self) -> KeyCache:
        raise NotImplementedError

    def _key_part(self, key: str) -> int:
        raise NotImplementedError

    def _w(self, part: int, kind: Kind, row: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _one(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _all(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ state
    def _known_state(self, service: str, key: str) -> dict[str, bytes] | None:
        """The key's state map as the batch sees it, if known without a round trip (not to be mutated)."""
        k = (service, key)
        if k in self.states:
            return self.states[k]
        return self._cache().states.get(k)

    def state_all(self, service: str, key: str) -> dict[str, bytes]:
        known = self._known_state(service, key)
        if known is not None:
            return dict(known)
        part = self._key_part(key)
        rows = self._all(
            "SELECT name, value FROM state WHERE part = %s AND service = %s AND service_key = %s",
            (part, service, key),
        )
        state = {str(name): bytes(value) for name, value in rows}
        if (service, key) in self.states:  # written by the batch, unknown before: known now (its writes sent)
            self.states[(service, key)] = dict(state)
        elif part in self.epochs:  # committed rows, led here
            self._cache().remember_state((service, key), dict(state))
        return state

    def state_get(self, service: str, key: str, name: str) -> bytes | None:
        known = self._known_state(service, key)
        if known is not None:
            return known.get(name)
        row = self._one(
            "SELECT value FROM state WHERE part = %s AND service = %s AND service_key = %s AND name = %s",
            (self._key_part(key), service, key, name),
        )
        return None if row is None else bytes(row[0])

    def state_keys(self, service: str, key: str) -> list[str]:
        known = self._known_state(service, key)
        if known is not None:
            return sorted(known, key=str.encode)  # the server's ORDER BY name COLLATE "C": by bytes
        rows = self._all(
            'SELECT name FROM state WHERE part = %s AND service = %s AND service_key = %s ORDER BY name COLLATE "C"',
            (self._key_part(key), service, key),
        )
        return [str(row[0]) for row in rows]

    def _written_state(self, service: str, key: str) -> dict[str, bytes] | None:
        """The map this batch's next state write of the key goes to (None: unknown, the write only held)."""
        return written(self.states, self._cache().states, (service, key), dict)

    def state_set(self, service: str, key: str, name: str, value: bytes) -> None:
        part = self._key_part(key)
        self._w(part, SET_STATE, (part, service, key, name, value))
        state = self._written_state(service, key)
        if state is not None:
            state[name] = value

    def state_clear(self, service: str, key: str, name: str) -> None:
        part = self._key_part(key)
        self._w(part, CLEAR_STATE, (part, service, key, name))
        state = self._written_state(service, key)
        if state is not None:
            state.pop(name, None)

    def state_clear_all(self, service: str, key: str) -> None:
        part = self._key_part(key)
        self._w(part, CLEAR_ALL_STATE, (part, service, key))
        self.states[(service, key)] = {}  # known whatever it was

    # ------------------------------------------------------------------------------------ locks
    def lock_holder(self, service: str, key: str) -> str | None:
        k = (service, key)
        if k in self.locks:
            return self.locks[k]
        cache = self._cache()
        if k in cache.locks:
            return cache.locks[k]
        part = self._key_part(key)
        row = self._one(
            "SELECT holder FROM lock WHERE part = %s AND service = %s AND service_key = %s",
            (part, service, key),
        )
        holder = None if row is None else str(row[0])
        if part in self.epochs:  # committed (the batch has not written it), led here
            cache.locks[k] = holder
        return holder

    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None:
        part = self._key_part(key)
        if invocation_id is None:
            self._w(part, CLEAR_LOCK, (part, service, key))
        else:
            self._w(part, SET_LOCK, (part, service, key, invocation_id))
        self.locks[(service, key)] = invocation_id

    # ------------------------------------------------------------------------------------ the key's queue
    def _queue(self, service: str, key: str) -> list[str] | None:
        """The key's queue as this batch changes it (a copy of the cached one), None if not known."""
        return written(self.queues, self._cache().queues, (service, key), list)

    def inbox_push(self, service: str, key: str, invocation_id: str, pushed_at_ms: int) -> None:
        part = self._key_part(key)
        self._w(part, PUSH_INBOX, (part, service, key, invocation_id, pushed_at_ms))
        queue = self._queue(service, key)
        if queue is not None:
            queue.append(invocation_id)

    def inbox_pop(self, service: str, key: str) -> str | None:
        part = self._key_part(key)
        queue = self._queue(service, key)
        if queue is None:  # not known: the ids waiting, after the batch's own pushes (its writes sent first)
            rows = self._all(
                "SELECT id FROM inbox WHERE part = %s AND service = %s AND service_key = %s ORDER BY seq"
                " LIMIT %s",
                (part, service, key, limits.pg_key_cache_queue_max + 1),
            )
            queue = [str(row[0]) for row in rows]
            if len(queue) > limits.pg_key_cache_queue_max:
                return self._pop_unknown(part, service, key)  # too many to keep: stays unknown
            self.queues[(service, key)] = queue
        if not queue:
            self.touched.add(part)  # as the DELETE it replaces: fenced, so a deposed leader's empty pop fails
            return None
        first = queue.pop(0)
        self._w(part, REMOVE_FROM_INBOX, (part, service, key, first))
        return first

    def _pop_unknown(self, part: int, service: str, key: str) -> str | None:
        self.touched.add(part)
        row = self._one(
            "DELETE FROM inbox WHERE part = %s AND seq = (SELECT seq FROM inbox WHERE part = %s AND service = %s"
            " AND service_key = %s ORDER BY seq LIMIT 1) RETURNING id",
            (part, part, service, key),
        )
        return None if row is None else str(row[0])

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None:
        part = self._key_part(key)
        self._w(part, REMOVE_FROM_INBOX, (part, service, key, invocation_id))
        queue = self._queue(service, key)
        if queue is not None and invocation_id in queue:
            queue.remove(invocation_id)
