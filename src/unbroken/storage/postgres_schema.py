"""The PostgreSQL store's schema: its tables, its version, the cluster's partition count, and where a row lives.

Every per-partition table is keyed by ``part`` first (the partition, 0..partitions-1), so one partition's
rows sit together (and a distributed SQL target can place them by it later). The partition of a row comes
from the partition key every invocation id carries (``core/ids.py``); state, locks, inboxes and promises
belong to the partition of their key (``partition_key_for_key``), which is where the key's invocations live.

The partition count is fixed when the cluster (the schema) is created and read back from ``meta`` on every
start: changing it would move rows between partitions. The schema is created and migrated on start
(``prepare``); a schema written by a newer Unbroken is refused with a message.

Leases: ``partition_lease`` (node, epoch, expiry; renewed every ``lease_renew_s``) and ``partition_epoch``
(the epoch every batch is fenced with, ``postgres_lease.py``) are separate rows, so renewing a lease never
waits on the row lock a committing batch holds. ``node`` holds every node that ever joined: where it listens
and its heartbeat (alive while younger than the lease TTL), written by its lease thread.
"""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from unbroken.core import limits
from unbroken.core.ids import InvalidId, InvocationId, partition_key_for_key
from unbroken.core.read_model import NoStoreError
from unbroken.core.storage import StoreError

SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "unbroken"
DEFAULT_PARTITIONS = 64

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE IF NOT EXISTS invocation (
    part int NOT NULL, id text NOT NULL, seq bigint GENERATED ALWAYS AS IDENTITY, status text NOT NULL, service text NOT NULL, service_key text,
    handler text NOT NULL, created_at bigint NOT NULL, modified_at bigint NOT NULL, expires_at bigint NOT NULL,
    data bytea NOT NULL, PRIMARY KEY (part, id)
);
CREATE INDEX IF NOT EXISTS invocation_expiry ON invocation (expires_at) WHERE expires_at > 0;
CREATE INDEX IF NOT EXISTS invocation_running ON invocation (seq) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS journal (
    part int NOT NULL, invocation_id text NOT NULL, idx int NOT NULL, entry bytea NOT NULL,
    appended_at bigint NOT NULL, PRIMARY KEY (part, invocation_id, idx)
);
CREATE TABLE IF NOT EXISTS signal (
    part int NOT NULL, invocation_id text NOT NULL, idx int NOT NULL, PRIMARY KEY (part, invocation_id, idx)
);
CREATE TABLE IF NOT EXISTS state (
    part int NOT NULL, service text NOT NULL, service_key text NOT NULL, name text NOT NULL,
    value bytea NOT NULL, PRIMARY KEY (part, service, service_key, name)
);
CREATE TABLE IF NOT EXISTS lock (
    part int NOT NULL, service text NOT NULL, service_key text NOT NULL, holder text NOT NULL,
    PRIMARY KEY (part, service, service_key)
);
CREATE TABLE IF NOT EXISTS inbox (
    part int NOT NULL, seq bigint GENERATED ALWAYS AS IDENTITY, service text NOT NULL,
    service_key text NOT NULL, id text NOT NULL, created_at bigint NOT NULL, PRIMARY KEY (part, seq)
);
CREATE INDEX IF NOT EXISTS inbox_key ON inbox (part, service, service_key, seq);
CREATE TABLE IF NOT EXISTS timer (
    part int NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, fire_at bigint NOT NULL, kind text NOT NULL,
    invocation_id text NOT NULL, completion_id bigint NOT NULL, PRIMARY KEY (part, id)
);
CREATE INDEX IF NOT EXISTS timer_fire ON timer (fire_at, id);
CREATE INDEX IF NOT EXISTS timer_invocation ON timer (part, invocation_id);
CREATE TABLE IF NOT EXISTS promise (
    part int NOT NULL, service text NOT NULL, service_key text NOT NULL, name text NOT NULL,
    data bytea NOT NULL, PRIMARY KEY (part, service, service_key, name)
);
CREATE TABLE IF NOT EXISTS partition_inbox (
    part int NOT NULL, source_part int NOT NULL, source_seq bigint NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY, record bytea NOT NULL, PRIMARY KEY (part, source_part, source_seq)
);
CREATE INDEX IF NOT EXISTS partition_inbox_order ON partition_inbox (part, seq);
CREATE TABLE IF NOT EXISTS service_override (service text PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS deployment (id text PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS partition_lease (
    part int PRIMARY KEY, node text, epoch bigint NOT NULL, expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS partition_epoch (
    part int PRIMARY KEY, epoch bigint NOT NULL, leader text, last_batch bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS node (
    name text PRIMARY KEY, ingress_url text, admin_url text, started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL, pinned boolean NOT NULL DEFAULT false
);
ALTER TABLE node ADD COLUMN IF NOT EXISTS pinned boolean NOT NULL DEFAULT false;
ALTER TABLE node ADD COLUMN IF NOT EXISTS backlog bigint NOT NULL DEFAULT 0;
"""
# Migrations: version -> the statements that bring a schema of that version to the next one (none yet).
_UPGRADES: dict[int, str] = {}


class StoreVersionError(RuntimeError):
    """The database holds a schema written by a newer Unbroken (or a cluster this build cannot use)."""


@dataclass(frozen=True)
class Location:
    """Where the store lives: the libpq connection string and the PostgreSQL schema holding the tables."""

    conninfo: str
    schema: str

    def describe(self) -> str:
        """The location without its password, for messages and logs."""
        parts = urllib.parse.urlsplit(self.conninfo)
        host = parts.hostname or ""
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{user}{host}{port}{parts.path} (schema {self.schema})"


def parse_url(url: str) -> Location:
    """``postgresql://USER@HOST:PORT/DB[?schema=NAME&...]``: ``schema`` (default ``unbroken``) is ours, the
    other parameters go to libpq."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL (postgresql://USER@HOST:PORT/DB): {url!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    if not schema.replace("_", "").isalnum() or not schema.isascii():
        raise ValueError(f"schema {schema!r}: letters, digits and _ only")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    return Location(urllib.parse.urlunsplit(parts._replace(query=rest)), schema)


def connect(location: Location, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
    """A connection whose tables are the store's (``search_path`` is the store's schema). TCP keepalives
    on: a server gone without a word (a cut network, a host that died) fails the statement waiting on it
    within ``pg_keepalive_idle_s`` + 3 probes, instead of leaving its thread (the lease thread's renewals,
    the inbox's LISTEN) waiting for an answer that never comes."""
    conn = psycopg.connect(
        location.conninfo,
        autocommit=autocommit,
        connect_timeout=limits.pg_connect_timeout_s,
        keepalives=1,
        keepalives_idle=limits.pg_keepalive_idle_s,
        keepalives_interval=limits.pg_keepalive_interval_s,
        keepalives_count=3,
    )
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema)))
    if not autocommit:
        conn.commit()  # the SET opened a transaction: the caller sets the next one up
    return conn


def bound_waits(conn: psycopg.Connection[Any]) -> None:
    """Bound every wait of ``conn`` on the server (``limits.pg_lock_timeout_s``, ``pg_statement_timeout_s``):
    past them the statement fails (55P03, 57014: an ``OperationalError``, a ``StoreError`` to the batch
    loop) instead of holding up its caller, the event loop among them, for as long as another session
    keeps a lock (a leader paused mid-batch keeps its locks until it runs again)."""
    conn.execute(f"SET lock_timeout = {int(limits.pg_lock_timeout_s * 1000)}".encode())
    conn.execute(f"SET statement_timeout = {int(limits.pg_statement_timeout_s * 1000)}".encode())


class Reader:
    """A connection for reads outside any transaction (autocommit: committed rows only), opened when first
    needed and again after it broke, every wait bounded. Its lock makes one thread at a time open or use it:
    a psycopg connection must not be opened twice at once, nor closed under another thread's query."""

    def __init__(self, location: Location) -> None:
        self._location = location
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()

    def read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows; raises ``psycopg.Error`` (the store makes it a ``StoreError``)."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                self._conn = None
                conn = connect(self._location)
                try:
                    bound_waits(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return conn.execute(query, params, binary=True).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def prepare(conn: psycopg.Connection[tuple[object, ...]], location: Location, partitions: int) -> int:
    """Create or migrate the schema; returns the cluster's partition count (``partitions`` only for a new
    cluster). Raises :class:`StoreVersionError` for a schema of a newer version."""
    for attempt in range(3):  # two nodes creating the same schema at once: one of them retries
        try:
            with conn.transaction():
                return _prepare(conn, location, partitions)
        except (
            psycopg.errors.UniqueViolation,
            psycopg.errors.DuplicateObject,
            psycopg.errors.DeadlockDetected,
        ):
            # DeadlockDetected: CREATE INDEX IF NOT EXISTS locks its table even when the index exists, and a
            # running leader's batch may hold that table while waiting on one this DDL holds (a node joining
            # a busy cluster died of it at start in tests/cluster): PostgreSQL aborts one side; retry ours
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _prepare(conn: psycopg.Connection[tuple[object, ...]], location: Location, partitions: int) -> int:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(location.schema)))
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    version = SCHEMA_VERSION
    if exists is not None and exists[0]:
        row = conn.execute("SELECT v FROM meta WHERE k = 'schema_version' FOR UPDATE").fetchone()
        version = int(str(row[0])) if row is not None else SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the database {location.describe()} holds store schema {version}, this Unbroken knows up to "
            f"{SCHEMA_VERSION}: run a newer Unbroken, or point --store at another database or schema"
        )
    while version < SCHEMA_VERSION:
        conn.execute(_UPGRADES[version].encode())
        version += 1
    conn.execute(_TABLES.encode())
    conn.execute(
        "INSERT INTO meta VALUES ('schema_version', %s), ('partitions', %s) ON CONFLICT (k) DO NOTHING",
        (str(SCHEMA_VERSION), str(partitions)),
    )
    conn.execute("UPDATE meta SET v = %s WHERE k = 'schema_version'", (str(SCHEMA_VERSION),))
    row = conn.execute("SELECT v FROM meta WHERE k = 'partitions'").fetchone()
    assert row is not None
    count = int(str(row[0]))
    if count < 1:
        raise StoreVersionError(f"the database {location.describe()} says it has {count} partitions")
    conn.execute(
        "INSERT INTO partition_lease SELECT g, NULL, 0, '-infinity' FROM generate_series(0, %s - 1) g"
        " ON CONFLICT (part) DO NOTHING",
        (count,),
    )
    conn.execute(
        "INSERT INTO partition_epoch SELECT g, 0, NULL, 0 FROM generate_series(0, %s - 1) g"
        " ON CONFLICT (part) DO NOTHING",
        (count,),
    )
    return count


def read_partitions(location: Location) -> int:
    """The partition count of the store at ``location``, read in a READ ONLY transaction: nothing is created
    or migrated (for tools reading beside a running node). ``NoStoreError`` when the schema holds no store,
    :class:`StoreVersionError` for a newer one, ``StoreError`` when the server cannot be reached."""
    try:
        conn = connect(location, autocommit=False)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {location.describe()}: {str(exc).strip()}") from None
    try:
        conn.read_only = True
        if conn.execute("SELECT to_regclass('meta') IS NULL").fetchone() == (True,):
            raise NoStoreError(f"no Unbroken store at {location.describe()}")
        meta = {str(k): str(v) for k, v in conn.execute("SELECT k, v FROM meta").fetchall()}
        if "partitions" not in meta:
            raise NoStoreError(f"no Unbroken store at {location.describe()} (its meta table is not ours)")
        version = int(meta.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"the database {location.describe()} holds store schema {version}, this Unbroken knows up to "
                f"{SCHEMA_VERSION}: run a newer Unbroken"
            )
        return int(meta["partitions"])
    except psycopg.Error as exc:
        raise StoreError(f"cannot read {location.describe()}: {str(exc).strip()}") from None
    finally:
        conn.close()


def partition_of_key(partition_key: int, partitions: int) -> int:
    """The partition whose range of the u64 key space holds ``partition_key`` (as the node routes)."""
    return (partition_key * partitions) >> 64


def invocation_partition(invocation_id: str, partitions: int) -> int:
    """The partition of an invocation: from the partition key its id carries. An id that is not an
    invocation id (tests name them freely) is hashed as a key, so every id has one stable partition."""
    try:
        key = InvocationId.parse(invocation_id).partition_key
    except InvalidId:
        key = partition_key_for_key(invocation_id)
    return partition_of_key(key, partitions)


def key_partition(key: str, partitions: int) -> int:
    """The partition of a keyed service's or workflow's key (its state, lock, inbox and promises)."""
    return partition_of_key(partition_key_for_key(key), partitions)
