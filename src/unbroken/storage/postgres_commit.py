"""A batch's COMMIT sent without waiting: the batch loop reads its answer off the socket as it arrives.

A batch that goes to PostgreSQL as one simple query (``PostgresTransaction._commit_text``: BEGIN, its writes,
the fence, COMMIT) was sent by a writer thread that then slept in libpq until the answer came: two thread
hand-offs a batch, and the GIL passed back and forth between the loop and that thread. With several nodes on
one machine each node commits many small batches, and those hand-offs were ~12-14% of a node's GIL samples.
Here the loop sends the query with libpq's non-blocking calls and watches the socket (``loop.add_reader``):
no thread, no wait (``runtime/committer.py``).

Only the happy path stays on the loop. An answer that is an error, or a connection that failed, is settled
by ``PostgresTransaction.settle_failure`` on the writer thread: it rolls back, and may wait seconds to learn
whether a COMMIT whose answer was lost had landed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg import pq

if TYPE_CHECKING:
    from unbroken.storage.postgres_txn import PostgresTransaction


WRITER_ENCODING = "utf-8"  # the writer connection's client_encoding (``PostgresStore._writer`` sets it)


class SocketCommit:
    """One batch's simple query, sent (or being sent); ``poll`` reads its answer as it arrives."""

    __slots__ = ("epochs", "error", "fd", "parts", "token", "txn", "_pg")

    def __init__(
        self, txn: PostgresTransaction, sql: str, token: int, parts: list[int], epochs: list[int]
    ) -> None:
        self.txn = txn
        self.token = token
        self.parts = parts
        self.epochs = epochs
        self.error: psycopg.Error | None = None  # the answer's first error, or the connection's failure
        self._pg = txn.c.pgconn
        self.fd = -1
        try:
            self.fd = self._pg.socket
            self._pg.send_query(sql.encode(WRITER_ENCODING))
        except psycopg.Error as exc:  # the connection is gone: nothing was sent, or its end is unknown
            self.error = exc
        except UnicodeEncodeError as exc:  # a value the connection's encoding cannot carry: nothing sent
            self.error = psycopg.DataError(f"cannot encode the batch for PostgreSQL: {exc}")

    @property
    def failed(self) -> bool:
        return self.error is not None

    def flush(self) -> bool:
        """Write what libpq still holds of the query; True once all of it is sent (or the write failed)."""
        if self.error is not None:
            return True
        try:
            return self._pg.flush() == 0
        except psycopg.Error as exc:
            self.error = exc
            return True

    def poll(self) -> bool:
        """Read what arrived; True once the answer is complete (every statement's result and the end of the
        query), or the connection failed. The connection is then idle again, whatever the answer was."""
        if self.error is not None:
            return True
        pg = self._pg
        try:
            pg.consume_input()
            while not pg.is_busy():
                result = pg.get_result()
                if result is None:
                    return True
                if result.status == pq.ExecStatus.FATAL_ERROR and self.error is None:
                    self.error = psycopg.errors.error_from_result(result, encoding=WRITER_ENCODING)
        except psycopg.Error as exc:  # the connection failed (libpq has closed its socket)
            self.error = exc
            return True
        except Exception as exc:  # noqa: BLE001 - a bug reading the answer: its end is unknown, as if lost
            self.txn.c.close()  # the server rolls back what had not committed; the outcome is learnt
            self.error = psycopg.OperationalError(f"reading the COMMIT's answer failed: {exc!r}")
            return True
        return False

    def finish(self) -> None:
        """Once ``poll`` said the answer is complete: returns when the batch committed, raises as
        ``PostgresTransaction.commit`` would otherwise. After a failure it may wait on the server."""
        if self.error is None:
            self.txn.committed()
            return
        self.txn.settle_failure(self.error, self.token, self.parts, self.epochs)
