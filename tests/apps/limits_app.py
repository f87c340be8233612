"""Handlers that push against the engine's size and encoding limits (tests/e2e/test_security_limits.py).

Each one does one thing a buggy or hostile handler might do: store an oversized state value, return an
oversized ``ctx.run`` result or output, pass an oversized call argument, use a string that cannot be
encoded (a lone surrogate) as a state key, or fail with an error that cannot be stored as it is. None of
them may crash the server or leave the invocation stuck: each ends with a terminal, explained failure.
"""

from __future__ import annotations

from typing import Any

import unbroken as restate
from unbroken import TerminalError

MIB = 1024 * 1024
OVER = 32 * MIB + 1  # one byte past the default limits (a JSON string adds two quote bytes on top)

limits = restate.VirtualObject("Limits")


@limits.handler()
async def set_big(ctx: restate.ObjectContext, size: int) -> str:
    ctx.set("big", "x" * size)
    return "stored"


@limits.handler()
async def set_small(ctx: restate.ObjectContext, value: Any) -> None:
    ctx.set("small", value)


@limits.handler(kind="shared")
async def get_small(ctx: restate.ObjectSharedContext) -> Any:
    return await ctx.get("small")


@limits.handler(kind="shared")
async def keys(ctx: restate.ObjectSharedContext) -> list[str]:
    return sorted(await ctx.state_keys())


@limits.handler()
async def run_big(ctx: restate.ObjectContext, size: int) -> dict[str, Any]:
    """The oversized result fails the run for good: the handler sees a TerminalError at the await."""
    try:
        await ctx.run("produce", lambda: "y" * size)
    except TerminalError as exc:
        return {"code": exc.status_code, "message": exc.message}
    return {"code": 0, "message": "the oversized run result was journaled"}


@limits.handler()
async def output_big(ctx: restate.ObjectContext, size: int) -> str:
    return "z" * size


@limits.handler()
async def call_big(ctx: restate.ObjectContext, size: int) -> dict[str, Any]:
    try:
        await ctx.object_call(set_small, key=ctx.key(), arg="w" * size)
    except TerminalError as exc:
        return {"code": exc.status_code, "message": exc.message}
    return {"code": 0, "message": "the oversized call argument was journaled"}


@limits.handler()
async def surrogate_key(ctx: restate.ObjectContext) -> str:
    ctx.set("bad\udcffkey", 1)
    return "stored"


@limits.handler()
async def surrogate_error(ctx: restate.ObjectContext) -> None:
    raise TerminalError("bad \udcff message", 418)


@limits.handler()
async def surrogate_run_error(ctx: restate.ObjectContext) -> dict[str, Any]:
    def fail() -> None:
        raise TerminalError("run failed \ud800", 422)

    try:
        await ctx.run("fails", fail)
    except TerminalError as exc:
        return {"code": exc.status_code, "message": exc.message}
    return {"code": 0, "message": "no error"}


@limits.handler()
async def string_status(ctx: restate.ObjectContext) -> None:
    raise TerminalError("teapot", status_code="418")  # type: ignore[arg-type,unused-ignore]


@limits.handler()
async def huge_error(ctx: restate.ObjectContext, size: int) -> None:
    raise TerminalError("e" * size, 400)


app = restate.app([limits])
