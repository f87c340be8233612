"""Restate-shaped introspection views over the store's tables (``sys_invocation``, ``sys_journal``, ...).

The tables hold msgpack blobs; the functions registered here decode them (``ub_inv``, ``ub_entry``,
``ub_promise``) and TEMP VIEWS on a reader connection expose the columns Restate's SQL tables have (digest
§2.5). Timestamps are RFC 3339 strings (UTC, milliseconds). ``sys_service`` and ``sys_deployment`` read
the in-memory schemas through ``ub_services()`` / ``ub_deployments()`` (JSON read with ``json_each``), so
they are always current without rebuilding anything when a service is changed.
"""

from __future__ import annotations

import base64
import functools
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from unbroken.core import journal as j
from unbroken.core.model import Invocation, ServiceKind, Status
from unbroken.storage.sqlite import decode_promise

_inv_decoder = msgspec.msgpack.Decoder(Invocation)
_SERVICE_TY = {
    ServiceKind.SERVICE: "service",
    ServiceKind.VIRTUAL_OBJECT: "virtual_object",
    ServiceKind.WORKFLOW: "workflow",
}
# Columns holding a JSON array as text: /query answers them as JSON arrays.
LIST_COLUMNS = frozenset({"suspended_waiting_for_completions", "suspended_waiting_for_signals", "services"})


def rfc3339(ms: int | None) -> str | None:
    """``2026-11-25T20:02:09.374Z`` for epoch milliseconds; None for None/0 (not set)."""
    if not ms:
        return None
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def utf8(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", errors="replace")


def failure_text(failure: j.Failure | None) -> str | None:
    return None if failure is None else f"[{failure.code}] {failure.message}"


# ------------------------------------------------------------------------------------------ invocations
@functools.lru_cache(maxsize=256)
def _inv_fields(data: bytes) -> dict[str, Any]:
    inv = _inv_decoder.decode(data)
    done = inv.status is Status.COMPLETED
    result = inv.result if done else None
    suspended = inv.status is Status.SUSPENDED
    return {
        "target_service_ty": _SERVICE_TY[inv.service_kind],
        "idempotency_key": inv.idempotency_key,
        "invoked_by": inv.invoked_by,
        "invoked_by_id": inv.invoked_by_id,
        "scheduled_at": rfc3339(inv.execute_at_ms),
        "completed_at": rfc3339(inv.completed_at_ms) if done else None,
        "retry_count": inv.retry_count,
        "next_retry_at": rfc3339(inv.next_retry_at_ms),
        "last_failure": inv.last_failure,
        "last_failure_error_code": inv.last_failure_code,
        "journal_size": inv.journal_length,
        "completion_result": None if result is None else ("failure" if result.failure else "success"),
        "completion_failure": None if result is None else failure_text(result.failure),
        "suspended_waiting_for_completions": _json_list(inv.waiting_completions) if suspended else None,
        "suspended_waiting_for_signals": _json_list(inv.waiting_signals) if suspended else None,
    }


def _json_list(values: list[int]) -> str:
    return orjson.dumps(sorted(values)).decode()


def ub_inv(data: bytes, field: str) -> Any:
    return _inv_fields(bytes(data))[field]


# ---------------------------------------------------------------------------------------------- journal
def _completion_id(entry: j.Entry) -> int | None:
    """The completion id a command waits on (None: it needs no completion)."""
    if isinstance(entry, j.Notification):
        return None
    return getattr(entry, "completion_id", None)


def _invoked_target(entry: j.Entry) -> str | None:
    if isinstance(entry, j.CallCommand | j.OneWayCallCommand):
        key = f"{entry.key}/" if entry.key is not None else ""
        return f"{entry.service}/{key}{entry.handler}"
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return {f: _jsonable(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _notification_fields(entry: j.Entry) -> dict[str, Any]:
    if isinstance(entry, j.Notification):
        return {
            "notification_id": entry.completion_id or None,
            "notification_invocation_id": entry.invocation_id,
            "direct_invoked_id": None,
        }
    direct = entry.invocation_id if isinstance(entry, j.AttachInvocationCommand | j.GetInvocationOutputCommand) else None
    return {"notification_id": None, "notification_invocation_id": None, "direct_invoked_id": direct}


@functools.lru_cache(maxsize=256)
def _entry_fields(data: bytes) -> dict[str, Any]:
    entry = j.decode_entry(data)
    return {
        **_notification_fields(entry),
        "entry_type": j.entry_type_name(entry),
        "name": getattr(entry, "name", None) or None,
        "completion_id": _completion_id(entry),
        "id_completion_id": getattr(entry, "invocation_id_completion_id", None),
        "invoked_target": _invoked_target(entry),
        "sleep_wakeup_at": rfc3339(entry.wake_up_time_ms) if isinstance(entry, j.SleepCommand) else None,
        "promise_name": getattr(entry, "key", None)
        if isinstance(entry, j.GetPromiseCommand | j.PeekPromiseCommand | j.CompletePromiseCommand)
        else None,
        "entry_json": orjson.dumps({"type": j.entry_type_name(entry), **_jsonable(entry)}).decode(),
    }


def ub_entry(data: bytes, field: str) -> Any:
    return _entry_fields(bytes(data))[field]


# --------------------------------------------------------------------------------------------- promises
@functools.lru_cache(maxsize=256)
def _promise_fields(data: bytes) -> dict[str, Any]:
    promise = decode_promise(data)
    result = promise.result
    value = result.value if result is not None and result.failure is None else None
    return {
        "completed": int(result is not None),
        "success_value": value,
        "success_value_utf8": utf8(value),
        "failure": None if result is None else failure_text(result.failure),
    }


def ub_promise(data: bytes, field: str) -> Any:
    return _promise_fields(bytes(data))[field]


def register_functions(
    conn: sqlite3.Connection, services_json: Callable[[], str], deployments_json: Callable[[], str]
) -> None:
    conn.create_function("ub_inv", 2, ub_inv, deterministic=True)
    conn.create_function("ub_entry", 2, ub_entry, deterministic=True)
    conn.create_function("ub_promise", 2, ub_promise, deterministic=True)
    conn.create_function("ub_ts", 1, rfc3339, deterministic=True)
    conn.create_function("ub_utf8", 1, utf8, deterministic=True)
    conn.create_function("ub_services", 0, services_json)
    conn.create_function("ub_deployments", 0, deployments_json)


# ------------------------------------------------------------------------------------------------ views
_TARGET_OF = "p.service || '/' || coalesce(p.service_key || '/', '') || p.handler"

VIEWS: dict[str, str] = {
    "sys_invocation": f"""
SELECT
    i.id AS id,
    i.service || '/' || coalesce(i.service_key || '/', '') || i.handler AS target,
    i.service AS target_service_name,
    i.service_key AS target_service_key,
    i.handler AS target_handler_name,
    ub_inv(i.data, 'target_service_ty') AS target_service_ty,
    ub_inv(i.data, 'idempotency_key') AS idempotency_key,
    ub_inv(i.data, 'invoked_by') AS invoked_by,
    ub_inv(i.data, 'invoked_by_id') AS invoked_by_id,
    (SELECT {_TARGET_OF} FROM main.invocation p WHERE p.id = ub_inv(i.data, 'invoked_by_id')) AS invoked_by_target,
    i.status AS status,
    ub_ts(i.created_at) AS created_at,
    ub_ts(i.modified_at) AS modified_at,
    ub_inv(i.data, 'scheduled_at') AS scheduled_at,
    ub_inv(i.data, 'completed_at') AS completed_at,
    ub_inv(i.data, 'retry_count') AS retry_count,
    ub_inv(i.data, 'next_retry_at') AS next_retry_at,
    ub_inv(i.data, 'last_failure') AS last_failure,
    ub_inv(i.data, 'last_failure_error_code') AS last_failure_error_code,
    ub_inv(i.data, 'journal_size') AS journal_size,
    ub_inv(i.data, 'completion_result') AS completion_result,
    ub_inv(i.data, 'completion_failure') AS completion_failure,
    ub_inv(i.data, 'suspended_waiting_for_completions') AS suspended_waiting_for_completions,
    ub_inv(i.data, 'suspended_waiting_for_signals') AS suspended_waiting_for_signals
FROM main.invocation i""",
    "sys_journal": """
SELECT
    i.id AS id,
    e.idx AS "index",
    ub_entry(e.entry, 'entry_type') AS entry_type,
    ub_entry(e.entry, 'name') AS name,
    CASE WHEN ub_entry(e.entry, 'completion_id') IS NULL THEN 1 ELSE EXISTS (
        SELECT 1 FROM main.journal n WHERE n.seq = e.seq AND n.idx > e.idx
        AND ub_entry(n.entry, 'notification_id') = ub_entry(e.entry, 'completion_id')
    ) END AS completed,
    coalesce(ub_entry(e.entry, 'direct_invoked_id'), (
        SELECT ub_entry(n.entry, 'notification_invocation_id') FROM main.journal n WHERE n.seq = e.seq
        AND n.idx > e.idx AND ub_entry(n.entry, 'notification_id') = ub_entry(e.entry, 'id_completion_id')
    )) AS invoked_id,
    ub_entry(e.entry, 'invoked_target') AS invoked_target,
    ub_entry(e.entry, 'sleep_wakeup_at') AS sleep_wakeup_at,
    ub_entry(e.entry, 'promise_name') AS promise_name,
    ub_entry(e.entry, 'entry_json') AS entry_json,
    ub_ts(e.appended_at) AS appended_at
FROM main.journal e JOIN main.invocation i ON i.seq = e.seq""",
    "state": """
SELECT service AS service_name, service_key, name AS key, ub_utf8(value) AS value_utf8, value
FROM main.state""",
    "sys_inbox": """
SELECT service AS service_name, service_key, id, seq AS sequence_number, ub_ts(created_at) AS created_at
FROM main.inbox""",
    "sys_keyed_service_status": """
SELECT service AS service_name, service_key, holder AS invocation_id FROM main.lock""",
    "sys_promise": """
SELECT
    service AS service_name, service_key, name AS key,
    ub_promise(data, 'completed') AS completed,
    ub_promise(data, 'success_value') AS completion_success_value,
    ub_promise(data, 'success_value_utf8') AS completion_success_value_utf8,
    ub_promise(data, 'failure') AS completion_failure
FROM main.promise""",
    "sys_service": """
SELECT
    json_extract(value, '$.name') AS name, json_extract(value, '$.revision') AS revision,
    json_extract(value, '$.public') AS public, json_extract(value, '$.ty') AS ty,
    json_extract(value, '$.deployment_id') AS deployment_id
FROM json_each(ub_services())""",
    "sys_deployment": """
SELECT
    json_extract(value, '$.id') AS id, json_extract(value, '$.ty') AS ty,
    json_extract(value, '$.endpoint') AS endpoint, json_extract(value, '$.created_at') AS created_at,
    json_extract(value, '$.min_service_protocol_version') AS min_service_protocol_version,
    json_extract(value, '$.max_service_protocol_version') AS max_service_protocol_version,
    json_extract(value, '$.services') AS services
FROM json_each(ub_deployments())""",
}


def create_views(conn: sqlite3.Connection) -> None:
    for name, sql in VIEWS.items():
        conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS {name} AS {sql}")
