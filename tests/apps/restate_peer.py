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


# A short inactivity timeout: over HTTP/2, a handler waiting this long is told to suspend (the tests see
# "suspended" as they do over HTTP/1.1, where every wait suspends at once).
QUIET = timedelta(milliseconds=500)
greeter = restate.Service("PeerGreeter", inactivity_timeout=QUIET)


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    _ledger(f"greet.attempt.{name}")  # outside ctx.run: counted once per attempt (each replays the handler)
    greeting = await ctx.run("pick greeting", lambda: "Hello")
    await ctx.sleep(timedelta(milliseconds=int(ctx.request().headers.get("x-sleep-ms", "50"))))
    return f"{greeting} {name}!"


@greeter.handler()
async def nap(ctx: restate.Context, ms: int) -> str:
    """A long durable sleep (the crash test kills the server in the middle of it)."""
    await ctx.run("before", lambda: _ledger(f"nap.before.{ms}"))
    await ctx.sleep(timedelta(milliseconds=ms))
    await ctx.run("after", lambda: _ledger(f"nap.after.{ms}"))
    return f"slept {ms} on {os.environ.get('PEER_NAME', 'a')}"


@greeter.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise restate.TerminalError(message, status_code=418)


@greeter.handler()
async def flaky(ctx: restate.Context, name: str) -> str:
    """Fails its first attempt with an ordinary exception (an ErrorMessage: retried by the engine)."""
    _ledger(f"flaky.{name}")
    path = os.environ.get("PEER_LEDGER", "")
    attempts = sum(1 for line in open(path) if f"flaky.{name}" in line) if path else 2
    if attempts < 2:
        raise ValueError("first attempt fails")
    return f"ok after {attempts} attempts"


@greeter.handler()
async def run_fails(ctx: restate.Context, message: str) -> str:
    def boom() -> str:
        raise restate.TerminalError(message, status_code=422)

    return await ctx.run("boom", boom)


@greeter.handler()
async def fire_and_attach(ctx: restate.Context, key: str) -> int:
    """A one-way call to PeerCounter/{key}/add, then attaches to it by its invocation id."""
    handle = ctx.generic_send("PeerCounter", "add", b"1", key=key)
    invocation_id = await handle.invocation_id()
    return await ctx.attach_invocation(invocation_id, type_hint=int)


@greeter.handler()
async def signal_other(ctx: restate.Context, target: str) -> str:
    ctx.resolve_signal(target, "go", "signalled")
    return "sent"


counter = restate.VirtualObject("PeerCounter", inactivity_timeout=QUIET)


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


@counter.handler()
async def put_blob(ctx: restate.ObjectContext, size: int) -> int:
    """A large state value: the next attempt's StartMessage carries it (past HTTP/2's flow-control window)."""
    ctx.set("blob", "x" * size)
    return size


@counter.handler(kind="shared")
async def blob_size(ctx: restate.ObjectSharedContext) -> int:
    return len(await ctx.get("blob", type_hint=str) or "")


@counter.handler()
async def wait_signal(ctx: restate.ObjectContext) -> str:
    """Waits on the named signal "go" (ctx.signal), sent by PeerGreeter/signal_other."""
    return await ctx.signal("go", type_hint=str)


# Lazy state: attempts start without the key's state; each read is a command the engine answers.
lazy = restate.VirtualObject("PeerLazy", inactivity_timeout=QUIET, enable_lazy_state=True)


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


signup = restate.Workflow("PeerSignup", inactivity_timeout=QUIET)


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
