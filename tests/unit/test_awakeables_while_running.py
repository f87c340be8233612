"""Resolving an awakeable while its invocation's attempt runs (issue 17, point 2).

Only indexes the running attempt allocated may be resolved: a forged index (17 and up) is a 404 and plants
nothing; a signal index below 17 (1 is CANCEL) is a 400. An id the attempt handed out before any record
saying so was applied (here: passed to a ``ctx.run`` action already running, whose result is not journaled
yet) is accepted and delivered: the in-process SDK reports each allocation to the engine in memory before
the id reaches user code, and the resolve is stamped with that live count.

In process, on a real SQLite file, the ingress served by uvicorn on loopback; every step waits on an event
the handler sets, never on a sleep.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

import unbroken as restate
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId, awakeable_id
from unbroken.core.schema import RetryPolicy
from unbroken.http.wire import bounded_protocol
from unbroken.ingress.app import IngressApp
from unbroken.runtime.node import Node
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_reads import SqliteReadModel
from unbroken.wiring import Parts, build, local_transport

WAIT_S = 10  # every wait of these tests is bounded by this


class Gates:
    """What the handlers and the test hand each other (one set per test)."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()  # a ctx.run action is running
        self.release = asyncio.Event()  # the test lets it return
        self.published: asyncio.Queue[str] = asyncio.Queue()  # awakeable ids handed out


GATES = Gates()
svc = restate.Service("Live")


@svc.handler()
async def later(ctx: restate.Context) -> str:
    """Runs a step before allocating its only awakeable: while the step runs, it has allocated none."""

    async def hold() -> str:
        GATES.holding.set()
        await GATES.release.wait()
        return "held"

    await ctx.run_typed("hold", hold)
    aid, fut = ctx.awakeable(type_hint=str)
    GATES.published.put_nowait(aid)
    return await fut


@svc.handler()
async def handout(ctx: restate.Context) -> str:
    """Hands its awakeable out from a ``ctx.run`` action issued before the allocation: the run's command
    carried a count of 0 and its result is journaled only once the test releases it, so no record applied
    before the resolve says the awakeable exists."""
    loop = asyncio.get_running_loop()
    aid_box: asyncio.Future[str] = loop.create_future()

    async def publish() -> str:
        aid = await aid_box
        GATES.published.put_nowait(aid)
        GATES.holding.set()
        await GATES.release.wait()
        return aid

    step = ctx.run_typed("publish", publish)
    aid, fut = ctx.awakeable(type_hint=str)
    if not aid_box.done():  # (a replay finds the step's result journaled: its action does not run)
        aid_box.set_result(aid)
    await step
    return await fut


@svc.handler()
async def wake(ctx: restate.Context, req: dict[str, str]) -> str:
    ctx.resolve_awakeable(req["aid"], req["value"])
    return "sent"


APP = restate.app([svc])
SCHEMAS = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)


class Harness:
    def __init__(self, node: Node, store: SqliteStore, http: httpx.AsyncClient) -> None:
        self.node, self.store, self.http = node, store, http
        self.reads = SqliteReadModel(store.path)

    async def send(self, path: str, body: Any = None) -> str:
        resp = await self.http.post(f"/Live/{path}/send", content=orjson.dumps(body))
        assert resp.status_code == 202, resp.text
        return str(resp.json()["invocationId"])

    async def resolve(self, inv: str, idx: int, value: str) -> httpx.Response:
        aid = awakeable_id(InvocationId.parse(inv), idx)
        return await self.http.post(f"/restate/awakeables/{aid}/resolve", content=orjson.dumps(value))

    async def result(self, inv: str) -> Any:
        resp = await self.http.get(f"/restate/invocation/{inv}/attach", timeout=WAIT_S)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def signals(self, inv: str) -> list[int]:
        """The signal indexes stored in the invocation's journal."""
        journal = await self.reads.read(lambda snapshot: snapshot.journal(inv))
        return [e.signal_idx for e in journal if isinstance(e, j.Notification) and e.signal_idx]

    async def run_results(self, inv: str) -> int:
        journal = await self.reads.read(lambda snapshot: snapshot.journal(inv))
        return sum(1 for e in journal if isinstance(e, j.Notification) and e.kind == "run")


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Harness]:
    global GATES
    GATES = Gates()
    store = SqliteStore(str(tmp_path))
    parts = Parts()
    node = build(SCHEMAS, store, local_transport(APP, parts, asyncio.get_running_loop()), parts)
    node.start()
    sock = _listener()
    protocol = bounded_protocol(lambda status, message: orjson.dumps({"message": message}))
    config = uvicorn.Config(IngressApp(node), http=protocol, loop="none", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await _until(lambda: server.started)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=WAIT_S) as http:
        harness = Harness(node, store, http)
        try:
            yield harness
        finally:
            GATES.release.set()
            server.should_exit = True
            await asyncio.wait_for(task, WAIT_S)
            await node.stop()
            harness.reads.close()
            store.close()


async def _until(ready: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not ready():
            await asyncio.sleep(0.01)  # polls a flag uvicorn sets; it has no event to wait on


async def test_a_running_invocation_refuses_an_awakeable_it_has_not_allocated(live: Harness) -> None:
    inv = await live.send("later")
    await asyncio.wait_for(GATES.holding.wait(), WAIT_S)  # its attempt runs, no awakeable allocated yet
    forged = await live.resolve(inv, 17, "planted")
    assert forged.status_code == 404, forged.text
    assert "has not created it" in forged.json()["message"]
    for idx in range(1, 17):  # CANCEL and the reserved indexes: never an awakeable's
        refused = await live.resolve(inv, idx, "planted")
        assert refused.status_code == 400, (idx, refused.text)
    assert await live.signals(inv) == []  # nothing planted, no cancel
    GATES.release.set()
    aid = await asyncio.wait_for(GATES.published.get(), WAIT_S)  # now it allocates 17 and waits on it
    assert aid == awakeable_id(InvocationId.parse(inv), 17)
    resolved = await live.resolve(inv, 17, "real")
    assert resolved.status_code == 202, resolved.text
    assert await live.result(inv) == "real"  # not the planted value


async def test_an_id_handed_out_by_a_running_step_is_accepted_before_the_step_is_journaled(
    live: Harness,
) -> None:
    inv = await live.send("handout")
    aid = await asyncio.wait_for(GATES.published.get(), WAIT_S)
    await asyncio.wait_for(GATES.holding.wait(), WAIT_S)
    assert await live.run_results(inv) == 0  # the step that handed the id out is not journaled
    resp = await live.http.post(f"/restate/awakeables/{aid}/resolve", content=orjson.dumps("approved"))
    assert resp.status_code == 202, resp.text
    assert await live.signals(inv) == [17]  # delivered: stored in its journal
    GATES.release.set()
    assert await live.result(inv) == "approved"


async def test_a_handler_resolving_an_id_handed_out_by_a_running_step_is_heard(live: Harness) -> None:
    """The same through ``ctx.resolve_awakeable`` of another invocation: its command carries the target's
    live count (a forged index there is ignored, with a warning: tests/unit/test_awakeable_allocation.py)."""
    inv = await live.send("handout")
    aid = await asyncio.wait_for(GATES.published.get(), WAIT_S)
    await asyncio.wait_for(GATES.holding.wait(), WAIT_S)
    waker = await live.send("wake", {"aid": aid, "value": "from a handler"})
    assert await live.result(waker) == "sent"
    assert await live.signals(inv) == [17]
    GATES.release.set()
    assert await live.result(inv) == "from a handler"


async def test_a_pause_keeps_what_the_aborted_attempt_handed_out(live: Harness) -> None:
    """A pause aborts the attempt and fences out its records still to come (here: the step's result): the
    pause carries the attempt's live count, so the id it handed out stays resolvable while paused, a
    forged index does not; after the resume the step runs again, hands the same id out again, and the
    invocation ends with the value resolved while it was paused."""
    inv = await live.send("handout")
    aid = await asyncio.wait_for(GATES.published.get(), WAIT_S)
    await asyncio.wait_for(GATES.holding.wait(), WAIT_S)
    paused = await asyncio.wait_for(live.node.request(lambda rid: r.PauseInvocation(inv, rid)), WAIT_S)
    assert isinstance(paused.outcome, a.Done), paused
    forged = await live.resolve(inv, 18, "planted")
    assert forged.status_code == 404, forged.text
    resp = await live.http.post(f"/restate/awakeables/{aid}/resolve", content=orjson.dumps("while paused"))
    assert resp.status_code == 202, resp.text
    resumed = await asyncio.wait_for(live.node.request(lambda rid: r.ResumeInvocation(inv, rid)), WAIT_S)
    assert isinstance(resumed.outcome, a.Done), resumed
    assert await asyncio.wait_for(GATES.published.get(), WAIT_S) == aid  # the step ran again
    GATES.release.set()
    assert await live.result(inv) == "while paused"
    assert await live.signals(inv) == [17]
