"""The PostgreSQL store: the same tables as SQLite's, each keyed by partition first, on psycopg 3.

One writer connection applies a whole batch inside one transaction. The batch's writes are held in memory
(``postgres_batch.py``) and sent at its COMMIT, on the writer thread, as one multi-row statement per table
and kind, followed by the fence and the COMMIT: one round trip for the whole write side. A batch that sends
nothing before (the common case: the rows it reads are cached) goes as one simple query, BEGIN to COMMIT,
its values as literals; one that must read mid-batch opens its transaction in pipeline mode at its first
read, and its writes go as statements over arrays. Reads go to the server only for what this node does not know: the leader keeps the committed
invocation rows it read or wrote (``PostgresStore.rows``; while it leads a partition no other node writes
it), and the processor names the rows a batch will read first (``prefetch_invocations``: one round trip).
Every batch is fenced by the epochs of the partitions it wrote (``postgres_lease.py``) in the same
transaction, just before its COMMIT.

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
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from unbroken.core import limits
from unbroken.core.deployments import Deployment, decode_deployment, encode_deployment
from unbroken.core.errors import TransactionConflict
from unbroken.core.invocation import Invocation, Status, cleanup_due_ms
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
    decode_invocation,
    decode_override,
    decode_promise,
    encode_invocation,
    encode_override,
    encode_promise,
)
from unbroken.storage.postgres_batch import (
    CLEAR_PROMISES,
    DELETE_INVOCATION,
    END_STALLED_WRITERS,
    FENCE_OR_FAIL,
    FENCE_TEXT,
    INJECTED_CONFLICT,
    PREFETCH,
    PUT_INVOCATION,
    PUT_PROMISE,
    STILL_LED,
    Kind,
    Writes,
    literal,
)
from unbroken.storage.postgres_inbox import InboxSignals, InboxTransaction
from unbroken.storage.postgres_journal import Journal, JournalCache, JournalRowsTransaction
from unbroken.storage.postgres_keys import Key, KeyCache, KeyRowsTransaction
from unbroken.storage.postgres_lease import Leases
from unbroken.storage.postgres_schema import (
    DEFAULT_PARTITIONS,
    Location,
    Reader,
    StoreVersionError,
    bound_waits,
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
# 40001 and 40P01: the transaction was rolled back for another's sake; applied again, it commits
_CONFLICTS = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def store_error(exc: psycopg.Error) -> Exception:
    """What the batch loop should see for a driver error (see the module's doc)."""
    if isinstance(exc, _CONFLICTS):  # rolled back by the server: apply it again
        return TransactionConflict(f"PostgreSQL: {type(exc).__name__}: {str(exc).strip()}")
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
            conn.execute(b"SET standard_conforming_strings = on")  # the literals of a batch sent as text
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
            if not _usable(self.conn):
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
                if not _usable(self.conn):
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


_TIMER_COLUMNS = "id, fire_at, kind, invocation_id, completion_id"


def _usable(conn: Conn) -> bool:
    """Open, and out of pipeline mode. A pipeline whose exit failed (the server ended the session while a
    COMMIT was in flight: "cannot exit pipeline mode while busy") leaves libpq in pipeline mode on a
    connection that is neither closed nor broken, where every later statement fails ("PQsendQuery not
    allowed in pipeline mode"): reused, it kept a node retrying one unknown COMMIT's outcome for good while
    its leases, renewed on another connection, kept its partitions from everyone else."""
    return not (conn.closed or conn.broken) and conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


def _outcome_unknown(conn: Conn, exc: psycopg.Error) -> bool:
    """Whether a batch whose COMMIT round trip failed with ``exc`` may have landed: its connection went (or
    the server is going away). An error the server reported on a live connection (a bounded wait that ran
    out: 55P03, 57014; a statement that failed) aborted the transaction before its COMMIT: nothing landed."""
    if conn.broken or conn.closed or exc.sqlstate is None:
        return isinstance(exc, psycopg.OperationalError) or conn.broken or conn.closed
    return exc.sqlstate.startswith(("08", "57P"))  # a connection exception; the server shutting down


_UNKNOWN: Any = object()  # not in a row cache


def _timer(row: tuple[Any, ...]) -> Timer:
    timer_id, fire_at, kind, invocation_id, completion_id = row
    return Timer(int(timer_id), int(fire_at), TimerKind(kind), str(invocation_id), int(completion_id))


class PostgresTransaction(KeyRowsTransaction, JournalRowsTransaction, InboxTransaction):
    """Implements :class:`unbroken.core.storage.Transaction` on the writer connection (see the module)."""

    __slots__ = (
        "all_led",
        "c",
        "epochs",
        "journals",
        "led",
        "locks",
        "parts",
        "pipeline",
        "queues",
        "rows",
        "sent",
        "states",
        "store",
        "touched",
        "writes",
        "wrote_global",
        "_open",
    )

    def __init__(self, store: PostgresStore, epochs: dict[int, int]) -> None:
        self.store = store
        self.c = store.conn
        self.parts = store.partitions
        # Opened (with the BEGIN queued) by the first statement that cannot wait for the COMMIT: a batch
        # that only writes never opens it, and goes to the server as one simple query (``commit``).
        self.pipeline: AbstractContextManager[Any] | None = None
        self.epochs = epochs  # the leadership the batch started under: the store's row cache is valid for it
        self.touched: set[int] = set()  # the partitions written: the batch is fenced by their epochs
        self.wrote_global = False  # a cluster-wide row (a deployment, a service override) was written
        self.rows: dict[str, bytes | None] = {}  # invocation rows written by this batch (None: deleted)
        self.locks: dict[Key, str | None] = {}  # lock holders written by this batch (``postgres_keys.py``)
        self.states: dict[Key, dict[str, bytes] | None] = {}  # state maps written by it (None: unknown)
        self.queues: dict[Key, list[str] | None] = {}  # key queues pushed or popped by it (None: unknown)
        self.journals: dict[str, Journal | None] = {}  # journals written by it (``postgres_journal.py``)
        self.writes = Writes()  # held until the batch is sent
        self._open = False  # the pipeline
        self.led = store.leases.leading  # as the batch starts: the fence has the last word
        self.all_led = len(self.led) == self.parts
        self.sent: set[int] = set()  # partitions this batch sent records to: NOTIFY after the commit

    # ------------------------------------------------------------------------------------ plumbing
    def _w(self, part: int, kind: Kind, row: tuple[Any, ...]) -> None:
        """Hold a write of partition ``part`` until the batch is sent (``postgres_batch.py``)."""
        self.touched.add(part)
        self.writes.add(kind, row)

    def _now(
        self, query: str | bytes, params: tuple[Any, ...] = (), *, after_writes: bool = True
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        """Run a statement whose answer is needed now (or that is not held), after the writes held (unless
        the caller knows none of them is of the rows it reads)."""
        try:
            self.enter()
            if after_writes and self.writes.held:
                self.writes.send(self.c)
            return self.c.execute(query, params, binary=True)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def enter(self) -> None:
        """Open the transaction in pipeline mode, if not yet: a statement is about to be sent mid-batch."""
        if self.pipeline is None:
            pipeline = self.c.pipeline()
            pipeline.__enter__()
            self.pipeline = pipeline
            self._open = True
            self.c.execute(self.store._begin_sql)  # queued: it goes with the first statement that waits

    def _error(self, exc: psycopg.Error) -> Exception:
        """``store_error(exc)``, except for a constraint the batch broke while this node may lead its partitions
        no more: not the code's fault but a deposed leader's (paused past its lease, it ran a batch on rows
        the new leader has written since). That batch is refused as the fence would refuse it (rolled back)."""
        if isinstance(exc, psycopg.errors.LockNotAvailable):  # ``pg_lock_timeout_s`` ran out: retried
            self.rollback()
            self.store.end_stalled_writers()
            return store_error(exc)
        if not isinstance(exc, psycopg.IntegrityError):
            return store_error(exc)
        self.rollback()
        try:
            parts, epochs = self.store.leases.fence_args(self.touched)
            granted = self._granted(parts, epochs)
        except (NotLeader, StoreError) as deposed:  # NotLeader: not renewed in time; StoreError: retried
            return deposed
        if len(granted) < len(parts):
            return self.store.leases.refused(parts, granted)
        return exc

    def _one(
        self, query: str, params: tuple[Any, ...], *, after_writes: bool = True
    ) -> tuple[Any, ...] | None:
        try:
            return self._now(query, params, after_writes=after_writes).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _all(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._now(query, params).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _cache(self) -> KeyCache:
        return self.store.keys

    def _journal_cache(self) -> JournalCache:
        return self.store.journals

    def _inv_part(self, invocation_id: str) -> int:
        # memoized: an invocation's id is parsed (base62, in Python) for each of its ~10 writes and reads
        memo = self.store.id_parts
        part = memo.get(invocation_id)
        if part is None:
            if len(memo) >= limits.pg_id_partitions_max:
                memo.clear()
            part = memo[invocation_id] = invocation_partition(invocation_id, self.parts)
        return part

    def _key_part(self, key: str) -> int:
        return key_partition(key, self.parts)

    def commit(self) -> None:
        # it wrote nothing (a node may lead none): nothing to fence; a batch that sent records is fenced (by
        # every led partition, if it wrote none): a deposed leader's message never lands
        if not (self.touched or self.wrote_global or self.sent):
            if self.pipeline is None:
                return  # nothing of it was sent: nothing to commit
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
        if any(self.epochs.get(part) != epoch for part, epoch in zip(parts, epochs, strict=True)):
            self.rollback()  # it read cached rows of a leadership that has changed since: apply it again
            raise TransactionConflict(f"the leadership of partitions {parts} changed during the batch")
        token = int.from_bytes(os.urandom(8), "big") >> 1  # a positive bigint naming this batch
        try:
            self._send_commit(token, parts, epochs)
            if self.sent and not self.store.strict:  # strict: no NOTIFY, the receivers' polls find them
                self.store.inbox.sent(self.sent)
        except psycopg.errors.DivisionByZero:  # the fence's: an epoch changed
            self.rollback()
            raise self.store.leases.refused(parts, self._granted(parts, epochs)) from None
        except _CONFLICTS as exc:  # the server rolled it back: nothing of it landed
            self.rollback()
            raise store_error(exc) from exc
        except psycopg.Error as exc:
            self._close_pipeline()
            if not _outcome_unknown(self.c, exc):
                self._rollback_quietly()
                raise self._error(exc) from exc
            # The connection went during the COMMIT: it may have landed. Learn which before answering.
            landed = self.store.outcome(token, parts, limits.pg_commit_resolve_timeout_s)
            if landed:
                log.warning("a COMMIT whose answer was lost had landed: the batch is committed")
                if self.sent and not self.store.strict:
                    self.store.inbox.sent(self.sent)
                self._merge_caches()
                return
            if landed is None:
                self.store._unresolved = (token, parts)  # learnt before the next batch (``begin``)
            raise store_error(exc) from exc
        self._merge_caches()

    def _merge_caches(self) -> None:
        """The batch committed: what it wrote is what the rows hold now."""
        self.store.rows.update(self.rows)
        self.store.keys.merge(self.locks, self.states, self.queues)
        self.store.journals.merge(self.journals)

    def _send_commit(self, token: int, parts: list[int], epochs: list[int]) -> None:
        """One round trip: the writes held, the fence (which fails the transaction unless it updated every
        partition's row, so the COMMIT after it rolls back) and the COMMIT. A batch that opened no pipeline
        (it sent nothing before) and holds at most ``pg_text_batch_rows_max`` rows goes as one simple query,
        BEGIN first, its values as literals: one message the server parses once, where the same statements
        in pipeline mode cost a W2 batch of one record ~4x the client CPU and ~2x the server's
        (``bench/pg_commit.py``)."""
        inject = self.store.conflict_rate and self.store._dice.random() < self.store.conflict_rate
        if self.pipeline is None and self.writes.held > limits.pg_text_batch_rows_max:
            self.enter()  # a large batch: its writes go as statements over arrays
        if self.pipeline is None:
            fence = FENCE_TEXT.format(*map(literal, (token, parts, epochs, len(parts))))
            statements = [self.store._begin_sql.decode(), *self.writes.render(), fence]
            if inject:
                statements.append(INJECTED_CONFLICT.decode())
            self.c.execute(";\n".join([*statements, "COMMIT"]))
            return
        if self.writes.held:
            self.writes.send(self.c)
        self.c.execute(FENCE_OR_FAIL, (token, parts, epochs, len(parts)))
        if inject:
            self.c.execute(INJECTED_CONFLICT)
        self.c.execute(b"COMMIT")
        self._open = False
        self.pipeline.__exit__(None, None, None)

    def _granted(self, parts: list[int], epochs: list[int]) -> set[int]:
        """Which of ``parts`` are still led with ``epochs`` (after a fence refused the batch)."""
        try:
            rows = self.c.execute(STILL_LED, (parts, epochs)).fetchall()
        except psycopg.Error as exc:
            raise store_error(exc) from exc
        return {int(row[0]) for row in rows}

    def rollback(self) -> None:
        if self.pipeline is None and self.c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return  # nothing of it was sent
        self._close_pipeline()
        self._rollback_quietly()

    def _close_pipeline(self) -> None:
        if not self._open or self.pipeline is None:
            return
        self._open = False
        try:
            self.pipeline.__exit__(None, None, None)
        except psycopg.Error:  # the error that made us roll back, surfacing again: the rollback follows
            pass

    def _rollback_quietly(self) -> None:
        if not _usable(self.c):
            self.c.close()  # the server rolls back a transaction whose connection is gone
            return
        try:
            self.c.execute(b"ROLLBACK")
        except psycopg.Error as exc:
            log.warning("rollback failed, dropping the connection: %s", exc)
            self.c.close()

    # ------------------------------------------------------------------------------------ invocations
    def prefetch_invocations(self, invocation_ids: list[str], new_ids: Sequence[str] = ()) -> None:
        for invocation_id in new_ids:  # absent: its first write makes it (``records.Invoke.new_id``)
            self.rows.setdefault(invocation_id, None)
        cached = self.store.rows
        missing = list(dict.fromkeys(i for i in invocation_ids if i not in cached and i not in self.rows))
        if not missing:
            return
        parts = [self._inv_part(invocation_id) for invocation_id in missing]
        try:
            if self.pipeline is None and not self.store.strict:
                # Before the transaction (the connection is in autocommit): the rows of a partition led
                # here are written by no other node, so this reads what a read inside it would, and the
                # batch may still go as one simple query. A row it uses is fenced as any (``get_invocation``).
                found = self.c.execute(PREFETCH, (parts, missing), binary=True).fetchall()
            else:
                found = self._now(PREFETCH, (parts, missing), after_writes=False).fetchall()
        except psycopg.Error as exc:
            raise store_error(exc) from exc
        rows: dict[str, bytes | None] = dict.fromkeys(missing)  # those not found do not exist
        rows.update((str(invocation_id), bytes(data)) for invocation_id, data in found)
        led = self.epochs
        cached.update((i, data) for (i, data), part in zip(rows.items(), parts, strict=True) if part in led)

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        data: bytes | None = self.rows.get(invocation_id, _UNKNOWN)
        if data is _UNKNOWN:
            part = self._inv_part(invocation_id)
            if part in self.epochs:
                # Fenced by it too, read only: a leader deposed without knowing it yet must not commit a
                # decision taken on a row the new leader writes (a resolve ignored as never allocated: the
                # simulator's --leases seed 1342 lost it).
                self.touched.add(part)
            data = self.store.rows.get(invocation_id, _UNKNOWN)
            if data is _UNKNOWN:  # not written by this batch: the committed row
                row = self._one(
                    "SELECT data FROM invocation WHERE part = %s AND id = %s",
                    (part, invocation_id),
                    after_writes=False,
                )
                data = None if row is None else bytes(row[0])
                if part in self.epochs:  # only a partition led here is written by no one else
                    self.store.rows[invocation_id] = data
        return None if data is None else decode_invocation(data, invocation_id)

    def put_invocation(self, inv: Invocation) -> None:
        part = self._inv_part(inv.id)
        target = inv.target
        data = self.rows[inv.id] = encode_invocation(inv)
        self._w(
            part,
            PUT_INVOCATION,
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
                data,
            ),
        )
        if inv.status is Status.COMPLETED:
            self.forget_journal(inv.id)

    def delete_invocation(self, invocation_id: str) -> None:
        part = self._inv_part(invocation_id)
        self.rows[invocation_id] = None
        self._delete_journal(part, invocation_id)
        self._w(part, DELETE_INVOCATION, (part, invocation_id))

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        rows = self._all(  # of the led partitions: the others' leaders clean theirs
            "SELECT id FROM invocation WHERE expires_at > 0 AND expires_at <= %s AND part = ANY(%s) LIMIT %s",
            (now_ms, list(self.store.leases.leading), limit),
        )
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------------------------------ journal
    # (``postgres_journal.JournalRowsTransaction``)
    def has_signal(self, invocation_id: str, signal_idx: int) -> bool:
        row = self._one(
            "SELECT 1 FROM signal WHERE part = %s AND invocation_id = %s AND idx = %s",
            (self._inv_part(invocation_id), invocation_id, signal_idx),
        )
        return row is not None

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
        self._w(part, PUT_PROMISE, (part, service, key, name, encode_promise(promise)))

    def clear_promises(self, service: str, key: str) -> None:
        part = self._key_part(key)
        self._w(part, CLEAR_PROMISES, (part, service, key))

    # ------------------------------------------------------------------------------------ deployments
    # cluster-wide, in no partition, like the service overrides
    def get_deployment(self, deployment_id: str) -> Deployment | None:
        row = self._one("SELECT data FROM deployment WHERE id = %s", (deployment_id,))
        return None if row is None else decode_deployment(bytes(row[0]))

    def put_deployment(self, deployment: Deployment) -> None:
        self.wrote_global = True
        self._now(
            b"INSERT INTO deployment VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (deployment.id, encode_deployment(deployment)),
        )

    def delete_deployment(self, deployment_id: str) -> None:
        self.wrote_global = True
        self._now(b"DELETE FROM deployment WHERE id = %s", (deployment_id,))

    # ------------------------------------------------------------------------------------ service overrides
    def get_service_override(self, service: str) -> ServiceOverride | None:
        row = self._one("SELECT data FROM service_override WHERE service = %s", (service,))
        return None if row is None else decode_override(bytes(row[0]))

    def put_service_override(self, service: str, override: ServiceOverride) -> None:
        # cluster-wide, in no partition: the batch is fenced by the partitions it wrote besides (or by all)
        self.wrote_global = True
        self._now(
            b"INSERT INTO service_override VALUES (%s, %s) ON CONFLICT (service) DO UPDATE SET data = excluded.data",
            (service, encode_override(override)),
        )
