"""The engine's named bounds, through the real ingress app in process: past ``records_queued_max`` queued
records or ``reply_waiters_max`` waiting callers, a new request is refused at once with 503 and
``Retry-After`` (nothing accepted); once the backlog drains, requests go through again.

Before: the processor queue and the reply waiters were unbounded (the backlog grew with the load).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

import unbroken as restate
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.ids import InvocationId
from unbroken.core.schema import RetryPolicy, Target
from unbroken.ingress.app import IngressApp
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.node import Node
from unbroken.sdk.local import LocalTransport
from unbroken.storage.memory import MemoryStore

echo = restate.Service("Echo")


@echo.handler()
async def say(ctx: restate.Context, value: int) -> int:
    return value


APP = restate.app([echo])


@pytest.fixture
async def engine() -> AsyncIterator[Node]:
    clock = ManualClock()
    loop = asyncio.get_running_loop()
    schemas = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)
    eng = Node(MemoryStore(), schemas, LocalTransport(APP.services, clock.now_ms, loop), clock)
    eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


async def _post(
    app: IngressApp, path: str, body: bytes, now: bool = False
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI app, as uvicorn would pass it. ``now``: in this task, so that the loop
    runs nothing else first (the queued records stay queued); otherwise bounded by a timeout."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": body, "more_body": False}]
    never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        return parts.pop() if parts else await never

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    if now:
        await app(scope, receive, send)
    else:
        await asyncio.wait_for(app(scope, receive, send), 10)
    start, payload = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), payload


def _invoke(invocation_id: str, request_id: int) -> r.Invoke:
    return r.Invoke(
        invocation_id, Target("Echo", "say"), b"1", request_id=request_id, reply=r.ReplyMode.ACCEPTED
    )


def _queue_invokes(eng: Node, count: int) -> list[asyncio.Future[Any]]:
    """Requests queued and not applied yet: the loop has not run since (the drain is a later callback)."""
    futures = []
    for n in range(count):
        invocation_id = str(InvocationId.new(n, n.to_bytes(10, "big"), 0))
        make = functools.partial(_invoke, invocation_id)
        futures.append(eng.request(make, bounded=True))
    return futures


async def test_a_full_processor_queue_answers_503_with_retry_after(
    engine: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "records_queued_max", 4)
    app = IngressApp(engine)
    queued = _queue_invokes(engine, 4)
    assert engine.partitions[0].processor.queued() == 4
    status, headers, body = await _post(app, "/Echo/say", b"7", now=True)
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "overloaded: 4 records are queued" in orjson.loads(body)["message"]
    await asyncio.wait_for(asyncio.gather(*queued), 10)  # they were not refused: applied in turn
    status, _, body = await _post(app, "/Echo/say", b"7")
    assert (status, body) == (200, b"7")


async def test_too_many_waiting_callers_answers_503(engine: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "reply_waiters_max", 2)
    app = IngressApp(engine)
    waiting = _queue_invokes(engine, 2)
    status, headers, body = await _post(app, "/Echo/say", b"7", now=True)
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "2 callers are waiting" in orjson.loads(body)["message"]
    await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert (await _post(app, "/Echo/say", b"7"))[0] == 200
