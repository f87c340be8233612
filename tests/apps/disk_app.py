"""Handlers for the disk-full and invariant tests (tests/e2e/test_store_failures.py): big writes that a
small data dir cannot hold, small ones that it can, and sleeps to be recovered."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import unbroken as restate

MIB = 1024 * 1024

box = restate.VirtualObject("Box")
sink = restate.Service("Sink")
flow = restate.Workflow("Flow")


@box.handler()
async def set_big_then_mark(ctx: restate.ObjectContext, size: int) -> str:
    ctx.set("big", "x" * size)
    ctx.set("marker", 1)
    return "stored"


@box.handler()
async def put(ctx: restate.ObjectContext, value: Any) -> str:
    ctx.set("value", value)
    return "ok"


@box.handler(kind="shared")
async def sizes(ctx: restate.ObjectSharedContext) -> dict[str, int]:
    """The length of each stored value's JSON text (never the values: they can be 32 MiB)."""
    out: dict[str, int] = {}
    for name in await ctx.state_keys():
        value = await ctx.get(name)
        out[name] = len(value) if isinstance(value, str) else 1
    return out


@box.handler()
async def send_big(ctx: restate.ObjectContext, size: int) -> str:
    ctx.service_send(swallow, "y" * size)
    return "sent"


@box.handler()
async def nap(ctx: restate.ObjectContext, ms: int) -> str:
    await ctx.sleep(timedelta(milliseconds=ms))
    ctx.set("napped", ms)
    return "rested"


@sink.handler()
async def swallow(ctx: restate.Context, value: str) -> int:
    return len(value)


@flow.main()
async def run(ctx: restate.WorkflowContext, _: Any) -> int:
    value = await ctx.promise("big").value()
    return len(value)


@flow.handler()
async def resolve(ctx: restate.WorkflowSharedContext, size: int) -> str:
    await ctx.promise("big").resolve("z" * size)
    return "resolved"


app = restate.app([box, sink, flow])
