"""Combinators over durable futures (restate-sdk's ``gather``, ``select``, ``as_completed``,
``wait_completed``). When several futures are already complete, they come out in journal order, so a
replay picks the same winner as the original run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from unbroken.sdk.context import RestateDurableFuture


async def _resolve(f: RestateDurableFuture[Any]) -> Any:
    return await f


def _seq(f: RestateDurableFuture[Any]) -> int:
    get = getattr(f, "completed_seq", None)
    return get() if get is not None else 0


async def as_completed(*futures: RestateDurableFuture[Any]) -> AsyncIterator[RestateDurableFuture[Any]]:
    """Yield the futures as they complete (await each to get its value or its error)."""
    tasks: dict[asyncio.Future[Any], RestateDurableFuture[Any]] = {
        asyncio.ensure_future(_resolve(f)): f for f in futures
    }
    position = {
        task: i for i, task in enumerate(tasks)
    }  # ties and cancels in argument order, never set order
    pending: set[asyncio.Future[Any]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: (_seq(tasks[t]), position[t])):
                task.exception()  # retrieved here; the caller sees it when awaiting the future
                yield tasks[task]
    finally:
        for task in sorted(pending, key=position.__getitem__):
            task.cancel()


async def wait_completed(
    *futures: RestateDurableFuture[Any],
) -> tuple[list[RestateDurableFuture[Any]], list[RestateDurableFuture[Any]]]:
    """Wait until at least one future completed; returns (completed, pending)."""
    async for first in as_completed(*futures):
        done = [first]
        for f in futures:
            if f is not first and _seq(f) < (1 << 62):
                done.append(f)
        return done, [f for f in futures if f not in done]
    return [], []


async def gather(*futures: RestateDurableFuture[Any]) -> list[RestateDurableFuture[Any]]:
    """Wait until every future completed; returns the futures (await each for its value)."""
    async for _ in as_completed(*futures):
        pass
    return list(futures)


async def select(**futures: RestateDurableFuture[Any]) -> list[Any]:
    """Wait for the first of the named futures: ``[name, value]`` (its error is raised)."""
    if not futures:
        raise ValueError("select needs at least one future")
    names = {id(f): name for name, f in futures.items()}
    async for f in as_completed(*futures.values()):
        return [names[id(f)], await f]
    raise AssertionError("unreachable")
