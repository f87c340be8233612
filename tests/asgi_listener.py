"""An ASGI app served in this test's own loop by uvicorn with Unbroken's protocol (``http/wire.py``), on a
real loopback socket: for tests of the listener itself (bounds, timeouts, the node channel)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def listening(
    app: Any, protocol: type[asyncio.Protocol], log_level: str = "warning"
) -> AsyncIterator[int]:
    """Serve ``app`` with ``protocol`` (``bounded_protocol(...)``) until the block ends; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol, loop="none", lifespan="off", log_level=log_level)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn sets a flag, no event: polled, bounded by the task's failing
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
