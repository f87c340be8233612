"""In-process Unbroken services served next to the TypeScript SDK's services (tests/e2e/ts_services): the JS
handlers call LocalDoubler and send to LocalTally; LocalCaller calls and sends to the JS TsCounter."""

from __future__ import annotations

import unbroken as restate

doubler = restate.Service("LocalDoubler")


@doubler.handler()
async def double(ctx: restate.Context, n: int) -> int:
    return n * 2


tally = restate.VirtualObject("LocalTally")


@tally.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    total = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return total


@tally.handler(kind="shared")
async def total(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("total") or 0


caller = restate.Service("LocalCaller")


@caller.handler()
async def add_remote(ctx: restate.Context, key: str) -> int:
    """In-process -> JS -> in-process: TsCounter/{key}/addViaLocal(5) calls LocalDoubler/double(5)."""
    out = await ctx.generic_call("TsCounter", "addViaLocal", b"5", key=key)
    return int(out)


@caller.handler()
async def send_remote(ctx: restate.Context, key: str) -> str:
    """A one-way send to the JS TsCounter/{key}/add(100)."""
    ctx.generic_send("TsCounter", "add", b"100", key=key)
    return "sent"


app = restate.app([doubler, tally, caller])
