"""Services written with Unbroken's SDK, served as a deployment of the real Restate server
(tests/e2e/test_on_restate_server.py): ``app`` is the App as it is (both roles: protocol requests go to the
deployment endpoint), served by hypercorn over h2c; ``deployment`` is ``app.deployment()`` (the protocol
only), served by uvicorn over HTTP/1.1 (request/response)."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import unbroken as restate


def _ledger(step: str) -> str:
    """Count a side effect in the file $PEER_LEDGER (checked by the tests from outside both processes)."""
    path = os.environ.get("PEER_LEDGER")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"step": step}) + "\n")
    return step


def _count(step: str) -> int:
    path = os.environ.get("PEER_LEDGER", "")
    if not path or not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if json.loads(line)["step"] == step)


greeter = restate.Service("Greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    _ledger(f"greet.attempt.{name}")  # outside ctx.run: counted once per attempt (each replays the handler)
    greeting = await ctx.run("pick greeting", lambda: "Hello")
    await ctx.sleep(timedelta(milliseconds=50))
    return f"{greeting} {name}!"


@greeter.handler()
async def nap(ctx: restate.Context, ms: int) -> str:
    await ctx.run("before", lambda: _ledger(f"nap.before.{ms}"))
    await ctx.sleep(timedelta(milliseconds=ms))
    await ctx.run("after", lambda: _ledger(f"nap.after.{ms}"))
    return f"slept {ms}"


@greeter.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise restate.TerminalError(message, status_code=418)


@greeter.handler()
async def flaky(ctx: restate.Context, name: str) -> str:
    """Fails its first attempt with an ordinary exception (an ErrorMessage: retried by the server)."""
    _ledger(f"flaky.{name}")
    attempts = _count(f"flaky.{name}")
    if attempts < 2:
        raise ValueError("first attempt fails")
    return f"ok after {attempts} attempts"


@greeter.handler()
async def run_retries(ctx: restate.Context, name: str) -> str:
    """A ctx.run failing twice, then succeeding: retried by the attempts the server starts."""

    def step() -> str:
        _ledger(f"run_retries.{name}")
        if _count(f"run_retries.{name}") < 3:
            raise RuntimeError("not yet")
        return "third time"

    return await ctx.run("step", step)


@greeter.handler()
async def run_fails(ctx: restate.Context, message: str) -> str:
    def boom() -> str:
        raise restate.TerminalError(message, status_code=422)

    return await ctx.run("boom", boom)


@greeter.handler()
async def call_counter(ctx: restate.Context, key: str) -> int:
    """A call and a send to the virtual object (two invocations of the same deployment)."""
    ctx.object_send(add, key, 10)
    return await ctx.object_call(add, key, 1)


@greeter.handler()
async def fire_and_attach(ctx: restate.Context, key: str) -> int:
    handle = ctx.object_send(add, key, 1)
    invocation_id = await handle.invocation_id()
    return await ctx.attach_invocation(invocation_id, type_hint=int)


@greeter.handler()
async def signal_other(ctx: restate.Context, target: str) -> str:
    ctx.resolve_signal(target, "go", "signalled")
    return "sent"


@greeter.handler()
async def count_once(ctx: restate.Context, name: str) -> int:
    """Idempotency: with the same key, the side effect runs once."""
    await ctx.run("count", lambda: _ledger(f"once.{name}"))
    return _count(f"once.{name}")


counter = restate.VirtualObject("Counter")


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
async def block(ctx: restate.ObjectContext) -> str:
    """Holds the key's lock until its awakeable is resolved (the exclusive/shared test)."""
    name, promise = ctx.awakeable(type_hint=str)
    ctx.set("awakeable", name)
    return await promise


@counter.handler(kind="shared")
async def awakeable_of(ctx: restate.ObjectSharedContext) -> str | None:
    return await ctx.get("awakeable", type_hint=str)


@counter.handler()
async def wait_signal(ctx: restate.ObjectContext) -> str:
    return await ctx.signal("go", type_hint=str)


@counter.handler()
async def book_trip(ctx: restate.ObjectContext, trip: str) -> str:
    """Saga: book, then wait; a cancel undoes the booking (the compensation is a ctx.run too)."""
    await ctx.run("book", lambda: _ledger(f"book.{trip}"))
    try:
        name, promise = ctx.awakeable(type_hint=str)
        ctx.set("awakeable", name)
        return await promise
    except restate.TerminalError:
        await ctx.run("undo", lambda: _ledger(f"undo.{trip}"))
        raise


@counter.handler()
async def put_blob(ctx: restate.ObjectContext, size: int) -> int:
    """A large state value: the next attempt's StartMessage carries it (past HTTP/2's flow-control window)."""
    ctx.set("blob", "x" * size)
    return size


@counter.handler(kind="shared")
async def blob_size(ctx: restate.ObjectSharedContext) -> int:
    return len(await ctx.get("blob", type_hint=str) or "")


# Lazy state: attempts start without the key's state; each read is a command the server answers.
lazy = restate.VirtualObject("Lazy", enable_lazy_state=True)


@lazy.handler()
async def put(ctx: restate.ObjectContext, value: str) -> list[str]:
    previous = await ctx.get("v", type_hint=str)
    ctx.set("v", value)
    ctx.set(f"seen.{previous}", True)
    return sorted(await ctx.state_keys())


@lazy.handler()
async def wipe(ctx: restate.ObjectContext) -> list[str]:
    ctx.clear_all()
    return sorted(await ctx.state_keys())


signup = restate.Workflow("Signup")


@signup.main()
async def run(ctx: restate.WorkflowContext, email: str) -> str:
    ctx.set("email", email)
    code = await ctx.promise("code", type_hint=str).value()
    ctx.set("confirmed", True)
    return f"{email} confirmed with {code}"


@signup.handler()
async def confirm(ctx: restate.WorkflowSharedContext, code: str) -> None:
    await ctx.promise("code", type_hint=str).resolve(code)


@signup.handler()
async def peek(ctx: restate.WorkflowSharedContext) -> str | None:
    return await ctx.promise("code", type_hint=str).peek()


app = restate.app([greeter, counter, lazy, signup])
deployment = app.deployment()
