"""The views of ``/query`` built on ``sqlite_views``' ones, and the functions Restate's dialect needs.

``sys_invocation_status`` (Restate's status table under ``sys_invocation``: its status values are the
internal ones, ``inboxed``/``invoked``), ``sys_idempotency`` (the idempotency keys of invocations),
``information_schema_columns``/``_tables`` (what ``information_schema.columns``/``.tables`` are rewritten
to, ``sqlite_dialect``), the ``ub_first_by`` aggregate (DataFusion's ``first_value(x ORDER BY y)``) and
``now()``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from unbroken.core.query_tables import TABLES, column_type
from unbroken.core.read_model import rfc3339

_INVOCATION_STATUS = """
SELECT
    id, target, target_service_name, target_service_key, target_handler_name, target_service_ty,
    idempotency_key, invoked_by, invoked_by_id, invoked_by_target, pinned_deployment_id,
    pinned_service_protocol_version, trace_id, journal_size, journal_commands_size, created_at, modified_at,
    inboxed_at, scheduled_at, scheduled_start_at, running_at, completed_at, completion_result,
    completion_failure,
    CASE status
        WHEN 'pending' THEN 'inboxed'
        WHEN 'running' THEN 'invoked'
        WHEN 'backing-off' THEN 'invoked'
        WHEN 'ready' THEN 'invoked'
        ELSE status
    END AS status
FROM sys_invocation"""

_IDEMPOTENCY = """
SELECT
    target_service_name AS service_name, target_service_key AS service_key,
    target_handler_name AS service_handler, idempotency_key, id AS invocation_id
FROM sys_invocation WHERE idempotency_key IS NOT NULL"""


class FirstBy:
    """``ub_first_by(value, key, descending)``: the value of the row with the least (greatest) key."""

    def __init__(self) -> None:
        self.value: Any = None
        self.key: Any = None
        self.seen = False

    def step(self, value: Any, key: Any, descending: int) -> None:
        if self.seen and (
            key is None or (self.key is not None and (key <= self.key if descending else key >= self.key))
        ):
            return  # a null key never wins over a row seen before; ties keep the first row
        self.value, self.key, self.seen = value, key, True

    def finalize(self) -> Any:
        return self.value


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _info_schema_sql(conn: sqlite3.Connection) -> tuple[str, str]:
    """The SELECTs of ``information_schema_columns`` and ``_tables``, from the views as they are."""
    columns: list[str] = []
    for table in TABLES:
        for position, (_, name, *_rest) in enumerate(conn.execute(f"PRAGMA temp.table_info({table})"), 1):
            columns.append(
                f"('datafusion', 'public', {_quote(table)}, {_quote(name)}, {position}, "
                f"{_quote(column_type(name))}, 'YES')"
            )
    columns_sql = (
        "SELECT column1 AS table_catalog, column2 AS table_schema, column3 AS table_name, "
        "column4 AS column_name, column5 AS ordinal_position, column6 AS data_type, "
        "column7 AS is_nullable FROM (VALUES " + ", ".join(columns) + ")"
    )
    tables_sql = (
        "SELECT column1 AS table_catalog, column2 AS table_schema, column3 AS table_name, "
        "column4 AS table_type FROM (VALUES "
        + ", ".join(f"('datafusion', 'public', {_quote(t)}, 'VIEW')" for t in TABLES)
        + ")"
    )
    return columns_sql, tables_sql


def create_catalog_views(conn: sqlite3.Connection) -> None:
    """After ``sqlite_views.create_views``: the views and functions above on ``conn``."""
    conn.create_aggregate("ub_first_by", 3, FirstBy)  # type: ignore[arg-type]
    conn.create_function("now", 0, lambda: rfc3339(int(time.time() * 1000)))
    conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS sys_invocation_status AS {_INVOCATION_STATUS}")
    conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS sys_idempotency AS {_IDEMPOTENCY}")
    columns_sql, tables_sql = _info_schema_sql(conn)
    conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS information_schema_columns AS {columns_sql}")
    conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS information_schema_tables AS {tables_sql}")
