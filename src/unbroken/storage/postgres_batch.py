"""A PostgreSQL batch's writes, held in memory until the batch is sent: one statement per table and kind.

The state machine writes a row at a time (an invocation, a journal entry, a state value). Sent as it comes,
each is a driver call on the event loop (~25 µs of Python in psycopg, in pipeline mode) and a statement the
server parses, plans and runs. Held here instead, a write is a list append; when the batch is sent (at its
COMMIT on the writer thread, or before a statement that reads), every run of writes of one kind to one
table goes as one statement: over arrays (``unnest``, ``Writes.send``) in pipeline mode, or as text with its
rows as literals (``Writes.render``) in the one simple query of a batch that sent nothing before its COMMIT.
A batch of 16 W2 records costs 2 statements, not 32.

Order: writes to one table keep their order (a run of one kind ends where another kind starts: a delete
between two inserts stays between them), and tables are independent (no foreign keys, no triggers), so the
runs of different tables may go in any order. Everything held is sent before any statement that reads or
returns rows (``PostgresTransaction._now``), so a read sees the batch's own writes.

An upsert's run keeps the last row per key (``ON CONFLICT DO UPDATE`` may not touch a row twice in one
statement, and the last write of a row is the one that counts). An insert's rows get their identity values
(``inbox.seq``) in the order they were written: ``WITH ORDINALITY ... ORDER BY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from unbroken.storage.postgres_lease import FENCE


@dataclass(frozen=True, eq=False)
class Kind:
    """One kind of write: ``sql`` takes one array per column, for any number of rows; ``head`` + the rows as
    literals (``(1, 'a'), (2, 'b')``) + ``tail`` is the same statement as text (``Writes.render``)."""

    table: str
    sql: bytes
    key: int = 0  # upserts: the leading columns naming a row (the last row per key is kept); 0: keep all
    head: str = ""
    tail: str = ""


def _arrays(columns: str) -> str:
    """``unnest(%b::int[], %b::text[])`` for ``"int text"``. The arrays go in binary: psycopg dumps a batch's
    in 0.23 ms instead of 0.62 ms as text (16 invocation and 16 journal rows), Python time on the writer
    thread that the event loop waits for (it holds the GIL)."""
    return "unnest(" + ", ".join(f"%b::{kind}[]" for kind in columns.split()) + ")"


def _insert(table: str, names: str, types: str, conflict: str = "", key: int = 0) -> Kind:
    sql = f"INSERT INTO {table} ({names}) SELECT * FROM {_arrays(types)}{conflict}"
    return Kind(table, sql.encode(), key, f"INSERT INTO {table} ({names}) VALUES ", conflict)


def _upsert(table: str, names: str, types: str, key: int, updated: str) -> Kind:
    keys = ", ".join(names.split(", ")[:key])
    sets = ", ".join(f"{name} = excluded.{name}" for name in updated.split())
    return _insert(table, names, types, f" ON CONFLICT ({keys}) DO UPDATE SET {sets}", key)


def _delete(table: str, names: str, types: str) -> Kind:
    sql = f"DELETE FROM {table} WHERE ({names}) IN (SELECT * FROM {_arrays(types)})"
    return Kind(table, sql.encode(), 0, f"DELETE FROM {table} WHERE ({names}) IN (", ")")


_INV = "part, id, status, service, service_key, handler, created_at, modified_at, expires_at, data"
_INV_TYPES = "int text text text text text bigint bigint bigint bytea"
PUT_INVOCATION = _upsert("invocation", _INV, _INV_TYPES, 2, "status modified_at expires_at data")
DELETE_INVOCATION = _delete("invocation", "part, id", "int text")
APPEND_JOURNAL = _insert(
    "journal", "part, invocation_id, idx, entry, appended_at", "int text int bytea bigint"
)
DELETE_JOURNAL = _delete("journal", "part, invocation_id", "int text")
ADD_SIGNAL = _insert("signal", "part, invocation_id, idx", "int text int", " ON CONFLICT DO NOTHING")
DELETE_SIGNALS = _delete("signal", "part, invocation_id", "int text")
_STATE = "part, service, service_key, name"
SET_STATE = _upsert("state", f"{_STATE}, value", "int text text text bytea", 4, "value")
CLEAR_STATE = _delete("state", _STATE, "int text text text")
CLEAR_ALL_STATE = _delete("state", "part, service, service_key", "int text text")
SET_LOCK = _upsert("lock", "part, service, service_key, holder", "int text text text", 3, "holder")
CLEAR_LOCK = _delete("lock", "part, service, service_key", "int text text")
PUSH_INBOX = Kind(  # rows take their ``seq`` in the order they were pushed (a VALUES list is read in order)
    "inbox",
    b"INSERT INTO inbox (part, service, service_key, id, created_at) SELECT part, service, service_key, id,"
    b" created_at FROM unnest(%b::int[], %b::text[], %b::text[], %b::text[], %b::bigint[])"
    b" WITH ORDINALITY AS pushed (part, service, service_key, id, created_at, n) ORDER BY n",
    head="INSERT INTO inbox (part, service, service_key, id, created_at) VALUES ",
)
# The partition inbox (``postgres_inbox.py``): a record sent to a partition another node leads.
SEND_RECORD = _insert(
    "partition_inbox",
    "part, source_part, source_seq, record",
    "int int bigint bytea",
    " ON CONFLICT DO NOTHING",
)
REMOVE_FROM_INBOX = _delete("inbox", "part, service, service_key, id", "int text text text")
PUT_PROMISE = _upsert("promise", f"{_STATE}, data", "int text text text bytea", 4, "data")
CLEAR_PROMISES = _delete("promise", "part, service, service_key", "int text text")


# The statements around the writes: the fence, failing the transaction (a division by zero: plain SQL has no
# RAISE, and this one is portable) unless it updated the row of every partition the batch wrote, so that
# the COMMIT sent after it in the same round trip rolls back instead.
FENCE_OR_FAIL = f"WITH fenced AS ({FENCE}) SELECT 1 / (count(*) = %s)::int FROM fenced"
FENCE_TEXT = FENCE_OR_FAIL.replace("%s", "{}")  # its parameters formatted in as literals
assert "{}" not in FENCE_OR_FAIL and FENCE_TEXT.count("{}") == 4
# The fault point ``pg.commit``: the server fails the transaction as a serialization failure would.
INJECTED_CONFLICT = (
    b"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001',"
    b" MESSAGE = 'serialization failure injected at the COMMIT (fault point pg.commit)'; END $$"
)
PREFETCH = "SELECT id, data FROM invocation WHERE (part, id) IN (SELECT * FROM unnest(%s::int[], %s::text[]))"
STILL_LED = (
    "SELECT e.part FROM partition_epoch e, unnest(%s::int[], %s::bigint[]) AS mine(part, epoch)"
    " WHERE e.part = mine.part AND e.epoch = mine.epoch"
)


@dataclass(slots=True)
class Writes:
    """The writes a batch holds, per table: runs of one kind, in the order they were made."""

    runs: dict[str, list[tuple[Kind, list[tuple[Any, ...]]]]] = field(default_factory=dict)
    held: int = 0  # rows held (0: nothing to send)

    def add(self, kind: Kind, row: tuple[Any, ...]) -> None:
        runs = self.runs.get(kind.table)
        if runs is None:
            self.runs[kind.table] = [(kind, [row])]
        elif runs[-1][0] is kind:
            runs[-1][1].append(row)
        else:
            runs.append((kind, [row]))
        self.held += 1

    def send(self, conn: psycopg.Connection[Any]) -> int:
        """Queue every run as one statement on ``conn`` (in pipeline mode: nothing waits for an answer);
        returns the number of statements."""
        sent = 0
        for runs in self.runs.values():
            for kind, rows in runs:
                if kind.key and len(rows) > 1:
                    rows = list({row[: kind.key]: row for row in rows}.values())
                conn.execute(kind.sql, [list(column) for column in zip(*rows, strict=True)])
                sent += 1
        self.runs.clear()
        self.held = 0
        return sent

    def render(self) -> list[str]:
        """Every run as one statement of SQL text, its values literals (``literal``); the writes are then
        no longer held. For a batch sent as one simple query (``PostgresTransaction.commit``)."""
        statements = []
        for runs in self.runs.values():
            for kind, rows in runs:
                if kind.key and len(rows) > 1:
                    rows = list({row[: kind.key]: row for row in rows}.values())
                values = ", ".join("(" + ", ".join(map(literal, row)) + ")" for row in rows)
                statements.append(kind.head + values + kind.tail)
        self.runs.clear()
        self.held = 0
        return statements


def literal(value: object) -> str:
    """``value`` as an SQL literal, for a statement sent as text with ``standard_conforming_strings`` on (the
    writer sets it: a backslash is then an ordinary character, and a quote doubled is the one escape).
    Text with a NUL is refused as psycopg refuses it (a query's text ends at its first NUL)."""
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "'\\x" + bytes(value).hex() + "'::bytea"
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, list):
        return "'{" + ",".join(str(int(item)) for item in value) + "}'"
    raise TypeError(f"no SQL literal for a {type(value).__name__}")


# A writer session of this store's tables stalled in a transaction for longer than the lease's TTL with the
# server waiting for its client (``ClientRead``): a leader paused (SIGSTOP, a VM freeze) in the middle of a
# batch whose statements it had sent but not yet its COMMIT. The server counts it "active", not "idle in
# transaction", so ``idle_in_transaction_session_timeout`` never ends it, and its row locks and uncommitted
# keys hold up the new leader's batches on the same rows for as long as it stays paused. Its batch cannot
# commit any more (the fence refuses it: its lease has expired), so ending its session loses nothing.
END_STALLED_WRITERS = """
SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.wait_event = 'ClientRead'
  AND a.state IN ('active', 'idle in transaction') AND a.xact_start < now() - make_interval(secs => %s)
  AND EXISTS (
    SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE l.pid = a.pid AND l.mode = 'RowExclusiveLock' AND n.nspname = %s
  )
"""
