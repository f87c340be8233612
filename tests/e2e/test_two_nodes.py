"""Two nodes, each leading a fixed half of the partitions, in one test: calls, sends, a delayed send, an
awakeable and a cancel cross from one node's partitions to the other's through the partition inbox, and
every effect happens exactly once. On PostgreSQL (two stores on one schema, ``claim`` half each: the real
thing) and on the memory store's two views (the same code paths, no server).

Node A leads partition 0 and node B partition 1 of two. The handlers on A work on objects whose keys B's
partition holds (and back): every record crossing is an ``InvokeCallee``, ``Notify``, ``ResolveSignal`` or
``CancelInvocation`` in the receiver's inbox, taken in its leader's batch (polled, or woken by NOTIFY).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

import unbroken as restate
from tests import pg
from unbroken.core import actions as act
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId, partition_key_for_key
from unbroken.core.invocation import Status
from unbroken.core.schema import RetryPolicy, Target
from unbroken.core.storage import Store
from unbroken.runtime.clock import SystemClock
from unbroken.runtime.node import Node, partition_of_key
from unbroken.storage.memory import MemoryStore
from unbroken.storage.postgres import PostgresStore
from unbroken.wiring import Parts, build, local_transport

WAIT_S = 20.0
DELAY_MS = 50

box = restate.VirtualObject("Box")


@box.handler()
async def add(ctx: restate.ObjectContext, value: int) -> int:
    total = (await ctx.get("total") or 0) + value
    ctx.set("total", total)
    return total


@box.handler()
async def block(ctx: restate.ObjectContext) -> str:
    """Waits for an awakeable nobody resolves: only a cancel ends it."""
    _, promise = ctx.awakeable(type_hint=str)
    return str(await promise)


@box.handler()
async def wait(ctx: restate.ObjectContext, resolver_key: str) -> str:
    """Hands its awakeable to an object of the other node, which resolves it."""
    name, promise = ctx.awakeable(type_hint=str)
    ctx.object_send(resolve, key=resolver_key, arg=name)
    return str(await promise)


resolver = restate.VirtualObject("Resolver")


@resolver.handler()
async def resolve(ctx: restate.ObjectContext, awakeable: str) -> None:
    ctx.resolve_awakeable(awakeable, "hello")


front = restate.VirtualObject("Front")


@front.handler()
async def relay(ctx: restate.ObjectContext, key: str) -> int:
    """A call, a send and a delayed send to an object of the other node."""
    ctx.object_send(add, key=key, arg=1)
    ctx.object_send(add, key=key, arg=100, send_delay=timedelta(milliseconds=DELAY_MS))
    return await ctx.object_call(add, key=key, arg=5)


@front.handler()
async def hold(ctx: restate.ObjectContext, key: str) -> str:
    return await ctx.object_call(block, key=key, arg=None)


APP = restate.app([box, resolver, front])
SCHEMAS = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)
PARTITIONS = 2


def _key_in(part: int, prefix: str) -> str:
    return next(
        f"{prefix}{n}"
        for n in range(10_000)
        if partition_of_key(partition_key_for_key(f"{prefix}{n}"), PARTITIONS) == part
    )


def _id(key: str, n: int = 0) -> str:
    """An id of an invocation of the object ``key`` (its partition: the key's)."""
    return str(InvocationId(partition_key_for_key(key), n.to_bytes(16, "big")))


@dataclass
class Cluster:
    a: Node
    b: Node
    count: Callable[[str, str], tuple[int, int]]  # (service, handler) -> (invocations, completed)

    async def call(self, node: Node, target: Target, arg: Any, invocation_id: str | None = None) -> act.Reply:
        inv = invocation_id or _id(target.key or "")

        def make(request_id: int) -> r.Record:
            body = orjson.dumps(arg)
            return r.Invoke(inv, target, body, request_id=request_id, reply=r.ReplyMode.RESULT)

        return await asyncio.wait_for(node.request(make), WAIT_S)


async def _nodes(stores: tuple[Store, Store]) -> tuple[Node, Node]:
    loop = asyncio.get_running_loop()
    nodes = []
    for store in stores:
        parts = Parts(clock=SystemClock())
        node = build(SCHEMAS, store, local_transport(APP, parts, loop), parts)
        node.start()
        nodes.append(node)
    return nodes[0], nodes[1]


def _memory_count(store: MemoryStore) -> Callable[[str, str], tuple[int, int]]:
    def count(service: str, handler: str) -> tuple[int, int]:
        from unbroken.storage.codec import decode_invocation

        invs = [decode_invocation(data, i) for i, data in list(store.invocations.items())]
        mine = [inv for inv in invs if (inv.target.service, inv.target.handler) == (service, handler)]
        return len(mine), sum(inv.status is Status.COMPLETED for inv in mine)

    return count


def _pg_count(url: str) -> Callable[[str, str], tuple[int, int]]:
    schema = url.rsplit("schema=", 1)[1]

    def count(service: str, handler: str) -> tuple[int, int]:
        with psycopg.connect(pg.URL, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}".encode())
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM invocation"
                " WHERE service = %s AND handler = %s",
                (service, handler),
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    return count


@pytest.fixture(params=["memory", "postgres"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    if request.param == "memory":
        store_a = MemoryStore(partitions=PARTITIONS, led={0})
        stores: tuple[Store, Store] = (store_a, store_a.peer({1}))
        count = _memory_count(store_a)
        url = ""
    else:
        pg.require()
        url = pg.url_for(pg.schema_for(str(tmp_path)))
        pg.drop(pg.schema_for(str(tmp_path)))
        stores = (
            PostgresStore(url, partitions=PARTITIONS, node="a", claim={0}),
            PostgresStore(url, partitions=PARTITIONS, node="b", claim={1}),
        )
        count = _pg_count(url)
    node_a, node_b = await _nodes(stores)
    try:
        yield Cluster(node_a, node_b, count)
    finally:
        await node_a.stop()
        await node_b.stop()
        for store in stores:
            store.close()
        if url:
            pg.drop(pg.schema_for(str(tmp_path)))


async def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S}s: {what}"
        await asyncio.sleep(0.05)


def _value(reply: act.Reply) -> Any:
    assert isinstance(reply.outcome, act.Output), reply
    assert reply.outcome.result.failure is None, reply.outcome.result.failure
    return orjson.loads(reply.outcome.result.value or b"null")


async def test_calls_and_sends_to_the_other_nodes_partitions_happen_exactly_once(cluster: Cluster) -> None:
    on_a, on_b = _key_in(0, "front"), _key_in(1, "box")
    # the send (1) went first, the call adds 5; the delayed 100 fires on B's timer (after, unless slow)
    assert _value(await cluster.call(cluster.a, Target("Front", "relay", on_a), on_b)) in (6, 106)
    await _eventually(lambda: cluster.count("Box", "add") == (3, 3), "the delayed send ran on node B")
    total = await cluster.call(cluster.b, Target("Box", "add", on_b), 0, _id(on_b, 1))
    assert _value(total) == 106  # 1 + 5 + 100: each exactly once
    # through the inboxes: B took the three invocations, A the call's result
    assert cluster.b.partitions[0].processor.inbox_records >= 3
    assert cluster.a.partitions[0].processor.inbox_records >= 1


async def test_an_awakeable_is_resolved_across_nodes(cluster: Cluster) -> None:
    on_b, on_a = _key_in(1, "waiter"), _key_in(0, "resolver")
    assert _value(await cluster.call(cluster.b, Target("Box", "wait", on_b), on_a)) == "hello"
    assert cluster.count("Resolver", "resolve") == (1, 1)


async def test_a_cancel_propagates_to_the_call_on_the_other_node(cluster: Cluster) -> None:
    on_a, on_b = _key_in(0, "holder"), _key_in(1, "blocked")
    root = _id(on_a)
    pending = asyncio.ensure_future(cluster.call(cluster.a, Target("Front", "hold", on_a), on_b, root))
    await _eventually(lambda: cluster.count("Box", "block") == (1, 0), "the call reached node B")
    cancelled = await asyncio.wait_for(
        cluster.a.request(lambda request_id: r.CancelInvocation(root, request_id)), WAIT_S
    )
    assert isinstance(cancelled.outcome, act.Accepted)
    reply = await pending
    assert isinstance(reply.outcome, act.Output)
    assert reply.outcome.result.failure == j.Failure(409, "cancelled")
    await _eventually(lambda: cluster.count("Box", "block") == (1, 1), "the call on B was cancelled")
