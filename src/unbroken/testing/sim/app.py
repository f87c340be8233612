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

Each world builds its own app (:func:`build_app`): the handlers reach their world (its ledgers, its seeded
faults and values) through the closure they are defined in, never through a module global, so two worlds
in one process never see each other's.

Clients are in ``client.py``, the operations and their model in ``ops.py``, the generator in ``generate.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import unbroken as restate
from unbroken.sdk.app import App

if TYPE_CHECKING:
    from unbroken.testing.sim.world import World

KEYS = ("alpha", "beta", "gamma")


def build_app(w: World) -> App:
    """The simulated services, whose handlers act on ``w``."""
    counter, add = _counter(w)
    worker, work = _worker(w)
    return restate.app([counter, _order(w), _trip(w), worker, _fanout(w, add, work), _sleeper(w), _waiter(w)])


def _run(w: World, ctx: Any, name: str, terminal: str | None = None, sync: bool = False) -> Any:
    latency = 0.0 if sync else w.values.choice([0.0, 0.0, 0.001, 0.02, 0.3])
    return w.run_action(ctx.request().id, ctx.session.start.attempt, name, terminal, latency, sync)


# ------------------------------------------------------------------------------------------ services
def _counter(w: World) -> tuple[restate.VirtualObject, Any]:
    counter = restate.VirtualObject("Counter")

    @counter.handler()
    async def add(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
        w.body_fault("Counter.add before reading")
        count = await ctx.get("count") or 0
        if req.get("audit"):
            await ctx.run("audit", _run(w, ctx, "audit", sync=True))  # a plain def: the executor path
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
        count = await ctx.get("count") or 0
        await ctx.object_call(add, key=req["to"], arg={"n": req["n"]})
        w.body_fault("Counter.transfer after the call")
        ctx.set("count", count - req["n"])
        order = await ctx.get("order") or []
        ctx.set("order", [*order, [ctx.request().id, -req["n"]]])
        return int(count - req["n"])

    @counter.handler(kind="shared")
    async def get(ctx: restate.ObjectSharedContext) -> int:
        w.body_fault("Counter.get")
        return int(await ctx.get("count") or 0)

    return counter, add


def _order(w: World) -> restate.Workflow:
    order_wf = restate.Workflow("Order")

    @order_wf.main()
    async def run(ctx: restate.WorkflowContext, req: dict[str, Any]) -> dict[str, Any]:
        reserved = await ctx.run("reserve", _run(w, ctx, "reserve"))
        ctx.set("status", "reserved")
        decision: dict[str, Any] = await ctx.promise("approval", type_hint=dict).value()
        w.body_fault("Order.run after approval")
        if decision["ok"]:
            charged = await ctx.run("charge", _run(w, ctx, "charge"))
            ctx.set("status", "charged")
            return {"ok": True, "reserved": reserved, "charged": charged}
        await ctx.run("release", _run(w, ctx, "release"))
        ctx.set("status", "released")
        return {"ok": False, "reserved": reserved}

    @order_wf.handler()
    async def approve(ctx: restate.WorkflowSharedContext, ok: bool) -> None:
        w.body_fault("Order.approve")
        await ctx.promise("approval", type_hint=dict).resolve({"ok": ok})

    return order_wf


def _trip(w: World) -> restate.Service:
    trip = restate.Service("Trip")

    @trip.handler()
    async def book(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
        booked: list[int] = []
        try:
            for i in range(req["steps"]):
                fail = req["fail"] and i == req["steps"] - 1
                await ctx.run(f"book{i}", _run(w, ctx, f"book{i}", "no availability" if fail else None))
                booked.append(i)
                w.body_fault("Trip.book between steps")
                if req.get("nap"):
                    await ctx.sleep(timedelta(milliseconds=req["nap"]))
            return {"ok": True, "booked": booked}
        except restate.TerminalError as exc:
            undone = []
            for i in reversed(booked):
                await ctx.run(f"undo{i}", _run(w, ctx, f"undo{i}"))
                undone.append(i)
            return {"ok": False, "code": exc.status_code, "booked": booked, "undone": undone}

    return trip


def _worker(w: World) -> tuple[restate.Service, Any]:
    worker = restate.Service("Worker")

    @worker.handler()
    async def work(ctx: restate.Context, i: int) -> int:
        await ctx.run("w", _run(w, ctx, "w"))
        if i % 3 == 1:
            await ctx.sleep(timedelta(milliseconds=40 * i))
        w.body_fault("Worker.work")
        return i * i

    return worker, work


def _fanout(w: World, add: Any, work: Any) -> restate.Service:
    fanout = restate.Service("Fanout")

    @fanout.handler()
    async def fan(ctx: restate.Context, req: dict[str, Any]) -> int:
        futures = [ctx.service_call(work, arg=i) for i in range(req["n"])]
        for key, n, delay_ms in req["adds"]:
            delay = timedelta(milliseconds=delay_ms) if delay_ms else None
            ctx.object_send(add, key=key, arg={"n": n}, send_delay=delay)
        w.body_fault("Fanout.fan before gather")
        await restate.gather(*futures)
        return sum([await f for f in futures])

    return fanout


def _sleeper(w: World) -> restate.Service:
    sleeper = restate.Service("Sleeper")

    @sleeper.handler()
    async def nap(ctx: restate.Context, ms: int) -> int:
        if not ctx.session.replaying:  # type: ignore[attr-defined]  # issued live: note when (outside)
            w.ledger.sleeps.setdefault(ctx.request().id, []).append(w.now_ms())
        await ctx.sleep(timedelta(milliseconds=ms))
        w.body_fault("Sleeper.nap after sleeping")
        return ms

    return sleeper


def _waiter(w: World) -> restate.Service:
    waiter = restate.Service("Waiter")

    @waiter.handler()
    async def wait(ctx: restate.Context, tag: str) -> str:
        aid, fut = ctx.awakeable(type_hint=str)
        await ctx.run("publish", _publish(w, ctx, aid))
        return str(await fut)

    @waiter.handler()
    async def wait_early(ctx: restate.Context, tag: str) -> str:
        handed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        step = ctx.run("publish", _publish_when(w, ctx, handed))
        aid, fut = ctx.awakeable(type_hint=str)
        handed.set_result(aid)  # to the step's action, if it runs (not when its result is journaled)
        await step
        return str(await fut)

    @waiter.handler()
    async def wake(ctx: restate.Context, req: dict[str, str]) -> None:
        """Resolve someone else's awakeable from a handler."""
        w.body_fault("Waiter.wake")
        ctx.resolve_awakeable(req["aid"], req["value"])

    return waiter


def _post(w: World, ctx: Any, aid: str) -> None:
    """Hand the id out to the outside system (the ledger's mailbox, outside the engine)."""
    invocation_id = ctx.request().id
    w.ledger.mailbox[invocation_id] = aid
    w.ledger.published[invocation_id] = w.ledger.published.get(invocation_id, 0) + 1


def _publish(w: World, ctx: Any, aid: str) -> Any:
    async def publish() -> str:
        _post(w, ctx, aid)
        return aid

    return publish


PUBLISH_TAIL_S = 1.0  # how long ``wait_early``'s step goes on after publishing (virtual time)


def _publish_when(w: World, ctx: Any, handed: asyncio.Future[str]) -> Any:
    async def publish_when_handed() -> str:
        aid = await handed
        _post(w, ctx, aid)
        await asyncio.sleep(PUBLISH_TAIL_S)  # e.g. the rest of the call that sent it out
        return aid

    return publish_when_handed


def awakeable_value(aid: str) -> str:
    return "resolved-" + hashlib.sha256(aid.encode()).hexdigest()[:8]
