"""A node on a store whose storage partitions are shared with other nodes (runtime/takeover.py), here the
memory store posing as a leased one with 4 partitions: a request of a partition led elsewhere is refused at
once with ``PartitionNotLed`` (503); losing a partition answers the callers waiting on its invocations 503,
ends their attempts and drops their timers; gaining one recovers exactly its running invocations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest

import unbroken as restate
from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.errors import EngineUnavailable, PartitionNotLed
from unbroken.core.ids import InvocationId
from unbroken.core.schema import RetryPolicy, Target
from unbroken.core.storage import ClusterView, LeadershipChanged
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.node import Node
from unbroken.storage.memory import MemoryStore
from unbroken.wiring import Parts, build, local_transport

PARTS = 4
U64 = 1 << 64

svc = restate.Service("Svc")


@svc.handler()
async def nap(ctx: restate.Context) -> None:
    await ctx.sleep(timedelta(hours=1))


@svc.handler()
async def echo(ctx: restate.Context, value: int) -> int:
    return value


APP = restate.app([svc])
SCHEMAS = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)


class _LeasedStore(MemoryStore):
    """The memory store answering the leadership seam as a store shared by several nodes would."""

    def __init__(self, led: set[int]) -> None:
        super().__init__()
        self.led = set(led)
        self.listeners: list[LeadershipChanged] = []
        self.running: list[str] = []
        self.asked: list[list[int] | None] = []  # the partitions each running_invocation_ids named

    def leads(self, part: int) -> bool:
        return part in self.led

    def partition_of(self, partition_key: int) -> int:
        return (partition_key * PARTS) >> 64

    def cluster(self) -> ClusterView:
        return ClusterView(PARTS, (), ())

    def on_leadership(self, changed: LeadershipChanged) -> None:
        self.listeners.append(changed)

    def running_invocation_ids(self, parts: Collection[int] | None = None) -> list[str]:
        self.asked.append(None if parts is None else sorted(parts))
        return list(self.running)  # all: the caller keeps what it asked for

    def change(self, gained: set[int], lost: set[int]) -> None:
        """As the lease thread does: from another thread."""
        self.led = (self.led | gained) - lost
        thread = threading.Thread(
            target=lambda: [f(frozenset(gained), frozenset(lost)) for f in self.listeners]
        )
        thread.start()
        thread.join(5)


def _id(part: int, n: int) -> str:
    return str(InvocationId.new(part * U64 // PARTS + n, n.to_bytes(10, "big"), 1))


def _invoke(invocation_id: str, handler: str, arg: Any = None) -> Any:
    def make(request_id: int) -> r.Invoke:
        body = b"" if arg is None else orjson.dumps(arg)
        return r.Invoke(
            invocation_id, Target("Svc", handler), body, request_id=request_id, reply=r.ReplyMode.RESULT
        )

    return make


@pytest.fixture
def store() -> Iterator[_LeasedStore]:
    yield _LeasedStore({0, 1})


async def _node(store: _LeasedStore) -> Node:
    parts = Parts(clock=ManualClock())
    node = build(SCHEMAS, store, local_transport(APP, parts, asyncio.get_running_loop()), parts)
    node.start()
    return node


async def _until(cond: Any) -> None:
    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.005)  # the hop from the "lease thread" lands on this loop

    await asyncio.wait_for(wait(), 5)


async def test_a_request_of_a_partition_led_elsewhere_is_refused_at_once(store: _LeasedStore) -> None:
    node = await _node(store)
    try:
        reply = await asyncio.wait_for(node.request(_invoke(_id(1, 1), "echo", 7)), 5)
        assert isinstance(reply.outcome, a.Output) and reply.outcome.result.value == b"7"
        with pytest.raises(PartitionNotLed) as refused:
            node.request(_invoke(_id(3, 2), "echo", 7))
        assert refused.value.part == 3 and isinstance(refused.value, EngineUnavailable)
        assert refused.value.status == 503
    finally:
        await node.stop()


async def test_losing_a_partition_answers_its_callers_503_and_drops_its_attempts_and_timers(
    store: _LeasedStore,
) -> None:
    node = await _node(store)
    partition = node.partitions[0]
    try:
        sleeper = _id(1, 3)
        waiting = node.request(_invoke(sleeper, "nap"))
        await _until(lambda: len(partition.timers) == 1)  # asleep: its timer is in the window
        store.change(set(), {1})
        reply = await asyncio.wait_for(waiting, 5)
        assert isinstance(reply.outcome, a.Unavailable) and reply.outcome.failure.code == 503
        assert sleeper in reply.outcome.failure.message and "attach" in reply.outcome.failure.message
        assert reply.outcome.goes_on == sleeper  # accepted: a cluster's ingress attaches to it elsewhere
        assert len(partition.timers) == 0 and sleeper not in partition.invoker.running
        with pytest.raises(PartitionNotLed):
            node.request(_invoke(_id(1, 4), "echo", 1))
    finally:
        await node.stop()


async def test_gaining_a_partition_recovers_exactly_its_running_invocations(store: _LeasedStore) -> None:
    store.running = [_id(0, 5), _id(2, 6), _id(3, 7)]
    recovered: list[str] = []
    node = await _node(store)
    partition = node.partitions[0]
    submit = partition.processor.submit

    def spy(record: r.Record) -> None:
        if isinstance(record, r.Recover):
            recovered.append(record.invocation_id)
        submit(record)

    partition.processor.submit = spy  # type: ignore[method-assign]
    try:
        store.change({2}, set())
        await _until(lambda: recovered)
        assert recovered == [_id(2, 6)]  # not partition 0's (recovered at start), nor 3's (led elsewhere)
        assert store.asked[-1] == [2]  # only the gained partition's are read, not every led one's
        store.change({2}, set())  # told twice: recovered once
        for _ in range(3):  # the hop was scheduled before ``change`` returned: it runs within these turns
            await asyncio.sleep(0)
        assert recovered == [_id(2, 6)]
    finally:
        await node.stop()


async def test_a_caller_awaiting_an_invocation_of_a_partition_let_go_is_answered_503(
    store: _LeasedStore,
) -> None:
    """A batch in flight when its partition was set aside commits after ``let_go`` answered the waiting
    callers: its ``AwaitCompletion`` must not leave a caller waiting for a completion that happens on the
    new leader (the simulator's --leases handovers)."""
    node = await _node(store)
    partition = node.partitions[0]
    try:
        store.change(set(), {1})
        await _until(lambda: 1 not in node.takeover.led)  # type: ignore[union-attr]
        invocation_id = _id(1, 6)
        waiting: asyncio.Future[a.Reply] = asyncio.get_running_loop().create_future()
        partition._waiters.futures[77] = waiting  # as ``request`` registered it before the move
        partition.run_actions([a.AwaitCompletion(77, invocation_id)])
        reply = await asyncio.wait_for(waiting, 5)
        assert isinstance(reply.outcome, a.Unavailable) and reply.outcome.failure.code == 503
        assert invocation_id in reply.outcome.failure.message
        assert invocation_id not in partition._waiters.by_invocation
    finally:
        await node.stop()
