"""A PostgreSQL batch committed through the batch loop's committer (``runtime/committer.py``): a batch that
goes as one simple query is sent by the event loop and its answer read off the socket
(``storage/postgres_commit.py``), with no writer thread; a failed answer is settled on the writer thread
exactly as ``PostgresTransaction.commit`` settles it."""

from __future__ import annotations

import asyncio
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import pg
from tests.contract.test_store import _inv
from tests.unit.test_committer import CommitOutcome
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.errors import TransactionConflict
from unbroken.core.storage import NotLeader, StoreError
from unbroken.runtime.committer import Batch, ThreadCommitter
from unbroken.runtime.faults import FaultPoints
from unbroken.storage.postgres import PostgresStore
from unbroken.storage.postgres_txn import PostgresTransaction

NOW = 1_700_000_000_000
_RECORD = r.CancelInvocation("inv_x")  # the committer passes a batch's records on, unread


@pytest.fixture
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with pg.fresh_schema(request.node.nodeid) as url:
        yield url


_sql = pg.query


async def _commit(txn: PostgresTransaction, while_sent: Any = None) -> BaseException | None:
    """Commit ``txn`` through a ``ThreadCommitter`` on this loop; ``while_sent()`` (in a thread) runs once the
    batch is with the committer. Returns the failure the processor would be told, or None. The batch names
    two records: more than a committer commits on the loop whatever the store (``INLINE_COMMIT_RECORDS``)."""
    loop = asyncio.get_running_loop()
    committer = ThreadCommitter(loop, FaultPoints())
    sink = CommitOutcome(loop)
    committer.start(sink)
    try:
        committer.commit(Batch(txn, [_RECORD, _RECORD], []))
        if while_sent is not None:
            await asyncio.to_thread(while_sent)
        return await asyncio.wait_for(sink.outcome, 30)
    finally:
        await committer.stop()


def test_a_batch_sent_as_one_query_commits_on_the_loop_without_the_writer_thread(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(url, partitions=2, node="a")
    txn = store.begin()
    txn.state_set("Obj", "clé ✓", "名前", b"v")  # text beyond ASCII: the loop encodes it as UTF-8
    txn.put_invocation(_inv("inv_a"))
    txn.append_journal("inv_a", 0, j.InputCommand([], b"in"), NOW)
    committed_on: list[int] = []
    merge = PostgresTransaction.committed

    def committed(self: PostgresTransaction) -> None:
        committed_on.append(threading.get_ident())
        merge(self)

    monkeypatch.setattr(PostgresTransaction, "committed", committed)

    async def run() -> BaseException | None:
        outcome = await _commit(txn)
        assert committed_on == [threading.get_ident()]  # the loop's own thread
        return outcome

    assert asyncio.run(run()) is None
    assert _sql(url, "SELECT service_key, name, value FROM state") == [("clé ✓", "名前", b"v")]
    assert _sql(url, "SELECT count(*) FROM journal") == [(1,)]
    with store.transaction() as again:  # the caches were merged: the leader answers from memory
        found = again.get_invocation("inv_a")
        assert found is not None and found.id == "inv_a"
        assert again.pipeline is None  # no statement was sent for that read
    store.close()


def test_a_batch_whose_lease_was_stolen_is_refused_and_nothing_of_it_lands(url: str) -> None:
    old = PostgresStore(url, partitions=2, node="a")
    txn = old.begin()
    txn.state_set("Obj", "k", "n", b"zombie")
    new = PostgresStore(url, partitions=2, node="b", steal=True)
    outcome = asyncio.run(_commit(txn))
    assert isinstance(outcome, NotLeader) and "refused by their epoch" in str(outcome)
    assert _sql(url, "SELECT count(*) FROM state") == [(0,)]
    with new.transaction() as txn:
        txn.state_set("Obj", "k", "n", b"after")
    assert _sql(url, "SELECT value FROM state") == [(b"after",)]
    old.close()
    new.close()


def test_a_serialization_failure_at_the_commit_is_a_conflict_and_the_batch_commits_when_applied_again(
    url: str,
) -> None:
    store = PostgresStore(url, partitions=2, node="a", strict=True, conflict_rate=1.0)
    txn = store.begin()
    txn.state_set("Obj", "k", "n", b"lost")
    outcome = asyncio.run(_commit(txn))
    assert isinstance(outcome, TransactionConflict) and "SerializationFailure" in str(outcome)
    assert _sql(url, "SELECT count(*) FROM state") == [(0,)]
    store.conflict_rate = 0.0
    txn = store.begin()
    txn.state_set("Obj", "k", "n", b"kept")
    assert asyncio.run(_commit(txn)) is None
    assert _sql(url, "SELECT value FROM state") == [(b"kept",)]
    store.close()


def test_a_connection_lost_while_the_answer_is_awaited_is_learnt_not_landed(url: str) -> None:
    """The writer's session ends while its batch waits on a row lock (the fence's UPDATE, held up by another
    session): the answer never comes, the outcome is learnt on a new connection, and the next batch commits."""
    store = PostgresStore(url, partitions=2, node="a")
    txn = store.begin()
    txn.state_set("Obj", "k", "n", b"lost")
    writer = store.conn.info.backend_pid
    schema = url.rsplit("schema=", 1)[1]
    locker = psycopg.connect(pg.URL)
    locker.execute(f"SET search_path TO {schema}")
    locker.execute("SELECT * FROM partition_epoch FOR UPDATE")

    def end_the_writer_once_it_waits() -> None:
        deadline = time.monotonic() + 10
        while not _sql(
            url, f"SELECT 1 FROM pg_stat_activity WHERE pid = {writer} AND wait_event_type = 'Lock'"
        ):
            assert time.monotonic() < deadline, "the batch never waited on the lock"
            time.sleep(0.01)
        _sql(url, f"SELECT pg_terminate_backend({writer})")
        locker.rollback()

    try:
        outcome = asyncio.run(_commit(txn, end_the_writer_once_it_waits))
    finally:
        locker.close()
    assert isinstance(outcome, StoreError)
    assert store._unresolved is None  # learnt at once: it did not land
    assert _sql(url, "SELECT count(*) FROM state") == [(0,)]
    with store.transaction() as txn:  # a new connection
        txn.state_set("Obj", "k", "n", b"kept")
    assert _sql(url, "SELECT value FROM state") == [(b"kept",)]
    store.close()


def test_a_batch_that_read_mid_batch_is_committed_by_the_writer_thread(url: str) -> None:
    store = PostgresStore(url, partitions=2, node="a")
    txn = store.begin()
    assert not txn.has_signal("inv_r", 1)  # a read: the transaction is open in pipeline mode
    txn.state_set("Obj", "k", "n", b"v")
    assert txn.commit_nowait() is None  # not one simple query: the committer commits it on its thread
    txn.commit()
    assert _sql(url, "SELECT value FROM state") == [(b"v",)]
    store.close()


def test_an_answer_that_cannot_be_read_is_a_lost_answer_and_a_batch_that_landed_counts_as_committed(
    url: str,
) -> None:
    """A fault while reading the answer (after the COMMIT's own result arrived: the batch landed) is taken
    as a lost connection: the connection is dropped, the outcome learnt by the batch's token, and the batch
    reported committed, never failed (applied again, it would run twice)."""
    store = PostgresStore(url, partitions=2, node="a")
    txn = store.begin()
    txn.state_set("Obj", "k", "n", b"landed")
    pending = txn.commit_nowait()
    assert pending is not None and not pending.failed

    class FailsAtTheEnd:
        def __init__(self, real: Any) -> None:
            self.real = real

        def consume_input(self) -> None:
            self.real.consume_input()

        def is_busy(self) -> int:
            return int(self.real.is_busy())

        def get_result(self) -> Any:
            result = self.real.get_result()
            if result is None:
                raise RuntimeError("a fault after the last result")
            return result

    pending._pg = FailsAtTheEnd(pending._pg)  # type: ignore[assignment]
    deadline = time.monotonic() + 10
    while not pending.poll():
        assert time.monotonic() < deadline, "no answer"
        select.select([pending.fd], [], [], 1.0)
    assert pending.failed and store.conn.closed
    pending.finish()  # committed: it landed
    assert store._unresolved is None
    assert _sql(url, "SELECT value FROM state") == [(b"landed",)]
    with store.transaction() as again:  # a new connection
        again.state_set("Obj", "k", "n", b"next")
    assert _sql(url, "SELECT value FROM state") == [(b"next",)]
    store.close()
