"""The PostgreSQL store: the same tables as SQLite's, each keyed by partition first, on psycopg 3.

One writer connection applies a whole batch inside one transaction, in pipeline mode: writes are sent
without waiting for their answers, a read sends what is queued along with it, so a batch costs about one round
trip per read instead of one per statement (``bench/pg_driver.py``; docs/architecture.md has the figures).
Every batch is fenced by the epochs of the partitions it wrote (``postgres_lease.py``) in the same
transaction, just before its COMMIT.

The recovery reads and the timer windows use a second connection (autocommit: committed rows only),
since the engine calls ``timers_after`` on the event loop while the writer thread may be committing.

Driver errors become ``StoreError`` (the batch loop retries the batch later), except those that are the
code's or the data's fault (a constraint, bad SQL, a value out of range), which stay what they are.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from unbroken.core import limits
from unbroken.core.deployments import Deployment, decode_deployment, encode_deployment
from unbroken.core.invocation import Invocation, cleanup_due_ms
from unbroken.core.journal import Entry, Notification
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import (
    ClusterView,
    Leadership,
    LeadershipChanged,
    NotLeader,
    Promise,
    StoreError,
    Timer,
    TimerKind,
    Transaction,
    transaction,
)
from unbroken.storage.codec import (
    decode_entry,
    decode_invocation,
    decode_override,
    decode_promise,
    encode_entry,
    encode_invocation,
    encode_override,
    encode_promise,
)
from unbroken.storage.postgres_lease import FENCE, Leases
from unbroken.storage.postgres_schema import (
    DEFAULT_PARTITIONS,
    Location,
    StoreVersionError,
    connect,
    invocation_partition,
    key_partition,
    parse_url,
    prepare,
)

__all__ = ["PostgresStore", "PostgresTransaction", "StoreVersionError"]

log = logging.getLogger("unbroken.storage")
Conn = psycopg.Connection[tuple[Any, ...]]
# The code's or the data's fault, not the store's: the batch loop treats them as a broken invariant.
_NOT_STORE_ERRORS = (psycopg.IntegrityError, psycopg.ProgrammingError, psycopg.DataError)


def store_error(exc: psycopg.Error) -> Exception:
    """What the batch loop should see for a driver error (see the module's doc)."""
    if isinstance(exc, _NOT_STORE_ERRORS) and not isinstance(exc, psycopg.errors.InFailedSqlTransaction):
        return exc
    return StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}")


def default_node_name() -> str:
    """The node's name in the lease table: the host's name, unless ``UNBROKEN_NODE`` says otherwise. A node
    restarted under the same name takes its own leases back at once (with a new epoch, which fences any
    process of the old one that still runs)."""
    return os.environ.get("UNBROKEN_NODE") or socket.gethostname()


class PostgresStore:
    """Owns the writer connection and the leases; ``begin`` is used by one thread at a time."""

    def __init__(
        self,
        url: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        node: str | None = None,
        lease_ttl_s: float = limits.pg_lease_ttl_s,
        lease_wait_s: float = limits.pg_lease_acquire_wait_s,
        steal: bool = False,
        claim: Collection[int] | None = None,
        lease_poll_s: float = limits.pg_lease_poll_interval_s,
    ) -> None:
        """Connect, create or migrate the schema, join the cluster and take this node's share of the
        partitions: all of them when it is alone, none when the others lead them all (they hand some over
        within a second or two). ``claim``: lead exactly those partitions, never others (tests, pinning).
        ``steal``: take the claimed partitions (all, if none are named) even from a live leader, an
        operator's takeover. ``lease_wait_s`` is not waited any more (a node may lead nothing)."""
        del lease_wait_s
        self.location: Location = parse_url(url)
        self.node = node or default_node_name()
        self._ttl_s = lease_ttl_s
        self.conn = self._connect_writer()
        try:
            self.partitions = prepare(self.conn, self.location, partitions)
        except BaseException:
            self.conn.close()
            raise
        self._reader: Conn | None = None
        self._unresolved: tuple[int, list[int]] | None = None  # (token, partitions) of an unknown COMMIT
        if steal and claim is None:
            claim = range(self.partitions)
        self.leases = Leases(
            self.location, self.node, self.partitions, ttl_s=lease_ttl_s, poll_s=lease_poll_s, claim=claim
        )
        try:
            self.leases.start_up(force=steal)
        except BaseException:
            self.leases.close(release=False)
            self.conn.close()
            raise
        self.leases.start()
        log.info(
            "store %s: %d of its %d partitions led by node %s",
            self.location.describe(),
            len(self.leases.leading),
            self.partitions,
            self.node,
        )

    def _connect_writer(self) -> Conn:
        try:
            return self._writer()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.location.describe()}: {exc}") from exc

    def _writer(self) -> Conn:
        """The writer connection. A transaction left idle past the lease's TTL is ended by the server: a
        leader paused (SIGSTOP, a VM freeze) in the middle of a batch holds the fenced rows' locks, and a
        takeover would wait on them for as long as it stays paused."""
        conn = connect(self.location)
        timeout_ms = int(self._ttl_s * 1000)
        conn.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}".encode())
        return conn

    # ------------------------------------------------------------------------------------ transactions
    def begin(self) -> PostgresTransaction:
        if self._unresolved is not None:
            self._resolve_unknown_commit()
        try:
            if self.conn.closed or self.conn.broken:
                self.conn.close()
                self.conn = self._writer()
            self.conn.execute(b"BEGIN")
            pipeline = self.conn.pipeline()
            pipeline.__enter__()
        except psycopg.Error as exc:
            raise store_error(exc) from exc
        return PostgresTransaction(self, pipeline)

    def transaction(self) -> AbstractContextManager[Transaction]:
        return transaction(self)

    def _resolve_unknown_commit(self) -> None:
        """A COMMIT's answer was lost and its outcome could not be learnt then: learn it now, before the
        partition acts again. Its batch was reported failed and will be applied again, so had it landed
        that would apply it twice: those partitions stop being led here instead (a restart recovers them)."""
        assert self._unresolved is not None
        token, parts = self._unresolved
        landed = self.outcome(token, parts)
        if landed is None:
            raise StoreError(f"the outcome of a COMMIT on partitions {parts} is still unknown: retrying")
        self._unresolved = None
        if landed:
            self.leases.mark_lost(
                parts, "a batch reported failed had committed (its COMMIT's answer was lost)"
            )
            raise NotLeader(f"partitions {parts}: a batch whose COMMIT's answer was lost had committed")

    def outcome(self, token: int, parts: list[int], wait_s: float = 0.0) -> bool | None:
        """Whether the batch fenced with ``token`` committed (None: the database cannot be reached, retried
        for up to ``wait_s``). On a new writer connection: the rows are locked FOR UPDATE first, so a COMMIT
        still in flight on the old connection has ended either way before its token is read."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if self.conn.closed or self.conn.broken:
                    self.conn.close()
                    self.conn = self._writer()
                rows = self.conn.execute(
                    "SELECT last_batch FROM partition_epoch WHERE part = ANY(%s) FOR UPDATE", (parts,)
                ).fetchall()
                return any(int(row[0]) == token for row in rows)
            except psycopg.Error as exc:
                if time.monotonic() >= deadline:
                    log.warning("cannot learn whether a batch committed: %s", exc)
                    return None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------------------------ recovery reads
    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._reader is None or self._reader.closed or self._reader.broken:
            if self._reader is not None:
                self._reader.close()
            self._reader = connect(self.location)
        return self._reader.execute(query, params, binary=True).fetchall()

    def running_invocation_ids(self) -> list[str]:
        # the led partitions' only: those this node recovers (the others' leaders recover theirs)
        rows = self._read(
            "SELECT id FROM invocation WHERE status = 'running' AND part = ANY(%s) ORDER BY seq",
            (list(self.leases.leading),),
        )
        return [str(row[0]) for row in rows]

    def service_overrides(self) -> dict[str, ServiceOverride]:
        rows = self._read("SELECT service, data FROM service_override")
        return {str(service): decode_override(bytes(data)) for service, data in rows}

    def deployments(self) -> list[Deployment]:
        return [decode_deployment(bytes(data)) for (data,) in self._read("SELECT data FROM deployment")]

    def timers(self) -> list[Timer]:
        return [_timer(row) for row in self._read(f"SELECT {_TIMER_COLUMNS} FROM timer")]

    def timers_after(self, after: tuple[int, int] | None, limit: int) -> list[Timer]:
        fire_at, timer_id = after if after is not None else (-(2**63), -(2**63))
        # the led partitions' only: the engine's window holds the timers it may fire (the others' leaders
        # hold theirs), so a node's scan does not grow with the whole cluster's timers
        rows = self._read(
            f"SELECT {_TIMER_COLUMNS} FROM timer WHERE (fire_at, id) > (%s, %s) AND part = ANY(%s)"
            " ORDER BY fire_at, id LIMIT %s",
            (fire_at, timer_id, list(self.leases.leading), limit),
        )
        return [_timer(row) for row in rows]

    def leadership(self) -> Leadership:
        return self.leases.leadership()

    def leads(self, part: int) -> bool:
        return part in self.leases.leading

    def partition_of(self, partition_key: int) -> int:
        return (partition_key * self.partitions) >> 64

    def cluster(self) -> ClusterView:
        return self.leases.view

    def on_leadership(self, changed: LeadershipChanged) -> None:
        self.leases.on_change(changed)

    def advertise(self, ingress_url: str, admin_url: str) -> None:
        """Where this node's ingress and admin API listen (the ``node`` table, for the others to forward to)."""
        self.leases.advertise(ingress_url, admin_url)

    def close(self, *, release: bool = True) -> None:
        self.leases.close(release=release)
        if self._reader is not None:
            self._reader.close()
        self.conn.close()


_TIMER_COLUMNS = "id, fire_at, kind, invocation_id, completion_id"


def _timer(row: tuple[Any, ...]) -> Timer:
    timer_id, fire_at, kind, invocation_id, completion_id = row
    return Timer(int(timer_id), int(fire_at), TimerKind(kind), str(invocation_id), int(completion_id))


class PostgresTransaction:
    """Implements :class:`unbroken.core.storage.Transaction` on the writer connection (see the module)."""

    __slots__ = ("c", "parts", "pipeline", "store", "touched", "wrote_global", "_open")

    def __init__(self, store: PostgresStore, pipeline: AbstractContextManager[Any]) -> None:
        self.store = store
        self.c = store.conn
        self.parts = store.partitions
        self.pipeline = pipeline
        self.touched: set[int] = set()  # the partitions written: the batch is fenced by their epochs
        self.wrote_global = False  # a cluster-wide row (a deployment, a service override) was written
        self._open = True  # the pipeline

    # ------------------------------------------------------------------------------------ plumbing
    def _w(self, part: int, query: str, params: tuple[Any, ...]) -> None:
        self.touched.add(part)
        try:
            self.c.execute(query, params)
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    def _one(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        try:
            return self.c.execute(query, params, binary=True).fetchone()
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    def _all(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.c.execute(query, params, binary=True).fetchall()
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    def _inv_part(self, invocation_id: str) -> int:
        return invocation_partition(invocation_id, self.parts)

    def _key_part(self, key: str) -> int:
        return key_partition(key, self.parts)

    def commit(self) -> None:
        if not (
            self.touched or self.wrote_global
        ):  # it wrote nothing: nothing to fence (a node may lead none)
            try:
                self.c.execute(b"COMMIT")
                self._open = False
                self.pipeline.__exit__(None, None, None)
            except psycopg.Error as exc:
                self._close_pipeline()
                self._rollback_quietly()
                raise store_error(exc) from exc
            return
        try:
            parts, epochs = self.store.leases.fence_args(self.touched)
        except NotLeader:
            self.rollback()
            raise
        token = int.from_bytes(os.urandom(8), "big") >> 1  # a positive bigint naming this batch
        try:
            granted = {int(row[0]) for row in self._all(FENCE, (token, parts, epochs))}
        except BaseException:
            self.rollback()
            raise
        if len(granted) != len(parts):
            self.rollback()
            raise self.store.leases.refused(parts, granted)
        try:
            self.c.execute(b"COMMIT")
            self._open = False
            self.pipeline.__exit__(None, None, None)
        except psycopg.Error as exc:
            self._close_pipeline()
            if not (self.c.broken or isinstance(exc, psycopg.OperationalError)):
                self._rollback_quietly()
                raise store_error(exc) from exc
            # The connection went during the COMMIT: it may have landed. Learn which before answering.
            landed = self.store.outcome(token, parts, limits.pg_commit_resolve_timeout_s)
            if landed:
                log.warning("a COMMIT whose answer was lost had landed: the batch is committed")
                return
            if landed is None:
                self.store._unresolved = (token, parts)  # learnt before the next batch (``begin``)
            raise store_error(exc) from exc

    def rollback(self) -> None:
        self._close_pipeline()
        self._rollback_quietly()

    def _close_pipeline(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self.pipeline.__exit__(None, None, None)
        except psycopg.Error:  # the error that made us roll back, surfacing again: the rollback follows
            pass

    def _rollback_quietly(self) -> None:
        if self.c.closed or self.c.broken:
            return  # the server rolls back a transaction whose connection is gone
        try:
            self.c.execute(b"ROLLBACK")
        except psycopg.Error as exc:
            log.warning("rollback failed, dropping the connection: %s", exc)
            self.c.close()

    # ------------------------------------------------------------------------------------ invocations
    def get_invocation(self, invocation_id: str) -> Invocation | None:
        row = self._one(
            "SELECT data FROM invocation WHERE part = %s AND id = %s",
            (self._inv_part(invocation_id), invocation_id),
        )
        return None if row is None else decode_invocation(bytes(row[0]), invocation_id)

    def put_invocation(self, inv: Invocation) -> None:
        part = self._inv_part(inv.id)
        target = inv.target
        self._w(
            part,
            "INSERT INTO invocation (part, id, status, service, service_key, handler, created_at, modified_at,"
            " expires_at, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (part, id) DO UPDATE"
            " SET status = excluded.status, modified_at = excluded.modified_at, expires_at = excluded.expires_at,"
            " data = excluded.data",
            (
                part,
                inv.id,
                inv.status.value,
                target.service,
                target.key,
                target.handler,
                inv.created_at_ms,
                inv.modified_at_ms,
                cleanup_due_ms(inv),
                encode_invocation(inv),
            ),
        )

    def delete_invocation(self, invocation_id: str) -> None:
        part = self._inv_part(invocation_id)
        self._delete_journal(part, invocation_id)
        self._w(part, "DELETE FROM invocation WHERE part = %s AND id = %s", (part, invocation_id))

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        rows = self._all(  # of the led partitions: the others' leaders clean theirs
            "SELECT id FROM invocation WHERE expires_at > 0 AND expires_at <= %s AND part = ANY(%s) LIMIT %s",
            (now_ms, list(self.store.leases.leading), limit),
        )
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------------------------------ journal
    def journal(self, invocation_id: str) -> list[Entry]:
        rows = self._all(
            "SELECT idx, entry FROM journal WHERE part = %s AND invocation_id = %s ORDER BY idx",
            (self._inv_part(invocation_id), invocation_id),
        )
        entries = []
        for expected, (idx, data) in enumerate(rows):
            assert idx == expected, f"{invocation_id}: journal gap at {expected} (found {idx})"
            entries.append(decode_entry(bytes(data)))
        return entries

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        part = self._inv_part(invocation_id)
        self._w(
            part,
            "INSERT INTO journal VALUES (%s, %s, %s, %s, %s)",
            (part, invocation_id, index, encode_entry(entry), appended_at_ms),
        )
        if type(entry) is Notification and entry.signal_idx:
            self._w(
                part,
                "INSERT INTO signal VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (part, invocation_id, entry.signal_idx),
            )

    def delete_journal(self, invocation_id: str) -> None:
        self._delete_journal(self._inv_part(invocation_id), invocation_id)

    def _delete_journal(self, part: int, invocation_id: str) -> None:
        self._w(part, "DELETE FROM journal WHERE part = %s AND invocation_id = %s", (part, invocation_id))
        self._w(part, "DELETE FROM signal WHERE part = %s AND invocation_id = %s", (part, invocation_id))

    def has_signal(self, invocation_id: str, signal_idx: int) -> bool:
        row = self._one(
            "SELECT 1 FROM signal WHERE part = %s AND invocation_id = %s AND idx = %s",
            (self._inv_part(invocation_id), invocation_id, signal_idx),
        )
        return row is not None

    # ------------------------------------------------------------------------------------ state
    def state_all(self, service: str, key: str) -> dict[str, bytes]:
        rows = self._all(
            "SELECT name, value FROM state WHERE part = %s AND service = %s AND service_key = %s",
            (self._key_part(key), service, key),
        )
        return {str(name): bytes(value) for name, value in rows}

    def state_get(self, service: str, key: str, name: str) -> bytes | None:
        row = self._one(
            "SELECT value FROM state WHERE part = %s AND service = %s AND service_key = %s AND name = %s",
            (self._key_part(key), service, key, name),
        )
        return None if row is None else bytes(row[0])

    def state_keys(self, service: str, key: str) -> list[str]:
        rows = self._all(
            'SELECT name FROM state WHERE part = %s AND service = %s AND service_key = %s ORDER BY name COLLATE "C"',
            (self._key_part(key), service, key),
        )
        return [str(row[0]) for row in rows]

    def state_set(self, service: str, key: str, name: str, value: bytes) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "INSERT INTO state VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (part, service, service_key, name) DO UPDATE SET value = excluded.value",
            (part, service, key, name, value),
        )

    def state_clear(self, service: str, key: str, name: str) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "DELETE FROM state WHERE part = %s AND service = %s AND service_key = %s AND name = %s",
            (part, service, key, name),
        )

    def state_clear_all(self, service: str, key: str) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "DELETE FROM state WHERE part = %s AND service = %s AND service_key = %s",
            (part, service, key),
        )

    # ------------------------------------------------------------------------------------ locks and inbox
    def lock_holder(self, service: str, key: str) -> str | None:
        row = self._one(
            "SELECT holder FROM lock WHERE part = %s AND service = %s AND service_key = %s",
            (self._key_part(key), service, key),
        )
        return None if row is None else str(row[0])

    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None:
        part = self._key_part(key)
        if invocation_id is None:
            self._w(
                part,
                "DELETE FROM lock WHERE part = %s AND service = %s AND service_key = %s",
                (part, service, key),
            )
        else:
            self._w(
                part,
                "INSERT INTO lock VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (part, service, service_key) DO UPDATE SET holder = excluded.holder",
                (part, service, key, invocation_id),
            )

    def inbox_push(self, service: str, key: str, invocation_id: str, pushed_at_ms: int) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "INSERT INTO inbox (part, service, service_key, id, created_at) VALUES (%s, %s, %s, %s, %s)",
            (part, service, key, invocation_id, pushed_at_ms),
        )

    def inbox_pop(self, service: str, key: str) -> str | None:
        part = self._key_part(key)
        self.touched.add(part)
        row = self._one(
            "DELETE FROM inbox WHERE part = %s AND seq = (SELECT seq FROM inbox WHERE part = %s AND service = %s"
            " AND service_key = %s ORDER BY seq LIMIT 1) RETURNING id",
            (part, part, service, key),
        )
        return None if row is None else str(row[0])

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "DELETE FROM inbox WHERE part = %s AND service = %s AND service_key = %s AND id = %s",
            (part, service, key, invocation_id),
        )

    # ------------------------------------------------------------------------------------ timers
    def add_timer(self, fire_at_ms: int, kind: TimerKind, invocation_id: str, completion_id: int) -> int:
        part = self._inv_part(invocation_id)
        self.touched.add(part)
        row = self._one(
            "INSERT INTO timer (part, fire_at, kind, invocation_id, completion_id) VALUES (%s, %s, %s, %s, %s)"
            " RETURNING id",
            (part, fire_at_ms, kind.value, invocation_id, completion_id),
        )
        assert row is not None
        return int(row[0])

    def get_timer(self, timer_id: int) -> Timer | None:
        # only a led partition's: a timer of a partition handed over meanwhile fires on its new leader
        row = self._one(
            f"SELECT {_TIMER_COLUMNS} FROM timer WHERE id = %s AND part = ANY(%s)",
            (timer_id, list(self.store.leases.leading)),
        )
        return None if row is None else _timer(row)

    def delete_timer(self, timer_id: int) -> None:
        row = self._one("DELETE FROM timer WHERE id = %s RETURNING part", (timer_id,))
        if row is not None:
            self.touched.add(int(row[0]))

    # ------------------------------------------------------------------------------------ promises
    def get_promise(self, service: str, key: str, name: str) -> Promise | None:
        row = self._one(
            "SELECT data FROM promise WHERE part = %s AND service = %s AND service_key = %s AND name = %s",
            (self._key_part(key), service, key, name),
        )
        return None if row is None else decode_promise(bytes(row[0]))

    def put_promise(self, service: str, key: str, name: str, promise: Promise) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "INSERT INTO promise VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (part, service, service_key, name) DO UPDATE SET data = excluded.data",
            (part, service, key, name, encode_promise(promise)),
        )

    def clear_promises(self, service: str, key: str) -> None:
        part = self._key_part(key)
        self._w(
            part,
            "DELETE FROM promise WHERE part = %s AND service = %s AND service_key = %s",
            (part, service, key),
        )

    # ------------------------------------------------------------------------------------ deployments
    # cluster-wide, in no partition, like the service overrides
    def get_deployment(self, deployment_id: str) -> Deployment | None:
        row = self._one("SELECT data FROM deployment WHERE id = %s", (deployment_id,))
        return None if row is None else decode_deployment(bytes(row[0]))

    def put_deployment(self, deployment: Deployment) -> None:
        self.wrote_global = True
        try:
            self.c.execute(
                b"INSERT INTO deployment VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (deployment.id, encode_deployment(deployment)),
            )
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    def delete_deployment(self, deployment_id: str) -> None:
        self.wrote_global = True
        try:
            self.c.execute(b"DELETE FROM deployment WHERE id = %s", (deployment_id,))
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    # ------------------------------------------------------------------------------------ service overrides
    def get_service_override(self, service: str) -> ServiceOverride | None:
        row = self._one("SELECT data FROM service_override WHERE service = %s", (service,))
        return None if row is None else decode_override(bytes(row[0]))

    def put_service_override(self, service: str, override: ServiceOverride) -> None:
        # cluster-wide, in no partition: the batch is fenced by the partitions it wrote besides (or by all)
        self.wrote_global = True
        try:
            self.c.execute(
                b"INSERT INTO service_override VALUES (%s, %s) ON CONFLICT (service) DO UPDATE SET data = excluded.data",
                (service, encode_override(override)),
            )
        except psycopg.Error as exc:
            raise store_error(exc) from exc
