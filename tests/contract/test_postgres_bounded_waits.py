"""Every wait the PostgreSQL store makes on the server is bounded: a lock another session holds (a leader
paused mid-batch keeps its locks until it runs again) fails the statement with a ``StoreError`` within
``limits.pg_lock_timeout_s`` (the batch loop retries it) instead of blocking its caller, the event loop
among them, for as long as the other session lasts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests import pg
from tests.harness import wait_until
from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.storage import NotLeader, StoreError
from unbroken.storage.postgres import PostgresStore

LOCK_TIMEOUT_S = 0.3
# what the test allows for the bound to take effect on a loaded machine (the wait itself is 0.3 s)
RAISED_WITHIN_S = 10.0


@pytest.fixture
def url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pg.require()
    monkeypatch.setattr(limits, "pg_lock_timeout_s", LOCK_TIMEOUT_S)
    schema = pg.schema_for(request.node.nodeid)
    pg.drop(schema)
    yield pg.url_for(schema)
    pg.drop(schema)


@pytest.fixture
def other(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another session (a paused node's), in a transaction of its own."""
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(pg.URL) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.commit()
        yield conn


def test_a_commit_waiting_on_a_row_lock_another_session_holds_is_a_store_error(
    url: str, other: psycopg.Connection[tuple[object, ...]]
) -> None:
    store = PostgresStore(url, partitions=2, node="a")
    try:
        other.execute("SELECT * FROM partition_epoch FOR UPDATE")  # the fence's rows, held
        txn = store.begin()
        txn.state_set("Obj", "k", "n", b"waits")
        started = time.monotonic()
        with pytest.raises(StoreError, match="LockNotAvailable"):
            txn.commit()
        assert time.monotonic() - started < RAISED_WITHIN_S
        other.rollback()  # the other session ends: the batch applied again commits
        with store.transaction() as txn:
            txn.state_set("Obj", "k", "n", b"kept")
        assert store.begin().state_get("Obj", "k", "n") == b"kept"
    finally:
        store.close()


def test_a_read_waiting_on_a_table_lock_is_a_store_error_and_the_next_read_works(
    url: str, other: psycopg.Connection[tuple[object, ...]]
) -> None:
    store = PostgresStore(url, partitions=2, node="a")
    try:
        other.execute("LOCK TABLE timer, deployment IN ACCESS EXCLUSIVE MODE")
        for read in (lambda: store.timers_after(None, 10), store.deployments):
            started = time.monotonic()
            with pytest.raises(StoreError, match="LockNotAvailable"):
                read()
            assert time.monotonic() - started < RAISED_WITHIN_S
        other.rollback()
        assert store.timers_after(None, 10) == []
        assert store.deployments() == []
    finally:
        store.close()


def test_the_readers_serve_several_threads_at_once(url: str) -> None:
    """The schema follower reads from a thread of its own while the event loop reads timers."""
    store = PostgresStore(url, partitions=2, node="a")
    errors: list[BaseException] = []

    def reads() -> None:
        try:
            for _ in range(50):
                assert store.deployments() == []
                assert store.service_overrides() == {}
                assert store.timers_after(None, 10) == []
        except BaseException as exc:  # noqa: BLE001 (reported by the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=reads) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
    finally:
        store.close()


def test_a_deposed_leaders_batch_breaking_a_constraint_is_refused_not_an_invariant_violation(
    url: str,
) -> None:
    """Paused past its lease, a leader runs a batch before it learns it was deposed: the new leader has
    written rows since, so the batch may break a constraint (the same journal entry). That is the fence's
    refusal (NotLeader), not the engine's invariant broken (which stops the node)."""
    old = PostgresStore(url, partitions=4, node="a")
    inv_id = "inv_1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    try:
        txn = old.begin()  # the deposed leader's batch, from before it learns of it
        new = PostgresStore(url, partitions=4, node="b", steal=True)
        try:
            with new.transaction() as written:
                written.append_journal(inv_id, 0, j.InputCommand([], b"new"), 1)
            txn.append_journal(inv_id, 0, j.InputCommand([], b"old"), 1)
            with pytest.raises(NotLeader):
                txn.has_signal(inv_id, 1)  # a read sends the held writes first: the duplicate key
            assert [e.value for e in new.begin().journal(inv_id)] == [b"new"]
        finally:
            new.close()
    finally:
        old.close()


def test_a_leader_paused_mid_batch_is_ended_so_the_new_leaders_batch_commits_when_applied_again(
    url: str, other: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The paused leader sent a batch's statements but not its COMMIT (pipeline mode, no Sync): the server
    counts its session active, not idle in transaction, so no timeout ends it, and it holds its row locks
    for as long as it stays paused. The new leader's batch waits the bounded time, ends that session (its
    batch could not commit anyway: its lease has expired) and commits when the batch loop applies it again."""
    store = PostgresStore(url, partitions=2, node="a")
    try:
        with store.transaction() as txn:
            txn.state_set("Obj", "k", "n", b"before")
        stalled = other.info.backend_pid
        other.autocommit = True
        pipeline = other.pipeline()
        pipeline.__enter__()
        other.execute("BEGIN")
        other.execute("UPDATE state SET value = 'paused'")
        other.pgconn.send_flush_request()
        other.pgconn.flush()  # sent, and nothing more: no COMMIT, no Sync
        # the paused batch is older than the lease's TTL (as when another node took its partitions)
        wait_until(
            lambda: (_xact_age_s(stalled) or 0.0) > limits.pg_lease_ttl_s,
            10,
            what="the stalled transaction to pass the TTL",
        )
        with pytest.raises(StoreError, match="LockNotAvailable"):
            with store.transaction() as txn:
                txn.state_set("Obj", "k", "n", b"after")
        with store.transaction() as txn:  # applied again
            txn.state_set("Obj", "k", "n", b"after")
        assert store.begin().state_get("Obj", "k", "n") == b"after"
        wait_until(lambda: _xact_age_s(stalled) is None, 10, what="the stalled session to be ended")
        with pytest.raises(psycopg.OperationalError):  # the paused leader finds its session gone
            pipeline.__exit__(None, None, None)
    finally:
        store.close()


def _xact_age_s(pid: int) -> float | None:
    with psycopg.connect(pg.URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - xact_start) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def test_a_lease_renewal_waiting_on_a_row_lock_fails_in_bounded_time_and_the_next_one_renews(
    url: str, other: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The lease thread's statements are bounded like the writer's: a renewal stuck behind another
    session's lock fails (the round is retried, the node's own deadline fences it meanwhile) instead of
    leaving the thread, and so every later renewal, waiting for good."""
    store = PostgresStore(url, partitions=2, node="a")
    try:
        other.execute("SELECT * FROM partition_lease FOR UPDATE")  # the renewal's rows, held
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            store.leases.renew()
        assert time.monotonic() - started < RAISED_WITHIN_S
        other.rollback()
        renewed = store.leases.renewals
        store.leases.renew()
        assert store.leases.renewals == renewed + 1
    finally:
        store.close()
