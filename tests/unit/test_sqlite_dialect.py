"""Restate's SQL dialect (DataFusion's) rewritten for SQLite: what the CLI and users write, run for real."""

from __future__ import annotations

import sqlite3
import time

import pytest

from unbroken.core import limits
from unbroken.storage.sqlite_catalog_views import FirstBy
from unbroken.storage.sqlite_dialect import translate


@pytest.mark.parametrize(
    ("datafusion", "sqlite"),
    [
        (
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'x'",
            "SELECT COUNT(*) FROM information_schema_columns WHERE table_name = 'x'",
        ),
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "SELECT * FROM information_schema_tables"),
        (
            "SELECT sj.index FROM sys_journal sj ORDER BY index DESC",
            'SELECT sj."index" FROM sys_journal sj ORDER BY "index" DESC',
        ),
        (
            "SELECT CAST(1 as INT UNSIGNED) AS v, CAST(NULL as STRING) AS p",
            "SELECT CAST(1 as INTEGER) AS v, CAST(NULL as TEXT) AS p",
        ),
        ("SELECT x::BIGINT, t.y::string", "SELECT CAST(x AS INTEGER), CAST(t.y AS TEXT)"),
        ("SELECT count(*)::int", "SELECT CAST(count(*) AS INTEGER)"),
        ("SELECT first_value(id) FROM t", "SELECT ub_first_by(id, NULL, 0) FROM t"),
        (
            "SELECT FIRST_VALUE(id ORDER BY created_at DESC) FROM t",
            "SELECT ub_first_by(id ,  created_at , 1) FROM t",
        ),
        (
            "SELECT first_value(id) OVER (ORDER BY x) FROM t",
            "SELECT first_value(id) OVER (ORDER BY x) FROM t",
        ),
        ("SELECT 1 WHERE a ILIKE 'x%'", "SELECT 1 WHERE a LIKE 'x%'"),
        # never inside literals or quoted names
        (
            "SELECT 'a::b information_schema.columns', \"index\"",
            "SELECT 'a::b information_schema.columns', \"index\"",
        ),
    ],
)
def test_translation(datafusion: str, sqlite: str) -> None:
    assert translate(datafusion) == sqlite


def test_star_subquery_reads_only_the_named_columns() -> None:
    columns = {"sys_invocation": ["id", "status", "target", "created_at"]}
    cli_count = (
        "SELECT COUNT(1) FROM (SELECT * FROM sys_invocation inv LIMIT 50000) WHERE status != 'completed'"
    )
    assert translate(cli_count, columns) == (
        "SELECT COUNT(1) FROM (SELECT \"status\" FROM sys_invocation inv LIMIT 50000) inv WHERE status != 'completed'"
    )
    # the subquery's columns are read whole elsewhere, or it is not a plain SELECT *: left alone
    for sql in (
        "SELECT * FROM (SELECT * FROM sys_invocation LIMIT 5)",
        "SELECT t.* FROM (SELECT * FROM sys_invocation WHERE id = 'x') t",
    ):
        assert translate(sql, columns) == sql


def test_derived_table_takes_the_inner_alias() -> None:
    """DataFusion lets ``WHERE inv.x`` outside reach ``(SELECT * FROM t inv)``; SQLite needs the alias."""
    cli = "SELECT COUNT(1) FROM (SELECT * FROM sys_invocation inv LIMIT 50000) WHERE inv.status = 'x'"
    assert translate(cli) == (
        "SELECT COUNT(1) FROM (SELECT * FROM sys_invocation inv LIMIT 50000) inv WHERE inv.status = 'x'"
    )
    for aliased in ("SELECT 1 FROM (SELECT * FROM t inv) AS o", "SELECT 1 FROM (SELECT * FROM t inv) o"):
        assert translate(aliased) == aliased


def test_translated_queries_run_on_sqlite() -> None:
    conn = sqlite3.connect(":memory:")
    conn.create_aggregate("ub_first_by", 3, FirstBy)  # type: ignore[arg-type]
    conn.execute('CREATE TABLE t (g TEXT, id TEXT, created_at TEXT, "index" INTEGER)')
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        [
            ("a", "x2", "2026-01-02", 1),
            ("a", "x1", "2026-01-01", 2),
            ("a", "x3", None, 3),
            ("b", "y", "2026-01-05", 4),
        ],
    )
    query = (
        "SELECT g, FIRST_VALUE(id ORDER BY created_at ASC) AS oldest, first_value(id ORDER BY created_at DESC) AS newest,"
        " COUNT(1)::BIGINT AS n, max(t.index) AS i FROM t GROUP BY g ORDER BY g"
    )
    assert conn.execute(translate(query)).fetchall() == [("a", "x1", "x2", 3, 3), ("b", "y", "y", 1, 4)]


@pytest.mark.parametrize(
    "unit",
    [
        "x::int",
        "(x)::bigint",
        "CAST(x AS STRING)",
        "first_value(x ORDER BY y)",
        "(SELECT * FROM sys_invocation)",
        "(((",
        ")))",
    ],
)
def test_the_rewrite_is_linear_in_the_statement(unit: str) -> None:
    """A statement near the length limit, made of one construct repeated, is rewritten in well under a
    second (it runs on a query reader, before the deadline can stop anything)."""
    sql = "SELECT " + ", ".join([unit] * (limits.query_sql_bytes_max // (len(unit) + 2)))
    sql = sql[: limits.query_sql_bytes_max]
    started = time.perf_counter()
    translate(sql, {"sys_invocation": ["id", "status"]})
    # ~0.5 s on an idle 2-core machine, ~2 s when 8 test suites share it; quadratic would take hours
    assert time.perf_counter() - started < 15
