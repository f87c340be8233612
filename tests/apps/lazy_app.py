"""A virtual object with Restate's lazy state (tests/e2e/test_lazy_state.py): its attempts start without
the key's state and read what they use through commands the engine answers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import unbroken as restate

GO_TIMEOUT_S = 30.0


def gate(directory: str) -> Callable[[], int]:
    """An action that appends a line to ``gate.runs`` (one per execution), then waits for ``go`` (bounded)."""

    def action() -> int:
        with open(os.path.join(directory, "gate.runs"), "a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + GO_TIMEOUT_S
        while not os.path.exists(os.path.join(directory, "go")):
            if time.monotonic() > deadline:
                raise TimeoutError("the go file never appeared")
            time.sleep(0.01)
        return os.getpid()

    return action


box = restate.VirtualObject("LazyBox", enable_lazy_state=True)


@box.handler()
async def fill(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
    """A large state: ``n`` entries of ``size`` bytes (none of which ``add`` reads)."""
    for i in range(req["n"]):
        ctx.set(f"blob{i}", "x" * req["size"])
    return int(req["n"])


@box.handler()
async def add(ctx: restate.ObjectContext, req: dict[str, Any]) -> dict[str, Any]:
    """Read, write, read back; with ``dir``, a step that blocks until the test says go (a kill lands there)."""
    before = await ctx.get("count", type_hint=int) or 0
    ctx.set("count", before + req["by"])
    if "dir" in req:
        await ctx.run("gate", gate(req["dir"]))
    after = await ctx.get("count", type_hint=int)
    keys = [k for k in await ctx.state_keys() if not k.startswith("blob")]
    return {"before": before, "after": after, "keys": keys}


@box.handler(kind="shared")
async def count(ctx: restate.ObjectSharedContext) -> int | None:
    return await ctx.get("count", type_hint=int)  # type: ignore[no-any-return]


app = restate.app([box])
