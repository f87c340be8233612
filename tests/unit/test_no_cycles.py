"""A call leaves no reference cycle behind: everything an attempt allocates is freed by reference counting.

A cycle per call (the attempt and its sink holding each other, a task's context holding the attempt that
holds the task) is not a leak, but the garbage collector has to find it: twice it made the collector run
every ~30 calls and cost 2-8% of a short call's instructions (BENCHMARKS.md). In process, on a real SQLite
file, the ingress served by uvicorn on loopback, calls over one keep-alive connection; the collector saves
what it finds (``gc.DEBUG_SAVEALL``) and no object of the engine's or the SDK's may be among it.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

import unbroken as restate
from unbroken.core.schema import RetryPolicy
from unbroken.http.wire import bounded_protocol
from unbroken.ingress.app import IngressApp
from unbroken.storage.sqlite import SqliteStore
from unbroken.wiring import Parts, build, local_transport

WAIT_S = 10
svc = restate.Service("Shapes")
obj = restate.VirtualObject("Tally")


@svc.handler()
async def echo(ctx: restate.Context, req: Any) -> Any:
    return req


@svc.handler()
async def steps(ctx: restate.Context, i: int) -> int:
    i = await ctx.run_typed("one", lambda: i + 1)
    await ctx.sleep(timedelta(milliseconds=1))
    return await ctx.run_typed("two", lambda: i + 1)


@svc.handler()
async def calls(ctx: restate.Context, n: int) -> int:
    return await ctx.object_call(add, key="k", arg=n)


@obj.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    count = (await ctx.get("count", type_hint=int) or 0) + n
    ctx.set("count", count)
    return count


APP = restate.app([svc, obj])
SCHEMAS = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)
CALLS = [("/Shapes/echo", {"hello": "world"}), ("/Shapes/steps", 1), ("/Shapes/calls", 2)]


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = SqliteStore(str(tmp_path))
    parts = Parts()
    node = build(SCHEMAS, store, local_transport(APP, parts, asyncio.get_running_loop()), parts)
    node.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    protocol = bounded_protocol(lambda status, message: orjson.dumps({"message": message}))
    config = uvicorn.Config(IngressApp(node), http=protocol, loop="none", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await _until(lambda: server.started)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as client:
        try:
            yield client
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, WAIT_S)
            await node.stop()
            store.close()


async def _until(ready: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not ready():
            await asyncio.sleep(0.01)  # polls a flag uvicorn sets; it has no event to wait on


async def _call_each(client: httpx.AsyncClient, rounds: int) -> None:
    for _ in range(rounds):
        for path, body in CALLS:
            resp = await client.post(path, content=orjson.dumps(body))
            assert resp.status_code == 200, (path, resp.text)


async def test_calls_leave_no_reference_cycle(http: httpx.AsyncClient) -> None:
    await _call_each(http, 2)  # warm: imports, caches, the connection
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await _call_each(http, 10)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("unbroken")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    kinds = sorted({type(o).__qualname__ for o in ours})
    assert not ours, f"{len(ours)} objects of the engine/SDK were freed by the garbage collector: {kinds}"
