"""The embedded store: one SQLite file, WAL, ``synchronous=FULL``.

One writer connection, used only by the processor thread, applies a whole batch of records inside one
transaction (group commit: one fsync for many invocations). Readers (admin, introspection) open their own
connections; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager

import msgspec

from unbroken.core import limits
from unbroken.core.deployments import Deployment, decode_deployment, encode_deployment
from unbroken.core.errors import violated
from unbroken.core.invocation import Invocation, cleanup_due_ms
from unbroken.core.journal import Entry, Notification
from unbroken.core.records import Record
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import (
    ClusterView,
    Leadership,
    LeadershipChanged,
    Promise,
    Timer,
    TimerKind,
    Transaction,
    transaction,
)
from unbroken.storage.codec import (
    _inv_decoder,
    _inv_encoder,
    decode_entry,
    decode_invocation,
    decode_override,
    decode_promise,
    encode_entry,
    encode_invocation,
    encode_override,
    encode_promise,
    signal_index,
)

# Names other modules imported from here before the codecs had their own module.
__all__ = [
    "SqliteStore",
    "SqliteTransaction",
    "StoreVersionError",
    "connect",
    "decode_invocation_row",
    "encode_invocation_blob",
    "decode_promise",
    "encode_promise",
    "_inv_decoder",
    "_inv_encoder",
]
decode_invocation_row = decode_invocation
encode_invocation_blob = encode_invocation

# sqlite3 binds an int, float, str or bytearray directly, but sends any other value, bytes and None
# included, through its adapter protocol: a registry miss, then ``__adapt__`` and ``__conform__`` lookups
# that each raise and clear an AttributeError (~3k instructions a parameter; an echo call binds six: every
# blob and the unkeyed target's key). A registered adapter is found first; these two hand the value back
# unchanged (``bytes(b)`` is ``b``; ``{}.get(None)`` is None), so what is bound is the same. The registry is
# the process's, and identity adapters change nothing for any other sqlite3 user.
sqlite3.register_adapter(bytes, bytes)
_NOTHING: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NOTHING.get)

SCHEMA_VERSION = 5
ABSENT = 0  # in that cache: the id has no row (keys start at 1)

# Invocation ids are random (or hashes), so a table keyed by them puts every new row on a random B-tree page:
# schema 1 wrote ~11 pages (46 KiB of WAL) per noop invocation and left pages ~70% full. Schema 2 keys
# invocations and journals by ``seq``, a storage key in creation order, so new rows of a batch land together
# at the right edge; only the id index takes one random page per new invocation.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS invocation (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    service TEXT NOT NULL,
    service_key TEXT,
    handler TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS invocation_expiry ON invocation(expires_at) WHERE expires_at > 0;
CREATE INDEX IF NOT EXISTS invocation_active ON invocation(status) WHERE status != 'completed';
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER NOT NULL, idx INTEGER NOT NULL, entry BLOB NOT NULL, appended_at INTEGER NOT NULL,
    PRIMARY KEY (seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    service TEXT NOT NULL, service_key TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (service, service_key, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lock (
    service TEXT NOT NULL, service_key TEXT NOT NULL, holder TEXT NOT NULL,
    PRIMARY KEY (service, service_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL, service_key TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_key ON inbox(service, service_key, seq);
CREATE TABLE IF NOT EXISTS timer (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fire_at INTEGER NOT NULL, kind TEXT NOT NULL, invocation_id TEXT NOT NULL, completion_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timer_fire ON timer(fire_at, id);
CREATE TABLE IF NOT EXISTS promise (
    service TEXT NOT NULL, service_key TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (service, service_key, name)
) WITHOUT ROWID;
"""
# The signals an invocation's journal holds, so that a repeated signal is recognised by one lookup instead
# of a read of the whole journal (schema 3): 200 repeated resolves against a 40,000-entry journal held the
# loop for seconds.
_SIGNAL_TABLE = (
    "CREATE TABLE IF NOT EXISTS signal (seq INTEGER NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (seq, idx))"
    " WITHOUT ROWID"
)
_SCHEMA += _SIGNAL_TABLE + ";\n"
# Service options changed through the admin API (schema 4): before, a side file ``service_overrides.json``
# in the data dir, written outside the store's transactions; ``_import_side_file`` moves it in.
_OVERRIDE_TABLE = "CREATE TABLE IF NOT EXISTS service_override (service TEXT PRIMARY KEY, data BLOB NOT NULL)"
_SCHEMA += _OVERRIDE_TABLE + ";\n"
OVERRIDES_SIDE_FILE = "service_overrides.json"
# Remote deployments registered through the admin API (schema 5).
_DEPLOYMENT_TABLE = "CREATE TABLE IF NOT EXISTS deployment (id TEXT PRIMARY KEY, data BLOB NOT NULL)"
_SCHEMA += _DEPLOYMENT_TABLE + ";\n"

log = logging.getLogger("unbroken.storage")


def connect(path: str, *, fsync: bool = True, readonly: bool = False) -> sqlite3.Connection:
    """Open the store file with the pragmas every connection needs."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


class StoreVersionError(RuntimeError):
    """The data dir was written by a newer Unbroken (a schema this build does not know)."""


class SqliteStore:
    """Owns the writer connection. ``transaction()`` is used by exactly one thread (the processor).

    It also owns the map from invocation id to storage key (``seq``): a cache of the ``invocation`` table's
    id index plus the keys handed out in the open transaction before their row is written.
    """

    def __init__(self, data_dir: str, *, fsync: bool = True) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "unbroken.db")
        self.fsync = fsync
        self.conn = connect(self.path, fsync=fsync)
        _upgrade(self.conn)
        self.conn.executescript(_SCHEMA)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        _import_side_file(self.conn, os.path.join(data_dir, OVERRIDES_SIDE_FILE))
        self.seqs: dict[str, int] = {}
        self._reader: sqlite3.Connection | None = None  # for timer scans (see ``timers_after``)
        # Keys only grow, past every key in either table, so a key is never reused, not even for a journal
        # whose invocation row is gone.
        row = self.conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM invocation), 0), coalesce((SELECT max(seq) FROM journal), 0))"
        ).fetchone()
        self.last_seq: int = row[0]

    def begin(self) -> SqliteTransaction:
        if len(self.seqs) > limits.storage_key_cache_entries_max:
            self.seqs.clear()
        self.conn.execute("BEGIN IMMEDIATE")
        return SqliteTransaction(self.conn, self)

    def transaction(self) -> AbstractContextManager[Transaction]:
        return transaction(self)

    def _rollback(self) -> None:
        self.seqs.clear()  # it may name keys of rows the rollback removes
        if self.conn.in_transaction:  # a failed COMMIT (busy, I/O, full) can leave it open
            self.conn.execute("ROLLBACK")

    def watch_inbox(self, wake: Callable[[], None]) -> bool:
        return False  # one node leads the one partition: nothing is ever sent to it

    def leadership(self) -> Leadership | None:
        return None  # one node's store: no leases

    def leads(self, part: int) -> bool:
        return True  # one node's store: it leads its one partition for good

    def partition_of(self, partition_key: int) -> int:
        return 0

    def cluster(self) -> ClusterView | None:
        return None

    def on_leadership(self, changed: LeadershipChanged) -> None:
        pass  # leadership never changes

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.conn.close()

    # --- recovery reads (before the processor starts) -------------------------------------------------
    def running_invocation_ids(self, parts: Collection[int] | None = None) -> list[str]:
        """The invocations an attempt was running for when the process stopped, oldest first (one
        partition: ``parts`` is ignored).

        Filtered in SQL: with 100,000 suspended workflows stored, start-up reads none of their rows.
        """
        rows = self.conn.execute(
            "SELECT id FROM invocation WHERE status != 'completed' AND status = 'running' ORDER BY seq"
        )
        return [row[0] for row in rows]

    def service_overrides(self) -> dict[str, ServiceOverride]:
        rows = self.conn.execute("SELECT service, data FROM service_override")
        return {service: decode_override(data) for service, data in rows}

    def deployments(self) -> list[Deployment]:
        return [decode_deployment(row[0]) for row in self.conn.execute("SELECT data FROM deployment")]

    def timers(self) -> list[Timer]:
        rows = self.conn.execute("SELECT id, fire_at, kind, invocation_id, completion_id FROM timer")
        return [_timer(row) for row in rows]

    def timers_after(self, after: tuple[int, int] | None, limit: int) -> list[Timer]:
        # On a reader connection: called on the event loop while the writer thread may be committing
        # on ``conn``, and it must see committed timers only.
        if self._reader is None:
            self._reader = connect(self.path, readonly=True)
        fire_at, timer_id = after if after is not None else (-(2**63), -(2**63))
        rows = self._reader.execute(
            "SELECT id, fire_at, kind, invocation_id, completion_id FROM timer WHERE (fire_at, id) > (?, ?)"
            " ORDER BY fire_at, id LIMIT ?",
            (fire_at, timer_id, limit),
        )
        return [_timer(row) for row in rows]


def _timer(row: tuple[int, int, str, str, int]) -> Timer:
    timer_id, fire_at, kind, invocation_id, completion_id = row
    return Timer(timer_id, fire_at, TimerKind(kind), invocation_id, completion_id)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a data dir of an older schema up to this one, or refuse one of a newer schema."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    row = conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone() if has_meta else None
    version = int(row[0]) if row else SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the data dir was written with store schema {version}, this Unbroken knows up to "
            f"{SCHEMA_VERSION}: run a newer Unbroken, or point --data-dir elsewhere"
        )
    if version == 1:
        conn.executescript(_UPGRADE_1_TO_2)
        version = 2
    if version == 2:
        _upgrade_2_to_3(conn)
        version = 3
    if version == 3:  # schema 4 adds the service_override table
        conn.executescript(
            f"BEGIN IMMEDIATE; {_OVERRIDE_TABLE}; UPDATE meta SET v = '4' WHERE k = 'schema_version'; COMMIT;"
        )
        version = 4
    if version == 4:  # schema 5 adds the deployment table
        conn.executescript(
            f"BEGIN IMMEDIATE; {_DEPLOYMENT_TABLE}; UPDATE meta SET v = '5' WHERE k = 'schema_version'; COMMIT;"
        )


def _import_side_file(conn: sqlite3.Connection, path: str) -> None:
    """Move the overrides of ``service_overrides.json`` (what Unbroken wrote before schema 4) into the table,
    then delete the file. Rows already in the table win (a crash between the COMMIT and the unlink leaves the
    file behind; importing it again adds nothing newer than what the table holds)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"cannot read the service overrides in {path}: {exc}; fix or remove the file"
        ) from exc
    if not isinstance(data, dict):
        raise RuntimeError(f"cannot read the service overrides in {path}: expected an object of objects")
    rows = []
    for service, fields in data.items():
        try:
            rows.append((service, encode_override(msgspec.convert(fields, ServiceOverride))))
        except msgspec.ValidationError as exc:  # as before: an unusable override is ignored, said once
            log.warning("ignoring the unusable override of service %s in %s: %s", service, path, exc)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR IGNORE INTO service_override VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    os.unlink(path)
    log.info("imported the overrides of %d services from %s into the store", len(rows), path)


def _upgrade_2_to_3(conn: sqlite3.Connection) -> None:
    """Schema 3 adds the signal index: built from the notifications the journals hold."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SIGNAL_TABLE)
        rows = conn.execute("SELECT seq, entry FROM journal")  # streamed: only the signals are kept
        signals = {(seq, idx) for seq, data in rows if (idx := signal_index(decode_entry(data)))}
        conn.executemany("INSERT OR IGNORE INTO signal VALUES (?, ?)", sorted(signals))
        conn.execute("UPDATE meta SET v = '3' WHERE k = 'schema_version'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# Schema 1 keyed invocation and journal rows by the invocation id; copy them in creation order.
_UPGRADE_1_TO_2 = (
    """
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS invocation_expiry;
DROP INDEX IF EXISTS invocation_active;
ALTER TABLE invocation RENAME TO invocation_v1;
ALTER TABLE journal RENAME TO journal_v1;
"""
    + _SCHEMA
    + """
INSERT INTO invocation (id, status, service, service_key, handler, created_at, modified_at, expires_at, data)
    SELECT id, status, service, service_key, handler, created_at, modified_at, expires_at, data
    FROM invocation_v1 ORDER BY created_at, id;
INSERT INTO journal SELECT i.seq, j.idx, j.entry, j.appended_at FROM journal_v1 j JOIN invocation i ON i.id = j.id;
DROP TABLE invocation_v1;
DROP TABLE journal_v1;
UPDATE meta SET v = '2' WHERE k = 'schema_version';
COMMIT;
"""
)


class SqliteTransaction:
    """Implements :class:`unbroken.core.txn.Transaction` on the writer connection."""

    __slots__ = ("c", "store")
    all_led = True  # one writer, one node: every partition is led here (the partition inbox is unused)

    def __init__(self, conn: sqlite3.Connection, store: SqliteStore) -> None:
        self.c = conn
        self.store = store

    def is_led(self, partition_key: int) -> bool:
        return True

    def send(self, partition_key: int, record: Record, source_key: int = 0) -> None:
        violated(f"{type(record).__name__} sent to another partition of a store one node leads whole")

    def take_inbox(self, limit: int) -> list[Record]:
        return []

    def commit(self) -> None:
        try:
            self.c.execute("COMMIT")
        except BaseException:
            self.store._rollback()
            raise

    def rollback(self) -> None:
        self.store._rollback()

    def _seq(self, invocation_id: str, *, create: bool) -> int | None:
        """The storage key of an invocation: cached, stored, or (``create``) a new one."""
        seqs = self.store.seqs
        seq = seqs.get(invocation_id)
        if seq is None:
            row = self.c.execute("SELECT seq FROM invocation WHERE id = ?", (invocation_id,)).fetchone()
            seq = seqs[invocation_id] = ABSENT if row is None else row[0]
        if seq == ABSENT:
            if not create:
                return None
            self.store.last_seq += 1
            seq = seqs[invocation_id] = self.store.last_seq
        return seq

    # invocations
    def prefetch_invocations(self, invocation_ids: list[str], new_ids: Sequence[str] = ()) -> None:
        pass  # a read is a function call into SQLite's page cache: nothing to save

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        if self.store.seqs.get(invocation_id) == ABSENT:
            return None
        row = self.c.execute("SELECT seq, data FROM invocation WHERE id = ?", (invocation_id,)).fetchone()
        if row is None:
            self.store.seqs[invocation_id] = (
                ABSENT  # a new invocation: its key is handed out without a lookup
            )
            return None
        self.store.seqs[invocation_id] = row[0]
        return decode_invocation(row[1], invocation_id)

    def put_invocation(self, inv: Invocation) -> None:
        expires = cleanup_due_ms(inv)  # the expiry column: when the retention sweep next has work here
        # An upsert on the storage key leaves the id index alone when the row exists (an INSERT OR REPLACE
        # would delete and re-insert the row and every index entry).
        self.c.execute(
            "INSERT INTO invocation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO UPDATE SET"
            " status = excluded.status, modified_at = excluded.modified_at, expires_at = excluded.expires_at,"
            " data = excluded.data",
            (
                self._seq(inv.id, create=True),
                inv.id,
                inv.status._value_,  # `.value` is a Python property: ~200 ns
                inv.target.service,
                inv.target.key,
                inv.target.handler,
                inv.created_at_ms,
                inv.modified_at_ms,
                expires,
                encode_invocation(inv),
            ),
        )

    def delete_invocation(self, invocation_id: str) -> None:
        seq = self._seq(invocation_id, create=False)
        if seq is not None:  # its journal goes with it, whatever the order the caller deletes them in
            self._delete_journal(seq)
            self.c.execute("DELETE FROM invocation WHERE seq = ?", (seq,))
        self.store.seqs[invocation_id] = ABSENT

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        rows = self.c.execute(
            "SELECT id FROM invocation WHERE expires_at > 0 AND expires_at <= ? LIMIT ?", (now_ms, limit)
        )
        return [row[0] for row in rows]

    # journal
    def journal(self, invocation_id: str) -> list[Entry]:
        seq = self._seq(invocation_id, create=False)
        if seq is None:
            return []
        rows = self.c.execute("SELECT idx, entry FROM journal WHERE seq = ? ORDER BY idx", (seq,))
        entries = []
        for expected, (idx, data) in enumerate(rows):
            assert idx == expected, f"{invocation_id}: journal gap at {expected} (found {idx})"
            entries.append(decode_entry(data))
        return entries

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        # The Input entry is written before its invocation row exists: the key is handed out here.
        seq = self._seq(invocation_id, create=True)
        self.c.execute(
            "INSERT INTO journal VALUES (?, ?, ?, ?)", (seq, index, encode_entry(entry), appended_at_ms)
        )
        if type(entry) is Notification and entry.signal_idx:  # inline signal_index(): the hot path
            self.c.execute("INSERT OR IGNORE INTO signal VALUES (?, ?)", (seq, entry.signal_idx))

    def delete_journal(self, invocation_id: str) -> None:
        seq = self._seq(invocation_id, create=False)
        if seq is not None:
            self._delete_journal(seq)

    def _delete_journal(self, seq: int) -> None:
        self.c.execute("DELETE FROM journal WHERE seq = ?", (seq,))
        self.c.execute("DELETE FROM signal WHERE seq = ?", (seq,))

    def has_signal(self, invocation_id: str, signal_idx: int) -> bool:
        seq = self._seq(invocation_id, create=False)
        if seq is None:
            return False
        row = self.c.execute("SELECT 1 FROM signal WHERE seq = ? AND idx = ?", (seq, signal_idx)).fetchone()
        return row is not None

    # state
    def state_all(self, service: str, key: str) -> dict[str, bytes]:
        rows = self.c.execute(
            "SELECT name, value FROM state WHERE service = ? AND service_key = ?", (service, key)
        )
        return dict(rows.fetchall())

    def state_get(self, service: str, key: str, name: str) -> bytes | None:
        row = self.c.execute(
            "SELECT value FROM state WHERE service = ? AND service_key = ? AND name = ?", (service, key, name)
        ).fetchone()
        return None if row is None else row[0]

    def state_keys(self, service: str, key: str) -> list[str]:
        rows = self.c.execute(
            "SELECT name FROM state WHERE service = ? AND service_key = ? ORDER BY name", (service, key)
        )
        return [name for (name,) in rows.fetchall()]

    def state_set(self, service: str, key: str, name: str, value: bytes) -> None:
        self.c.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (service, key, name, value))

    def state_clear(self, service: str, key: str, name: str) -> None:
        self.c.execute(
            "DELETE FROM state WHERE service = ? AND service_key = ? AND name = ?", (service, key, name)
        )

    def state_clear_all(self, service: str, key: str) -> None:
        self.c.execute("DELETE FROM state WHERE service = ? AND service_key = ?", (service, key))

    # locks and inbox
    def lock_holder(self, service: str, key: str) -> str | None:
        row = self.c.execute(
            "SELECT holder FROM lock WHERE service = ? AND service_key = ?", (service, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None:
        if invocation_id is None:
            self.c.execute("DELETE FROM lock WHERE service = ? AND service_key = ?", (service, key))
        else:
            self.c.execute("INSERT OR REPLACE INTO lock VALUES (?, ?, ?)", (service, key, invocation_id))

    def inbox_push(self, service: str, key: str, invocation_id: str, pushed_at_ms: int) -> None:
        self.c.execute(
            "INSERT INTO inbox (service, service_key, id, created_at) VALUES (?, ?, ?, ?)",
            (service, key, invocation_id, pushed_at_ms),
        )

    def inbox_pop(self, service: str, key: str) -> str | None:
        row = self.c.execute(
            "SELECT seq, id FROM inbox WHERE service = ? AND service_key = ? ORDER BY seq LIMIT 1",
            (service, key),
        ).fetchone()
        if row is None:
            return None
        self.c.execute("DELETE FROM inbox WHERE seq = ?", (row[0],))
        return str(row[1])

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None:
        self.c.execute(
            "DELETE FROM inbox WHERE service = ? AND service_key = ? AND id = ?",
            (service, key, invocation_id),
        )

    # timers
    def add_timer(self, fire_at_ms: int, kind: TimerKind, invocation_id: str, completion_id: int) -> int:
        cur = self.c.execute(
            "INSERT INTO timer (fire_at, kind, invocation_id, completion_id) VALUES (?, ?, ?, ?)",
            (fire_at_ms, kind.value, invocation_id, completion_id),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def get_timer(self, timer_id: int) -> Timer | None:
        row = self.c.execute(
            "SELECT id, fire_at, kind, invocation_id, completion_id FROM timer WHERE id = ?", (timer_id,)
        ).fetchone()
        return None if row is None else _timer(row)

    def delete_timer(self, timer_id: int) -> None:
        self.c.execute("DELETE FROM timer WHERE id = ?", (timer_id,))

    # promises
    def get_promise(self, service: str, key: str, name: str) -> Promise | None:
        row = self.c.execute(
            "SELECT data FROM promise WHERE service = ? AND service_key = ? AND name = ?",
            (service, key, name),
        ).fetchone()
        return None if row is None else decode_promise(row[0])

    def put_promise(self, service: str, key: str, name: str, promise: Promise) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO promise VALUES (?, ?, ?, ?)",
            (service, key, name, encode_promise(promise)),
        )

    def clear_promises(self, service: str, key: str) -> None:
        self.c.execute("DELETE FROM promise WHERE service = ? AND service_key = ?", (service, key))

    # service overrides
    def get_service_override(self, service: str) -> ServiceOverride | None:
        row = self.c.execute("SELECT data FROM service_override WHERE service = ?", (service,)).fetchone()
        return None if row is None else decode_override(row[0])

    def put_service_override(self, service: str, override: ServiceOverride) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO service_override VALUES (?, ?)", (service, encode_override(override))
        )

    # deployments
    def get_deployment(self, deployment_id: str) -> Deployment | None:
        row = self.c.execute("SELECT data FROM deployment WHERE id = ?", (deployment_id,)).fetchone()
        return None if row is None else decode_deployment(row[0])

    def put_deployment(self, deployment: Deployment) -> None:
        self.c.execute(
            "INSERT OR REPLACE INTO deployment VALUES (?, ?)", (deployment.id, encode_deployment(deployment))
        )

    def delete_deployment(self, deployment_id: str) -> None:
        self.c.execute("DELETE FROM deployment WHERE id = ?", (deployment_id,))
