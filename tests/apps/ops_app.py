"""Services for the operator tests: the CLI (tests/e2e/test_cli.py), explain (test_explain.py) and
retention (test_retention.py).

Handlers that must stay unfinished publish an awakeable id into ``Inbox/{box}`` (read over HTTP by the
test) and wait on it. ``Flaky`` handlers fail until a file exists; files count attempts outside the
journal.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken import TerminalError

# ------------------------------------------------------------------------------------------- Inbox
inbox = restate.VirtualObject("Inbox")


@inbox.handler()
async def put(ctx: restate.ObjectContext, value: Any) -> None:
    ctx.set("value", value)


@inbox.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> Any:
    return await ctx.get("value")


# ----------------------------------------------------------------------------------------- Greeter
greeter = restate.Service("Greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    return f"Hello {name}!"


@greeter.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise TerminalError(message, 418)


@greeter.handler()
async def headers(ctx: restate.Context) -> dict[str, str]:
    return {k: v for k, v in ctx.request().headers.items() if k.startswith("x-")}


@greeter.handler()
async def fresh(ctx: restate.Context, label: str) -> dict[str, str]:
    """A new random value per execution: a re-run is told apart from a stored result."""
    return {"label": label, "run": str(ctx.uuid())}


# ------------------------------------------------------------------------------------------ Waiter
waiter = restate.Service("Waiter")


@waiter.handler()
async def wait(ctx: restate.Context, box: str) -> Any:
    """Publish an awakeable id to ``Inbox/{box}`` and wait for it."""
    aid, fut = ctx.awakeable()
    ctx.object_send(put, box, {"aid": aid, "id": ctx.request().id})
    return await fut


@waiter.handler()
async def nap(ctx: restate.Context, seconds: float) -> str:
    await ctx.sleep(timedelta(seconds=seconds), name="long nap")
    return "rested"


@waiter.handler()
async def relay(ctx: restate.Context, box: str) -> Any:
    """Call ``wait`` and return what it returns (one hop of a call chain)."""
    return await ctx.service_call(wait, box)


@waiter.handler()
async def relay_twice(ctx: restate.Context, box: str) -> Any:
    """Call ``relay`` (two hops)."""
    return await ctx.service_call(relay, box)


@waiter.handler()
async def until_file(ctx: restate.Context, path: str) -> str:
    """Running, inside a ``ctx.run`` that waits (up to 60 s) for ``path`` to exist."""

    def poll() -> str:
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        return "found" if os.path.exists(path) else "gave up"

    return await ctx.run("wait for file", poll)


# ------------------------------------------------------------------------------------------- Flaky
flaky = restate.Service("Flaky")


def _fail_unless(path: str) -> None:
    with open(path + ".attempts", "a", encoding="utf-8") as f:
        f.write("x\n")
    if not os.path.exists(path):
        raise RuntimeError(f"{os.path.basename(path)} is missing")


@flaky.handler()
async def needs_file(ctx: restate.Context, path: str) -> str:
    """Fails (retryable) until ``path`` exists: with the server's default retry policy."""
    _fail_unless(path)
    return "ok"


@flaky.handler(
    invocation_retry_policy=restate.InvocationRetryPolicy(
        initial_interval=timedelta(hours=1),
        max_attempts=5,
        on_max_attempts="pause",
    )
)
async def slow_retry(ctx: restate.Context, path: str) -> str:
    """Fails in a ``ctx.run`` until ``path`` exists; the next retry is an hour away."""
    await ctx.run("check file", lambda: _fail_unless(path))
    return "ok"


@flaky.handler(
    invocation_retry_policy=restate.InvocationRetryPolicy(
        initial_interval=timedelta(milliseconds=20),
        max_attempts=2,
        on_max_attempts="pause",
    )
)
async def give_up(ctx: restate.Context, path: str) -> str:
    """Fails until ``path`` exists; paused after 2 attempts."""
    _fail_unless(path)
    return "ok"


# ----------------------------------------------------------------------------------------- Counter
counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    total = (await ctx.get("total")) or 0
    total += n
    ctx.set("total", total)
    return total


@counter.handler()
async def hold(ctx: restate.ObjectContext, box: str) -> Any:
    """Hold the key's lock until the awakeable published to ``Inbox/{box}`` resolves."""
    aid, fut = ctx.awakeable()
    ctx.object_send(put, box, {"aid": aid, "id": ctx.request().id})
    return await fut


@counter.handler(kind="shared")
async def total(ctx: restate.ObjectSharedContext) -> int:
    return (await ctx.get("total")) or 0


# ---------------------------------------------------------------------------------------- Approval
approval = restate.Workflow("Approval")


@approval.main()
async def run(ctx: restate.WorkflowContext, doc: str) -> str:
    ctx.set("doc", doc)
    decision = await ctx.promise("decision").value()
    ctx.set("decision", decision)
    return f"{doc}: {decision}"


@approval.handler()
async def decide(ctx: restate.WorkflowSharedContext, decision: str) -> str:
    await ctx.promise("decision").resolve(decision)
    return "ok"


app = restate.app([inbox, greeter, waiter, flaky, counter, approval])
