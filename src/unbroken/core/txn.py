"""The storage interface the state machine applies records against: one protocol, every backend.

A ``Transaction`` is what one batch of records sees: reads observe the batch's own earlier writes.
Backends (``unbroken.storage.memory``, ``unbroken.storage.sqlite``) implement it and pass the same
contract tests. Nothing here commits: the processor owns commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from unbroken.core.journal import Entry, Result
from unbroken.core.model import Invocation, Sink


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer. ``kind``: ``sleep`` (completes ``completion_id``), ``invoke`` (a delayed
    invocation becomes due), ``retry`` (a backing-off invocation tries again)."""

    timer_id: int
    fire_at_ms: int
    kind: str
    invocation_id: str
    completion_id: int = 0


@dataclass(frozen=True, slots=True)
class Promise:
    result: Result | None
    waiters: tuple[Sink, ...] = ()


class Transaction(Protocol):
    # invocations -------------------------------------------------------------------------------------
    def get_invocation(self, invocation_id: str) -> Invocation | None:
        """The stored row, its invariants checked (``check_invocation``) on the way out."""
        ...
    def put_invocation(self, inv: Invocation) -> None: ...
    def delete_invocation(self, invocation_id: str) -> None: ...
    def expired_invocations(self, now_ms: int, limit: int) -> list[str]: ...  # 0 < cleanup_due_ms(inv) <= now

    # journal -----------------------------------------------------------------------------------------
    def journal(self, invocation_id: str) -> list[Entry]: ...
    def append_journal(self, invocation_id: str, index: int, entry: Entry) -> None: ...
    def delete_journal(self, invocation_id: str) -> None: ...

    # state (service, key, name) -> value -------------------------------------------------------------
    def state_all(self, service: str, key: str) -> dict[str, bytes]: ...
    def state_set(self, service: str, key: str, name: str, value: bytes) -> None: ...
    def state_clear(self, service: str, key: str, name: str) -> None: ...
    def state_clear_all(self, service: str, key: str) -> None: ...

    # the lock of a keyed service and its inbox (FIFO) ------------------------------------------------
    def lock_holder(self, service: str, key: str) -> str | None: ...
    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None: ...
    def inbox_push(self, service: str, key: str, invocation_id: str) -> None: ...
    def inbox_pop(self, service: str, key: str) -> str | None: ...
    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None: ...

    # timers ------------------------------------------------------------------------------------------
    def add_timer(self, fire_at_ms: int, kind: str, invocation_id: str, completion_id: int) -> int: ...
    def get_timer(self, timer_id: int) -> Timer | None: ...
    def delete_timer(self, timer_id: int) -> None: ...

    # workflow promises -------------------------------------------------------------------------------
    def get_promise(self, service: str, key: str, name: str) -> Promise | None: ...
    def put_promise(self, service: str, key: str, name: str, promise: Promise) -> None: ...
    def clear_promises(self, service: str, key: str) -> None: ...
