"""Handlers for the kit's own tests: every side effect is counted, so a test can say it happened once."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import unbroken as restate

EFFECTS: Counter[str] = Counter()
WOKE: list[str] = []


def effect(name: str) -> str:
    EFFECTS[name] += 1
    return name


steps = restate.Service("Steps")


@steps.handler()
async def multi(ctx: restate.Context, order: str) -> dict[str, object]:
    """Several kinds of steps: runs, a call, a one-way send, a sleep, an object's state."""
    charged = await ctx.run("charge", effect, args=(f"charge {order}",))
    total = await ctx.object_call(add, key=order, arg=5)
    await ctx.sleep(timedelta(hours=1))
    ctx.object_send(add, key=order, arg=1)
    shipped = await ctx.run("ship", effect, args=(f"ship {order}",))
    return {"charged": charged, "total": total, "shipped": shipped}


@steps.handler()
async def nap(ctx: restate.Context, label: str) -> str:
    hours = int(label.split(":")[1])
    await ctx.sleep(timedelta(hours=hours))
    await ctx.run("woke", lambda: WOKE.append(label))
    return label


@steps.handler()
async def awakeable_id(ctx: restate.Context) -> str:
    """Hands out an awakeable through the Approvals object and waits for it."""
    name, promise = ctx.awakeable(type_hint=str)
    await ctx.object_call(remember, key="approvals", arg=name)
    return f"approved by {await promise}"


@steps.handler()
async def approval_or_timeout(ctx: restate.Context) -> str:
    """An awakeable raced by a one-hour timeout."""
    name, promise = ctx.awakeable(type_hint=str)
    await ctx.object_call(remember, key="approvals", arg=name)
    match await restate.select(approved=promise, timeout=ctx.sleep(timedelta(hours=1))):
        case ["approved", who]:
            return f"approved by {who}"
    return "timed out"


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    value = (await ctx.get("n", type_hint=int) or 0) + delta
    ctx.set("n", value)
    return value


approvals = restate.VirtualObject("Approvals")


@approvals.handler()
async def remember(ctx: restate.ObjectContext, awakeable: str) -> None:
    ctx.set("last", awakeable)


app = restate.app([steps, counter, approvals])
