"""The PostgreSQL read model (``core.read_model.ReadModel``): the admin API's typed reads (explain, state,
an invocation's journal) on a connection and thread of their own, each call inside one REPEATABLE READ,
READ ONLY transaction (one consistent snapshot).

``POST /query``: the views (``sys_invocation``, ``sys_journal``, ...) decode the stored msgpack rows with
Python functions registered in SQLite, which PostgreSQL cannot call. So the tables are exported, in one
snapshot, to a query engine given by ``wiring`` (``storage/sqlite_mirror.py``: a throwaway SQLite file with
the views); past ``limits.pg_query_rows_copied_max`` rows the query is refused with a message. Without an
engine, every query is refused with a message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.invocation import Invocation
from unbroken.core.read_model import (
    EXPORT_COLUMNS,
    Catalog,
    Export,
    InboxSpot,
    QueryAnswer,
    QueryBusy,
    QueryEngine,
    QueryError,
    Snapshot,
    StoreCounts,
)
from unbroken.core.storage import Promise, TimerKind
from unbroken.storage.codec import decode_invocation, decode_promise
from unbroken.storage.postgres_schema import (
    Location,
    connect,
    invocation_partition,
    key_partition,
    parse_url,
    read_partitions,
)

_T = TypeVar("_T")
QUERY_UNSUPPORTED = (
    "SQL queries (POST /query, unbroken sql) are not available on this PostgreSQL store: their views "
    "decode rows with functions of the SQLite store. Use the admin API's typed endpoints (explain, state)"
)
# The order rows are copied in (the views' default order follows it, as on SQLite).
_EXPORT_ORDER = {"invocation": "seq", "journal": "invocation_id, idx", "inbox": "seq", "timer": "id"}


class PostgresSnapshot:
    __slots__ = ("conn", "parts")

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], parts: int) -> None:
        self.conn = conn
        self.parts = parts

    def _one(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return self.conn.execute(query, params, binary=True).fetchone()

    def in_flight_ids(self, after: str | None, limit: int) -> list[str]:
        # by (part, id), the primary key: a page starts where the last one ended, on the index
        start = (-1, "") if after is None else (invocation_partition(after, self.parts), after)
        rows = self.conn.execute(
            "SELECT id FROM invocation WHERE status <> 'completed' AND (part, id) > (%s, %s)"
            " ORDER BY part, id LIMIT %s",
            (*start, limit),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def counts(self) -> StoreCounts:
        rows = self.conn.execute(
            "SELECT service, handler, status, count(*) FROM invocation GROUP BY service, handler, status"
        ).fetchall()
        invocations = {(str(s), str(h), str(st)): int(n) for s, h, st, n in rows}
        inboxed = self._one("SELECT count(*) FROM inbox", ())
        timers = self._one("SELECT count(*) FROM timer", ())
        return StoreCounts(invocations, int(inboxed[0]) if inboxed else 0, int(timers[0]) if timers else 0)

    def invocation(self, invocation_id: str) -> Invocation | None:
        row = self._one(
            "SELECT data FROM invocation WHERE part = %s AND id = %s",
            (invocation_partition(invocation_id, self.parts), invocation_id),
        )
        return None if row is None else decode_invocation(bytes(row[0]), invocation_id)

    def journal(self, invocation_id: str) -> list[j.Entry]:
        rows = self.conn.execute(
            "SELECT entry FROM journal WHERE part = %s AND invocation_id = %s ORDER BY idx",
            (invocation_partition(invocation_id, self.parts), invocation_id),
            binary=True,
        )
        return [j.decode_entry(bytes(blob)) for (blob,) in rows]

    def journal_entry_containing(self, invocation_id: str, needle: bytes) -> tuple[int, j.Entry] | None:
        row = self._one(
            "SELECT idx, entry FROM journal WHERE part = %s AND invocation_id = %s AND position(%s IN entry) > 0"
            " ORDER BY idx LIMIT 1",
            (invocation_partition(invocation_id, self.parts), invocation_id, needle),
        )
        return None if row is None else (int(row[0]), j.decode_entry(bytes(row[1])))

    def state(self, service: str, key: str) -> dict[str, bytes]:
        rows = self.conn.execute(
            "SELECT name, value FROM state WHERE part = %s AND service = %s AND service_key = %s",
            (key_partition(key, self.parts), service, key),
            binary=True,
        )
        return {str(name): bytes(value) for name, value in rows}

    def lock_holder(self, service: str, key: str) -> str | None:
        row = self._one(
            "SELECT holder FROM lock WHERE part = %s AND service = %s AND service_key = %s",
            (key_partition(key, self.parts), service, key),
        )
        return None if row is None else str(row[0])

    def inbox_spot(self, service: str, key: str, invocation_id: str) -> InboxSpot | None:
        part = key_partition(key, self.parts)
        spot = self._one(
            "SELECT seq, created_at FROM inbox WHERE part = %s AND service = %s AND service_key = %s AND id = %s",
            (part, service, key, invocation_id),
        )
        if spot is None:
            return None
        ahead = self._one(
            "SELECT count(*) FROM inbox WHERE part = %s AND service = %s AND service_key = %s AND seq < %s",
            (part, service, key, spot[0]),
        )
        assert ahead is not None
        return InboxSpot(int(ahead[0]), int(spot[1]))

    def next_timer_ms(self, invocation_id: str, kind: TimerKind) -> int | None:
        row = self._one(
            "SELECT min(fire_at) FROM timer WHERE part = %s AND invocation_id = %s AND kind = %s",
            (invocation_partition(invocation_id, self.parts), invocation_id, kind.value),
        )
        return None if row is None or row[0] is None else int(row[0])

    def promise(self, service: str, key: str, name: str) -> Promise | None:
        row = self._one(
            "SELECT data FROM promise WHERE part = %s AND service = %s AND service_key = %s AND name = %s",
            (key_partition(key, self.parts), service, key, name),
        )
        return None if row is None else decode_promise(bytes(row[0]))


class PostgresReadModel:
    """Implements :class:`unbroken.core.read_model.ReadModel` on the store at ``location``."""

    def __init__(self, location: Location, partitions: int, engine: QueryEngine | None = None) -> None:
        self.location = location
        self.partitions = partitions
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unbroken-reads")
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        # Queries: a thread and connection of their own, so a slow one never delays the typed reads.
        self._query_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unbroken-query")
        self._query_conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._inflight = 0

    @classmethod
    def at(cls, url: str) -> PostgresReadModel:
        """The typed reads of the store at ``url``, beside whatever node runs on it: unlike opening a
        ``PostgresStore`` this takes no partition lease, bumps no epoch and creates or migrates nothing
        (every connection is READ ONLY). Errors as ``read_partitions``; ``ValueError`` for a bad URL."""
        location = parse_url(url)
        return cls(location, read_partitions(location))

    async def read(self, fn: Callable[[Snapshot], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, fn)

    def _read(self, fn: Callable[[Snapshot], _T]) -> _T:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.location, autocommit=False)
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
        try:
            return fn(PostgresSnapshot(self._conn, self.partitions))
        finally:
            if not self._conn.broken:
                self._conn.rollback()  # read only: ends the snapshot

    async def query(self, sql: str, timeout_s: float | None, catalog: Catalog) -> QueryAnswer:
        if self.engine is None:
            raise QueryError(QUERY_UNSUPPORTED)
        if self._inflight >= limits.query_inflight_max:
            raise QueryBusy(
                f"too many queries at once (at most {limits.query_inflight_max} run or wait): retry later"
            )
        self._inflight += 1
        arrived = time.monotonic()  # the wait for the pool and the export count towards the time limit
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._query_pool, self._query, sql, timeout_s, catalog, arrived)
        finally:
            self._inflight -= 1

    def _query(self, sql: str, timeout_s: float | None, catalog: Catalog, arrived: float) -> QueryAnswer:
        assert self.engine is not None
        return self.engine(self._export(), sql, timeout_s, catalog, arrived)

    def _export(self) -> Export:
        """Every table the views read, in one snapshot; ``QueryError`` past the copy bound."""
        conn = self._query_conn
        if conn is None or conn.closed or conn.broken:
            conn = self._query_conn = connect(self.location, autocommit=False)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        budget = limits.pg_query_rows_copied_max
        rows: Export = {}
        try:
            for table, columns in EXPORT_COLUMNS.items():
                order = _EXPORT_ORDER.get(table, "1")
                query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order} LIMIT %s"
                rows[table] = found = conn.execute(query, (budget + 1,), binary=True).fetchall()
                budget -= len(found)
                if budget < 0:
                    raise QueryError(
                        f"the PostgreSQL store holds more than {limits.pg_query_rows_copied_max} rows: SQL queries "
                        "copy them to SQLite to run the views, and are refused past that"
                    )
        finally:
            if not conn.broken:
                conn.rollback()
        return {
            table: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in found]
            for table, found in rows.items()
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._query_pool.shutdown(wait=True, cancel_futures=True)
        for conn in (self._conn, self._query_conn):
            if conn is not None:
                conn.close()
