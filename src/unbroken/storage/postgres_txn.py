"""A batch on PostgreSQL: ``PostgresTransaction``, the ``core.storage.Transaction`` of ``PostgresStore``.

Its reads answer from the leader's caches where they can (the invocation rows: ``PostgresStore.rows``; the
keys' locks, state and queues: ``postgres_keys.py``; journals: ``postgres_journal.py``; an id the ingress
minted from fresh bytes is known absent), else from the writer connection, after the batch's held writes.
Its writes are held (``postgres_batch.py``) and sent at the COMMIT, with the fence, in one round trip: as one
simple query when nothing was sent before, else in pipeline mode. What it wrote reaches the caches only once
its COMMIT succeeded; a COMMIT whose answer was lost is resolved before the next batch (``PostgresStore``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from unbroken.core import limits
from unbroken.core.deployments import Deployment, decode_deployment, encode_deployment
from unbroken.core.errors import TransactionConflict
from unbroken.core.invocation import Invocation, Status, cleanup_due_ms
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import (
    NotLeader,
    Promise,
    StoreError,
    Timer,
    TimerKind,
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
from unbroken.storage.postgres_commit import SocketCommit
from unbroken.storage.postgres_inbox import InboxTransaction
from unbroken.storage.postgres_journal import Journal, JournalCache, JournalRowsTransaction
from unbroken.storage.postgres_keys import Key, KeyCache, KeyRowsTransaction
from unbroken.storage.postgres_schema import (
    invocation_partition,
    key_partition,
)

if TYPE_CHECKING:
    from unbroken.storage.postgres import PostgresStore

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


TIMER_COLUMNS = "id, fire_at, kind, invocation_id, completion_id"


def usable(conn: Conn) -> bool:
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


def timer_row(row: tuple[Any, ...]) -> Timer:
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
        fenced = self._fence()
        if fenced is None:
            self._commit_unfenced()
            return
        token, parts, epochs = fenced
        try:
            self._send_commit(token, parts, epochs)
        except psycopg.Error as exc:
            self.settle_failure(exc, token, parts, epochs)
            return
        self.committed()

    def commit_nowait(self) -> SocketCommit | None:
        """Send the batch with its COMMIT and return without waiting for the answer, which the batch loop
        reads off the socket as it arrives (``runtime/committer.py``): when it goes as one simple query (it
        sent nothing before and holds at most ``pg_text_batch_rows_max`` rows). None: ``commit`` it (waits).
        Raises as ``commit`` does when the batch cannot be fenced (nothing of it was sent then)."""
        if not self._one_query():
            return None
        fenced = self._fence()
        if fenced is None:
            return None
        token, parts, epochs = fenced
        return SocketCommit(self, self._commit_text(token, parts, epochs), token, parts, epochs)

    def _fence(self) -> tuple[int, list[int], list[int]] | None:
        """The token naming the batch and the partitions and epochs its COMMIT is fenced by; None: it wrote
        nothing (a node may lead none), so nothing to fence. A batch that sent records is fenced (by every
        led partition, if it wrote none): a deposed leader's message never lands."""
        if not (self.touched or self.wrote_global or self.sent):
            return None
        try:
            parts, epochs = self.store.leases.fence_args(self.touched)
        except NotLeader:
            self.rollback()
            raise
        if any(self.epochs.get(part) != epoch for part, epoch in zip(parts, epochs, strict=True)):
            self.rollback()  # it read cached rows of a leadership that has changed since: apply it again
            raise TransactionConflict(f"the leadership of partitions {parts} changed during the batch")
        return int.from_bytes(os.urandom(8), "big") >> 1, parts, epochs  # a positive bigint names the batch

    def _commit_unfenced(self) -> None:
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

    def committed(self) -> None:
        """The batch committed: what it wrote is what the rows hold now; the receivers of its records told."""
        if self.sent and not self.store.strict:  # strict: no NOTIFY, the receivers' polls find them
            self.store.inbox.sent(self.sent)
        self.store.rows.update(self.rows)
        self.store.keys.merge(self.locks, self.states, self.queues)
        self.store.journals.merge(self.journals)

    def settle_failure(self, exc: psycopg.Error, token: int, parts: list[int], epochs: list[int]) -> None:
        """The COMMIT round trip failed with ``exc``: raise what the batch loop should see, after the
        rollback; or return, committed, when the connection went during the COMMIT and the batch had landed.
        May wait on the server (the rollback, learning an unknown outcome): not on the event loop."""
        if isinstance(exc, psycopg.errors.DivisionByZero):  # the fence's: an epoch changed
            self.rollback()
            raise self.store.leases.refused(parts, self._granted(parts, epochs)) from None
        if isinstance(exc, _CONFLICTS):  # the server rolled it back: nothing of it landed
            self.rollback()
            raise store_error(exc) from exc
        self._close_pipeline()
        if not _outcome_unknown(self.c, exc):
            self._rollback_quietly()
            raise self._error(exc) from exc
        # The connection went during the COMMIT: it may have landed. Learn which before answering.
        landed = self.store.outcome(token, parts, limits.pg_commit_resolve_timeout_s)
        if landed:
            log.warning("a COMMIT whose answer was lost had landed: the batch is committed")
            self.committed()
            return
        if landed is None:
            self.store._unresolved = (token, parts)  # learnt before the next batch (``begin``)
        raise store_error(exc) from exc

    def _send_commit(self, token: int, parts: list[int], epochs: list[int]) -> None:
        """One round trip: the writes held, the fence (which fails the transaction unless it updated every
        partition's row, so the COMMIT after it rolls back) and the COMMIT. A batch that opened no pipeline
        (it sent nothing before) and holds at most ``pg_text_batch_rows_max`` rows goes as one simple query
        (``_commit_text``): one message the server parses once, where the same statements in pipeline mode
        cost a W2 batch of one record ~4x the client CPU and ~2x the server's (``bench/pg_commit.py``)."""
        if self._one_query():
            self.c.execute(self._commit_text(token, parts, epochs))
            return
        self.enter()  # opened already (it read mid-batch), or a large batch: writes as statements over arrays
        if self.writes.held:
            self.writes.send(self.c)
        self.c.execute(FENCE_OR_FAIL, (token, parts, epochs, len(parts)))
        if self.store.conflict_rate and self.store._dice.random() < self.store.conflict_rate:
            self.c.execute(INJECTED_CONFLICT)
        self.c.execute(b"COMMIT")
        self._open = False
        assert self.pipeline is not None  # ``enter`` opened it
        self.pipeline.__exit__(None, None, None)

    def _one_query(self) -> bool:
        """Whether the batch goes to the server as one simple query: it sent nothing before its COMMIT and
        holds at most ``pg_text_batch_rows_max`` rows."""
        return self.pipeline is None and self.writes.held <= limits.pg_text_batch_rows_max

    def _commit_text(self, token: int, parts: list[int], epochs: list[int]) -> str:
        """The batch as one simple query: BEGIN, its writes with their values as literals, the fence, COMMIT."""
        fence = FENCE_TEXT.format(*map(literal, (token, parts, epochs, len(parts))))
        statements = [self.store._begin_sql.decode(), *self.writes.render(), fence]
        if self.store.conflict_rate and self.store._dice.random() < self.store.conflict_rate:
            statements.append(INJECTED_CONFLICT.decode())
        statements.append("COMMIT")
        return ";\n".join(statements)

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
        if not usable(self.c):
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
            f"SELECT {TIMER_COLUMNS} FROM timer WHERE id = %s AND part = ANY(%s)",
            (timer_id, list(self.store.leases.leading)),
        )
        return None if row is None else timer_row(row)

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
