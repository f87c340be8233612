"""What only the PostgreSQL store does: its schema's version, the cluster's partition count, and partition
leadership (leases with epochs; every batch fenced by the epochs of the partitions it wrote)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests import pg
from tests.contract.test_store import _inv
from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.errors import InvariantViolation, TransactionConflict
from unbroken.core.invocation import Status
from unbroken.core.storage import NotLeader, StoreError, TimerKind
from unbroken.storage.postgres import PostgresStore
from unbroken.storage.postgres_schema import (
    SCHEMA_VERSION,
    StoreVersionError,
    invocation_partition,
    key_partition,
)

NOW = 1_700_000_000_000


@pytest.fixture
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with pg.fresh_schema(request.node.nodeid) as url:
        yield url


_sql = pg.query


def test_partitions_are_fixed_when_the_cluster_is_created(url: str) -> None:
    PostgresStore(url, partitions=16, node="a").close()
    store = PostgresStore(url, partitions=64, node="a")  # a later start cannot change them
    assert store.partitions == 16
    assert sorted(store.leases.epochs) == list(range(16))
    store.close()


def test_rows_are_keyed_by_the_partition_of_their_invocation(url: str) -> None:
    store = PostgresStore(url, partitions=8, node="a")
    inv_id = "inv_1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    with store.transaction() as txn:
        txn.append_journal(inv_id, 0, j.InputCommand([], b"in"), NOW)
    store.close()
    assert _sql(url, "SELECT part FROM journal") == [(invocation_partition(inv_id, 8),)]


def test_a_schema_of_a_newer_version_is_refused_with_a_message(url: str) -> None:
    PostgresStore(url, node="a").close()
    _sql(url, f"UPDATE meta SET v = '{SCHEMA_VERSION + 1}' WHERE k = 'schema_version'")
    with pytest.raises(StoreVersionError, match=f"schema {SCHEMA_VERSION + 1}.*run a newer Unbroken"):
        PostgresStore(url, node="a")


def test_a_restarted_node_takes_its_leases_back_with_a_new_epoch(url: str) -> None:
    first = PostgresStore(url, partitions=4, node="a")
    epochs = dict(first.leases.epochs)
    first.close(release=False)  # as if killed: the leases are still unexpired
    again = PostgresStore(url, partitions=4, node="a")
    assert {p: e + 1 for p, e in epochs.items()} == again.leases.epochs
    again.close()


def test_a_stolen_lease_refuses_the_old_leaders_next_commit_and_nothing_of_it_lands(url: str) -> None:
    old = PostgresStore(url, partitions=4, node="a")
    with old.transaction() as txn:
        txn.state_set("Obj", "k", "n", b"before")
    txn = old.begin()  # a batch in flight while another node takes the partitions over
    txn.state_set("Obj", "k", "n", b"zombie")
    txn.append_journal("inv_z", 0, j.InputCommand([], b"in"), NOW)
    new = PostgresStore(url, partitions=4, node="b", steal=True)
    with pytest.raises(NotLeader, match="refused by their epoch"):
        txn.commit()
    assert _sql(url, "SELECT value FROM state") == [(b"before",)]
    assert _sql(url, "SELECT count(*) FROM journal") == [(0,)]
    with pytest.raises(NotLeader, match="not led by node a"):  # it leads those partitions no more
        with old.transaction() as again:
            again.state_set("Obj", "k", "n", b"zombie again")
    with new.transaction() as txn:  # the new leader commits
        txn.state_set("Obj", "k", "n", b"after")
    assert _sql(url, "SELECT value FROM state") == [(b"after",)]
    old.close()
    new.close()


def test_a_leader_that_cannot_renew_in_time_fences_itself(url: str) -> None:
    store = PostgresStore(url, partitions=2, node="a", lease_ttl_s=1.2)  # self-fenced after 0.2 s unrenewed
    store.leases._stop.set()  # renewal stops, as when the database cannot be reached
    assert store.leases._thread is not None
    store.leases._thread.join()
    time.sleep(0.3)
    with pytest.raises(NotLeader, match="could not renew"):
        with store.transaction() as txn:
            txn.state_set("Obj", "k", "n", b"late")
    assert _sql(url, "SELECT count(*) FROM state") == [(0,)]
    store.close()


def test_a_lost_connection_is_a_store_error_and_the_store_reconnects(url: str) -> None:
    store = PostgresStore(url, partitions=2, node="a")
    txn = store.begin()
    txn.state_set("Obj", "k", "n", b"lost")
    pid = store.conn.info.backend_pid
    _sql(url, f"SELECT pg_terminate_backend({pid})")
    with pytest.raises(StoreError):
        txn.commit()
    with store.transaction() as txn:  # the next batch works on a new connection
        txn.state_set("Obj", "k", "n", b"kept")
    assert _sql(url, "SELECT value FROM state") == [(b"kept",)]
    store.close()


def test_a_connection_lost_while_the_schema_is_prepared_is_a_store_error(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the crash torture on PostgreSQL: a node paused (SIGSTOP) while it prepared the schema at
    start had its transaction ended by the server (idle in transaction past the lease's TTL) and died with
    a psycopg traceback; it must be a ``StoreError`` (``unbroken serve`` exits 1 saying why)."""
    from unbroken.storage import postgres

    real = postgres.prepare

    def lose_the_connection_first(conn: Any, location: Any, partitions: int) -> int:
        with psycopg.connect(pg.URL, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return real(conn, location, partitions)

    monkeypatch.setattr(postgres, "prepare", lose_the_connection_first)
    with pytest.raises(StoreError, match="cannot prepare the schema"):
        PostgresStore(url, partitions=2, node="a")
    monkeypatch.setattr(postgres, "prepare", real)
    PostgresStore(url, partitions=2, node="a").close()  # the next start works


@pytest.mark.parametrize("reads_first", [False, True], ids=["one simple query", "pipeline mode"])
def test_a_commit_whose_connection_dies_is_learnt_not_landed_and_nothing_of_it_remains(
    url: str, monkeypatch: pytest.MonkeyPatch, reads_first: bool
) -> None:
    store = PostgresStore(url, partitions=2, node="a")
    execute = psycopg.Connection.execute

    def lose_the_connection_at_the_commit(
        self: psycopg.Connection[Any], query: Any, *args: Any, **kw: Any
    ) -> Any:
        # the COMMIT, sent alone (a batch in pipeline mode: its writes and fence went before) or at the end of
        # the batch's one simple query
        if self is store.conn and (
            query == b"COMMIT" or (isinstance(query, str) and query.endswith("COMMIT"))
        ):
            _sql(url, f"SELECT pg_terminate_backend({self.info.backend_pid})")
        return execute(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.Connection, "execute", lose_the_connection_at_the_commit)
    txn = store.begin()
    if reads_first:  # a read mid-batch opens its transaction in pipeline mode
        assert txn.state_get("Obj", "k", "n") is None
    txn.state_set("Obj", "k", "n", b"lost")
    with pytest.raises(StoreError):
        txn.commit()
    monkeypatch.undo()
    assert store._unresolved is None  # learnt at once: it did not land
    assert _sql(url, "SELECT count(*) FROM state") == [(0,)]
    with store.transaction() as txn:
        txn.state_set("Obj", "k", "n", b"kept")
    (token,) = _sql(url, "SELECT last_batch FROM partition_epoch WHERE last_batch <> 0")[0]
    parts = [row[0] for row in _sql(url, "SELECT part FROM partition_epoch")]
    assert store.outcome(int(str(token)), parts) is True  # what a lost answer would be resolved to
    assert store.outcome(int(str(token)) + 1, parts) is False
    store.close()


def test_a_writer_connection_left_in_pipeline_mode_is_replaced(url: str) -> None:
    """Found by tests/cluster under load: the server ended a node's writer session while its COMMIT was in
    flight, the pipeline's exit failed ("cannot exit pipeline mode while busy") and left libpq in pipeline
    mode on a connection neither closed nor broken. Every later statement on it failed, so the node tried to
    learn that COMMIT's outcome forever while its leases (renewed on another connection) held its partitions.
    """
    store = PostgresStore(url, partitions=2, node="a")
    with store.transaction() as txn:
        txn.state_set("Obj", "k", "n", b"first")
    (token,) = _sql(url, "SELECT last_batch FROM partition_epoch WHERE last_batch <> 0")[0]
    parts = [row[0] for row in _sql(url, "SELECT part FROM partition_epoch")]
    store.conn.pgconn.enter_pipeline_mode()  # what the failed exit leaves behind
    assert store.outcome(int(str(token)), parts) is True  # learnt on a new connection
    store.conn.pgconn.enter_pipeline_mode()
    with store.transaction() as txn:  # the next batch too
        txn.state_set("Obj", "k", "n", b"second")
    assert _sql(url, "SELECT value FROM state") == [(b"second",)]
    store.close()


def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s}s: {what}")
        time.sleep(0.02)  # polling another thread's view of the database: no event to await


def test_a_second_node_starts_leading_nothing_then_the_two_split_the_partitions(url: str) -> None:
    a = PostgresStore(url, partitions=4, node="a", lease_poll_s=0.1)
    changes: list[tuple[frozenset[int], frozenset[int]]] = []
    a.on_leadership(lambda gained, lost: changes.append((gained, lost)))
    assert a.leases.leading == {0, 1, 2, 3}
    b = PostgresStore(url, partitions=4, node="b", lease_poll_s=0.1)
    try:
        assert b.leases.leading == set()  # a valid member: it serves by forwarding meanwhile
        _wait(lambda: len(a.leases.leading) == 2 and len(b.leases.leading) == 2, "a 2/2 split")
        assert a.leases.leading | b.leases.leading == {0, 1, 2, 3}
        assert changes == [(frozenset(), frozenset({2, 3}))]  # a let go of its extras (and was told)
        with pytest.raises(NotLeader, match="not led by node a"):  # a commits nothing for them any more
            with a.transaction() as txn:
                txn.state_set("Obj", _key_in(3, 4), "n", b"no")
        view = b.cluster()
        assert {n.name for n in view.nodes if n.alive} == {"a", "b"}
        assert view.leader_of(3) is not None and view.leader_of(3).name == "b"  # type: ignore[union-attr]
        started = time.monotonic()
        a.close()  # a clean stop: everything handed over at once
        _wait(lambda: len(b.leases.leading) == 4, "b to lead all four")
        assert time.monotonic() - started < 2
    finally:
        a.close()
        b.close()


def test_a_node_pinned_to_partitions_leads_exactly_those(url: str) -> None:
    a = PostgresStore(url, partitions=4, node="a", claim={1, 2})
    try:
        assert a.leases.leading == {1, 2}
        assert [a.leads(p) for p in range(4)] == [False, True, True, False]
        assert a.partition_of(2**64 - 1) == 3 and a.partition_of(0) == 0
    finally:
        a.close()


def test_a_balancing_node_beside_a_pinned_one_leads_everything_the_pinned_one_does_not(url: str) -> None:
    pinned = PostgresStore(url, partitions=4, node="p", claim={0})
    a = PostgresStore(url, partitions=4, node="a", lease_poll_s=0.1)
    try:
        renewed = a.leases.renewals
        _wait(lambda: a.leases.renewals >= renewed + 2, "a few rounds of a")  # a hands nothing to p
        assert a.leases.leading == {1, 2, 3} and pinned.leases.leading == {0}
    finally:
        a.close()
        pinned.close()


def test_a_timer_of_a_partition_not_led_here_is_not_read_nor_fired(url: str) -> None:
    a = PostgresStore(url, partitions=4, node="a")
    inv_id = _key_in(3, 4)
    with a.transaction() as txn:
        timer_id = txn.add_timer(NOW, TimerKind.SLEEP, inv_id, 1)
    a.close()
    b = PostgresStore(url, partitions=4, node="b", claim={0, 1, 2})
    try:
        with b.transaction() as txn:
            assert txn.get_timer(timer_id) is None  # the leader of partition 3 fires it
        assert b.timers_after(None, 10) == []  # b's timer window: its partitions' timers only
        assert [t.timer_id for t in b.timers()] == [timer_id]  # the tools see every timer
    finally:
        b.close()


def test_a_node_recovers_the_running_invocations_of_the_partitions_it_leads_only(url: str) -> None:
    a = PostgresStore(url, partitions=4, node="a")
    ids = [_key_in(part, 4) for part in range(4)]
    with a.transaction() as txn:
        for inv_id in ids:
            txn.put_invocation(_inv(inv_id, Status.RUNNING))
    assert sorted(a.running_invocation_ids()) == sorted(ids)
    a.close()
    b = PostgresStore(url, partitions=4, node="b", claim={1, 3})
    try:
        assert sorted(b.running_invocation_ids()) == sorted([ids[1], ids[3]])
    finally:
        b.close()


def _key_in(part: int, partitions: int) -> str:
    """An id (hashed as a key) whose rows live in ``part``."""
    return next(f"inv_x{i}" for i in range(10_000) if invocation_partition(f"inv_x{i}", partitions) == part)


def test_strict_mode_runs_batches_serializable_and_a_serialization_failure_is_a_conflict(url: str) -> None:
    store = PostgresStore(url, partitions=2, node="a", strict=True, conflict_rate=1.0)
    txn = store.begin()
    txn.state_set("Obj", "k", "n", b"lost")
    txn.append_journal("inv_s", 0, j.InputCommand([], b"in"), NOW)
    assert not txn.has_signal("inv_s", 1)  # a read inside the transaction
    level = txn.c.execute("SHOW transaction_isolation").fetchone()
    assert level == ("serializable",)
    with pytest.raises(TransactionConflict, match="SerializationFailure"):  # the server's 40001, injected
        txn.commit()
    assert _sql(url, "SELECT count(*) FROM state") == [(0,)]
    assert _sql(url, "SELECT count(*) FROM journal") == [(0,)]
    store.conflict_rate = 0.0
    with store.transaction() as txn:  # the same batch applied again commits
        txn.state_set("Obj", "k", "n", b"kept")
    assert _sql(url, "SELECT value FROM state") == [(b"kept",)]
    store.close()


def test_held_writes_keep_their_order_within_a_table_and_a_read_sees_them(url: str) -> None:
    store = PostgresStore(url, partitions=4, node="a")
    with store.transaction() as txn:
        txn.state_set("Obj", "k", "a", b"1")
        txn.state_set("Obj", "k", "a", b"2")  # the same row twice in one run: the last write counts
        txn.state_set("Obj", "k", "b", b"3")
        txn.state_clear_all("Obj", "k")  # a delete between two runs of inserts stays between them
        txn.state_set("Obj", "k", "c", b"4")
        txn.inbox_push("Obj", "k", "inv_1", NOW)
        txn.inbox_push("Obj", "k", "inv_2", NOW)
        assert txn.state_all("Obj", "k") == {"c": b"4"}  # a read sends what is held first
        txn.inbox_push("Obj", "k", "inv_3", NOW)
        txn.inbox_remove("Obj", "k", "inv_2")
        txn.state_set("Obj", "k", "d", b"5")
    assert _sql(url, "SELECT name, value FROM state ORDER BY name") == [("c", b"4"), ("d", b"5")]
    with store.transaction() as txn:  # pushed in order, each after the others (identity in write order)
        assert [txn.inbox_pop("Obj", "k") for _ in range(3)] == ["inv_1", "inv_3", None]
    store.close()


def test_the_row_cache_holds_led_partitions_only_and_is_emptied_when_the_leadership_changes(url: str) -> None:
    store = PostgresStore(url, partitions=4, node="a")
    ids = [f"inv_cache_{n}" for n in range(8)]
    with store.transaction() as txn:
        txn.prefetch_invocations([*ids, ids[0]])  # a batch may name one invocation twice
        assert all(txn.get_invocation(i) is None for i in ids)
    assert set(store.rows) == set(ids)  # all led: known absent without another read
    lost = invocation_partition(ids[0], 4)
    store.leases.mark_lost([lost], "a test")
    with store.transaction() as txn:  # the leadership changed: nothing cached is trusted
        assert store.rows == {}
        assert txn.get_invocation(ids[0]) is None
        others = [i for i in ids if invocation_partition(i, 4) != lost]
        txn.prefetch_invocations(ids)
    assert ids[0] not in store.rows and set(others) <= set(store.rows)
    store.close()


def test_a_nodes_backlog_reaches_the_cluster_view_with_its_heartbeat(url: str) -> None:
    a = PostgresStore(url, partitions=2, node="a", lease_poll_s=0.1)
    b = PostgresStore(url, partitions=2, node="b", lease_poll_s=0.1)
    queued = [7]
    try:
        a.advertise("http://a:8080", "http://a:9070", lambda: queued[0])

        def backlog_of_a() -> int | None:
            return next((n.backlog for n in b.cluster().nodes if n.name == "a"), None)

        _wait(lambda: backlog_of_a() == 7, "a's backlog of 7 in b's view")
        queued[0] = 0
        _wait(lambda: backlog_of_a() == 0, "a's backlog back to 0 in b's view")
    finally:
        a.close()
        b.close()


def test_values_sent_as_literals_come_back_byte_for_byte(url: str) -> None:
    """A batch that only writes goes as one simple query with its values as literals: quotes, backslashes,
    SQL in a key and every byte value must land exactly, and text with a NUL is refused, not truncated."""
    store = PostgresStore(url, partitions=2, node="a")
    nasty = ["it's", "back\\slash\\", "'); DROP TABLE state; --", "naïve ☃ \U0001f600", "%s {} $1", ""]
    blob = bytes(range(256)) * 3
    with store.transaction() as txn:
        for i, key in enumerate(nasty):
            txn.state_set("Obj", key, f"n{i}'", blob + key.encode())
    with store.transaction() as txn:
        for i, key in enumerate(nasty):
            assert txn.state_get("Obj", key, f"n{i}'") == blob + key.encode()
    txn = store.begin()
    txn.state_set("Obj", "nul\x00key", "n", b"v")
    with pytest.raises(psycopg.DataError, match="NUL"):
        txn.commit()
    txn.rollback()
    assert _sql(url, "SELECT count(*) FROM state") == [(len(nasty),)]
    store.close()


def test_the_key_cache_answers_from_memory_what_the_rows_hold_and_is_emptied_when_the_leadership_changes(
    url: str,
) -> None:
    """A key's lock holder and state, read or committed by the leader, are answered without a round trip;
    a batch's own writes are seen by it and reach the cache only once committed; a change of leadership
    empties it (another node may have written the rows meanwhile)."""
    store = PostgresStore(url, partitions=4, node="a")
    with store.transaction() as txn:
        txn.set_lock_holder("Obj", "k", "inv_a")
        txn.state_set("Obj", "k", "n", b"1")  # the map was not known: written, and unknown to the batch
        assert txn.state_all("Obj", "k") == {"n": b"1"}  # read through the server (the write sent first)
    assert store.keys.locks == {("Obj", "k"): "inv_a"}
    assert store.keys.states == {("Obj", "k"): {"n": b"1"}}
    txn = store.begin()
    txn.state_set("Obj", "k", "m", b"2")
    txn.set_lock_holder("Obj", "k", None)
    assert txn.state_keys("Obj", "k") == ["m", "n"] and txn.lock_holder("Obj", "k") is None
    txn.rollback()  # nothing of it reaches the cache
    assert store.keys.states == {("Obj", "k"): {"n": b"1"}} and store.keys.locks[("Obj", "k")] == "inv_a"
    # what the cache answers is what the rows hold: another writer (a test; never while a node leads) changes
    # them, and the leader does not see it until its leadership changes
    _sql(url, "UPDATE state SET value = '\\x39'::bytea")
    with store.transaction() as txn:
        assert txn.state_get("Obj", "k", "n") == b"1"  # from memory
    store.leases.mark_lost([key_partition("k", 4)], "a test")
    with store.transaction() as txn:
        assert store.keys.states == {} and store.keys.locks == {}
        assert txn.state_all("Obj", "k") == {"n": b"9"}  # read again (not cached: not led any more)
        assert txn.lock_holder("Obj", "k") == "inv_a"
    assert store.keys.states == {} and store.keys.locks == {}
    store.close()


def _queued(url: str) -> list[str]:
    return [str(row[0]) for row in _sql(url, "SELECT id FROM inbox ORDER BY seq")]


def test_a_keys_queue_is_kept_by_its_leader_and_what_it_pops_is_what_the_table_held(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invocations waiting for a key's lock: read once, then pushed and popped in memory with the rows
    written at the commit (a hot key's chain of batches reads nothing); a rolled-back batch leaves the cache
    as it was; a queue longer than its bound is not kept; a change of leadership empties the cache."""
    store = PostgresStore(url, partitions=4, node="a")
    with store.transaction() as txn:
        txn.inbox_push("Obj", "k", "inv_1", 1)
        txn.inbox_push("Obj", "k", "inv_2", 2)
    assert store.keys.queues == {}  # pushed without knowing what waited before: not kept
    with store.transaction() as txn:
        txn.inbox_push("Obj", "k", "inv_3", 3)
        assert txn.inbox_pop("Obj", "k") == "inv_1"  # read from the server, the batch's push sent first
    assert store.keys.queues == {("Obj", "k"): ["inv_2", "inv_3"]} and _queued(url) == ["inv_2", "inv_3"]
    # from here on the leader answers from memory: rows changed behind its back (never while it leads) are
    # not seen, which is how this test knows no round trip was made
    _sql(url, "UPDATE inbox SET id = 'changed' WHERE id = 'inv_3'")
    txn = store.begin()
    txn.inbox_push("Obj", "k", "inv_4", 4)
    assert txn.inbox_pop("Obj", "k") == "inv_2"
    txn.inbox_remove("Obj", "k", "inv_4")
    txn.rollback()  # nothing of it reaches the cache or the table
    assert store.keys.queues == {("Obj", "k"): ["inv_2", "inv_3"]}
    assert _queued(url) == ["inv_2", "changed"]
    _sql(url, "UPDATE inbox SET id = 'inv_3' WHERE id = 'changed'")
    with store.transaction() as txn:
        txn.inbox_push("Obj", "k", "inv_4", 4)
        txn.inbox_push("Obj", "k", "inv_5", 5)
        txn.inbox_remove("Obj", "k", "inv_4")  # cancelled while it waited
        assert [txn.inbox_pop("Obj", "k") for _ in range(3)] == ["inv_2", "inv_3", "inv_5"]
        assert txn.inbox_pop("Obj", "k") is None
    assert store.keys.queues == {("Obj", "k"): []} and _queued(url) == []
    # a queue longer than the bound: each pop reads the server, and the queue is not kept
    monkeypatch.setattr(limits, "pg_key_cache_queue_max", 2)
    with store.transaction() as txn:
        for i in range(4):
            txn.inbox_push("Obj", "k", f"inv_{10 + i}", 10 + i)
    assert store.keys.queues == {}  # its known queue outgrew the bound at the commit
    with store.transaction() as txn:
        assert txn.inbox_pop("Obj", "k") == "inv_10"
    assert store.keys.queues == {} and _queued(url) == ["inv_11", "inv_12", "inv_13"]
    with store.transaction() as txn:
        assert txn.inbox_pop("Obj", "k") == "inv_11"  # three were waiting: still more than the bound
    with store.transaction() as txn:
        assert txn.inbox_pop("Obj", "k") == "inv_12"  # two were waiting: kept from here on
    assert store.keys.queues == {("Obj", "k"): ["inv_13"]} and _queued(url) == ["inv_13"]
    store.leases.mark_lost([key_partition("k", 4)], "a test")
    with store.transaction() as txn:
        assert store.keys.queues == {}
    store.close()


def test_a_journal_the_leader_wrote_or_read_is_replayed_from_memory_until_its_invocation_completes(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt's replay reads the whole journal: from memory when the leader wrote it from its first entry
    or read it whole; appends of a rolled-back batch never reach the cache; a completed invocation's journal
    and one over the bound are not kept; a change of leadership empties the cache."""
    store = PostgresStore(url, partitions=4, node="a")
    inv = _inv("inv_j1", status=Status.PENDING)
    first, second = j.InputCommand([], b"in"), j.Notification("call", 1, 0, j.Result(b"out"))
    with store.transaction() as txn:
        txn.put_invocation(inv)
        txn.append_journal(inv.id, 0, first, NOW)
    # rows changed behind the leader's back (never while it leads) are not seen: no round trip is made
    _sql(url, "DELETE FROM journal")
    txn = store.begin()
    txn.append_journal(inv.id, 1, second, NOW)
    assert txn.journal(inv.id) == [first, second]
    txn.rollback()
    with store.transaction() as txn:
        assert txn.journal(inv.id) == [first]
        with pytest.raises(InvariantViolation, match="appending entry 2 to a journal of 1"):
            txn.append_journal(inv.id, 2, second, NOW)  # the engine's invariant, checked on write
    _sql(url, "DELETE FROM journal")
    with store.transaction() as txn:
        txn.append_journal("inv_j2", 0, first, NOW)  # a new journal: known whole from its first entry
        txn.append_journal("inv_j2", 1, second, NOW)
    assert sorted(store.journals.journals) == [inv.id, "inv_j2"]
    with store.transaction() as txn:
        inv.status = Status.COMPLETED
        txn.put_invocation(inv)  # completed: no attempt replays it, dropped from the cache
    assert list(store.journals.journals) == ["inv_j2"]
    with store.transaction() as txn:
        assert txn.journal(inv.id) == []  # read from the server (emptied above), and kept again
    assert store.journals.size == len(j.encode_entry(first)) + len(j.encode_entry(second))
    monkeypatch.setattr(limits, "pg_journal_cache_journal_bytes_max", 8)
    with store.transaction() as txn:
        txn.append_journal("inv_j3", 0, j.InputCommand([], b"a value longer than the bound"), NOW)
    assert sorted(store.journals.journals) == [inv.id, "inv_j2"]
    _sql(url, "DELETE FROM journal WHERE invocation_id = 'inv_j2'")
    with store.transaction() as txn:
        assert txn.journal("inv_j2") == [first, second]  # from memory
    store.leases.mark_lost([invocation_partition("inv_j2", 4)], "a test")
    with store.transaction() as txn:
        assert store.journals.journals == {} and store.journals.size == 0
        assert txn.journal("inv_j2") == []  # read again: the rows were emptied behind its back above
    store.close()


def test_an_id_minted_from_fresh_bytes_is_known_absent_without_a_read(url: str) -> None:
    """The ingress's new ids (``Invoke.new_id``) exist nowhere: a batch creating them reads nothing for
    them (W2's and W3b's last read before their batches); the other ids named are read as before."""
    store = PostgresStore(url, partitions=4, node="a")
    with store.transaction() as txn:
        txn.put_invocation(_inv("inv_old"))
        txn.put_invocation(_inv("inv_new"))  # a row the hint says cannot exist: how the test sees no read
    store.rows.clear()
    txn = store.begin()
    txn.prefetch_invocations(["inv_old"], ["inv_new"])
    assert txn.get_invocation("inv_new") is None
    old = txn.get_invocation("inv_old")
    assert old is not None and old.id == "inv_old"
    txn.rollback()
    store.close()
