"""The PostgreSQL store: the same tables as SQLite's, each keyed by partition first, on psycopg 3.

One writer connection applies a whole batch inside one transaction (``postgres_txn.PostgresTransaction``).
The batch's writes are held in memory (``postgres_batch.py``) and sent at its COMMIT, on the writer thread,
as one multi-row statement per table and kind, followed by the fence and the COMMIT: one round trip for the
whole write side. A batch that sends nothing before (the common case: the rows it reads are cached) goes as
one simple query, BEGIN to COMMIT, its values as literals; one that must read mid-batch opens its
transaction in pipeline mode at its first read, and its writes go as statements over arrays. Reads go to the
server only for what this node does not know: the leader keeps the committed invocation rows it read or
wrote (``PostgresStore.rows``; while it leads a partition no other node writes it), its keys' rows
(``postgres_keys.py``) and journals (``postgres_journal.py``), and the processor names the rows a batch
will read first (``prefetch_invocations``: one round trip). Every batch is fenced by the epochs of the
partitions it wrote (``postgres_lease.py``) in the same transaction, just before its COMMIT.

The recovery reads and the timer windows use a second connection (autocommit: committed rows only),
since the engine calls ``timers_after`` on the event loop while the writer thread may be committing; the
schema tables (read by the schema follower from a thread of its own) a third (``postgres_schema.Reader``).
Every wait of these connections and the writer's on the server is bounded (``bound_waits``): past it the
statement fails with a ``StoreError``, as when the server cannot be reached.

Driver errors become ``StoreError`` (the batch loop retries the batch later), except those that are the
code's or the data's fault (a constraint, bad SQL, a value out of range), which stay what they are, and
serialization failures and deadlocks (40001, 40P01), which are a ``TransactionConflict`` (applied again at
once). Strict mode (``strict``) runs batches SERIALIZABLE, as distributed SQL does.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from unbroken.core import limits
from unbroken.core.deployments import Deployment, decode_deployment
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import (
    ClusterView,
    Leadership,
    LeadershipChanged,
    NotLeader,
    StoreError,
    Timer,
    Transaction,
    transaction,
)
from unbroken.storage.codec import (
    decode_override,
)
from unbroken.storage.postgres_batch import (
    END_STALLED_WRITERS,
)
from unbroken.storage.postgres_inbox import InboxSignals
from unbroken.storage.postgres_journal import JournalCache
from unbroken.storage.postgres_keys import KeyCache
from unbroken.storage.postgres_lease import Leases
from unbroken.storage.postgres_schema import (
    DEFAULT_PARTITIONS,
    Location,
    Reader,
    StoreVersionError,
    bound_waits,
    connect,
    parse_url,
    prepare,
)
from unbroken.storage.postgres_txn import (
    TIMER_COLUMNS,
    Conn,
    PostgresTransaction,
    store_error,
    timer_row,
    usable,
)

__all__ = ["PostgresStore", "PostgresTransaction", "StoreVersionError"]

log = logging.getLogger("unbroken.storage")


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
        strict: bool = False,
        conflict_rate: float = 0.0,
        fault_point: Callable[[str], None] = lambda name: None,
    ) -> None:
        """Connect, create or migrate the schema, join the cluster and take this node's share of the
        partitions: all of them when it is alone, none when the others lead them all (they hand some over
        within a second or two). ``claim``: lead exactly those partitions, never others (tests, pinning).
        ``steal``: take the claimed partitions (all, if none are named) even from a live leader, an
        operator's takeover. ``lease_wait_s`` is not waited any more (a node may lead nothing).

        ``strict``: only what distributed SQL offers (see "strict mode" in docs/architecture.md): batches
        run SERIALIZABLE (a serialization failure is a ``TransactionConflict``: the batch is applied again)
        and nothing may rely on LISTEN/NOTIFY. ``conflict_rate``: the fault point ``pg.commit``: that share
        of COMMITs fail with a serialization failure the server raises (SQLSTATE 40001), for tests.
        ``fault_point``: the node's named fault points (``FaultPoints.point``), passed by the leases."""
        del lease_wait_s
        self.location: Location = parse_url(url)
        self.strict = strict
        self._begin_sql = b"BEGIN ISOLATION LEVEL SERIALIZABLE" if strict else b"BEGIN"
        self.conflict_rate = conflict_rate
        self._dice = random.Random()  # the fault point's (not a secret)
        self.node = node or default_node_name()
        self._ttl_s = lease_ttl_s
        self.conn = self._connect_writer()
        try:
            self.partitions = prepare(self.conn, self.location, partitions)
            # bounded after the schema's creation: a migration may rightly take long, or wait on a table
            bound_waits(self.conn)
        except psycopg.OperationalError as exc:  # the connection lost meanwhile: say so, not a traceback
            self.conn.close()
            raise StoreError(f"cannot prepare the schema in {self.location.describe()}: {exc}") from exc
        except BaseException:
            self.conn.close()
            raise
        self._reader = Reader(self.location)  # recovery and timer reads: the event loop's
        self._schema_reader = Reader(self.location)  # the schema tables: the schema follower's thread
        self._unresolved: tuple[int, list[int]] | None = None  # (token, partitions) of an unknown COMMIT
        # Committed invocation rows (their blobs; None: no such row), valid while the leadership is the one
        # they were read or written under (``_rows_epochs``): while it leads, no other node writes them.
        self.rows: dict[str, bytes | None] = {}
        self.keys = KeyCache()  # the same for the keys' locks, state and queues (``postgres_keys.py``)
        self.journals = JournalCache()  # and for journals (``postgres_journal.py``)
        self.id_parts: dict[
            str, int
        ] = {}  # invocation id -> its partition (``PostgresTransaction._inv_part``)
        self._rows_epochs: dict[int, int] = {}
        if steal and claim is None:
            claim = range(self.partitions)
        self.leases = Leases(
            self.location,
            self.node,
            self.partitions,
            ttl_s=lease_ttl_s,
            poll_s=lease_poll_s,
            claim=claim,
            fault_point=fault_point,
        )
        try:
            self.leases.start_up(force=steal)
        except BaseException as exc:
            self.leases.close(release=False)
            self.conn.close()
            if isinstance(exc, psycopg.OperationalError):
                raise StoreError(
                    f"cannot take the partition leases in {self.location.describe()}: {exc}"
                ) from exc
            raise
        self.leases.start()
        self.inbox = InboxSignals(self.location)
        log.info(
            "store %s: %d of its %d partitions led by node %s",
            self.location.describe(),
            len(self.leases.leading),
            self.partitions,
            self.node,
        )

    def _connect_writer(self) -> Conn:
        try:
            return self._writer(bounded=False)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.location.describe()}: {exc}") from exc

    def _writer(self, *, bounded: bool = True) -> Conn:
        """The writer connection. A transaction left idle past the lease's TTL is ended by the server: a
        leader paused (SIGSTOP, a VM freeze) in the middle of a batch holds the fenced rows' locks, and a
        takeover would wait on them for as long as it stays paused.

        No server-side prepared statements: psycopg prepares a statement run often and remembers its name,
        and after an error in pipeline mode (a refused fence, a serialization failure) that memory and the
        server's disagreed ("prepared statement _pg3_5 does not exist" on every later batch). A batch sends
        few statements now (one per table written), so parsing them each time costs little.

        ``bounded``: its waits on the server too (``bound_waits``); not while it creates the schema."""
        conn = connect(self.location)
        try:
            conn.prepare_threshold = None
            timeout_ms = int(self._ttl_s * 1000)
            conn.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}".encode())
            # the literals of a batch sent as text; the text of a batch sent by the loop, encoded as UTF-8
            conn.execute(b"SET standard_conforming_strings = on; SET client_encoding = 'UTF8'")
            if bounded:
                bound_waits(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    # ------------------------------------------------------------------------------------ transactions
    def begin(self) -> PostgresTransaction:
        if self._unresolved is not None:
            self._resolve_unknown_commit()
        epochs = self.leases.snapshot()
        if (
            epochs != self._rows_epochs
            or len(self.rows) > limits.pg_invocation_cache_rows_max
            or self.keys.full()
            or self.journals.full()
        ):
            # a partition lost or taken again (another node may have written its rows meanwhile), or full
            self.rows.clear()
            self.keys.clear()
            self.journals.clear()
            self._rows_epochs = epochs
        try:
            if not usable(self.conn):
                self.conn.close()
                self.conn = self._writer()
        except psycopg.Error as exc:
            raise store_error(exc) from exc
        return PostgresTransaction(self, epochs)

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
                if not usable(self.conn):
                    self.conn.close()
                    self.conn = self._writer()
                elif self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self.conn.execute(b"ROLLBACK")  # the failed batch's transaction, still open on it
                rows = self.conn.execute(
                    "SELECT last_batch FROM partition_epoch WHERE part = ANY(%s) FOR UPDATE", (parts,)
                ).fetchall()
                return any(int(row[0]) == token for row in rows)
            except psycopg.Error as exc:
                self.conn.close()  # whatever state it was left in: the next try starts on a new connection
                if time.monotonic() >= deadline:
                    log.warning("cannot learn whether a batch committed: %s", exc)
                    return None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def end_stalled_writers(self) -> None:
        """After a batch waited ``pg_lock_timeout_s`` on a lock: end the sessions of leaders paused in the
        middle of a batch (``END_STALLED_WRITERS``), so that the batch applied again does not wait on them."""
        try:
            ended = self.conn.execute(END_STALLED_WRITERS, (self._ttl_s, self.location.schema)).fetchall()
        except psycopg.Error as exc:  # not allowed to (another role's), or the server went: retried anyway
            log.warning("cannot end the sessions of stalled writers: %s", exc)
            return
        if ended:
            log.warning(
                "ended the sessions of writers stalled in a transaction: %s", [row[0] for row in ended]
            )

    # ------------------------------------------------------------------------------------ recovery reads
    def _read(
        self, query: str, params: tuple[Any, ...] = (), *, reader: Reader | None = None
    ) -> list[tuple[Any, ...]]:
        try:
            return (reader or self._reader).read(query, params)
        except psycopg.Error as exc:  # the caller's store-failure path: a bounded wait ran out, no server
            raise store_error(exc) from exc

    def running_invocation_ids(self, parts: Collection[int] | None = None) -> list[str]:
        # the led partitions' only: those this node recovers (the others' leaders recover theirs); at a
        # takeover only the gained ones' (the others' were recovered when they were gained)
        led = self.leases.leading
        rows = self._read(
            "SELECT id FROM invocation WHERE status = 'running' AND part = ANY(%s) ORDER BY seq",
            (sorted(led if parts is None else led.intersection(parts)),),
        )
        return [str(row[0]) for row in rows]

    def service_overrides(self) -> dict[str, ServiceOverride]:
        rows = self._read("SELECT service, data FROM service_override", reader=self._schema_reader)
        return {str(service): decode_override(bytes(data)) for service, data in rows}

    def deployments(self) -> list[Deployment]:
        rows = self._read("SELECT data FROM deployment", reader=self._schema_reader)
        return [decode_deployment(bytes(data)) for (data,) in rows]

    def timers(self) -> list[Timer]:
        return [timer_row(row) for row in self._read(f"SELECT {TIMER_COLUMNS} FROM timer")]

    def timers_after(self, after: tuple[int, int] | None, limit: int) -> list[Timer]:
        fire_at, timer_id = after if after is not None else (-(2**63), -(2**63))
        # the led partitions' only: the engine's window holds the timers it may fire (the others' leaders
        # hold theirs), so a node's scan does not grow with the whole cluster's timers
        rows = self._read(
            f"SELECT {TIMER_COLUMNS} FROM timer WHERE (fire_at, id) > (%s, %s) AND part = ANY(%s)"
            " ORDER BY fire_at, id LIMIT %s",
            (fire_at, timer_id, list(self.leases.leading), limit),
        )
        return [timer_row(row) for row in rows]

    def leadership(self) -> Leadership:
        return self.leases.leadership()

    def watch_inbox(self, wake: Callable[[], None]) -> bool:
        if not self.strict:  # strict: no LISTEN (distributed SQL has none); the processor's poll suffices
            self.inbox.listen(lambda: self.leases.leading, wake)
        return True  # other nodes may lead partitions (now or later): look in the inbox

    def leads(self, part: int) -> bool:
        return part in self.leases.leading

    def partition_of(self, partition_key: int) -> int:
        return (partition_key * self.partitions) >> 64

    def cluster(self) -> ClusterView:
        return self.leases.view

    def on_leadership(self, changed: LeadershipChanged) -> None:
        self.leases.on_change(changed)

    def advertise(self, ingress_url: str, admin_url: str, backlog: Callable[[], int] | None = None) -> None:
        """Where this node's ingress and admin API listen (the ``node`` table, for the others to forward to),
        and how to read its backlog (shown by ``GET /cluster``)."""
        self.leases.advertise(ingress_url, admin_url, backlog)

    def close(self, *, release: bool = True) -> None:
        self.inbox.close()
        self.leases.close(release=release)
        self._reader.close()
        self._schema_reader.close()
        self.conn.close()
