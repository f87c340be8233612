"""protocol/h2stream.py's pool against a real h2c server on loopback (the h2 library's server side, a few
lines here): attempts to one deployment share a connection, each stream answered on its own, a stream reset
by us leaves the others running, a connection without streams closes after the idle delay, and a GOAWAY
fails the streams open on it and sends new requests to a new connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from unbroken.core import limits
from unbroken.protocol.h2stream import H2Pool, StreamError


class EchoServer:
    """Answers each stream with 200 and, once it ended, its body (a long one: its length); counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.open_connections = 0
        self.conns: list[h2.connection.H2Connection] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.conns.append(conn)
        self.writers.append(writer)
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        bodies: dict[int, bytes] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    try:
                        self._on(conn, event, bodies)
                    except h2.exceptions.StreamClosedError:
                        pass  # reset by the client meanwhile
                writer.write(conn.data_to_send())
        except (ConnectionError, h2.exceptions.H2Error):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    @staticmethod
    def _on(conn: h2.connection.H2Connection, event: h2.events.Event, bodies: dict[int, bytes]) -> None:
        # events come in batches: a stream may be reset by the client before its head is handled here
        if isinstance(event, h2.events.RequestReceived):
            bodies[event.stream_id] = b""
            conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "x/echo")])
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
        elif isinstance(event, h2.events.StreamEnded):
            body = bodies.pop(event.stream_id, b"")
            conn.send_data(event.stream_id, body if len(body) < 1000 else str(len(body)).encode())
            conn.end_stream(event.stream_id)

    def goaway(self) -> None:
        for conn, writer in zip(self.conns, self.writers, strict=True):
            conn.close_connection(last_stream_id=conn.highest_inbound_stream_id)
            writer.write(conn.data_to_send())


@pytest.fixture
async def server() -> AsyncIterator[tuple[EchoServer, str]]:
    echo = EchoServer()
    srv = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield echo, f"http://127.0.0.1:{port}/invoke/S/h"
    await _wait(lambda: echo.open_connections == 0)  # the pool closed its side: every handler saw EOF
    srv.close()
    await srv.wait_closed()


async def _collect(body: AsyncIterator[bytes]) -> bytes:
    out = b""
    async for chunk in body:
        out += chunk
    return out


async def _wait(cond: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)  # polling another task's socket state: no event to wait on


async def test_requests_share_a_connection_and_are_answered_each_on_its_own(
    server: tuple[EchoServer, str],
) -> None:
    echo, url = server
    pool = H2Pool()
    reqs = [await pool.open(url, {"x-n": str(n)}) for n in range(5)]
    for n, req in enumerate(reqs):
        req.send(f"body {n}".encode())
    reqs[2].close()  # reset mid-stream: the others go on
    for n, req in enumerate(reqs):
        if n == 2:
            continue
        req.end()
        status, head = await req.response_head()
        assert status == 200 and head["content-type"] == "x/echo"
        assert await _collect(req.body()) == f"body {n}".encode()
        req.close()
    assert echo.connections == 1
    big = await pool.open(url, {})
    payload = b"y" * (1 << 20)  # past the 64 KiB windows of the stream and the connection
    big.send(payload)
    big.end()
    assert await _collect(big.body()) == str(len(payload)).encode()
    big.close()
    assert echo.connections == 1
    pool.close()


async def test_an_idle_connection_closes_and_a_goaway_moves_requests_to_a_new_one(
    server: tuple[EchoServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    echo, url = server
    monkeypatch.setattr(limits, "deployment_h2_idle_close_s", 0.05)
    pool = H2Pool()
    req = await pool.open(url, {})
    req.end()
    assert await _collect(req.body()) == b""
    req.close()
    await _wait(lambda: echo.open_connections == 0)  # closed by us once idle
    first = await pool.open(url, {})
    await _wait(lambda: len(echo.conns) == 2 and echo.conns[1].highest_inbound_stream_id == 1)
    echo.goaway()  # the server retires the connection: its open stream fails (retried), new ones go elsewhere
    with pytest.raises(StreamError, match="closed the HTTP/2 connection"):
        await _collect(first.body())
    first.close()
    second = await pool.open(url, {})
    assert echo.connections == 3
    second.send(b"z")
    second.end()
    assert await _collect(second.body()) == b"z"
    second.close()
    pool.close()


async def test_an_unreachable_deployment_is_a_stream_error() -> None:
    pool = H2Pool()
    with pytest.raises(StreamError, match="cannot connect"):
        await pool.open("http://127.0.0.1:1/invoke/S/h", {})
    with pytest.raises(StreamError, match="h2c prior knowledge"):
        await pool.open("https://127.0.0.1:1/invoke/S/h", {})
