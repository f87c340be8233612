"""``unbroken.asyncio``: the same module path as ``restate.asyncio`` (durable combinators)."""

from unbroken.sdk.combinators import as_completed, gather, select, wait_completed

__all__ = ["as_completed", "gather", "select", "wait_completed"]
