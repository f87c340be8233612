"""Services for the e2e semantics tests, written against restate-sdk's API (``import unbroken as restate``).

Observation helpers: ``Box`` is a virtual object the tests read over HTTP (handlers publish awakeable ids
and side effects into it); files whose path comes in the request count things that must stay outside
the journal (attempts of a ``ctx.run`` action, handler attempts).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

import unbroken as restate
from unbroken import TerminalError


def bump(path: str) -> int:
    """Append one line to ``path`` and return how many lines it has now (an attempt counter)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("x\n")
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def append_line(path: str, value: Any) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(value) + "\n")


# --------------------------------------------------------------------------------------------- Box
box = restate.VirtualObject("Box")


@box.handler()
async def put(ctx: restate.ObjectContext, value: Any) -> None:
    ctx.set("value", value)


@box.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> Any:
    return await ctx.get("value")


@box.handler()
async def append(ctx: restate.ObjectContext, item: Any) -> list[Any]:
    items = (await ctx.get("items")) or []
    items.append(item)
    ctx.set("items", items)
    return items


@box.handler(kind="shared")
async def items(ctx: restate.ObjectSharedContext) -> list[Any]:
    return (await ctx.get("items")) or []


@box.handler()
async def stamp(ctx: restate.ObjectContext, label: str) -> float:
    """Record when (server wall clock, ms) this invocation ran."""
    at = await ctx.run("now", lambda: time.time() * 1000)
    stamps = (await ctx.get("stamps")) or []
    stamps.append({"label": label, "at": at})
    ctx.set("stamps", stamps)
    return at


@box.handler(kind="shared")
async def stamps(ctx: restate.ObjectSharedContext) -> list[Any]:
    return (await ctx.get("stamps")) or []


# -------------------------------------------------------------------------------------------- Echo
echo_svc = restate.Service("Echo")


@echo_svc.handler()
async def echo(ctx: restate.Context, value: Any) -> Any:
    return value


@echo_svc.handler()
async def void(ctx: restate.Context, value: Any) -> None:
    del value


@echo_svc.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise TerminalError(message, 418)


@echo_svc.handler()
async def wait_for(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
    """Publish an awakeable id to ``Box/{req.box}``, wait for it; a rejection is caught and reported."""
    if "attempts" in req:
        bump(req["attempts"])  # outside the journal: counts how often the handler body starts
    aid, fut = ctx.awakeable()
    ctx.object_send(put, req["box"], {"aid": aid, "id": ctx.request().id})
    try:
        got = await fut
    except TerminalError as exc:
        return {"input": req.get("value"), "rejected": exc.message, "code": exc.status_code}
    return {"input": req.get("value"), "resolved": got}


class Person(BaseModel):
    name: str
    age: int


@echo_svc.handler()
async def greet_person(ctx: restate.Context, person: Person) -> str:
    return f"{person.name} is {person.age}"


# -------------------------------------------------------------------------------------------- Lock
lock = restate.VirtualObject("Lock")


async def _log(ctx: restate.ObjectContext, entry: str) -> list[str]:
    log = (await ctx.get("log")) or []
    log.append(entry)
    ctx.set("log", log)
    return log


@lock.handler()
async def hold(ctx: restate.ObjectContext, box_key: str) -> list[str]:
    """Take the key's lock and keep it until the awakeable published to ``Box/{box_key}`` resolves."""
    await _log(ctx, "hold-start")
    aid, fut = ctx.awakeable()
    ctx.object_send(put, box_key, {"aid": aid, "id": ctx.request().id})
    await fut
    return await _log(ctx, "hold-end")


@lock.handler()
async def step(ctx: restate.ObjectContext, label: str) -> list[str]:
    return await _log(ctx, label)


@lock.handler(kind="shared")
async def peek(ctx: restate.ObjectSharedContext) -> list[str]:
    return (await ctx.get("log")) or []


@lock.handler()
async def state_ops(ctx: restate.ObjectContext, ops: list[list[Any]]) -> dict[str, Any]:
    """Apply ``[["set", k, v] | ["clear", k] | ["clear_all"]]`` and report keys and values seen after."""
    for op in ops:
        if op[0] == "set":
            ctx.set(op[1], op[2])
        elif op[0] == "clear":
            ctx.clear(op[1])
        elif op[0] == "clear_all":
            ctx.clear_all()
        else:
            raise TerminalError(f"unknown op {op[0]!r}", 400)
    keys = sorted(await ctx.state_keys())
    return {"keys": keys, "values": {k: await ctx.get(k) for k in keys}}


@lock.handler(kind="shared")
async def read_state(ctx: restate.ObjectSharedContext) -> dict[str, Any]:
    keys = sorted(await ctx.state_keys())
    return {"keys": keys, "values": {k: await ctx.get(k) for k in keys}}


# ---------------------------------------------------------------------------------------- Approval
wf = restate.Workflow("Approval")


@wf.main()
async def run(ctx: restate.WorkflowContext, name: str) -> str:
    ctx.set("status", "waiting")
    decision = await ctx.promise("decision").value()
    ctx.set("status", f"decided:{decision}")
    return f"{name}:{decision}"


@wf.handler()
async def decide(ctx: restate.WorkflowSharedContext, decision: str) -> str:
    await ctx.promise("decision").resolve(decision)
    return "ok"


@wf.handler(name="peek")
async def peek_decision(ctx: restate.WorkflowSharedContext) -> Any:
    return await ctx.promise("decision").peek()


@wf.handler()
async def status(ctx: restate.WorkflowSharedContext) -> Any:
    return await ctx.get("status")


# ------------------------------------------------------------------------------------------ Caller
caller = restate.Service("Caller")


@caller.handler()
async def call_object(ctx: restate.Context, req: dict[str, str]) -> list[str]:
    return await ctx.object_call(step, req["key"], req["label"])


@caller.handler()
async def send_then_fail_once(ctx: restate.Context, req: dict[str, str]) -> str:
    """One-way send, then a retryable failure on the first attempt: the retry must not send again."""
    handle = ctx.object_send(append, req["key"], req["label"])
    child = await handle.invocation_id()
    if bump(req["attempts"]) == 1:
        raise RuntimeError("transient failure after the send")
    return child


@caller.handler()
async def delayed_send(ctx: restate.Context, req: dict[str, Any]) -> float:
    sent_at = await ctx.run("sent at", lambda: time.time() * 1000)
    ctx.object_send(stamp, req["key"], req["label"], send_delay=timedelta(milliseconds=req["delay_ms"]))
    return sent_at


@caller.handler()
async def flaky_run(ctx: restate.Context, req: dict[str, Any]) -> int:
    """A ``ctx.run`` whose action fails ``fail_times`` times, then returns its attempt number."""

    def action() -> int:
        n = bump(req["path"])
        if n <= req["fail_times"]:
            raise ConnectionError(f"transient failure #{n}")
        return n

    return await ctx.run("flaky", action)


@caller.handler()
async def run_max_attempts(ctx: restate.Context, req: dict[str, Any]) -> int:
    def action() -> int:
        n = bump(req["path"])
        raise ValueError(f"always failing, attempt {n}")

    return await ctx.run("doomed", action, max_attempts=2)


@caller.handler()
async def select_call_vs_sleep(ctx: restate.Context, value: str) -> list[Any]:
    call = ctx.service_call(echo, value)
    nap = ctx.sleep(timedelta(seconds=30))
    return await restate.select(call=call, nap=nap)


@caller.handler()
async def select_sleep_vs_awakeable(ctx: restate.Context, box_key: str) -> list[Any]:
    _aid, fut = ctx.awakeable()
    nap = ctx.sleep(timedelta(milliseconds=200))
    return await restate.select(never=fut, nap=nap)


@caller.handler()
async def gather_calls(ctx: restate.Context, values: list[Any]) -> list[Any]:
    calls = [ctx.service_call(echo, v) for v in values]
    nap = ctx.sleep(timedelta(milliseconds=100))
    done = await restate.gather(*calls, nap)
    return [await f for f in done[:-1]]


@caller.handler()
async def randoms(ctx: restate.Context, path: str) -> dict[str, Any]:
    """Random values, recorded outside the journal on every attempt; the first attempt fails after."""
    values = {
        "random": ctx.random().random(),
        "int": ctx.random().randint(0, 1 << 60),
        "uuid": str(ctx.uuid()),
    }
    values["time"] = await ctx.time()  # journaled: the replay sees the first attempt's timestamp
    append_line(path, values)
    with open(path, encoding="utf-8") as f:
        attempts = sum(1 for _ in f)
    if attempts == 1:
        raise RuntimeError("fail once after drawing random values")
    return values


@caller.handler()
async def cancellable(ctx: restate.Context, req: dict[str, str]) -> str:
    """Wait on an awakeable; on a terminal error (cancel) run a compensation, then fail."""
    aid, fut = ctx.awakeable()
    ctx.object_send(put, req["box"], {"aid": aid, "id": ctx.request().id})
    try:
        return await fut
    except TerminalError as exc:
        note = f"compensated {exc.status_code} {exc.message}"
        await ctx.run("compensate", lambda: append_line(req["path"], note))
        raise


@caller.handler()
async def parent(ctx: restate.Context, req: dict[str, str]) -> str:
    """Call ``cancellable`` and wait for it (cancelling the parent must cancel this call)."""
    return await ctx.service_call(cancellable, req)


app = restate.app([box, echo_svc, lock, wf, caller])
