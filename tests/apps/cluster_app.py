"""Services for tests/e2e/test_cluster_forwarding.py: every handler keeps to its own partition (no call or
send to another key), so they run on nodes leading only some partitions before cross-partition messages
exist, and every request shows which node answered it.
"""

from __future__ import annotations

import os

import unbroken as restate

NODE = os.environ.get("UNBROKEN_NODE_NAME", "?")

counter = restate.VirtualObject("Counter")
waiter = restate.VirtualObject("Waiter")
greeter = restate.Service("Greeter")


@counter.handler()
async def add(ctx: restate.ObjectContext, n: int) -> dict[str, object]:
    """Add ``n``; the answer names the node that ran the handler (the leader of the key's partition)."""
    value = (await ctx.get("n") or 0) + n
    ctx.set("n", value)
    return {"value": value, "node": NODE}


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("n") or 0  # type: ignore[no-any-return]


@waiter.handler()
async def wait(ctx: restate.ObjectContext) -> str:
    """Publish an awakeable id in the key's state (the shared ``awakeable`` reads it), then wait for it."""
    aid, promise = ctx.awakeable()
    ctx.set("awakeable", aid)
    return f"resolved with {await promise}"


@waiter.handler(kind="shared")
async def awakeable(ctx: restate.ObjectSharedContext) -> str | None:
    return await ctx.get("awakeable")  # type: ignore[no-any-return]


@greeter.handler()
async def hello(ctx: restate.Context, name: str) -> dict[str, str]:
    return {"hello": name, "node": NODE}


app = restate.app([counter, waiter, greeter])
