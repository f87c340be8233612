"""The partition inbox's contract (``core.storage.PartitionInbox``) on every store several nodes share: the
memory store's views (``MemoryStore.peer``) and PostgreSQL (two stores on one schema, each claiming half).

Node A leads partition 0 and node B partition 1 of two. What A's transaction sends to partition 1 is there
exactly when that transaction commits, B takes it (oldest first, once: the take is part of B's transaction),
a rolled-back take leaves it for the next, and the same message sent twice from one partition is one row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.storage import NotLeader, Store
from unbroken.storage.memory import MemoryStore
from unbroken.storage.postgres import PostgresStore

ON_B = 2**63  # a partition key of partition 1 (of 2)
ON_A = 5  # of partition 0


@pytest.fixture(params=["memory", "postgres"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    if request.param == "memory":
        a = MemoryStore(partitions=2, led={0})
        yield a, a.peer({1})
        return
    pg.require()
    schema = pg.schema_for(str(tmp_path))
    pg.drop(schema)
    url = pg.url_for(schema)
    pa = PostgresStore(url, partitions=2, node="a", claim={0})
    pb = PostgresStore(url, partitions=2, node="b", claim={1})
    yield pa, pb
    pa.close()
    pb.close()
    pg.drop(schema)


def _notify(n: int) -> r.Notify:
    return r.Notify(f"inv_{n}", j.Notification("call", n, 0, j.Result(value=b"x" * n)))


def test_what_a_commit_sends_is_taken_once_by_the_leader_oldest_first(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    records: list[r.Record] = [_notify(1), r.CancelInvocation("inv_2"), _notify(3)]
    with a.transaction() as txn:
        assert not txn.all_led and txn.is_led(ON_A) and not txn.is_led(ON_B)
        for record in records:
            txn.send(ON_B, record, ON_A)
    with a.transaction() as txn:
        assert txn.take_inbox(10) == []  # not A's partition
    with b.transaction() as txn:
        assert txn.take_inbox(10) == records
    with b.transaction() as txn:
        assert txn.take_inbox(10) == []


def test_a_rolled_back_send_sends_nothing(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    txn = a.begin()
    txn.send(ON_B, _notify(1), ON_A)
    txn.rollback()
    with b.transaction() as txn:
        assert txn.take_inbox(10) == []


def test_a_rolled_back_take_leaves_the_records_for_the_next(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    with a.transaction() as txn:
        txn.send(ON_B, _notify(1), ON_A)
        txn.send(ON_B, _notify(2), ON_A)
    txn = b.begin()
    assert txn.take_inbox(1) == [_notify(1)]  # the limit: the oldest first
    txn.rollback()
    with b.transaction() as txn:
        assert txn.take_inbox(10) == [_notify(1), _notify(2)]


def test_the_same_message_from_one_partition_is_one_row(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    with a.transaction() as txn:
        txn.send(ON_B, _notify(1), ON_A)
    with a.transaction() as txn:
        txn.send(ON_B, _notify(1), ON_A)  # a batch applied again
        txn.send(ON_B, _notify(1), 2**63 + 1)  # from another partition: another message
    with b.transaction() as txn:
        assert txn.take_inbox(10) == [_notify(1), _notify(1)]


def test_a_commit_that_sent_records_wakes_the_leader(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    woken = threading.Event()
    assert b.watch_inbox(woken.set)
    woken.wait(10)  # PostgreSQL: once it listens (what came before, nobody heard: it looks once)
    woken.clear()
    with a.transaction() as txn:
        txn.send(ON_B, _notify(1), ON_A)
    assert woken.wait(10)


def test_a_store_of_one_node_has_no_inbox(tmp_path: Path) -> None:
    store = MemoryStore()
    assert not store.watch_inbox(lambda: None)
    with store.transaction() as txn:
        assert txn.all_led and txn.is_led(ON_B) and txn.take_inbox(10) == []


def test_a_deposed_leaders_take_is_refused_and_the_next_leader_gets_the_records(tmp_path: Path) -> None:
    pg.require()
    schema = pg.schema_for(str(tmp_path))
    pg.drop(schema)
    url = pg.url_for(schema)
    a = PostgresStore(url, partitions=2, node="a", claim={0})
    b = PostgresStore(url, partitions=2, node="b", claim={1})
    c = PostgresStore(url, partitions=2, node="c", claim=())  # started before B's batch holds its locks
    try:
        with a.transaction() as txn:
            txn.send(ON_B, _notify(1), ON_A)
        txn = b.begin()
        assert txn.take_inbox(10) == [_notify(1)]
        c.leases.claim = frozenset({1})  # C takes partition 1 over while B's batch is in flight
        c.leases.start_up(force=True)
        try:
            with pytest.raises(NotLeader):
                txn.commit()
            with c.transaction() as taken:
                assert taken.take_inbox(10) == [_notify(1)]
        finally:
            c.close()
    finally:
        a.close()
        b.close()
        pg.drop(schema)
