"""The SQLite read model (``core.read_model.ReadModel``): typed snapshot reads and ``POST /query``'s SQL.

Typed reads (``read``: an invocation, its journal, a key's state, ... for explain and the state endpoint)
run on their own read-only connection and thread, inside one read transaction (one consistent snapshot),
so slow SQL queries never delay them.

SQL queries run on their own READ-ONLY connections (one per worker thread of a small dedicated pool, so a
slow query never occupies the default executor that ``ctx.run`` actions use). Each connection is opened
``mode=ro``, gets the views once (``sqlite_views.py``), then ``PRAGMA query_only=ON`` and an authorizer
that allows reads only (SELECT, READ, FUNCTION, recursive CTEs, the introspection pragmas of
``READ_PRAGMAS`` also as table-valued functions such as ``pragma_table_info('state')``): any write, ATTACH,
transaction or pragma change is refused, and so is ``fts3_tokenizer`` (it answers a process address).

Limits: a query is answered 400 at its deadline (``timeout``, at most ``limits.query_timeout_s_max``,
counted from its arrival, so time spent waiting for a free reader counts; one whose deadline passed while it
waited is not started). SQLite checks the deadline (the progress handler, and ``interrupt()``) only between
the steps of a loop, never between the functions of one row: a row of 30 ``printf`` calls each making 60 MB
would run on for ~10 s. So at the deadline the caller is answered and the query is stopped from outside:
``interrupt()`` plus a string/blob length limit of one byte, which makes the next function of the row
fail at once (``_Job.stop``); the reader is free within about one function call.
At most ``limits.query_rows_max`` rows (``"truncated": true`` says more matched) and
``limits.query_answer_bytes_max`` bytes of answer (more is refused) are returned.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from unbroken.core import limits
from unbroken.core.query_tables import TABLES
from unbroken.core.read_model import Catalog, QueryAnswer, QueryBusy, QueryError, Snapshot
from unbroken.storage import sqlite_views as views
from unbroken.storage.sqlite import connect
from unbroken.storage.sqlite_snapshot import SqliteSnapshot

_T = TypeVar("_T")

_PROGRESS_STEPS = 1_000
_ANSWER_GRACE_S = 0.1  # the reader's own deadline check usually answers first, with the same message
_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
READ_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo"}
)
# fts3_tokenizer(name) answers the address of a tokenizer module in the process; load_extension loads code.
_DENIED_FUNCTIONS = frozenset({"fts3_tokenizer", "load_extension"})
_ACTION_NAMES = {
    getattr(sqlite3, n): n.removeprefix("SQLITE_").replace("_", " ")
    for n in dir(sqlite3)
    if n.startswith(("SQLITE_CREATE", "SQLITE_DROP", "SQLITE_ALTER"))
    or n
    in (
        "SQLITE_INSERT",
        "SQLITE_UPDATE",
        "SQLITE_DELETE",
        "SQLITE_ATTACH",
        "SQLITE_DETACH",
        "SQLITE_PRAGMA",
        "SQLITE_TRANSACTION",
        "SQLITE_SAVEPOINT",
        "SQLITE_ANALYZE",
        "SQLITE_REINDEX",
    )
}
_WRITE_VERBS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "CREATE",
        "DROP",
        "ALTER",
        "ATTACH",
        "DETACH",
        "BEGIN",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
    }
)


class _NoCatalog:
    def services_json(self) -> str:
        return "[]"

    def deployments_json(self) -> str:
        return "[]"


class _Job:
    """One query submitted to the pool: the reader running it, so that it can be stopped at its deadline."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reader: _Reader | None = None
        self.stopped = False

    def start(self, reader: _Reader) -> bool:
        with self.lock:
            if not self.stopped:
                self.reader = reader
            return not self.stopped

    def finish(self) -> None:
        with self.lock:
            reader, self.reader = self.reader, None
        if reader is not None:  # no stop() can reach it any more: give it its normal limit back
            reader.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.query_value_bytes_max)

    def stop(self) -> None:
        """Called from the event loop at the deadline: the running statement fails at its next step."""
        with self.lock:
            self.stopped = True
            if self.reader is not None:
                self.reader.conn.interrupt()
                self.reader.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1)


def _connect(path: str) -> sqlite3.Connection:
    conn = connect(path, readonly=True)
    conn.execute(f"PRAGMA cache_size=-{limits.reader_page_cache_bytes_max // 1024}")
    return conn


class _Reader:
    """One read-only connection and the per-statement limits and catalog its callbacks use."""

    def __init__(self, path: str) -> None:
        self.conn = _connect(path)
        self.cache = views.DecodeCache()
        self.catalog: Catalog = _NoCatalog()
        views.register_functions(self.conn, self.cache, lambda: self.catalog)
        # the dialect's modules load with the first reader (the first query), not at start-up
        from unbroken.storage.sqlite_catalog_views import create_catalog_views
        from unbroken.storage.sqlite_dialect import translate

        self.translate = translate
        views.create_views(self.conn)
        create_catalog_views(self.conn)
        self.view_columns = {
            table: [row[1] for row in self.conn.execute(f"PRAGMA temp.table_info({table})")]
            for table in TABLES
        }
        self.conn.execute("PRAGMA query_only=ON")
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.query_value_bytes_max)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.set_authorizer(self._authorize)
        self.conn.set_progress_handler(self._progress, _PROGRESS_STEPS)
        self.deadline = float("inf")
        self.denied: str | None = None

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, view: str | None
    ) -> int:
        if action == sqlite3.SQLITE_FUNCTION and arg2 in _DENIED_FUNCTIONS:
            self.denied = f"the function {arg2}()"
            return sqlite3.SQLITE_DENY
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 in READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        # A table-valued pragma (pragma_table_info(...)) is checked as SQLITE_PRAGMA above, but SQLite first
        # asks for UPDATE on sqlite_master while it sets the function up. The connection is opened read-only
        # with query_only, so nothing can be written: a user's UPDATE of it still fails and is named below.
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"operation {action}")
        self.denied = f"{what} {arg1}" if arg1 else what
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    def run(self, job: _Job, sql: str, deadline: float, limit_s: float, catalog: Catalog) -> QueryAnswer:
        if time.monotonic() >= deadline or not job.start(self):  # it waited past its deadline: not started
            raise QueryError(_too_slow(limit_s))
        self.deadline, self.denied, self.catalog = deadline, None, catalog
        self.cache.clear()
        try:
            if len(sql) > limits.query_sql_bytes_max or len(sql.encode()) > limits.query_sql_bytes_max:
                raise QueryError(f"the query is too long: at most {limits.query_sql_bytes_max} bytes of SQL")
            cur = self.conn.execute(self.translate(sql, self.view_columns))
            try:
                columns = [d[0] for d in cur.description or ()]
                return _collect(cur, columns)
            finally:
                cur.close()
        except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as exc:
            if job.stopped or time.monotonic() > deadline:
                raise QueryError(_too_slow(limit_s)) from None
            raise QueryError(self._explain(sql, exc, limit_s)) from None
        finally:
            job.finish()
            self.deadline, self.catalog = float("inf"), _NoCatalog()
            self.cache.clear()

    def _explain(self, sql: str, exc: Exception, limit_s: float) -> str:
        if self.denied is not None and self.denied.startswith("the function"):
            return f"{self.denied} is not permitted in queries"
        if self.denied is not None:
            return f"only read-only queries are allowed: {self.denied} is not permitted"
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if verb in _WRITE_VERBS:
            return f"only read-only queries are allowed: {verb} is not permitted ({exc})"
        if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted":
            return _too_slow(limit_s)
        return f"invalid query: {exc}"


def _too_slow(limit_s: float) -> str:
    return f"query stopped: it ran longer than the time limit of {limit_s:g}s"


def _collect(cur: sqlite3.Cursor, columns: list[str]) -> QueryAnswer:
    """The rows as JSON-ready dicts, within the row and byte limits (counted as the rows arrive)."""
    rows: list[dict[str, Any]] = []
    size = 2
    names = sum(len(c) + 4 for c in columns)  # each row repeats the column names
    while (row := cur.fetchone()) is not None:
        if len(rows) == limits.query_rows_max:
            return QueryAnswer(rows, truncated=True, columns=tuple(columns))
        size += names + sum(_json_size(v) for v in row)  # before the blobs become hex (twice their size)
        if size > limits.query_answer_bytes_max:
            count = len(rows) + 1
            rows.clear()  # the error's traceback keeps this frame (and these values) alive until it is collected
            del row
            raise QueryError(_too_large(count))
        rows.append({name: views.json_value(name, value) for name, value in zip(columns, row, strict=True)})
    return QueryAnswer(rows, columns=tuple(columns))


def _too_large(row: int) -> str:
    return (
        f"the answer is too large: more than {limits.query_answer_bytes_max} bytes as JSON (blobs count as hex) by "
        f"row {row}; narrow the query: select fewer columns (leave out value, entry_json or "
        "completion_success_value), fewer rows (WHERE, LIMIT), or a part of a value (length(value), "
        "substr(value, 1, 1000))"
    )


def _json_size(value: Any) -> int:
    """The bytes ``value`` (as SQLite returned it) takes in the answer."""
    if isinstance(value, bytes):
        return 2 * len(value) + 2  # lowercase hex
    if isinstance(value, str):
        return len(value) + 2 if value.isascii() else len(value.encode()) + 2
    return 24  # a number or null


class SqliteReadModel:
    """Implements :class:`unbroken.core.read_model.ReadModel` on the store file at ``path``."""

    def __init__(self, path: str, *, timeout_s: float = limits.query_timeout_s_max, threads: int = 2) -> None:
        self.path = path
        self.timeout_s = min(timeout_s, limits.query_timeout_s_max)
        self._local = threading.local()
        self._readers: list[_Reader] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="unbroken-query")
        self._inflight = 0  # queries running or queued on the pool (event-loop side only)
        # Typed reads: one thread and connection of their own, so queries never delay them.
        self._snapshot_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unbroken-reads")
        self._snapshot_conn: sqlite3.Connection | None = None

    def _reader(self) -> _Reader:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = _Reader(self.path)
            self._local.reader = reader
            with self._lock:
                self._readers.append(reader)
        return reader

    def query_sync(
        self,
        sql: str,
        timeout_s: float | None = None,
        catalog: Catalog | None = None,
        *,
        arrived: float | None = None,
    ) -> QueryAnswer:
        """Run one statement on this thread (tests, and callers already off the loop such as
        ``sqlite_mirror``), stopped at its deadline as ``query`` does: counted from ``arrived`` (monotonic;
        default now), a watchdog thread stops it from outside (see the module's doc)."""
        limit_s = self._limit(timeout_s)
        deadline = (time.monotonic() if arrived is None else arrived) + limit_s
        job = _Job()
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic() + _ANSWER_GRACE_S), job.stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._reader().run(job, sql, deadline, limit_s, catalog or _NoCatalog())
        finally:
            watchdog.cancel()

    async def query(self, sql: str, timeout_s: float | None, catalog: Catalog) -> QueryAnswer:
        if self._inflight >= limits.query_inflight_max:
            raise QueryBusy(
                f"too many queries at once (at most {limits.query_inflight_max} run or wait): retry later"
            )
        limit_s = self._limit(timeout_s)
        deadline = time.monotonic() + limit_s
        job = _Job()
        running = self._pool.submit(lambda: self._reader().run(job, sql, deadline, limit_s, catalog))
        self._inflight += 1
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(running), deadline - time.monotonic() + _ANSWER_GRACE_S
            )
        except TimeoutError:
            job.stop()
            raise QueryError(_too_slow(limit_s)) from None
        except asyncio.CancelledError:  # the client went away: nobody waits for the rows
            job.stop()
            raise
        finally:
            self._inflight -= 1

    def _limit(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)

    async def read(self, fn: Callable[[Snapshot], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._snapshot_pool, self._read, fn)

    def _read(self, fn: Callable[[Snapshot], _T]) -> _T:
        if self._snapshot_conn is None:
            self._snapshot_conn = _connect(self.path)
        conn = self._snapshot_conn
        conn.execute("BEGIN")  # one read transaction: the reads of ``fn`` see one state of the store
        try:
            return fn(SqliteSnapshot(conn))
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._snapshot_pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for reader in self._readers:
                reader.conn.close()
            self._readers.clear()
        if self._snapshot_conn is not None:
            self._snapshot_conn.close()
