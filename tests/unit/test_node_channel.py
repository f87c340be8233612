"""The channel between nodes (cluster/channel.py), on a real uvicorn listener over loopback: it shares the
ingress port with HTTP, carries requests to the app as uvicorn would (body, headers, disconnect), streams
long answers in chunks, tells the app when the forwarder gave a request up, fails what was on a lost
connection (saying whether its answer had begun), and drops a peer that breaks the framing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.asgi_listener import listening
from unbroken.cluster.channel import BODY, PREFACE, START, Broken, ChannelClient, connect
from unbroken.core import limits
from unbroken.http.asgi import ON_DISCONNECT
from unbroken.http.wire import bounded_protocol


class App:
    """Echoes what it was asked; ``/long`` answers in one big body; ``/wait`` answers once told to, or
    notes the caller's hanging up; ``/fail`` raises before answering, ``/half`` after starting."""

    def __init__(self) -> None:
        self.hung_up = asyncio.Event()
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        path = scope["path"]
        if path == "/wait":
            scope["extensions"][ON_DISCONNECT](self.hung_up.set)
            self.waiting.set()
            await self.release.wait()
        if path == "/fail":
            raise RuntimeError("the app failed")
        body = (
            b"x" * (3 * limits.cluster_channel_chunk_bytes + 5)
            if path == "/long"
            else orjson.dumps(
                {
                    "method": scope["method"],
                    "path": path,
                    "query": scope["query_string"].decode(),
                    "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                    "body": message["body"].decode(),
                }
            )
        )
        headers = [(b"content-length", b"%d" % len(body)), (b"x-echo", b"1")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        if path == "/half":
            raise RuntimeError("the app failed mid-answer")
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, App]]:
    app = App()
    error = lambda status, message: orjson.dumps({"message": message})  # noqa: E731
    async with listening(app, bounded_protocol(error, channel_body_limit=1024), "critical") as port:
        try:
            yield port, app
        finally:
            app.release.set()


async def _answer(
    client: ChannelClient, path: bytes, body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    exchange = client.request("POST", path, b"a=1", [[b"x-caller", b"me"]], body)
    start = await asyncio.wait_for(exchange.next(), 5)
    assert start[0] == START
    chunks, more = [], True
    while more:
        frame = await asyncio.wait_for(exchange.next(), 5)
        assert frame[0] == BODY
        chunks.append(frame[2])
        more = frame[3]
    client.done(exchange, True)
    return start[2], {bytes(k): bytes(v) for k, v in start[3]}, b"".join(chunks)


async def test_requests_go_to_the_app_as_over_http_and_http_still_works_on_the_same_port(
    served: tuple[int, App],
) -> None:
    port, _ = served
    client = await connect("127.0.0.1", port)
    answers = await asyncio.gather(*(_answer(client, b"/echo", b"body %d" % i) for i in range(20)))
    for i, (status, headers, body) in enumerate(answers):  # many at once on one connection, each its own
        assert status == 201 and headers[b"x-echo"] == b"1"
        echoed = orjson.loads(body)
        assert echoed["body"] == f"body {i}" and echoed["query"] == "a=1" and echoed["method"] == "POST"
        assert echoed["headers"]["x-caller"] == "me"
    status, _, long = await _answer(client, b"/long")
    assert status == 201 and long == b"x" * (3 * limits.cluster_channel_chunk_bytes + 5)
    async with httpx.AsyncClient() as http:  # the same port, plain HTTP
        response = await http.post(f"http://127.0.0.1:{port}/echo", content=b"plain")
    assert response.status_code == 201 and orjson.loads(response.content)["body"] == "plain"
    assert client.transport is not None
    client.transport.close()


async def test_the_preface_may_arrive_in_pieces(served: tuple[int, App]) -> None:
    port, _ = served
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(ChannelClient, "127.0.0.1", port)
    for i in range(len(PREFACE)):
        transport.write(PREFACE[i : i + 1])
        await asyncio.sleep(0)
    status, _, body = await _answer(client, b"/echo", b"split")
    assert status == 201 and orjson.loads(body)["body"] == "split"
    transport.close()


async def test_a_request_given_up_is_a_hang_up_for_the_app(served: tuple[int, App]) -> None:
    port, app = served
    client = await connect("127.0.0.1", port)
    exchange = client.request("POST", b"/wait", b"", [], b"")
    await asyncio.wait_for(app.waiting.wait(), 5)
    client.done(exchange, False)  # the caller left: CANCEL
    await asyncio.wait_for(app.hung_up.wait(), 5)
    assert client.transport is not None
    client.transport.close()


async def test_a_lost_connection_fails_what_was_on_it_saying_whether_the_answer_had_begun(
    served: tuple[int, App],
) -> None:
    port, app = served
    client = await connect("127.0.0.1", port)
    waiting = client.request("POST", b"/wait", b"", [], b"")
    await asyncio.wait_for(app.waiting.wait(), 5)
    assert client.transport is not None
    client.transport.abort()
    with pytest.raises(Broken) as lost:
        await asyncio.wait_for(waiting.next(), 5)
    assert not lost.value.started
    await asyncio.wait_for(app.hung_up.wait(), 5)  # and the leader's app saw its caller hang up
    with pytest.raises(Broken):
        client.request("POST", b"/echo", b"", [], b"")  # a lost channel takes nothing more
    client = await connect("127.0.0.1", port)
    failed = client.request("POST", b"/fail", b"", [], b"")
    with pytest.raises(Broken) as before:
        await asyncio.wait_for(failed.next(), 5)
    assert not before.value.started
    half = client.request("POST", b"/half", b"", [], b"")
    assert (await asyncio.wait_for(half.next(), 5))[0] == START
    with pytest.raises(Broken) as after:
        await asyncio.wait_for(half.next(), 5)
    assert after.value.started
    client.transport.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "frame",
    [
        (10**9).to_bytes(4, "big") + b"x",  # longer than the listener's bound
        (3).to_bytes(4, "big") + b"\xc1\xc1\xc1",  # not msgpack
        (1).to_bytes(4, "big") + orjson.dumps(7)[:1],  # not a frame
    ],
)
async def test_a_peer_that_breaks_the_framing_is_disconnected(served: tuple[int, App], frame: bytes) -> None:
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PREFACE + frame)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    writer.close()


async def test_an_idle_channel_is_closed_by_its_forwarder_first_and_a_busy_one_is_not(
    served: tuple[int, App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel opened and left idle must not hold a listener connection for good: the forwarder closes
    its end after ``cluster_channel_idle_s`` without a request in flight (the leader after twice that, so it
    never closes one a request is being written to); a request waiting longer than that keeps it open."""
    monkeypatch.setattr(limits, "cluster_channel_idle_s", 0.2)
    port, app = served
    client = await connect("127.0.0.1", port)
    waiting = client.request("POST", b"/wait", b"", [], b"")
    await asyncio.wait_for(app.waiting.wait(), 5)
    await asyncio.sleep(0.6)  # three idle bounds: the request in flight keeps the channel open
    assert client.usable() and not app.hung_up.is_set()
    app.release.set()
    assert (await asyncio.wait_for(waiting.next(), 5))[0] == START
    while (await asyncio.wait_for(waiting.next(), 5))[3]:
        pass
    client.done(waiting, True)
    closed = asyncio.get_running_loop().time()
    while client.lost is None:  # bounded: the idle check runs every half bound
        await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - closed < 5, "the idle channel was never closed"
    assert not client.usable()


async def test_a_peer_that_only_sends_the_preface_is_disconnected_by_the_leader(
    served: tuple[int, App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "cluster_channel_idle_s", 0.2)
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PREFACE)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after twice the idle bound
    writer.close()
