"""The read side: what the admin API reads from the store, as one protocol every backend implements.

The write side is ``core.txn.Transaction`` (what the state machine applies records against). The admin API
(``unbroken.admin``) reads only through :class:`ReadModel`: a consistent :class:`Snapshot` of typed reads
(an invocation, its journal, a key's state, lock, inbox, timers and promises) run off the event loop, and
read-only SQL over Restate-shaped views (``query``) for ``POST /query``. Backends: ``storage.sqlite_reads``
(the real one) and ``storage.memory_reads`` (typed reads only, for tests and the simulator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from unbroken.core.durations import format_rfc3339
from unbroken.core.invocation import Invocation
from unbroken.core.journal import Entry
from unbroken.core.txn import Promise, TimerKind

_T = TypeVar("_T")


# The rows a backend without SQL views of its own hands to a query engine that has them (PostgreSQL's to
# ``storage/sqlite_mirror.py``, joined in ``wiring``): table -> rows, columns in this order.
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "invocation": (
        "seq",
        "id",
        "status",
        "service",
        "service_key",
        "handler",
        "created_at",
        "modified_at",
        "expires_at",
        "data",
    ),
    "journal": ("invocation_id", "idx", "entry", "appended_at"),
    "state": ("service", "service_key", "name", "value"),
    "lock": ("service", "service_key", "holder"),
    "inbox": ("seq", "service", "service_key", "id", "created_at"),
    "timer": ("id", "fire_at", "kind", "invocation_id", "completion_id"),
    "promise": ("service", "service_key", "name", "data"),
}
Export = dict[str, list[tuple[Any, ...]]]


class NoStoreError(LookupError):
    """Nothing to read where the caller pointed: no SQLite file in the data dir, no store in that
    PostgreSQL schema."""


class QueryError(Exception):
    """A query the client got wrong or that hit a limit (answered 400 with this message)."""


class QueryBusy(QueryError):
    """Too many queries at once (answered 429: retry later)."""


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """The rows of one query, JSON-ready (blobs as lowercase hex); ``truncated``: more rows matched."""

    rows: list[dict[str, Any]]
    truncated: bool = False
    # the column names in the query's order (also when no row matched); the rows say the same otherwise
    columns: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class InboxSpot:
    """Where an invocation waits in its key's inbox."""

    ahead: int  # invocations before it in the inbox
    queued_at_ms: int | None  # when it was queued (None: the backend does not record it)


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What ``GET /metrics`` reads from the store: invocations by (service, handler, status), the
    invocations queued in inboxes behind a key's lock, and the durable timers not fired yet."""

    invocations: dict[tuple[str, str, str], int]
    inboxed: int
    timers: int


class Catalog(Protocol):
    """The deployed services and deployments, as JSON arrays (the ``sys_service``/``sys_deployment`` rows).

    They live in memory (the schemas), not in the store: the caller hands them to each query."""

    def services_json(self) -> str: ...
    def deployments_json(self) -> str: ...


class Snapshot(Protocol):
    """Typed reads of one consistent view of the store (used from one thread, inside ``ReadModel.read``)."""

    def invocation(self, invocation_id: str) -> Invocation | None: ...
    def journal(self, invocation_id: str) -> list[Entry]:
        """The journal in order (an entry's index is its position); empty if there is none."""
        ...

    def journal_entry_containing(self, invocation_id: str, needle: bytes) -> tuple[int, Entry] | None:
        """The first journal entry whose stored form contains ``needle`` (e.g. an awakeable id handed out)."""
        ...

    def state(self, service: str, key: str) -> dict[str, bytes]: ...
    def lock_holder(self, service: str, key: str) -> str | None: ...
    def inbox_spot(self, service: str, key: str, invocation_id: str) -> InboxSpot | None: ...
    def next_timer_ms(self, invocation_id: str, kind: TimerKind) -> int | None:
        """When the earliest timer of ``kind`` (``invoke``, ``retry``, ``sleep``) of the invocation fires."""
        ...

    def promise(self, service: str, key: str, name: str) -> Promise | None: ...
    def in_flight_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` ids of the invocations not completed, in an order of the backend's choosing that
        stays the same between snapshots: the page after the invocation ``after`` (None: the first page).
        The pre-deploy replay check walks the store with it, a page per snapshot."""
        ...

    def counts(self) -> StoreCounts:
        """Counts over the whole store (a scan of the invocations: read at scrape time, not per request)."""
        ...


class QueryEngine(Protocol):
    """Runs one read-only statement over exported rows (see ``EXPORT_COLUMNS``); blocking. Its time limit
    counts from ``arrived`` (``time.monotonic()`` when the query arrived: the export counts too)."""

    def __call__(
        self, rows: Export, sql: str, timeout_s: float | None, catalog: Catalog, arrived: float
    ) -> QueryAnswer: ...


class ReadModel(Protocol):
    async def read(self, fn: Callable[[Snapshot], _T]) -> _T:
        """Run ``fn`` on a snapshot, off the event loop and off the query pool (a slow query never delays it)."""
        ...

    async def query(self, sql: str, timeout_s: float | None, catalog: Catalog) -> QueryAnswer:
        """Run one read-only SQL statement over the views; ``QueryError`` for bad SQL, writes or a limit hit."""
        ...

    def close(self) -> None: ...


def rfc3339(ms: int | None) -> str | None:
    """``2026-11-25T20:02:09.374Z`` for epoch milliseconds; None for None/0 (not set)."""
    return format_rfc3339(ms) if ms else None
