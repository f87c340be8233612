"""The read model (``core.read_model``) over every store (memory, SQLite, PostgreSQL): the same rows written through ``Transaction`` read
back the same through ``Snapshot``, and explain (which reads only through it) answers the same."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from unbroken.admin.explain import explain
from unbroken.core import journal as j
from unbroken.core.ids import InvocationId, awakeable_id
from unbroken.core.invocation import Invocation, Sink, Status
from unbroken.core.read_model import QueryError, ReadModel, Snapshot, StoreCounts
from unbroken.core.schema import HandlerKind, ServiceKind, Target
from unbroken.core.txn import Promise, TimerKind
from unbroken.storage.memory import MemoryStore
from unbroken.storage.memory_reads import MemoryReadModel
from unbroken.storage.postgres import PostgresStore
from unbroken.storage.postgres_reads import PostgresReadModel
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_reads import SqliteReadModel

NOW = 1_700_000_000_000


def _id(n: int) -> str:
    return str(InvocationId.new(n, bytes([n]) * 16, NOW))


HOLDER, QUEUED, SLEEPER, WAITER, DONE = _id(1), _id(2), _id(3), _id(4), _id(5)
AWAKEABLE = awakeable_id(InvocationId.parse(WAITER), 17)


def _inv(inv_id: str, target: Target, kind: ServiceKind, status: Status, **extra: Any) -> Invocation:
    return Invocation(inv_id, target, kind, HandlerKind.EXCLUSIVE, status, NOW, NOW, 7, **extra)


def _populate(store: Any) -> None:
    obj, svc = ServiceKind.VIRTUAL_OBJECT, ServiceKind.SERVICE
    with store.transaction() as txn:
        inp = j.InputCommand([], b'"x"')
        txn.put_invocation(
            _inv(
                HOLDER,
                Target("Counter", "hold", "k"),
                obj,
                Status.SUSPENDED,
                journal_length=2,
                waiting_completions=[1],
                waiting_signals=[1],
                attempts=1,
                running_at_ms=NOW,
            )
        )
        txn.append_journal(HOLDER, 0, inp, NOW)
        txn.append_journal(HOLDER, 1, j.PeekPromiseCommand("decision", 1), NOW)
        txn.set_lock_holder("Counter", "k", HOLDER)
        txn.put_invocation(_inv(QUEUED, Target("Counter", "add", "k"), obj, Status.PENDING))
        txn.inbox_push("Counter", "k", _id(9), NOW)
        txn.inbox_push("Counter", "k", QUEUED, NOW)
        txn.put_invocation(
            _inv(
                SLEEPER,
                Target("Worker", "nap"),
                svc,
                Status.SUSPENDED,
                journal_length=2,
                waiting_completions=[1],
                waiting_signals=[1],
                attempts=1,
            )
        )
        txn.append_journal(SLEEPER, 0, inp, NOW)
        txn.append_journal(SLEEPER, 1, j.SleepCommand(NOW + 60_000, 1, "long nap"), NOW)
        txn.add_timer(NOW + 60_000, TimerKind.SLEEP, SLEEPER, 1)
        txn.put_invocation(
            _inv(
                WAITER,
                Target("Worker", "wait"),
                svc,
                Status.SUSPENDED,
                journal_length=2,
                waiting_signals=[1, 17],
                attempts=1,
            )
        )
        txn.append_journal(WAITER, 0, inp, NOW)
        txn.append_journal(WAITER, 1, j.RunCommand(1, f"hand out {AWAKEABLE}"), NOW)
        txn.put_invocation(
            _inv(
                DONE,
                Target("Worker", "nap"),
                svc,
                Status.COMPLETED,
                journal_length=1,
                result=j.Result(b'"ok"'),
                completed_at_ms=NOW,
            )
        )
        txn.append_journal(DONE, 0, inp, NOW)
        txn.state_set("Counter", "k", "total", b"41")
        txn.put_promise("Counter", "k", "decision", Promise(j.Result(b'"yes"'), (Sink(HOLDER, 1),)))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def reads(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModel]:
    if request.param == "memory":
        store = MemoryStore()
        _populate(store)
        yield MemoryReadModel(store)
        return
    if request.param == "postgres":
        yield from _postgres_reads(tmp_path)
        return
    sqlite = SqliteStore(str(tmp_path / "data"), fsync=False)
    _populate(sqlite)
    model = SqliteReadModel(sqlite.path)
    yield model
    model.close()
    sqlite.close()


def _postgres_reads(tmp_path: Path) -> Iterator[ReadModel]:
    """The rows written by a store that then closes (its leases let go); read by a read model opened from
    the URL alone, as ``unbroken replay-check --store`` does."""
    pg.require()
    schema = pg.schema_for(str(tmp_path))
    url = pg.url_for(schema)
    try:
        store = PostgresStore(url, partitions=8, node="test-node")
        try:
            _populate(store)
        finally:
            store.close()
        model = PostgresReadModel.at(url)
        yield model
        model.close()
    finally:
        pg.drop(schema)


def _read(reads: ReadModel, fn: Any) -> Any:
    return asyncio.run(reads.read(fn))


def test_snapshot_reads(reads: ReadModel) -> None:
    def check(s: Snapshot) -> None:
        inv = s.invocation(SLEEPER)
        assert inv is not None and inv.id == SLEEPER and inv.status is Status.SUSPENDED
        assert s.invocation(_id(99)) is None
        assert [type(e) for e in s.journal(SLEEPER)] == [j.InputCommand, j.SleepCommand]
        assert s.journal(_id(99)) == []
        assert s.state("Counter", "k") == {"total": b"41"} and s.state("Counter", "other") == {}
        assert s.lock_holder("Counter", "k") == HOLDER and s.lock_holder("Counter", "x") is None
        spot = s.inbox_spot("Counter", "k", QUEUED)
        assert spot is not None and spot.ahead == 1
        assert s.inbox_spot("Counter", "k", HOLDER) is None
        assert (
            s.next_timer_ms(SLEEPER, TimerKind.SLEEP) == NOW + 60_000
            and s.next_timer_ms(SLEEPER, TimerKind.RETRY) is None
        )
        promise = s.promise("Counter", "k", "decision")
        assert promise is not None and promise.result == j.Result(b'"yes"')
        found = s.journal_entry_containing(WAITER, AWAKEABLE.encode())
        assert found is not None and found[0] == 1 and isinstance(found[1], j.RunCommand)
        assert s.journal_entry_containing(WAITER, b"nowhere") is None

    _read(reads, check)


def test_counts_for_metrics(reads: ReadModel) -> None:
    """What GET /metrics reads from the store: every invocation by target and status, the inbox, timers."""
    counts = _read(reads, lambda s: s.counts())
    assert counts == StoreCounts(
        {
            ("Counter", "hold", "suspended"): 1,
            ("Counter", "add", "pending"): 1,
            ("Worker", "nap", "suspended"): 1,
            ("Worker", "wait", "suspended"): 1,
            ("Worker", "nap", "completed"): 1,
        },
        inboxed=2,
        timers=1,
    )


def test_in_flight_ids_page_through_the_invocations_not_completed(reads: ReadModel) -> None:
    everything = _read(reads, lambda s: s.in_flight_ids(None, 100))
    assert sorted(everything) == sorted([HOLDER, QUEUED, SLEEPER, WAITER])  # not DONE
    paged: list[str] = []
    after = None
    for _ in range(10):
        page = _read(reads, lambda s, after=after: s.in_flight_ids(after, 3))
        assert len(page) <= 3
        paged += page
        if len(page) < 3:
            break
        after = page[-1]
    assert paged == everything  # the same order, each once, page after page
    assert _read(reads, lambda s: s.in_flight_ids(everything[-1], 3)) == []


def test_explain_reads_through_the_model(reads: ReadModel) -> None:
    queued = _read(reads, lambda s: explain(s, QUEUED))
    assert queued["status"] == "pending"
    reason = queued["reasons"][0]
    assert (reason["kind"], reason["lock_holder"], reason["ahead_in_inbox"]) == ("queued", HOLDER, 1)
    assert [hop["invocation_id"] for hop in queued["chain"]] == [HOLDER]
    promise = queued["chain"][0]["reasons"][0]
    assert (promise["kind"], promise["promise"], promise["promise_completed"]) == (
        "promise",
        "decision",
        True,
    )
    sleeper = _read(reads, lambda s: explain(s, SLEEPER))
    assert sleeper["reasons"][0]["kind"] == "sleep" and sleeper["reasons"][0]["name"] == "long nap"
    waiter = _read(reads, lambda s: explain(s, WAITER))
    assert waiter["reasons"][0]["kind"] == "awakeable" and waiter["reasons"][0]["entry_index"] == 1
    assert _read(reads, lambda s: explain(s, _id(99))) is None


def test_memory_model_has_no_sql() -> None:
    with pytest.raises(QueryError, match="SQLite store"):
        asyncio.run(MemoryReadModel(MemoryStore()).query("SELECT 1", None, _NoCatalog()))


class _NoCatalog:
    def services_json(self) -> str:
        return "[]"

    def deployments_json(self) -> str:
        return "[]"
