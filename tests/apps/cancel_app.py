"""Services for tests/e2e/test_cancel.py: cancellation of invocations whose ``ctx.run`` fails, runs whose
value cannot be serialized, runs never awaited, and call cycles.

Side effects are counted in files whose path comes in the request (outside the journal, so every
execution of an action shows, replays included). Actions that must stay in flight wait for a file.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken import TerminalError

WAIT_S = 30.0


def note(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text + "\n")


def wait_for(path: str) -> None:
    """Block (in the ctx.run thread) until ``path`` exists; bounded."""
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------- Saga
saga = restate.Service("Saga")


@saga.handler()
async def failing(ctx: restate.Context, path: str) -> str:
    """Step ``a`` always fails (retryable); on a terminal error (the cancel) compensate with ``b``."""

    def always_fails() -> None:
        note(path + ".a", "a")
        raise ValueError("step a always fails")

    try:
        await ctx.run("a", always_fails)
    except TerminalError as exc:
        text = f"undo {exc.status_code} {exc.message}"
        await ctx.run("b", lambda: note(path + ".b", text))
        raise
    return "unreachable"


@saga.handler()
async def slow_failing(ctx: restate.Context, path: str) -> str:
    """Step ``a`` fails once ``{path}.release-a`` exists; the compensation ``b`` ends once
    ``{path}.release-b`` exists: the test orders the cancel, a's failure and b's end."""

    def a() -> None:
        note(path + ".a", "a")
        wait_for(path + ".release-a")
        raise ValueError("step a failed")

    def b() -> None:
        note(path + ".b", "b")
        wait_for(path + ".release-b")

    try:
        await ctx.run("a", a)
    except TerminalError:
        await ctx.run("b", b)
        raise
    return "unreachable"


@saga.handler()
async def napping(ctx: restate.Context, path: str) -> str:
    """Sleep an hour; on the cancel run ``undo``, which ends once ``{path}.release`` exists."""

    def undo() -> None:
        note(path + ".undo", "undo")
        wait_for(path + ".release")

    try:
        await ctx.sleep(timedelta(hours=1), name="long nap")
    except TerminalError:
        await ctx.run("undo", undo)
        raise
    return "rested"


@saga.handler()
async def awaits_awakeable(ctx: restate.Context, path: str) -> Any:
    """Hand an awakeable's id out through a ctx.run (journaled), then wait on it."""
    aid, fut = ctx.awakeable()

    def publish() -> str:
        note(path, aid)
        return aid

    await ctx.run("publish", publish)
    return await fut


# ------------------------------------------------------------------------------------------ Steps
class Opaque:
    """No serde knows this type."""


steps = restate.Service("Steps")


@steps.handler()
async def unserializable(ctx: restate.Context, path: str) -> str:
    def make() -> Opaque:
        note(path, "made")
        return Opaque()

    await ctx.run("make opaque", make)
    return "unreachable"


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep, built without recursion (serializing it recurses)."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@steps.handler()
async def unserializable_output(ctx: restate.Context, req: dict[str, Any]) -> Any:
    """Returns a value the output serde cannot serialize (an Opaque, or a list nested too deep)."""
    note(req["path"], "ran")
    return nested(100_000) if req["deep"] else Opaque()


keeper = restate.VirtualObject("Keeper")


@keeper.handler()
async def keep(ctx: restate.ObjectContext, req: dict[str, Any]) -> str:
    """``ctx.set`` of a value its serde cannot serialize; the handler must not go on past it."""
    note(req["path"], "ran")
    ctx.set("thing", nested(100_000) if req["deep"] else Opaque())
    note(req["path"], "after set")
    return "unreachable"


@steps.handler()
async def flaky(ctx: restate.Context, path: str) -> str:
    """``charge`` fails until ``{path}.ok`` exists."""

    def charge() -> str:
        note(path, "charge")
        if not os.path.exists(path + ".ok"):
            raise ConnectionError("payment service unreachable")
        return "charged"

    return await ctx.run("charge", charge)


@steps.handler()
async def forgets(ctx: restate.Context, path: str) -> str:
    ctx.run("forgotten step", lambda: note(path, "ran"))  # not awaited: a bug the log must point at
    return "done"


# --------------------------------------------------------------------------------- A -> B -> A cycle
cyc = restate.VirtualObject("Cyc")
mid = restate.VirtualObject("Mid")


@cyc.handler()
async def outer(ctx: restate.ObjectContext, req: dict[str, str]) -> str:
    """A: call B, which calls back A on this very key (queued behind this handler's lock)."""
    return await ctx.object_call(middle, req["mid"], {"key": ctx.key(), "path": req["path"]})  # type: ignore[no-any-return]


@mid.handler()
async def middle(ctx: restate.ObjectContext, req: dict[str, str]) -> str:
    return await ctx.object_call(inner, req["key"], req["path"])  # type: ignore[no-any-return]


@cyc.handler()
async def inner(ctx: restate.ObjectContext, path: str) -> str:
    await ctx.run("inner side effect", lambda: note(path, "inner ran"))
    ctx.set("inner", "committed")
    return "inner done"


@cyc.handler(kind="shared")
async def peek(ctx: restate.ObjectSharedContext) -> Any:
    return await ctx.get("inner")


app = restate.app([saga, steps, cyc, mid, keeper])
