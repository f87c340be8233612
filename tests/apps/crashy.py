"""Handlers for the crash tests (tests/e2e/test_crash.py).

Every ``ctx.run`` action appends one line per execution to a ledger file *outside the engine*, in a
directory that comes in the request, so a test can count from outside how often each side effect ran,
whatever the engine claims. Actions that must be killed mid-flight write a marker file and then block
until the test creates a "go" file, so the SIGKILL lands exactly while they run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from typing import Any

import unbroken as restate

GO_TIMEOUT_S = 30.0


def ledger(directory: str, step: str, event: str, **fields: Any) -> None:
    """Append one JSON line with a single O_APPEND write: it survives a SIGKILL once write() returned."""
    line = json.dumps({"step": step, "event": event, "pid": os.getpid(), "t": time.time(), **fields}) + "\n"
    fd = os.open(os.path.join(directory, "ledger.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def touch(directory: str, name: str) -> None:
    with open(os.path.join(directory, name), "a"):
        pass


def wait_for_go(directory: str, name: str = "go") -> None:
    """Block (in the run's executor thread) until the test creates the go file; bounded."""
    deadline = time.monotonic() + GO_TIMEOUT_S
    path = os.path.join(directory, name)
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def quick_step(directory: str, step: str) -> Any:
    """An action that records its execution and returns a token unique to that execution."""

    def action() -> str:
        token = uuid.uuid4().hex
        ledger(directory, step, "done", token=token)
        return token

    return action


def blocking_step(directory: str, step: str) -> Any:
    """An action that says it started (ledger + marker file), waits for "go", then records its result."""

    def action() -> str:
        token = uuid.uuid4().hex
        ledger(directory, step, "start", token=token)
        touch(directory, f"{step}.running")
        wait_for_go(directory)
        ledger(directory, step, "done", token=token)
        return token

    return action


# ----------------------------------------------------------------------------------- services
steps = restate.Service("Steps")


@steps.handler()
async def blocking(ctx: restate.Context, req: dict[str, str]) -> dict[str, str]:
    """(a) The first and only step blocks: kill while it runs."""
    token = await ctx.run("block", blocking_step(req["dir"], "block"))
    return {"block": token}


@steps.handler()
async def pipeline(ctx: restate.Context, req: dict[str, str]) -> dict[str, str]:
    """(b) A quick step, then a blocking one: kill after the first is durable, while the second runs."""
    first = await ctx.run("first", quick_step(req["dir"], "first"))
    second = await ctx.run("second", blocking_step(req["dir"], "second"))
    return {"first": first, "second": second}


@steps.handler()
async def quick(ctx: restate.Context, req: dict[str, str]) -> dict[str, str]:
    """Two quick steps (fault-point tests: the crash comes from the engine, not from the test)."""
    first = await ctx.run("first", quick_step(req["dir"], "first"))
    second = await ctx.run("second", quick_step(req["dir"], "second"))
    return {"first": first, "second": second}


sleeper = restate.VirtualObject("Sleeper")


@sleeper.handler()
async def nap(ctx: restate.ObjectContext, req: dict[str, Any]) -> dict[str, float]:
    """(c) A step, a durable sleep, a step. ``phase`` says when the sleep is journaled."""
    directory = req["dir"]

    def stamp(step: str) -> Any:
        def action() -> float:
            now = time.time()
            ledger(directory, step, "done", at=now)
            return now

        return action

    before = await ctx.run("before", stamp("before"))
    nap = ctx.sleep(timedelta(seconds=float(req["seconds"])))  # the Sleep command is issued here
    ctx.set("phase", "sleeping")  # committed after the Sleep command: observing it proves the timer is stored
    await nap
    after = await ctx.run("after", stamp("after"))
    ctx.set("phase", "done")
    return {"before": before, "after": after}


@sleeper.handler(kind="shared")
async def phase(ctx: restate.ObjectSharedContext) -> str | None:
    return await ctx.get("phase")


approval = restate.Workflow("Approval")


@approval.main()
async def run(ctx: restate.WorkflowContext, req: dict[str, str]) -> dict[str, str]:
    """(d) A step, then wait on a durable promise that the ``approve`` handler resolves, then a step."""
    directory = req["dir"]
    before = await ctx.run("before", quick_step(directory, "before"))
    decision = ctx.promise("decision").value()  # the GetPromise command is issued here
    ctx.set("phase", "awaiting")  # committed after GetPromise: observing it proves the wait is stored
    value = await decision
    after = await ctx.run("after", quick_step(directory, "after"))
    return {"before": before, "decision": value, "after": after}


@approval.handler()
async def approve(ctx: restate.WorkflowSharedContext, value: str) -> None:
    await ctx.promise("decision").resolve(value)


@approval.handler()
async def status(ctx: restate.WorkflowSharedContext) -> str | None:
    return await ctx.get("phase")


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
    """(e) Increment by one; the run records which request is being applied (and is a bit slow, like an
    external call, so that the kill lands while increments are still queued)."""
    directory, n = req["dir"], req["n"]

    def record() -> None:
        ledger(directory, "add", "done", n=n)
        time.sleep(0.01)

    await ctx.run("record", record)
    count = (await ctx.get("count") or 0) + 1
    ctx.set("count", count)
    return count


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return await ctx.get("count") or 0


app = restate.app([steps, sleeper, approval, counter])
