"""The simulated application and its clients.

Services (real ``unbroken`` handlers, written as a user would, run by the real SDK):

* ``Counter`` (virtual object): ``add`` (exclusive; reads, maybe audits with ``ctx.run`` and naps, then
  writes ``count`` and appends ``[invocation id, n]`` to ``order``) and ``get`` (shared read);
* ``Order`` (workflow): ``run`` reserves (``ctx.run``), waits on the durable promise ``approval``, then
  charges or releases; ``approve`` (shared) resolves the promise;
* ``Trip`` (saga): books N steps with ``ctx.run``, the last one may fail terminally; on a terminal error
  (or a cancellation) undoes the booked steps in reverse order;
* ``Fanout``: calls N ``Worker.work`` and gathers them, and sends one-way (some delayed) ``Counter.add``;
* ``Sleeper``: sleeps; ``Waiter``: publishes an awakeable and waits for an outside client to resolve it
  (``wait``: from a ``ctx.run`` issued after the allocation; ``wait_early``: from one issued before it,
  whose action goes on after publishing, so that no record saying the awakeable exists may be applied
  before the resolve: only the attempt's live count covers it).

Clients are in ``client.py``, the operations and their model in ``ops.py``, the generator in ``generate.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken.sdk.app import App
from unbroken.testing.sim.world import World

_WORLD: World | None = None


def current() -> World:
    assert _WORLD is not None, "no simulation is running"
    return _WORLD


def set_current(world: World | None) -> None:
    global _WORLD
    _WORLD = world


def _run(ctx: Any, name: str, terminal: str | None = None, sync: bool = False) -> Any:
    w = current()
    latency = 0.0 if sync else w.values.choice([0.0, 0.0, 0.001, 0.02, 0.3])
    return w.run_action(ctx.request().id, ctx.session.start.attempt, name, terminal, latency, sync)


# ------------------------------------------------------------------------------------------ services
counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
    w = current()
    w.body_fault("Counter.add before reading")
    count = await ctx.get("count") or 0
    if req.get("audit"):
        await ctx.run("audit", _run(ctx, "audit", sync=True))  # a plain def: the executor path
    if req.get("nap"):
        await ctx.sleep(timedelta(milliseconds=req["nap"]))
    w.body_fault("Counter.add before writing")
    ctx.set("count", count + req["n"])
    order = await ctx.get("order") or []
    ctx.set("order", [*order, [ctx.request().id, req["n"]]])
    return int(count + req["n"])


@counter.handler()
async def transfer(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
    """Move ``n`` to another key (keys only ever call later keys: no lock cycle, no deadlock)."""
    w = current()
    count = await ctx.get("count") or 0
    await ctx.object_call(add, key=req["to"], arg={"n": req["n"]})
    w.body_fault("Counter.transfer after the call")
    ctx.set("count", count - req["n"])
    order = await ctx.get("order") or []
    ctx.set("order", [*order, [ctx.request().id, -req["n"]]])
    return int(count - req["n"])


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    current().body_fault("Counter.get")
    return int(await ctx.get("count") or 0)


order_wf = restate.Workflow("Order")


@order_wf.main()
async def run(ctx: restate.WorkflowContext, req: dict[str, Any]) -> dict[str, Any]:
    w = current()
    reserved = await ctx.run("reserve", _run(ctx, "reserve"))
    ctx.set("status", "reserved")
    decision: dict[str, Any] = await ctx.promise("approval", type_hint=dict).value()
    w.body_fault("Order.run after approval")
    if decision["ok"]:
        charged = await ctx.run("charge", _run(ctx, "charge"))
        ctx.set("status", "charged")
        return {"ok": True, "reserved": reserved, "charged": charged}
    await ctx.run("release", _run(ctx, "release"))
    ctx.set("status", "released")
    return {"ok": False, "reserved": reserved}


@order_wf.handler()
async def approve(ctx: restate.WorkflowSharedContext, ok: bool) -> None:
    current().body_fault("Order.approve")
    await ctx.promise("approval", type_hint=dict).resolve({"ok": ok})


trip = restate.Service("Trip")


@trip.handler()
async def book(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
    w = current()
    booked: list[int] = []
    try:
        for i in range(req["steps"]):
            fail = req["fail"] and i == req["steps"] - 1
            await ctx.run(f"book{i}", _run(ctx, f"book{i}", "no availability" if fail else None))
            booked.append(i)
            w.body_fault("Trip.book between steps")
            if req.get("nap"):
                await ctx.sleep(timedelta(milliseconds=req["nap"]))
        return {"ok": True, "booked": booked}
    except restate.TerminalError as exc:
        undone = []
        for i in reversed(booked):
            await ctx.run(f"undo{i}", _run(ctx, f"undo{i}"))
            undone.append(i)
        return {"ok": False, "code": exc.status_code, "booked": booked, "undone": undone}


worker = restate.Service("Worker")


@worker.handler()
async def work(ctx: restate.Context, i: int) -> int:
    await ctx.run("w", _run(ctx, "w"))
    if i % 3 == 1:
        await ctx.sleep(timedelta(milliseconds=40 * i))
    current().body_fault("Worker.work")
    return i * i


fanout = restate.Service("Fanout")


@fanout.handler()
async def fan(ctx: restate.Context, req: dict[str, Any]) -> int:
    futures = [ctx.service_call(work, arg=i) for i in range(req["n"])]
    for key, n, delay_ms in req["adds"]:
        delay = timedelta(milliseconds=delay_ms) if delay_ms else None
        ctx.object_send(add, key=key, arg={"n": n}, send_delay=delay)
    current().body_fault("Fanout.fan before gather")
    await restate.gather(*futures)
    return sum([await f for f in futures])


sleeper = restate.Service("Sleeper")


@sleeper.handler()
async def nap(ctx: restate.Context, ms: int) -> int:
    w = current()
    if not ctx.session.replaying:  # type: ignore[attr-defined]  # issued live: note when (outside)
        w.ledger.sleeps.setdefault(ctx.request().id, []).append(w.now_ms())
    await ctx.sleep(timedelta(milliseconds=ms))
    current().body_fault("Sleeper.nap after sleeping")
    return ms


waiter = restate.Service("Waiter")


@waiter.handler()
async def wait(ctx: restate.Context, tag: str) -> str:
    aid, fut = ctx.awakeable(type_hint=str)
    await ctx.run("publish", _publish(ctx, aid))
    return str(await fut)


@waiter.handler()
async def wait_early(ctx: restate.Context, tag: str) -> str:
    handed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    step = ctx.run("publish", _publish_when(ctx, handed))
    aid, fut = ctx.awakeable(type_hint=str)
    handed.set_result(aid)  # to the step's action, if it runs (not when its result is journaled)
    await step
    return str(await fut)


@waiter.handler()
async def wake(ctx: restate.Context, req: dict[str, str]) -> None:
    """Resolve someone else's awakeable from a handler."""
    current().body_fault("Waiter.wake")
    ctx.resolve_awakeable(req["aid"], req["value"])


def _post(ctx: Any, aid: str) -> None:
    """Hand the id out to the outside system (the ledger's mailbox, outside the engine)."""
    w = current()
    invocation_id = ctx.request().id
    w.ledger.mailbox[invocation_id] = aid
    w.ledger.published[invocation_id] = w.ledger.published.get(invocation_id, 0) + 1


def _publish(ctx: Any, aid: str) -> Any:
    async def publish() -> str:
        _post(ctx, aid)
        return aid

    return publish


PUBLISH_TAIL_S = 1.0  # how long ``wait_early``'s step goes on after publishing (virtual time)


def _publish_when(ctx: Any, handed: asyncio.Future[str]) -> Any:
    async def publish_when_handed() -> str:
        aid = await handed
        _post(ctx, aid)
        await asyncio.sleep(PUBLISH_TAIL_S)  # e.g. the rest of the call that sent it out
        return aid

    return publish_when_handed


APP: App = restate.app([counter, order_wf, trip, worker, fanout, sleeper, waiter])
KEYS = ("alpha", "beta", "gamma")


def awakeable_value(aid: str) -> str:
    return "resolved-" + hashlib.sha256(aid.encode()).hexdigest()[:8]
