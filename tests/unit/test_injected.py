"""Injected, never global: a node's clock, fault points and entropy are the ones its wiring was given.

Before: ``ctx.time()`` read ``time.time``, the fault points were a process global that the SDK imported,
and the ingress drew invocation ids from a ``RandomBytes`` of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

import unbroken as restate
from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.ids import InvocationId
from unbroken.core.schema import RetryPolicy, Target
from unbroken.ingress.app import IngressApp
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.entropy import RandomBytes
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.node import Node
from unbroken.storage.memory import MemoryStore
from unbroken.wiring import Parts, build, local_transport

svc = restate.Service("Clocked")


@svc.handler()
async def now(ctx: restate.Context) -> float:
    return await ctx.time()


@svc.handler()
async def step(ctx: restate.Context) -> int:
    return await ctx.run_typed("one", lambda: 1)


APP = restate.app([svc])
SCHEMAS = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)


class Recording(FaultPoints):
    """Fault points that note every point passed (none armed)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def point(self, name: str) -> None:
        self.seen.append(name)


class Zeros(RandomBytes):
    def take(self, n: int) -> bytes:
        return bytes(n)


def _node(parts: Parts) -> Node:
    node = build(SCHEMAS, MemoryStore(), local_transport(APP, parts, asyncio.get_running_loop()), parts)
    node.start()
    return node


async def _call(node: Node, handler: str, n: int) -> Any:
    inv = str(InvocationId.new(n, n.to_bytes(10, "big"), 1))
    reply = await asyncio.wait_for(
        node.request(
            lambda rid: r.Invoke(
                inv, Target("Clocked", handler), b"", request_id=rid, reply=r.ReplyMode.RESULT
            )
        ),
        10,
    )
    assert isinstance(reply.outcome, a.Output) and reply.outcome.result.value is not None, reply
    return orjson.loads(reply.outcome.result.value)


async def test_ctx_time_reads_the_node_clock() -> None:
    node = _node(Parts(clock=ManualClock(start_ms=1_234_567), faults=FaultPoints()))
    try:
        assert await _call(node, "now", 1) == 1234.567
    finally:
        await node.stop()


async def test_each_node_passes_its_own_fault_points_down_to_the_sdk() -> None:
    first, second = Recording(), Recording()
    a, b = _node(Parts(clock=ManualClock(), faults=first)), _node(Parts(clock=ManualClock(), faults=second))
    try:
        assert await _call(a, "step", 2) == 1
    finally:
        await a.stop()
        await b.stop()
    wanted = {
        "processor.before_commit",
        "processor.after_commit",
        "invoker.before_start",
        "sdk.run.before_propose",
    }
    assert wanted <= set(first.seen)
    assert second.seen == []


async def test_the_ingress_draws_invocation_ids_from_the_node_entropy() -> None:
    node = _node(Parts(clock=ManualClock(start_ms=5), faults=FaultPoints(), entropy=Zeros()))
    app = IngressApp(node)
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return parts.pop() if parts else await asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/Clocked/now/send",
        "raw_path": b"/Clocked/now/send",
        "query_string": b"",
        "headers": [],
    }
    try:
        await asyncio.wait_for(app(scope, receive, send), 10)
    finally:
        await node.stop()
    assert sent[0]["status"] == 202, sent
    inv = InvocationId.parse(orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))["invocationId"])
    assert inv.partition_key == 0 and inv.uuid == (5).to_bytes(6, "big") + bytes(10)
