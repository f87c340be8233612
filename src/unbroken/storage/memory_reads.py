"""The read model of the in-memory store (``core.read_model.ReadModel``): the typed reads, for tests and
the simulator. SQL needs the SQLite store: ``query`` says so (400)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from unbroken.core import journal as j
from unbroken.core.invocation import Invocation, Status
from unbroken.core.read_model import Catalog, InboxSpot, QueryAnswer, QueryError, Snapshot, StoreCounts
from unbroken.core.txn import Promise, TimerKind
from unbroken.storage.codec import decode_invocation, decode_promise
from unbroken.storage.memory import MemoryStore

_T = TypeVar("_T")


class MemorySnapshot:
    __slots__ = ("s",)

    def __init__(self, store: MemoryStore) -> None:
        self.s = store

    def invocation(self, invocation_id: str) -> Invocation | None:
        data = self.s.invocations.get(invocation_id)
        if data is None:
            return None
        return decode_invocation(data, invocation_id)

    def journal(self, invocation_id: str) -> list[j.Entry]:
        return [j.decode_entry(b) for b in self.s.journals.get(invocation_id, [])]

    def journal_entry_containing(self, invocation_id: str, needle: bytes) -> tuple[int, j.Entry] | None:
        for idx, blob in enumerate(self.s.journals.get(invocation_id, [])):
            if needle in blob:
                return idx, j.decode_entry(blob)
        return None

    def state(self, service: str, key: str) -> dict[str, bytes]:
        return dict(self.s.state.get((service, key), {}))

    def lock_holder(self, service: str, key: str) -> str | None:
        return self.s.locks.get((service, key))

    def inbox_spot(self, service: str, key: str, invocation_id: str) -> InboxSpot | None:
        queue = self.s.inboxes.get((service, key), [])
        return InboxSpot(queue.index(invocation_id), None) if invocation_id in queue else None

    def next_timer_ms(self, invocation_id: str, kind: TimerKind) -> int | None:
        due = [
            t.fire_at_ms
            for t in self.s.timer_rows.values()
            if t.invocation_id == invocation_id and t.kind == kind
        ]
        return min(due, default=None)

    def promise(self, service: str, key: str, name: str) -> Promise | None:
        data = self.s.promises.get((service, key, name))
        return None if data is None else decode_promise(data)

    def in_flight_ids(self, after: str | None, limit: int) -> list[str]:
        ids = sorted(
            i
            for i, data in self.s.invocations.items()
            if (after is None or i > after) and decode_invocation(data, i).status is not Status.COMPLETED
        )
        return ids[:limit]

    def counts(self) -> StoreCounts:
        invocations: dict[tuple[str, str, str], int] = {}
        for invocation_id, data in self.s.invocations.items():
            inv = decode_invocation(data, invocation_id)
            key = (inv.target.service, inv.target.handler, inv.status.value)
            invocations[key] = invocations.get(key, 0) + 1
        inboxed = sum(len(queue) for queue in self.s.inboxes.values())
        return StoreCounts(invocations, inboxed, len(self.s.timer_rows))


class MemoryReadModel:
    """Reads run on the caller's thread, under the store's lock."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def read(self, fn: Callable[[Snapshot], _T]) -> _T:
        with self.store.lock:  # committed rows only, and no commit publishing meanwhile (its writer thread)
            return fn(MemorySnapshot(self.store))

    async def query(self, sql: str, timeout_s: float | None, catalog: Catalog) -> QueryAnswer:
        raise QueryError("SQL queries need the SQLite store: this engine runs on the in-memory store")

    def close(self) -> None:
        pass
