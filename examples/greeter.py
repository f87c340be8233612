"""The smallest Unbroken service: a greeter with a durable step."""

from datetime import timedelta

import unbroken as restate

greeter = restate.Service("Greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    # A side effect runs once: after a crash, the journaled result is replayed instead.
    greeting = await ctx.run("pick greeting", lambda: "Hello")
    return f"{greeting} {name}!"


@greeter.handler()
async def slow_greet(ctx: restate.Context, name: str) -> str:
    await ctx.sleep(timedelta(seconds=1))
    return f"Hello {name}, after a durable nap."


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    count = (await ctx.get("count") or 0) + delta
    ctx.set("count", count)
    return count


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("count") or 0


app = restate.app([greeter, counter])
