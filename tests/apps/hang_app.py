"""A ``ctx.run`` that hangs on its first execution only (tests/e2e/test_abort_timeout.py).

Each execution appends a line to ``runs.log`` in a directory that comes in the request (outside the engine):
the first finds no ``hung`` marker there, creates it and never returns; later ones return at once. The
``sync`` variant blocks its executor thread instead, until the test creates ``release`` (bounded), since
a thread cannot be cancelled.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

import unbroken as restate

RELEASE_TIMEOUT_S = 60.0

hang = restate.Service("Hang")


def _log(directory: str, line: str) -> None:
    with open(os.path.join(directory, "runs.log"), "a") as f:
        f.write(line + "\n")


def _first_time(directory: str) -> bool:
    marker = os.path.join(directory, "hung")
    if os.path.exists(marker):
        return False
    with open(marker, "w"):
        pass
    return True


async def _async_step(directory: str) -> str:
    _log(directory, "started")
    if _first_time(directory):
        try:
            await asyncio.Event().wait()  # hangs: only an abort (cancellation) ends it
        except asyncio.CancelledError:
            _log(directory, "cancelled")
            raise
    _log(directory, "done")
    return "done"


def _sync_step(directory: str) -> str:
    _log(directory, "started")
    if _first_time(directory):
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        while not os.path.exists(os.path.join(directory, "release")) and time.monotonic() < deadline:
            time.sleep(0.01)
        _log(directory, "released")
        return "late"
    _log(directory, "done")
    return "done"


@hang.handler()
async def once(ctx: restate.Context, req: dict[str, str]) -> str:
    directory = req["dir"]
    if req.get("sync"):
        return await ctx.run("step", _sync_step, args=(directory,))
    return await ctx.run("step", _async_step, args=(directory,))


@hang.handler(inactivity_timeout=timedelta(milliseconds=300), abort_timeout=timedelta(milliseconds=700))
async def own_timeouts(ctx: restate.Context, req: dict[str, str]) -> str:
    """The same, with its timeouts set on the handler (the server's are the defaults: 1m and 10m)."""
    return await ctx.run("step", _async_step, args=(req["dir"],))


app = restate.app([hang])
