"""The rows of a key on PostgreSQL, cached by its leader: who holds the key's lock, and the key's state.

An exclusive handler's every invocation reads its key's lock (to take it or queue behind it) and its state
(eager state, sent with the start of an attempt), inside the chain of commits that serializes the key: each
read a round trip on the event loop, two to three per invocation of a hot key. While a node leads a
partition no other node writes its rows (``postgres_lease.py``), so, as with the invocation rows
(``PostgresStore.rows``), what the leader read or committed is what the table holds.

``KeyCache`` (the store's) keeps committed lock holders and whole state maps of the led partitions, valid for
the leadership they were read or written under: the store empties it with the invocation rows when the led
partitions or their epochs change, or when it outgrows its bounds. A batch's own writes sit in its overlay
(``KeyRowsTransaction.locks``, ``.states``), merged into the cache only once its COMMIT succeeded. A write to
a key's state whose map is not known (neither cached nor read by the batch) marks it unknown: the batch's
later reads of it go to the server (after its held writes), and the commit drops it from the cache.
"""

from __future__ import annotations

from typing import Any

from unbroken.core import limits
from unbroken.storage.postgres_batch import (
    CLEAR_ALL_STATE,
    CLEAR_LOCK,
    CLEAR_STATE,
    SET_LOCK,
    SET_STATE,
    Kind,
)

Key = tuple[str, str]  # (service, key)


class KeyCache:
    """Committed lock holders and state maps of the led partitions' keys (bounded; see the module)."""

    def __init__(self) -> None:
        self.locks: dict[Key, str | None] = {}  # None: no lock row
        self.states: dict[Key, dict[str, bytes]] = {}  # the whole map ({}: no state)

    def clear(self) -> None:
        self.locks.clear()
        self.states.clear()

    def full(self) -> bool:
        return max(len(self.locks), len(self.states)) > limits.pg_key_cache_keys_max

    def merge(self, locks: dict[Key, str | None], states: dict[Key, dict[str, bytes] | None]) -> None:
        """A batch committed: its overlay is what the rows hold now."""
        self.locks.update(locks)
        for key, state in states.items():
            if state is None or not _cacheable(state):
                self.states.pop(key, None)
            else:
                self.states[key] = state

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
    epochs: dict[int, int]  # the leadership the batch started under

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
        k = (service, key)
        if k not in self.states:
            cached = self._cache().states.get(k)
            self.states[k] = None if cached is None else dict(cached)
        return self.states[k]

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
