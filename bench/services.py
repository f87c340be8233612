"""The benchmark workloads (see ../shared/bench/WORKLOADS.md), written once with the restate-sdk API.

Only the import below is Unbroken-specific: replace it with ``import restate`` and the same file serves the
workloads with restate-sdk 1.2.0 (for the side-by-side comparison with the real Restate server).
"""

from datetime import timedelta
from typing import Any

import unbroken as restate

bench = restate.Service("Bench")


@bench.handler()
async def noop(ctx: restate.Context, req: Any) -> Any:
    """W1: echo the request (W6 sends it one-way)."""
    return req


def _inc(i: int) -> int:
    return i + 1


@bench.handler()
async def steps(ctx: restate.Context, i: int) -> int:
    """W2: three durable steps, each i -> i+1."""
    i = await ctx.run_typed("step1", _inc, restate.RunOptions(type_hint=int), i)
    i = await ctx.run_typed("step2", _inc, restate.RunOptions(type_hint=int), i)
    i = await ctx.run_typed("step3", _inc, restate.RunOptions(type_hint=int), i)
    return i


@bench.handler()
async def sleep(ctx: restate.Context) -> None:
    """W4: one durable 100 ms timer."""
    await ctx.sleep(timedelta(milliseconds=100))


FANOUT = 10


@bench.handler()
async def fanout(ctx: restate.Context) -> int:
    """W5: ten concurrent calls to noop, then gather (11 invocations per request)."""
    calls = [ctx.service_call(noop, {"i": n}) for n in range(FANOUT)]
    await restate.gather(*calls)
    results = [await c for c in calls]
    return len(results)


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    """W3a/W3b: read-modify-write of one state entry under the key's exclusive lock."""
    count = (await ctx.get("count", type_hint=int) or 0) + delta
    ctx.set("count", count)
    return count


app = restate.app([bench, counter])
