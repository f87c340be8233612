"""Services for the admin API and SQL introspection tests (tests/e2e/test_admin_api.py, test_query.py).

Handlers that must stay unfinished publish an awakeable id into ``Inbox/{box}`` (read over HTTP by the
test) and wait on it; ``Sleeper.nap`` sleeps for an hour so it shows up suspended with a timer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken import TerminalError

# ------------------------------------------------------------------------------------------- Inbox
inbox = restate.VirtualObject("Inbox")


@inbox.handler()
async def put(ctx: restate.ObjectContext, value: Any) -> None:
    ctx.set("value", value)


@inbox.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> Any:
    return await ctx.get("value")


# ------------------------------------------------------------------------------------------ Worker
worker = restate.Service("Worker")


@worker.handler()
async def echo(ctx: restate.Context, value: Any) -> Any:
    return value


@worker.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise TerminalError(message, 418)


@worker.handler()
async def call_echo(ctx: restate.Context, value: Any) -> Any:
    return await ctx.service_call(echo, value)


@worker.handler()
async def wait(ctx: restate.Context, box: str) -> Any:
    """Publish an awakeable id to ``Inbox/{box}`` and wait for it."""
    aid, fut = ctx.awakeable()
    ctx.object_send(put, box, {"aid": aid, "id": ctx.request().id})
    return await fut


@worker.handler(
    invocation_retry_policy=restate.InvocationRetryPolicy(
        initial_interval=timedelta(milliseconds=50),
        max_attempts=2,
        on_max_attempts="pause",
    )
)
async def broken(ctx: restate.Context, message: str) -> str:
    raise RuntimeError(message)


# ----------------------------------------------------------------------------------------- Sleeper
sleeper = restate.Service("Sleeper")


@sleeper.handler()
async def nap(ctx: restate.Context, seconds: float) -> str:
    await ctx.sleep(timedelta(seconds=seconds), name="long nap")
    return "rested"


# ----------------------------------------------------------------------------------------- Counter
counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    total = (await ctx.get("total")) or 0
    total += n
    ctx.set("total", total)
    return total


@counter.handler()
async def hold(ctx: restate.ObjectContext, box: str) -> Any:
    """Hold the key's lock until the awakeable published to ``Inbox/{box}`` resolves."""
    aid, fut = ctx.awakeable()
    ctx.object_send(put, box, {"aid": aid, "id": ctx.request().id})
    return await fut


@counter.handler(kind="shared")
async def read(ctx: restate.ObjectSharedContext) -> dict[str, Any]:
    return {k: await ctx.get(k) for k in sorted(await ctx.state_keys())}


# -------------------------------------------------------------------------------------------- Vote
vote = restate.Workflow("Vote")


@vote.main()
async def run(ctx: restate.WorkflowContext, topic: str) -> str:
    decision = await ctx.promise("decision").value()
    return f"{topic}:{decision}"


@vote.handler()
async def decide(ctx: restate.WorkflowSharedContext, decision: str) -> str:
    await ctx.promise("decision").resolve(decision)
    return "ok"


# -------------------------------------------------------------------------------------- Patchable
patchable = restate.Service("Patchable")


@patchable.handler()
async def wait_here(ctx: restate.Context, box: str) -> Any:
    aid, fut = ctx.awakeable()
    ctx.object_send(put, box, {"aid": aid, "id": ctx.request().id})
    return await fut


app = restate.app([inbox, worker, sleeper, counter, vote, patchable])
