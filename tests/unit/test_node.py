"""A node and its partitions (runtime/node.py, runtime/partition.py), on the memory store with several
partitions: a record goes to the partition whose range of the key space holds its invocation's partition key
(an object's key decides it for all its invocations), an attempt's records are applied by the partition that
owns the invocation even when another partition's batch started it, a call across partitions completes, a
partition that becomes leader recovers only its own running invocations, one that stops answers its
waiting callers 503, a timer fires in the partition of the invocation it wakes, and a partition whose
commit fails rolls back its own batch only.

Before: one engine for everything (runtime/engine.py), no partition key read anywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest

import unbroken as restate
from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.ids import InvocationId, partition_key_for_key
from unbroken.core.schema import RetryPolicy, Target
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.node import Node, partition_of_key
from unbroken.storage.memory import MemoryStore, MemoryTransaction
from unbroken.wiring import Parts, build, local_transport

PARTITIONS = 3
U64 = 1 << 64
DELAY_MS = 20

counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, value: int) -> int:
    total = (await ctx.get("total") or 0) + value
    ctx.set("total", total)
    return total


front = restate.Service("Front")


@front.handler()
async def relay(ctx: restate.Context, key: str) -> int:
    """Calls an object whose key lands in another partition than this invocation."""
    return await ctx.object_call(add, key=key, arg=5)


@front.handler()
async def later(ctx: restate.Context, key: str) -> None:
    """Sends a delayed call to an object whose key lands in another partition than this invocation."""
    ctx.object_send(add, key=key, arg=5, send_delay=timedelta(milliseconds=DELAY_MS))


@front.handler()
async def nap(ctx: restate.Context) -> None:
    await ctx.sleep(timedelta(hours=1))  # the node stops long before


APP = restate.app([counter, front])
SCHEMAS = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)


def _id(partition: int, n: int) -> str:
    """An invocation id whose partition key lies in ``partition``'s range."""
    pk = partition * U64 // PARTITIONS + n
    return str(InvocationId.new(pk, n.to_bytes(10, "big"), 1))


def _key_in(partition: int) -> str:
    return next(
        f"k{n}"
        for n in range(1000)
        if partition_of_key(partition_key_for_key(f"k{n}"), PARTITIONS) == partition
    )


async def _node(store: MemoryStore, partitions: int = PARTITIONS, clock: ManualClock | None = None) -> Node:
    parts = Parts(clock=clock or ManualClock(), partitions=partitions)
    node = build(SCHEMAS, store, local_transport(APP, parts, asyncio.get_running_loop()), parts)
    node.start()
    return node


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = await _node(MemoryStore())
    try:
        yield n
    finally:
        await n.stop()


def _invoke(invocation_id: str, target: Target, arg: Any) -> Any:
    def make(request_id: int) -> r.Invoke:
        return r.Invoke(
            invocation_id, target, orjson.dumps(arg), request_id=request_id, reply=r.ReplyMode.RESULT
        )

    return make


def _records(n: Node) -> list[int]:
    return [p.processor.records for p in n.partitions]


def test_the_key_space_is_cut_into_equal_ranges() -> None:
    assert [partition_of_key(k, 3) for k in (0, U64 // 3 - 1, U64 // 3 + 1, 2 * U64 // 3 + 1, U64 - 1)] == [
        0,
        0,
        1,
        2,
        2,
    ]
    assert {partition_of_key(k, 1) for k in (0, U64 - 1)} == {0}


async def test_a_request_goes_to_the_partition_of_its_invocation(node: Node) -> None:
    for partition in range(PARTITIONS):
        before = _records(node)
        key = _key_in(partition)
        inv = str(InvocationId(partition_key_for_key(key), bytes(16)))
        reply = await asyncio.wait_for(node.request(_invoke(inv, Target("Counter", "add", key), 2)), 10)
        assert isinstance(reply.outcome, a.Output) and reply.outcome.result.value == b"2"
        grew = [after - b for after, b in zip(_records(node), before, strict=True)]
        assert [g > 0 for g in grew] == [p == partition for p in range(PARTITIONS)], grew


async def test_a_call_across_partitions_completes_and_each_invocation_stays_in_its_partition(
    node: Node,
) -> None:
    key = _key_in(2)
    caller = _id(0, 7)
    owner: dict[str, int] = {}
    for p in node.partitions:  # which partition applied each invocation's attempt records
        submit = p.processor.submit

        def spy(record: r.Record, submit: Any = submit, index: int = p.index) -> None:
            if isinstance(record, r.JournalCommand):
                owner.setdefault(record.invocation_id, index)
                assert owner[record.invocation_id] == index, f"{record.invocation_id} in two partitions"
            submit(record)

        p.processor.submit = spy  # type: ignore[method-assign]
        p.invoker.processor = p.processor
    reply = await asyncio.wait_for(node.request(_invoke(caller, Target("Front", "relay"), key)), 10)
    assert isinstance(reply.outcome, a.Output) and reply.outcome.result.value == b"5"
    callee = next(i for i in owner if i != caller)
    assert owner == {caller: 0, callee: 2}


async def test_a_timer_lives_and_fires_in_the_partition_of_the_invocation_it_wakes() -> None:
    """A handler in partition 0 sends a delayed call to an object in partition 2: the timer is armed in
    partition 2's window and its ``TimerFired`` is applied there (it was armed and fired in partition 0,
    whose batch stored it: only a restart moved it to its owner)."""
    clock = ManualClock()
    node = await _node(MemoryStore(), clock=clock)
    fired: list[int] = []
    due = asyncio.Event()
    for p in node.partitions:
        submit = p.timers._submit

        def spy(record: r.Record, submit: Any = submit, index: int = p.index) -> None:
            fired.append(index)
            due.set()
            submit(record)

        p.timers._submit = spy
    try:
        key = _key_in(2)
        sent = await asyncio.wait_for(node.request(_invoke(_id(0, 11), Target("Front", "later"), key)), 10)
        assert isinstance(sent.outcome, a.Output)
        assert [len(p.timers) for p in node.partitions] == [0, 0, 1]
        clock.advance(DELAY_MS)
        await asyncio.wait_for(due.wait(), 10)
        assert fired == [2]
        inv = str(InvocationId(partition_key_for_key(key), bytes(16)))
        # queued behind the delayed call in partition 2: it sees the 5 the timer's invocation added
        reply = await asyncio.wait_for(node.request(_invoke(inv, Target("Counter", "add", key), 0)), 10)
        assert isinstance(reply.outcome, a.Output) and reply.outcome.result.value == b"5"
    finally:
        await node.stop()


async def test_a_partition_recovers_only_its_own_running_invocations() -> None:
    store = MemoryStore()
    running = [_id(0, 1), _id(1, 2), _id(1, 3)]
    store.running_invocation_ids = lambda: running  # type: ignore[method-assign]
    recovered: dict[int, list[str]] = {}
    node = Node(store, SCHEMAS, local_transport(APP, Parts(clock=ManualClock())), ManualClock(), partitions=3)
    for p in node.partitions:
        submit = p.processor.submit

        def spy(record: r.Record, submit: Any = submit, index: int = p.index) -> None:
            if isinstance(record, r.Recover):
                recovered.setdefault(index, []).append(record.invocation_id)
            submit(record)

        p.processor.submit = spy  # type: ignore[method-assign]
    node.start()
    await node.stop()
    assert recovered == {0: [running[0]], 1: running[1:]}


async def test_a_stopping_partition_answers_its_waiting_callers_503() -> None:
    node = await _node(MemoryStore(), partitions=2)
    waiting = node.request(_invoke(_id(1, 9), Target("Front", "nap"), None))
    while not any(p.invoker.running for p in node.partitions):  # the handler sleeps: its caller waits
        await asyncio.sleep(0)
    await asyncio.wait_for(node.stop(), 10)
    reply: Reply = await asyncio.wait_for(waiting, 1)
    assert isinstance(reply.outcome, a.Unavailable)
    assert reply.outcome.failure.code == 503 and "stopped" in reply.outcome.failure.message


async def test_calls_across_partitions_to_one_object_lose_no_write() -> None:
    """Partition 0's handlers call an object of partition 2 while partition 2 serves direct calls to it: both
    partitions' batches, open at once, read and write the object's lock and inbox. Every add counts once, and
    every call completes (a batch that read a row the other committed meanwhile is applied again)."""
    node = await _node(MemoryStore())
    key = _key_in(2)
    pk = partition_key_for_key(key)
    calls = 40
    try:
        relays = [node.request(_invoke(_id(0, 100 + n), Target("Front", "relay"), key)) for n in range(calls)]
        adds = [
            node.request(
                _invoke(str(InvocationId(pk, n.to_bytes(16, "big"))), Target("Counter", "add", key), 1)
            )
            for n in range(calls)
        ]
        replies = await asyncio.wait_for(asyncio.gather(*relays, *adds), 30)
        assert all(isinstance(reply.outcome, a.Output) for reply in replies), replies
        last = node.request(_invoke(str(InvocationId(pk, b"last" * 4)), Target("Counter", "add", key), 0))
        total = await asyncio.wait_for(last, 10)
    finally:
        await node.stop()
    assert (
        isinstance(total.outcome, a.Output) and total.outcome.result.value == str(5 * calls + calls).encode()
    )


class _FailsOneBatch(MemoryStore):
    """The first batch committed on a writer thread (several records) waits until a transaction begun
    after it committed (another partition's, on the loop), then fails: rolled back, a transient I/O error."""

    def __init__(self) -> None:
        super().__init__()
        self._begun = itertools.count()
        self._committed = threading.Condition()
        self._last_committed = -1
        self.failed = False

    def begin(self) -> MemoryTransaction:
        txn = super().begin()
        order = next(self._begun)
        commit = txn.commit

        def commit_or_fail() -> None:
            if not self.failed and threading.current_thread() is not threading.main_thread():
                self.failed = True
                with self._committed:
                    assert self._committed.wait_for(lambda: self._last_committed > order, 10)
                txn.rollback()
                raise OSError(5, "disk I/O error at commit")
            commit()
            with self._committed:
                self._last_committed = max(self._last_committed, order)
                self._committed.notify_all()

        txn.commit = commit_or_fail  # type: ignore[method-assign]
        return txn


async def test_a_failed_commit_rolls_back_its_own_partition_only() -> None:
    """Partition 0's batch of two waits for its commit (the writer thread) while partition 1 applies and
    commits its own; then partition 0's commit fails. Its rollback must leave partition 1's rows alone (the
    memory store restored a snapshot of everything: partition 1's invocation vanished and never answered),
    and its retry completes both of its calls."""
    store = _FailsOneBatch()
    node = await _node(store)
    try:
        first, second = _key_in(0), next(f"j{n}" for n in range(1000) if _partition(f"j{n}") == 0)
        other = _key_in(1)
        calls = [(first, 1), (second, 2), (other, 3)]  # one tick: partition 0 drains first, a batch of two
        waiting = [
            node.request(
                _invoke(
                    str(InvocationId(partition_key_for_key(key), bytes(16))), Target("Counter", "add", key), n
                )
            )
            for key, n in calls
        ]
        replies = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    finally:
        await node.stop()
    assert store.failed
    assert [reply.outcome.result.value for reply in replies if isinstance(reply.outcome, a.Output)] == [
        b"1",
        b"2",
        b"3",
    ]


def _partition(key: str) -> int:
    return partition_of_key(partition_key_for_key(key), PARTITIONS)
