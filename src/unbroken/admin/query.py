"""``POST /query``: read-only SQL over the store, with Restate-shaped views (see ``views.py``).

Queries run on their own READ-ONLY SQLite connections (one per worker thread of a small dedicated pool, so
a slow query never occupies the default executor that ``ctx.run`` actions use). Each connection is opened
``mode=ro``, gets the views once, then ``PRAGMA query_only=ON`` and an authorizer that allows reads only
(SELECT, READ, FUNCTION, recursive CTEs and a few introspection pragmas): any write, ATTACH, transaction
or pragma change is refused. A progress handler aborts queries that run past the time limit, and at most
``max_rows`` rows are returned (``"truncated": true`` says more were available).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from unbroken.admin import views
from unbroken.storage.sqlite import connect

_T = TypeVar("_T")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ROWS = 10_000
MAX_VALUE_BYTES = 64 * 1024 * 1024
_PROGRESS_STEPS = 10_000

_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info"})
_ACTION_NAMES = {
    getattr(sqlite3, n): n.removeprefix("SQLITE_").replace("_", " ")
    for n in dir(sqlite3)
    if n.startswith(("SQLITE_CREATE", "SQLITE_DROP", "SQLITE_ALTER"))
    or n in ("SQLITE_INSERT", "SQLITE_UPDATE", "SQLITE_DELETE", "SQLITE_ATTACH", "SQLITE_DETACH",
             "SQLITE_PRAGMA", "SQLITE_TRANSACTION", "SQLITE_SAVEPOINT", "SQLITE_ANALYZE", "SQLITE_REINDEX")
}  # fmt: skip
_BOOL_COLUMNS = frozenset({"completed", "public"})
_WRITE_VERBS = frozenset({
    "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "ATTACH", "DETACH", "BEGIN", "COMMIT",
    "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "VACUUM", "REINDEX", "ANALYZE",
})  # fmt: skip


class QueryError(Exception):
    """A query the client got wrong (answered 400 with this message)."""


class _Reader:
    """One read-only connection and the per-query limits its callbacks check."""

    def __init__(self, path: str, functions: Callable[[sqlite3.Connection], None]) -> None:
        self.conn = connect(path, readonly=True)
        functions(self.conn)
        views.create_views(self.conn)
        self.conn.execute("PRAGMA query_only=ON")
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.set_authorizer(self._authorize)
        self.conn.set_progress_handler(self._progress, _PROGRESS_STEPS)
        self.deadline = float("inf")
        self.denied: str | None = None

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"operation {action}")
        self.denied = f"{what} {arg1}" if arg1 else what
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    def run(self, sql: str, params: tuple[Any, ...], timeout_s: float, max_rows: int) -> tuple[list[str], list[Any], bool]:
        self.deadline = time.monotonic() + timeout_s
        self.denied = None
        try:
            cur = self.conn.execute(sql, params)
            try:
                rows = cur.fetchmany(max_rows + 1)
            finally:
                cur.close()
        except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as exc:
            raise QueryError(self._explain(sql, exc, timeout_s)) from None
        finally:
            self.deadline = float("inf")
        columns = [d[0] for d in cur.description or ()]
        return columns, rows[:max_rows], len(rows) > max_rows

    def _explain(self, sql: str, exc: Exception, timeout_s: float) -> str:
        if self.denied is not None:
            return f"only read-only queries are allowed: {self.denied} is not permitted"
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if verb in _WRITE_VERBS:
            return f"only read-only queries are allowed: {verb} is not permitted ({exc})"
        if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted":
            return f"query stopped: it ran longer than the time limit of {timeout_s:g}s"
        return f"invalid query: {exc}"


class QueryEngine:
    """Runs read-only SQL against the store file on a small pool of reader threads."""

    def __init__(
        self,
        path: str,
        services_json: Callable[[], str],
        deployments_json: Callable[[], str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_rows: int = DEFAULT_MAX_ROWS,
        threads: int = 2,
    ) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self._functions = lambda conn: views.register_functions(conn, services_json, deployments_json)
        self._local = threading.local()
        self._readers: list[_Reader] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="unbroken-query")

    def _reader(self) -> _Reader:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = _Reader(self.path, self._functions)
            self._local.reader = reader
            with self._lock:
                self._readers.append(reader)
        return reader

    def run_sync(self, sql: str, params: tuple[Any, ...] = (), timeout_s: float | None = None) -> dict[str, Any]:
        """Run one statement; the JSON-ready answer ``{"rows": [...]}`` (plus ``truncated`` if cut)."""
        limit = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        columns, rows, truncated = self._reader().run(sql, params, limit, self.max_rows)
        answer: dict[str, Any] = {"rows": [_row(columns, row) for row in rows]}
        if truncated:
            answer["truncated"] = True
        return answer

    async def run(self, sql: str, params: tuple[Any, ...] = (), timeout_s: float | None = None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.run_sync, sql, params, timeout_s)

    async def state(self, service: str, key: str) -> dict[str, bytes]:
        """The stored state of one object/workflow key (name -> raw value)."""

        def read() -> dict[str, bytes]:
            sql = "SELECT name, value FROM main.state WHERE service = ? AND service_key = ?"
            _, rows, _ = self._reader().run(sql, (service, key), self.timeout_s, 1 << 30)
            return {str(name): bytes(value) for name, value in rows}

        return await asyncio.get_running_loop().run_in_executor(self._pool, read)

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` with one of the read-only connections (SELECTs only; used by ``explain.py``)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._reader().conn))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for reader in self._readers:
                reader.conn.close()
            self._readers.clear()


def _row(columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    return {name: _value(name, value) for name, value in zip(columns, row, strict=True)}


def _value(column: str, value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if column in views.LIST_COLUMNS and isinstance(value, str) and value.startswith("["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if column in _BOOL_COLUMNS and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    return value
