"""Restate-shaped introspection views over the SQLite store (``sys_invocation``, ``sys_journal``, ...).

The tables hold msgpack blobs; the functions registered here decode them (``ub_inv``, ``ub_entry``,
``ub_promise``) and TEMP VIEWS on a reader connection expose the columns Restate's SQL tables have (digest
§2.5). Timestamps are RFC 3339 strings (UTC, milliseconds). ``sys_service`` and ``sys_deployment`` read
the catalog handed to the query (``ub_services()`` / ``ub_deployments()``, JSON read with ``json_each``),
so they are always current without rebuilding anything when a service is changed.

A view reads many columns out of one blob: the decoded fields are cached per row, keyed by the row's storage
key (its identity), never by the blob (a blob key would keep values of up to 32 MiB alive). Within one
statement a key names one row version (a statement reads one snapshot); the cache is emptied before and
after every statement and holds small fields only: stored values (results, promise values, a journal
entry's JSON) are decoded where a column asks for them, never kept. The views pass a blob to a decoder only
when its row is not cached yet (``CASE WHEN ub_known(...)``), so a 20 MiB row is read once, not once per
column.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.invocation import Invocation, Status
from unbroken.core.read_model import Catalog, rfc3339
from unbroken.core.schema import ServiceKind
from unbroken.storage.sqlite import decode_promise

_inv_decoder = msgspec.msgpack.Decoder(Invocation)
_SERVICE_TY = {
    ServiceKind.SERVICE: "service",
    ServiceKind.VIRTUAL_OBJECT: "virtual_object",
    ServiceKind.WORKFLOW: "workflow",
}
# Columns holding a JSON array as text: /query answers them as JSON arrays.
LIST_COLUMNS = frozenset({"suspended_waiting_for_completions", "suspended_waiting_for_signals", "services"})
# ``pinned_deployment_exists``: Restate's CLI computes it (``dp.id IS NOT NULL``) and reads a boolean
BOOL_COLUMNS = frozenset({"completed", "public", "pinned_deployment_exists"})

RowKey = tuple[Any, ...]


def utf8(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", errors="replace")


def failure_text(failure: j.Failure | None) -> str | None:
    return None if failure is None else f"[{failure.code}] {failure.message}"


class DecodeCache:
    """Decoded fields of the rows the running statement reads, keyed by row identity (see the module doc)."""

    def __init__(self, entries_max: int = limits.query_decode_cache_entries_max) -> None:
        self.entries_max = entries_max
        self.rows: dict[RowKey, dict[str, Any]] = {}

    def clear(self) -> None:
        self.rows.clear()

    def known(self, *key: Any) -> int:
        return int(key in self.rows)

    def fields(
        self, key: RowKey, data: bytes | None, decode: Callable[[bytes], dict[str, Any]]
    ) -> dict[str, Any]:
        found = self.rows.get(key)
        if found is not None:
            return found
        if data is None:  # the view asks ub_known first; only a hand-written call can get here
            raise ValueError(f"row {key} was not decoded in this statement: pass its blob")
        if len(self.rows) >= self.entries_max:
            del self.rows[next(iter(self.rows))]  # the oldest: a statement reads a row's columns together
        found = self.rows[key] = decode(bytes(data))
        return found


# ------------------------------------------------------------------------------------------ invocations
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
        "scheduled_at": inv.execute_at_ms,  # epoch ms: the view formats them (ts())
        "completed_at": inv.completed_at_ms if done else None,
        "running_at": inv.running_at_ms,
        "retry_count": inv.retry_count,
        "next_retry_at": inv.next_retry_at_ms,
        "last_failure": inv.last_failure,
        "last_failure_error_code": inv.last_failure_code,
        "journal_size": inv.journal_length,
        "deployment_id": inv.deployment_id,  # the remote deployment it is pinned to (None: in-process)
        "completion_result": None if result is None else ("failure" if result.failure else "success"),
        "completion_failure": None if result is None else failure_text(result.failure),
        "suspended_waiting_for_completions": _json_list(inv.waiting_completions) if suspended else None,
        "suspended_waiting_for_signals": _json_list(inv.waiting_signals) if suspended else None,
    }


def _json_list(values: list[int]) -> str:
    return orjson.dumps(sorted(values)).decode()


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
    direct = (
        entry.invocation_id
        if isinstance(entry, j.AttachInvocationCommand | j.GetInvocationOutputCommand)
        else None
    )
    return {"notification_id": None, "notification_invocation_id": None, "direct_invoked_id": direct}


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
    }


def entry_json(data: bytes) -> str:
    """The whole entry as JSON (its payload included: computed per row, never cached)."""
    entry = j.decode_entry(bytes(data))
    return orjson.dumps({"type": j.entry_type_name(entry), **_jsonable(entry)}).decode()


# --------------------------------------------------------------------------------------------- promises
def _promise_fields(data: bytes) -> dict[str, Any]:
    result = decode_promise(data).result
    return {
        "completed": int(result is not None),
        "failure": None if result is None else failure_text(result.failure),
    }


def promise_value(data: bytes) -> bytes | None:
    """A completed promise's success value (per row, never cached)."""
    result = decode_promise(bytes(data)).result
    return result.value if result is not None and result.failure is None else None


def register_functions(conn: sqlite3.Connection, cache: DecodeCache, catalog: Callable[[], Catalog]) -> None:
    """The views' functions on ``conn``; ``catalog()`` is the catalog of the statement running."""
    conn.create_function("ub_known", -1, cache.known)
    conn.create_function(
        "ub_inv", 3, lambda seq, field, data: cache.fields(("i", seq), data, _inv_fields)[field]
    )
    conn.create_function(
        "ub_entry", 4, lambda seq, idx, field, data: cache.fields(("e", seq, idx), data, _entry_fields)[field]
    )
    conn.create_function(
        "ub_promise",
        5,
        lambda s, k, n, field, data: cache.fields(("p", s, k, n), data, _promise_fields)[field],
    )
    conn.create_function("ub_entry_json", 1, entry_json, deterministic=True)
    conn.create_function("ub_promise_value", 1, promise_value, deterministic=True)
    conn.create_function("ub_ts", 1, rfc3339, deterministic=True)
    conn.create_function("ub_utf8", 1, utf8, deterministic=True)
    conn.create_function("ub_services", 0, lambda: catalog().services_json())
    conn.create_function("ub_deployments", 0, lambda: catalog().deployments_json())
    conn.create_function("ub_service_deployment", 1, _ServiceDeployments(catalog))


class _ServiceDeployments:
    """``ub_service_deployment(service)``: the id of the deployment serving ``service`` now (the in-process
    one or a registered remote one), read from the catalog's ``sys_service`` rows, parsed again only when
    the catalog hands a new text (it caches one per schema change)."""

    def __init__(self, catalog: Callable[[], Catalog]) -> None:
        self.catalog = catalog
        self.text: str | None = None
        self.by_name: dict[str, str | None] = {}

    def __call__(self, service: str | None) -> str | None:
        text = self.catalog().services_json()
        if text is not self.text:
            self.by_name = {row["name"]: row.get("deployment_id") for row in orjson.loads(text)}
            self.text = text
        return self.by_name.get(service) if service is not None else None


# ------------------------------------------------------------------------------------------------ views
def ts(ms_sql: str) -> str:
    """SQL formatting epoch milliseconds as ``core.read_model.rfc3339`` does (0 and NULL: NULL), in SQLite
    itself: a Python function per value cost ~4 us, a tenth of the time of ``SELECT *`` over invocations."""
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', nullif({ms_sql}, 0) / 1000.0, 'unixepoch')"


_TS_COLUMNS = frozenset({"scheduled_at", "completed_at", "running_at", "next_retry_at"})


def _inv(field: str, alias: str = "i") -> str:
    return f"ub_inv({alias}.seq, '{field}', CASE WHEN ub_known('i', {alias}.seq) THEN NULL ELSE {alias}.data END)"


def _entry(field: str, alias: str) -> str:
    key = f"{alias}.seq, {alias}.idx"
    return f"ub_entry({key}, '{field}', CASE WHEN ub_known('e', {key}) THEN NULL ELSE {alias}.entry END)"


def _promise(field: str) -> str:
    key = "service, service_key, name"
    return f"ub_promise({key}, '{field}', CASE WHEN ub_known('p', {key}) THEN NULL ELSE data END)"


_TARGET_OF = "p.service || '/' || coalesce(p.service_key || '/', '') || p.handler"
_INV_COLUMNS = (
    "target_service_ty",
    "idempotency_key",
    "invoked_by",
    "invoked_by_id",
    "invoked_by_target",
    "status",
    "created_at",
    "modified_at",
    "scheduled_at",
    "completed_at",
    "retry_count",
    "next_retry_at",
    "last_failure",
    "last_failure_error_code",
    "journal_size",
    "completion_result",
    "completion_failure",
    "suspended_waiting_for_completions",
    "suspended_waiting_for_signals",
)
_INV_SPECIAL = {
    "invoked_by_target": f"(SELECT {_TARGET_OF} FROM main.invocation p WHERE p.id = {_inv('invoked_by_id')})",
    "status": "i.status",
    "created_at": ts("i.created_at"),
    "modified_at": ts("i.modified_at"),
}
# A started invocation is pinned to the remote deployment its first attempt ran on, or else runs in the
# deployment serving its service now (the in-process one). Restate's columns Unbroken has no value for
# are NULL.
_DEPLOYMENT_ID = f"coalesce({_inv('deployment_id')}, ub_service_deployment(i.service))"
_STARTED = "i.status NOT IN ('pending', 'scheduled')"
_INV_EXTRA = {
    "pinned_deployment_id": f"CASE WHEN {_STARTED} THEN {_DEPLOYMENT_ID} END",
    "pinned_service_protocol_version": "NULL",
    "last_attempt_deployment_id": f"CASE WHEN {_STARTED} THEN {_DEPLOYMENT_ID} END",
    "last_attempt_server": "NULL",
    "trace_id": "NULL",
    "inboxed_at": f"CASE WHEN i.status = 'pending' THEN {ts('i.created_at')} END",
    "scheduled_start_at": ts(_inv("scheduled_at")),
    "running_at": ts(_inv("running_at")),
    "last_start_at": ts(_inv("running_at")),
    "journal_commands_size": "NULL",
    "last_failure_related_entry_index": "NULL",
    "last_failure_related_entry_name": "NULL",
    "last_failure_related_entry_type": "NULL",
    "last_failure_related_command_index": "NULL",
    "last_failure_related_command_name": "NULL",
    "last_failure_related_command_type": "NULL",
}
_SYS_INVOCATION = (
    """
SELECT
    i.id AS id,
    i.service || '/' || coalesce(i.service_key || '/', '') || i.handler AS target,
    i.service AS target_service_name,
    i.service_key AS target_service_key,
    i.handler AS target_handler_name,
    """
    + ",\n    ".join(
        f"{_INV_SPECIAL.get(c) or (ts(_inv(c)) if c in _TS_COLUMNS else _inv(c))} AS {c}"
        for c in _INV_COLUMNS
    )
    + """,
    """
    + ",\n    ".join(f"{sql} AS {name}" for name, sql in _INV_EXTRA.items())
    + """
FROM main.invocation i"""
)

VIEWS: dict[str, str] = {
    "sys_invocation": _SYS_INVOCATION,
    "sys_journal": f"""
SELECT
    i.id AS id,
    e.idx AS "index",
    {_entry("entry_type", "e")} AS entry_type,
    {_entry("name", "e")} AS name,
    CASE WHEN {_entry("completion_id", "e")} IS NULL THEN 1 ELSE EXISTS (
        SELECT 1 FROM main.journal n WHERE n.seq = e.seq AND n.idx > e.idx
        AND {_entry("notification_id", "n")} = {_entry("completion_id", "e")}
    ) END AS completed,
    coalesce({_entry("direct_invoked_id", "e")}, (
        SELECT {_entry("notification_invocation_id", "n")} FROM main.journal n WHERE n.seq = e.seq
        AND n.idx > e.idx AND {_entry("notification_id", "n")} = {_entry("id_completion_id", "e")}
    )) AS invoked_id,
    {_entry("invoked_target", "e")} AS invoked_target,
    {_entry("sleep_wakeup_at", "e")} AS sleep_wakeup_at,
    {_entry("promise_name", "e")} AS promise_name,
    2 AS version,
    ub_entry_json(e.entry) AS entry_json,
    {ts("e.appended_at")} AS appended_at
FROM main.journal e JOIN main.invocation i ON i.seq = e.seq""",
    "state": """
SELECT service AS service_name, service_key, name AS key, ub_utf8(value) AS value_utf8, value
FROM main.state""",
    "sys_inbox": f"""
SELECT service AS service_name, service_key, id, seq AS sequence_number, {ts("created_at")} AS created_at
FROM main.inbox""",
    "sys_keyed_service_status": """
SELECT service AS service_name, service_key, holder AS invocation_id FROM main.lock""",
    "sys_promise": f"""
SELECT
    service AS service_name, service_key, name AS key,
    {_promise("completed")} AS completed,
    ub_promise_value(data) AS completion_success_value,
    ub_utf8(ub_promise_value(data)) AS completion_success_value_utf8,
    {_promise("failure")} AS completion_failure
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


def json_value(column: str, value: Any) -> Any:
    """A column's value as /query answers it: blobs as hex, list columns as arrays, flag columns as booleans."""
    if isinstance(value, bytes):
        return value.hex()
    if column in LIST_COLUMNS and isinstance(value, str) and value.startswith("["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if column in BOOL_COLUMNS and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    return value
