"""The small app scripts/redteam.py attacks: a typed handler, an awakeable waiter, a counter, a workflow."""

from __future__ import annotations

import asyncio
from typing import Any

import unbroken as restate

echo = restate.Service("Echo")


@echo.handler()
async def num(ctx: restate.Context, n: int) -> int:
    return n


@echo.handler()
async def size(ctx: restate.Context, value: Any) -> str:
    return f"{len(str(value))} chars"


@echo.handler()
async def slow(ctx: restate.Context, ms: int) -> int:
    await asyncio.sleep(min(ms, 2000) / 1000)
    return ms


waiter = restate.VirtualObject("Waiter")


@waiter.handler()
async def wait(ctx: restate.ObjectContext) -> str:
    """Publishes its awakeable id in state, then suspends on it."""
    name, fut = ctx.awakeable(type_hint=str)
    ctx.set("awakeable", name)
    return await fut


@waiter.handler(kind="shared")
async def awakeable(ctx: restate.ObjectSharedContext) -> str | None:
    return await ctx.get("awakeable", type_hint=str)


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    total = (await ctx.get("total", type_hint=int) or 0) + n
    ctx.set("total", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("total", type_hint=int) or 0


flow = restate.Workflow("Flow")


@flow.main()
async def run(ctx: restate.WorkflowContext) -> str:
    return await ctx.promise("go", type_hint=str).value()


app = restate.app([echo, waiter, counter, flow])
