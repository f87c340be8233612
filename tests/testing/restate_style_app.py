"""An app as restate-sdk's documentation writes them (``import restate`` there; ``unbroken`` here), for the
harness tests: a service, a virtual object and a workflow with a durable promise."""

from __future__ import annotations

import time
from datetime import timedelta

import unbroken as restate

greeter = restate.Service("greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    return f"Hello {name}!"


@greeter.handler()
async def remind(ctx: restate.Context, days: int) -> str:
    await ctx.sleep(timedelta(days=days))
    return f"reminded after {days} days"


counter = restate.VirtualObject("counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    value = (await ctx.get("count", type_hint=int) or 0) + delta
    ctx.set("count", value)
    return value


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("count", type_hint=int) or 0


signup = restate.Workflow("signup")


@signup.main()
async def run(ctx: restate.WorkflowContext, email: str) -> str:
    secret = await ctx.run("secret", lambda: "s3cret")
    ctx.set("status", "waiting")
    clicked = await ctx.promise("clicked", type_hint=str).value()
    return "verified" if clicked == secret else "rejected"


@signup.handler()
async def click(ctx: restate.WorkflowSharedContext, secret: str) -> None:
    await ctx.promise("clicked", type_hint=str).resolve(secret)


wall_clock = restate.Service("wallClock")


def wall_clock_hour() -> int:
    """The wall clock, read in handler code (the tests replace it by one that moves an hour at each read:
    a replay after a suspension may come hours after the step it replays)."""
    return time.localtime().tm_hour


@wall_clock.handler()
async def branchy(ctx: restate.Context) -> str:
    """A bug on purpose: it branches on the wall clock, which a replay reads again (later)."""
    if wall_clock_hour() < 12:
        await ctx.run("morning greeting", lambda: None)
    else:
        await ctx.run("afternoon greeting", lambda: None)
    await ctx.run("send", lambda: None)
    return "done"


app = restate.app(services=[greeter, counter, signup, wall_clock])
