"""Sessions that evict themselves after a period of inactivity, using durable delayed messages.

Every ``touch``/``put`` bumps a generation counter, stores the time of the activity and sends the
object a delayed ``expire`` message carrying that generation. When the message arrives (even after a
restart: the timer is durable) ``expire`` clears the session only if nothing happened since, i.e.
the generation it carries is still the current one; otherwise a later message will handle it.

The inactivity timeout is ``SESSION_TTL_MS`` (milliseconds, read at import; default 30 minutes).

    SESSION_TTL_MS=5000 unbroken serve examples/session_eviction.py
    curl localhost:8080/Session/s1/put -H 'content-type: application/json' -d '{"cart": ["book"]}'
    curl localhost:8080/Session/s1/get      # the data
    sleep 6; curl localhost:8080/Session/s1/get   # {}: evicted
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import unbroken as restate

SESSION_TTL = timedelta(milliseconds=int(os.environ.get("SESSION_TTL_MS", str(30 * 60 * 1000))))

session = restate.VirtualObject("Session")


async def _activity(ctx: restate.ObjectContext) -> int:
    generation = (await ctx.get("generation", type_hint=int) or 0) + 1
    ctx.set("generation", generation)
    ctx.set("last_activity", await ctx.time())
    ctx.object_send(expire, ctx.key(), generation, send_delay=SESSION_TTL)
    return generation


@session.handler()
async def touch(ctx: restate.ObjectContext) -> dict[str, Any]:
    """Keep the session alive without changing its data; returns the data."""
    await _activity(ctx)
    return await ctx.get("data", type_hint=dict[str, Any]) or {}


@session.handler()
async def put(ctx: restate.ObjectContext, data: dict[str, Any]) -> dict[str, Any]:
    """Merge ``data`` into the session; returns the whole session data."""
    merged = {**(await ctx.get("data", type_hint=dict[str, Any]) or {}), **data}
    ctx.set("data", merged)
    await _activity(ctx)
    return merged


@session.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> dict[str, Any]:
    """The session data; ``{}`` when there is none (never created, or evicted)."""
    return await ctx.get("data", type_hint=dict[str, Any]) or {}


@session.handler(kind="shared")
async def info(ctx: restate.ObjectSharedContext) -> dict[str, Any]:
    generation = await ctx.get("generation", type_hint=int)
    return {
        "active": generation is not None,
        "generation": generation,
        "last_activity": await ctx.get("last_activity", type_hint=float),
        "ttl_ms": int(SESSION_TTL.total_seconds() * 1000),
    }


@session.handler(ingress_private=True)
async def expire(ctx: restate.ObjectContext, generation: int) -> bool:
    """Clear the session if ``generation`` is still the latest activity; returns whether it did."""
    if await ctx.get("generation", type_hint=int) != generation:
        return False  # there was activity since this check was scheduled
    ctx.clear_all()
    return True


app = restate.app([session])
