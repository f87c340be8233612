"""Handlers for tests/e2e/test_sdk_compat.py, written against restate-sdk's API (``import unbroken as restate``)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import unbroken as restate
from unbroken.serde import BytesSerde

log = restate.getLogger("compat.replay")
tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


@contextlib.asynccontextmanager
async def with_tenant() -> AsyncIterator[None]:
    token = tenant.set("acme")
    try:
        yield
    finally:
        tenant.reset(token)


compat = restate.Service("Compat", invocation_context_managers=[with_tenant])
raw = restate.Service("Raw")
box = restate.VirtualObject("CBox")


@box.handler()
async def put(ctx: restate.ObjectContext, value: object) -> None:
    ctx.set("v", value)


@box.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> object:
    return await ctx.get("v")


@compat.handler()
async def slow(ctx: restate.Context) -> str:
    await ctx.sleep(timedelta(hours=1))
    return "woke"


@compat.handler()
async def cancel_child(ctx: restate.Context) -> str:
    """Starts ``slow``, cancels it through its future, returns how the child ended."""
    fut = ctx.service_call(slow, arg=None)
    await fut.cancel_invocation()
    try:
        await fut
    except restate.TerminalError as exc:
        return f"child ended: {exc.status_code} {exc.message}"
    return "child finished"


@compat.handler()
async def cancel_sent(ctx: restate.Context) -> str:
    handle = ctx.service_send(slow, arg=None)
    await handle.cancel_invocation()
    return await handle.invocation_id()


@compat.handler()
async def wait_signal(ctx: restate.Context, box_key: str) -> str:
    ctx.object_send(put, box_key, arg=ctx.request().id)  # tell the test our id
    value = await ctx.signal("approved", type_hint=str)
    try:
        await ctx.signal("second")
    except restate.TerminalError as exc:
        return f"{value}; second rejected: {exc.message} ({exc.status_code})"
    return f"{value}; second resolved"


@compat.handler()
async def send_signals(ctx: restate.Context, target: str) -> None:
    ctx.resolve_signal(target, "approved", "yes")
    ctx.reject_signal(target, "second", "no way", 403)


@raw.handler(
    accept="application/octet-stream",
    content_type="application/octet-stream",
    input_serde=BytesSerde(),
    output_serde=BytesSerde(),
)
async def echo(ctx: restate.Context, data: bytes) -> bytes:
    return data[::-1]


@raw.handler(accept="text/*", content_type="text/plain", input_serde=BytesSerde(), output_serde=BytesSerde())
async def upper(ctx: restate.Context, data: bytes) -> bytes:
    return data.upper()


@compat.handler()
async def exits_in_run(ctx: restate.Context, marker: str) -> str:
    """A step that raises SystemExit on its first attempt (the marker file does not exist yet)."""

    def step() -> str:
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(3)
        return "second attempt"

    return await ctx.run("exits", step)


@compat.handler()
async def scoped(ctx: restate.Context) -> str:
    return await ctx.scope("tenant1").service_call(slow, arg=None)


@compat.handler()
async def replay_logs(ctx: restate.Context) -> str:
    log.warning("before-step")
    await ctx.sleep(
        timedelta(milliseconds=1500)
    )  # suspends (short inactivity timeout): the replay re-runs the line
    log.warning("after-step")
    return "done"


@compat.handler()
async def whose(ctx: restate.Context) -> str:
    return tenant.get()  # set by the service's invocation_context_managers


_background: set[asyncio.Task[None]] = set()


@compat.handler()
async def finished_event(ctx: restate.Context, marker: str) -> bool:
    """Writes ``marker`` once ``attempt_finished_event`` is set (after this attempt ended)."""
    event = ctx.request().attempt_finished_event
    assert event is not None

    async def note() -> None:
        await event.wait()
        open(marker, "w").close()

    task = asyncio.get_running_loop().create_task(note())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return event.is_set()


app = restate.app([compat, raw, box])

if __name__ == "__main__":  # an app's own __main__ serving it with hypercorn, as restate-sdk users write it
    import hypercorn

    conf = hypercorn.Config()
    conf.bind = [sys.argv[1]]
    asyncio.run(hypercorn.asyncio.serve(app, conf))  # type: ignore[attr-defined]
