"""Restate's introspection tables as ``POST /query`` answers them: their names and their columns' types.

Every backend exposes these tables under these names (``storage.sqlite_views`` for SQLite); the admin API
types an Arrow answer's columns by their values, and by this table when a column holds only nulls;
``information_schema.columns`` reports these types. Timestamps are RFC 3339 text (``Utf8``), not Arrow
timestamps, and blobs (``value``) lowercase hex text, in both answer formats: the JSON answer and the CLI
read them as text either way.
"""

from __future__ import annotations

TABLES = (
    "sys_invocation",
    "sys_invocation_status",
    "sys_journal",
    "state",
    "sys_inbox",
    "sys_keyed_service_status",
    "sys_promise",
    "sys_service",
    "sys_deployment",
    "sys_idempotency",
)

# column name -> Arrow type name, for the columns that are not text (the same in every table)
NON_TEXT_COLUMNS = {
    "retry_count": "UInt64",
    "journal_size": "UInt32",
    "journal_commands_size": "UInt32",
    "last_failure_error_code": "UInt16",
    "pinned_service_protocol_version": "UInt32",
    "last_failure_related_entry_index": "UInt64",
    "last_failure_related_command_index": "UInt64",
    "index": "UInt32",
    "version": "UInt32",
    "sequence_number": "UInt64",
    "revision": "UInt64",
    "min_service_protocol_version": "UInt32",
    "max_service_protocol_version": "UInt32",
    "completed": "Boolean",
    "public": "Boolean",
    "partition_key": "UInt64",
}


def column_type(name: str) -> str:
    return NON_TEXT_COLUMNS.get(name, "Utf8")
