"""A request body must bring a minimum of bytes per window: a trickle (slowloris) is answered 408 and closed,
a slow but steady upload is served. In process, on a real uvicorn listener over loopback, with the window
shortened so the test takes seconds (the red-team run found a byte every 0.5 s kept a connection for ever)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.asgi_listener import listening
from unbroken.core import limits
from unbroken.http.wire import bounded_protocol

WINDOW_MS = 400
WINDOW_BYTES_MIN = 1024


async def _read_all(scope: dict[str, Any], receive: Any, send: Any) -> None:
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def port(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(limits, "http_body_idle_timeout_ms", WINDOW_MS)
    monkeypatch.setattr(limits, "http_body_window_bytes_min", WINDOW_BYTES_MIN)
    protocol = bounded_protocol(lambda status, message: orjson.dumps({"message": message}))
    async with listening(_read_all, protocol) as bound:
        yield bound


async def _post(port: int, size: int, chunk: bytes, every_s: float) -> bytes:
    """Send a head announcing ``size`` body bytes, then ``chunk`` every ``every_s`` until the server answers
    or the body is sent; returns the answer's status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % size)
    sent = 0
    answer = asyncio.ensure_future(reader.readline())
    try:
        while sent < size and not answer.done():
            part = chunk[: size - sent]
            writer.write(part)
            sent += len(part)
            await asyncio.wait({answer}, timeout=every_s)
        return await asyncio.wait_for(answer, 5)
    finally:
        writer.close()


async def test_a_trickling_body_is_answered_408(port: int) -> None:
    started = asyncio.get_running_loop().time()
    status = await _post(port, 100_000, b"x", every_s=0.05)  # 20 B per 400 ms window: far below the minimum
    assert status.startswith(b"HTTP/1.1 408"), status
    assert asyncio.get_running_loop().time() - started < 3 * WINDOW_MS / 1000


async def test_a_slow_steady_body_is_served(port: int) -> None:
    # 1.5 KiB every 100 ms: ~6 KiB per window, over ~5 windows
    status = await _post(port, 30 * 1536, b"y" * 1536, every_s=0.1)
    assert status.startswith(b"HTTP/1.1 200"), status
