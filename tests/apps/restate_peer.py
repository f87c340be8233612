"""Services written with restate-sdk 1.2.0 (Restate's own Python SDK), served as a remote deployment by
hypercorn in the protocol tests. Never imported by Unbroken itself."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import restate


def _ledger(step: str) -> str:
    """Count a side effect in the file $PEER_LEDGER (checked by the tests from outside both processes)."""
    path = os.environ.get("PEER_LEDGER")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"step": step}) + "\n")
    return step


greeter = restate.Service("PeerGreeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    greeting = await ctx.run("pick greeting", lambda: "Hello")
    await ctx.sleep(timedelta(milliseconds=int(ctx.request().headers.get("x-sleep-ms", "50"))))
    return f"{greeting} {name}!"


@greeter.handler()
async def nap(ctx: restate.Context, ms: int) -> str:
    """A long durable sleep (the crash test kills the server in the middle of it)."""
    await ctx.run("before", lambda: _ledger("nap.before"))
    await ctx.sleep(timedelta(milliseconds=ms))
    await ctx.run("after", lambda: _ledger("nap.after"))
    return f"slept {ms}"


@greeter.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise restate.TerminalError(message, status_code=418)


counter = restate.VirtualObject("PeerCounter")


@counter.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    value = (await ctx.get("count", type_hint=int) or 0) + delta
    ctx.set("count", value)
    return value


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("count", type_hint=int) or 0


@counter.handler()
async def reset(ctx: restate.ObjectContext) -> None:
    ctx.clear("count")


@counter.handler()
async def add_via_local(ctx: restate.ObjectContext, delta: int) -> int:
    """Calls an in-process Unbroken service (LocalDoubler/double) and stores what it answered."""
    doubled = await ctx.generic_call("LocalDoubler", "double", arg=str(delta).encode())
    value = (await ctx.get("count", type_hint=int) or 0) + int(doubled)
    ctx.set("count", value)
    return value


@counter.handler()
async def wait_awakeable(ctx: restate.ObjectContext) -> str:
    name, promise = ctx.awakeable(type_hint=str)
    ctx.set("awakeable", name)
    return await promise


app = restate.app([greeter, counter])
