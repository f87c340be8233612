"""A caller that hangs up while waiting is forgotten at once, however the ASGI server reports it: through
``unbroken serve``'s connection callback (the scope extension of ingress/wire.py) or, under any other
server, through ``receive``. (The e2e side: tests/e2e/test_ingress_hardening.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from types import SimpleNamespace
from typing import Any

import pytest

from unbroken.core.actions import Reply
from unbroken.http.asgi import ON_DISCONNECT
from unbroken.ingress.app import IngressApp
from unbroken.runtime.entropy import RandomBytes
from unbroken.runtime.faults import FaultPoints

INV = "inv_1" + "0" * 33


class FakeEngine:
    """Takes requests and never answers them (an invocation that runs for days)."""

    def __init__(self) -> None:
        self.schemas = SimpleNamespace(services={})
        self.futures: dict[int, asyncio.Future[Reply]] = {}
        self.forgotten: list[int] = []
        self.requested = asyncio.Event()
        self.entropy = RandomBytes()  # the node's injected parts the ingress uses
        self.faults = FaultPoints()

    def request(
        self, make: Callable[[int], object], client_gone: object = None, bounded: bool = False
    ) -> asyncio.Future[Reply]:
        request_id = len(self.futures) + 1
        make(request_id)
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.futures[request_id] = fut
        self.requested.set()
        return fut

    def forget(self, request_id: int) -> None:
        self.forgotten.append(request_id)


def scope(extensions: dict[str, Any] | None) -> dict[str, Any]:
    path = f"/restate/invocation/{INV}/attach".encode()
    out: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "headers": [],
    }
    if extensions is not None:
        out["extensions"] = extensions
    return out


@pytest.mark.parametrize("reported_by", ["connection", "receive"])
async def test_a_waiting_caller_that_hangs_up_is_forgotten(reported_by: str) -> None:
    engine = FakeEngine()
    app = IngressApp(engine)  # type: ignore[arg-type, unused-ignore]  # a stand-in engine
    hung_up = asyncio.Event()
    watchers: list[Callable[[], None]] = []
    sent: list[MutableMapping[str, Any]] = []

    def watch(callback: Callable[[], None]) -> Callable[[], None]:
        watchers.append(callback)
        return lambda: watchers.remove(callback)

    async def receive() -> dict[str, Any]:
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    extensions = {ON_DISCONNECT: watch} if reported_by == "connection" else None
    request = asyncio.ensure_future(app(scope(extensions), receive, send))
    await asyncio.wait_for(engine.requested.wait(), timeout=2)  # it wakes us once it waits
    assert list(engine.futures) == [1] and not request.done()
    if reported_by == "connection":
        assert len(watchers) == 1
        watchers[0]()
    else:
        hung_up.set()
    await asyncio.wait_for(request, timeout=2)
    assert engine.forgotten == [1] and engine.futures[1].cancelled()
    assert sent == [] and watchers == []  # nobody to answer; nothing left registered


async def test_at_shutdown_a_waiting_caller_gets_a_503() -> None:
    engine = FakeEngine()
    app = IngressApp(engine)  # type: ignore[arg-type, unused-ignore]  # a stand-in engine
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    request = asyncio.ensure_future(app(scope({ON_DISCONNECT: lambda cb: lambda: None}), receive, send))
    await asyncio.wait_for(engine.requested.wait(), timeout=2)
    app.close()
    await asyncio.wait_for(request, timeout=2)
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    assert engine.forgotten == [1]
