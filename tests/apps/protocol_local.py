"""In-process Unbroken services served next to a remote restate-sdk deployment (tests/apps/restate_peer.py):
the remote PeerCounter calls LocalDoubler, and LocalCaller calls the remote PeerCounter."""

from __future__ import annotations

import unbroken as restate

doubler = restate.Service("LocalDoubler")


@doubler.handler()
async def double(ctx: restate.Context, n: int) -> int:
    return n * 2


caller = restate.Service("LocalCaller")


@caller.handler()
async def add_remote(ctx: restate.Context, key: str) -> int:
    """In-process -> remote -> in-process: PeerCounter/{key}/add_via_local(5) calls LocalDoubler/double."""
    out = await ctx.generic_call("PeerCounter", "add_via_local", b"5", key=key)
    return int(out)


app = restate.app([doubler, caller])
