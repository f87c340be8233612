"""Mixed workload for the crash torture (tests/torture/driver.py), written against restate-sdk's API.

Every ``ctx.run`` action appends one JSON line ``{inv, step, token, pid, t}`` to a ledger file *outside the
engine* (``TORTURE_LEDGER``, set by the driver) with a single ``O_APPEND`` write, and returns its token: the
driver compares what the journal says each step returned with what really executed, and when.

* ``Counter`` (object): ``add`` (exclusive) applies one increment per idempotency key and records the key
  in state (``applied``, the order exclusive handlers ran in); ``get`` (shared) reads both.
* ``Flow`` (workflow): ``run`` does a step, awaits the ``approval`` promise that the shared ``approve``
  resolves, does a step.
* ``Saga``: two steps; on a ``TerminalError`` in the third, the compensations run in reverse and the
  invocation fails with a message listing every token.
* ``Sleeper``: a step, a durable sleep of 50-300 ms, a step.
* ``FanOut``: gathers calls to ``Worker.work``, then a one-way send and a delayed send to the ``Sink``
  object (which records each item it gets, exactly-once is checked from its state).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken import TerminalError

LEDGER_ENV = "TORTURE_LEDGER"


def ledger_append(inv: str, step: str, token: str, **fields: Any) -> None:
    row = {"inv": inv, "step": step, "token": token, "pid": os.getpid(), "t": time.time(), **fields}
    fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def step(ctx: Any, name: str, fail: bool = False, **fields: Any) -> Any:
    """``ctx.run(name, ...)`` whose action records its execution and returns a fresh token."""
    inv = ctx.request().id

    def action() -> str:
        token = uuid.uuid4().hex
        ledger_append(inv, name, token, **fields)
        if fail:
            raise TerminalError(f"{name} refused ({token})", status_code=409)
        return token

    return ctx.run(name, action)


# ------------------------------------------------------------------------------------------- Counter
counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, req: dict[str, Any]) -> dict[str, Any]:
    token = await step(ctx, "apply", key=ctx.key(), n=req["n"])
    applied: list[str] = (await ctx.get("applied")) or []
    applied.append(req["n"])
    ctx.set("applied", applied)
    ctx.set("count", len(applied))
    return {"count": len(applied), "token": token}


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> dict[str, Any]:
    return {"count": (await ctx.get("count")) or 0, "applied": (await ctx.get("applied")) or []}


# ---------------------------------------------------------------------------------------------- Flow
flow = restate.Workflow("Flow")


@flow.main()
async def run(ctx: restate.WorkflowContext, req: dict[str, Any]) -> dict[str, Any]:
    prepare = await step(ctx, "prepare")
    approval = await ctx.promise("approval").value()
    finish = await step(ctx, "finish")
    return {"prepare": prepare, "approval": approval, "finish": finish}


@flow.handler()
async def approve(ctx: restate.WorkflowSharedContext, value: str) -> None:
    await ctx.promise("approval").resolve(value)


# ---------------------------------------------------------------------------------------------- Saga
saga = restate.Service("Saga")


@saga.handler()
async def book(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
    tokens: dict[str, str] = {}
    compensations: list[str] = []
    try:
        tokens["reserve_a"] = await step(ctx, "reserve_a")
        compensations.append("undo_a")
        tokens["reserve_b"] = await step(ctx, "reserve_b")
        compensations.append("undo_b")
        tokens["charge"] = await step(ctx, "charge", fail=bool(req["fail"]))
    except TerminalError:
        for name in reversed(compensations):
            tokens[name] = await step(ctx, name)
        raise TerminalError(json.dumps(tokens, sort_keys=True), status_code=409) from None
    return tokens


# ------------------------------------------------------------------------------------------- Sleeper
sleeper = restate.Service("Sleeper")


@sleeper.handler()
async def nap(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
    inv = ctx.request().id

    def stamp(name: str) -> Any:
        def action() -> float:
            now = time.time()
            ledger_append(inv, name, repr(now))
            return now

        return action

    before = await ctx.run("before", stamp("before"))
    await ctx.sleep(timedelta(milliseconds=int(req["ms"])))
    after = await ctx.run("after", stamp("after"))
    return {"before": before, "after": after, "ms": req["ms"]}


# -------------------------------------------------------------------------------------- FanOut, Sink
worker = restate.Service("Worker")


@worker.handler()
async def work(ctx: restate.Context, part: int) -> dict[str, Any]:
    return {"part": part, "token": await step(ctx, "work")}


sink = restate.VirtualObject("Sink")


@sink.handler()
async def record(ctx: restate.ObjectContext, item: str) -> None:
    items: list[str] = (await ctx.get("items")) or []
    items.append(item)
    ctx.set("items", items)


@sink.handler(kind="shared")
async def items(ctx: restate.ObjectSharedContext) -> list[str]:
    return (await ctx.get("items")) or []


fanout = restate.Service("FanOut")


@fanout.handler()
async def fan(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
    me = ctx.request().id
    calls = [ctx.service_call(work, arg=i) for i in range(int(req["n"]))]
    results = await restate.gather(*calls)
    parts = [await c for c in results]
    ctx.object_send(record, key=req["sink"], arg=f"{me}:oneway")
    ctx.object_send(record, key=req["sink"], arg=f"{me}:delayed", send_delay=timedelta(milliseconds=200))
    return {"parts": parts}


app = restate.app([counter, flow, saga, sleeper, worker, sink, fanout])
