"""The PostgreSQL tests use: the server at ``UNBROKEN_TEST_PG_URL`` (default the machine's, trust auth, db
``test``), one schema per store, named after this test process, dropped when the test ends.

Without a server the tests skip, saying why; under CI (``CI=true``) they fail instead: CI must run them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

URL = os.environ.get("UNBROKEN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = f"ub_test_{os.getpid()}_"


@functools.cache
def unavailable() -> str | None:
    """Why PostgreSQL cannot be used (None: it answers)."""
    try:
        with psycopg.connect(URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {URL} (set UNBROKEN_TEST_PG_URL): {str(exc).strip()}"
    return None


def require() -> None:
    """Skip the test without PostgreSQL, or fail it under CI."""
    why = unavailable()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL tests: {why}")
        pytest.skip(why)


def schema_for(name: str) -> str:
    """A schema name of this test process for ``name`` (e.g. a tmp dir: the same name, the same schema)."""
    return PREFIX + hashlib.sha1(name.encode()).hexdigest()[:12]


def url_for(schema: str) -> str:
    return f"{URL}{'&' if '?' in URL else '?'}schema={schema}"


def drop(schema: str) -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def drop_all() -> None:
    """Drop every schema of this test process."""
    with psycopg.connect(URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (PREFIX,)
        ).fetchall()
        for (name,) in rows:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@contextlib.contextmanager
def fresh_schema(name: str) -> Iterator[str]:
    """The URL of an empty schema for ``name`` (a test's node id), dropped afterwards; skips (or fails under
    CI) without PostgreSQL."""
    require()
    schema = schema_for(name)
    drop(schema)
    try:
        yield url_for(schema)
    finally:
        drop(schema)


def query(url: str, text: str) -> list[tuple[object, ...]]:
    """The rows of ``text`` run in the schema of ``url`` (a ``url_for`` one), on a connection of its own."""
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cur = conn.execute(text)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description else []
