"""The channel between nodes: ingress requests a node forwards to a partition's leader, many at once over one
connection, without HTTP on either side.

Forwarded over HTTP (httpx to the leader's uvicorn), a request cost its forwarder ~3 ms of CPU and its leader
another HTTP parse: on one machine that CPU is taken from the leader, so a hot key served by three nodes
went slower than by one (bench/cluster.py, W3b). Here the forwarder writes a frame and the leader hands it
to its ingress app as uvicorn would, with no HTTP client, no pool and one connection per pair of nodes
whose frames are written together once per turn of the event loop.

The channel rides on the ingress port: a connection whose first bytes are :data:`PREFACE` (which no HTTP
request can start with: ``/`` cannot be in a method) is handed from the HTTP protocol to
:class:`ChannelServer` (``http/wire.py``). So it needs no port, setting or schema of its own, and is exactly
as reachable as the ingress; the requests it carries are the callers' own, headers and token included, and
the ingress app checks them as it checks any request.

Frames: a 4-byte big-endian length, then a msgpack array (``msgspec``), at most
``cluster_channel_frame_bytes_max``; a peer that sends more, or garbage, is disconnected.

    forwarder -> leader   [REQUEST, id, method, raw_path, query, headers, body]   [CANCEL, id]
    leader -> forwarder   [START, id, status, headers]   [BODY, id, chunk, more]   [FAILED, id]

``CANCEL``: the caller hung up (the leader's app sees ``http.disconnect``, as over HTTP). ``FAILED``: the
app raised without finishing its answer. A lost connection is, for the leader's app, every caller hanging
up, and for the forwarder every request on it failing (``Broken``: ``started`` says whether its answer had
begun).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any, cast

import msgspec

from unbroken.core import limits
from unbroken.http.asgi import ON_DISCONNECT, Scope

log = logging.getLogger("unbroken.cluster")

PREFACE = b"UNBROKEN-CHANNEL/1\r\n"
REQUEST, CANCEL, START, BODY, FAILED = 1, 2, 3, 4, 5

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
App = Callable[[Scope, Any, Any], Any]
_FRAME_SLACK = 64 * 1024  # a frame's fields around its body or headers


class FrameError(Exception):
    """The peer broke the framing: too long a frame, or not a frame of this protocol."""


class _Framed(asyncio.Protocol):
    """Frames in and out of one connection: out, written together once per turn of the loop; in, split
    and handed to ``on_frame``."""

    transport: asyncio.Transport | None = None

    def __init__(self, frame_max: int, idle_s: float) -> None:
        self.frame_max = frame_max  # the longest frame taken from the peer
        self.idle_s = idle_s  # closed after this long with no request on it
        self._in = bytearray()
        self._out: list[bytes] = []
        self._flush_soon: asyncio.Handle | None = None
        self._idle_check: asyncio.TimerHandle | None = None
        self._active_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._active_at = asyncio.get_running_loop().time()
        self._idle_check = asyncio.get_running_loop().call_later(self.idle_s / 2, self._close_if_idle)

    def busy(self) -> bool:
        """Whether a request is in flight on the connection."""
        raise NotImplementedError

    def _close_if_idle(self) -> None:
        """An idle connection is closed (a new one is opened when needed): a channel opened and left idle
        must not hold one of the listener's bounded connections for good. The forwarder's end gives up
        first (half the leader's wait), so the leader never closes one a request is being written to."""
        self._idle_check = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        if self.busy():
            self._active_at = loop.time()
        elif loop.time() - self._active_at >= self.idle_s:
            transport.close()
            return
        self._idle_check = loop.call_later(self.idle_s / 2, self._close_if_idle)

    def _stop_idle_check(self) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None

    def send_frame(self, frame: list[Any]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        payload = _encode(frame)
        self._out.append(len(payload).to_bytes(4, "big"))
        self._out.append(payload)
        if self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = None
        transport, out, self._out = self.transport, self._out, []
        if transport is None or transport.is_closing() or not out:
            return
        transport.write(b"".join(out))
        if transport.get_write_buffer_size() > limits.cluster_channel_buffer_bytes_max:
            log.warning("a node channel's peer reads too slowly: its connection is closed")
            transport.abort()  # its requests fail as a lost connection does; a new one is opened

    def data_received(self, data: bytes) -> None:
        buf = self._in
        buf += data
        try:
            while len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if size > self.frame_max:
                    raise FrameError(f"a frame of {size} bytes (the bound is {self.frame_max})")
                if len(buf) < 4 + size:
                    return
                frame = _decode(bytes(buf[4 : 4 + size]))
                del buf[: 4 + size]
                if not isinstance(frame, list) or not frame or not isinstance(frame[0], int):
                    raise FrameError("a message that is not a frame")
                self.on_frame(frame)
        except (FrameError, msgspec.DecodeError, ValueError, TypeError, IndexError) as exc:
            log.warning("a node channel's peer broke the protocol (%s): disconnected", exc)
            if self.transport is not None:
                self.transport.abort()

    def on_frame(self, frame: list[Any]) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ the leader
class _Served:
    """One forwarded request the leader's app is serving: its ``receive``, ``send`` and disconnect watch."""

    __slots__ = ("body", "channel", "given", "gone", "rid", "task", "watchers")

    def __init__(self, channel: ChannelServer, rid: int, body: bytes) -> None:
        self.channel, self.rid, self.body = channel, rid, body
        self.given = False
        self.gone = asyncio.Event()
        self.watchers: dict[int, Callable[[], None]] = {}
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> MutableMapping[str, Any]:
        if not self.given:  # the whole body, read by the forwarder already
            self.given = True
            body, self.body = self.body, b""
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = [[bytes(k), bytes(v)] for k, v in message.get("headers", ())]
            self.channel.send_frame([START, self.rid, int(message["status"]), headers])
        elif kind == "http.response.body":
            more = bool(message.get("more_body", False))
            body = bytes(message.get("body", b""))
            step = limits.cluster_channel_chunk_bytes
            for at in range(0, len(body) - step, step):  # a long answer in chunks the forwarder takes
                self.channel.send_frame([BODY, self.rid, body[at : at + step], True])
            tail = body[(max(0, len(body) - 1) // step) * step :]
            self.channel.send_frame([BODY, self.rid, tail, more])

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self.gone.is_set():
            callback()
            return lambda: None
        key = id(callback)
        self.watchers[key] = callback
        return lambda: self.watchers.pop(key, None) and None

    def hang_up(self) -> None:
        if self.gone.is_set():
            return
        self.gone.set()
        watchers, self.watchers = self.watchers, {}
        for callback in watchers.values():
            callback()


class ChannelServer(_Framed):
    """The leader's end: each ``REQUEST`` served by ``app`` (the ingress) as an HTTP request would be."""

    def __init__(self, app: App, on_lost: Callable[[], None], body_limit: int) -> None:
        # a request's body (the forwarder took at most the ingress's limit) and its head (bounded as well)
        super().__init__(
            body_limit + limits.header_bytes_max + _FRAME_SLACK, 2 * limits.cluster_channel_idle_s
        )
        self.app = app
        self.on_lost = on_lost  # the HTTP protocol this connection came from forgets it
        self.served: dict[int, _Served] = {}

    def busy(self) -> bool:
        return bool(self.served)

    def on_frame(self, frame: list[Any]) -> None:
        kind, rid = frame[0], int(frame[1])
        if kind == CANCEL:
            served = self.served.get(rid)
            if served is not None:
                served.hang_up()
            return
        if kind != REQUEST or len(self.served) >= limits.cluster_channel_requests_max:
            raise FrameError(f"frame {kind}" if kind != REQUEST else "too many requests at once")
        _, _, method, raw_path, query, headers, body = frame
        served = _Served(self, rid, bytes(body))
        self.served[rid] = served
        scope = self._scope(str(method), bytes(raw_path), bytes(query), headers, served)
        served.task = asyncio.ensure_future(self._serve(scope, served))

    def _scope(
        self, method: str, raw_path: bytes, query: bytes, headers: list[Any], served: _Served
    ) -> Scope:
        transport = self.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "http",
            "method": method,
            "path": raw_path.decode("latin-1").split("?", 1)[0],
            "raw_path": raw_path,
            "root_path": "",
            "query_string": query,
            "headers": [(bytes(k).lower(), bytes(v)) for k, v in headers],
            "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
            "server": None,
            "extensions": {ON_DISCONNECT: served.watch},
        }

    async def _serve(self, scope: Scope, served: _Served) -> None:
        try:
            await self.app(scope, served.receive, served.send)
        except Exception:
            log.exception("a forwarded request failed on this node")
            self.send_frame([FAILED, served.rid])
        finally:
            self.served.pop(served.rid, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_idle_check()
        for served in list(self.served.values()):
            served.hang_up()  # as callers hanging up: their invocations go on
        self.on_lost()


# ------------------------------------------------------------------------------------------ the forwarder
class Broken(Exception):
    """The channel failed while the request was on it; ``started``: its answer had begun."""

    def __init__(self, why: str, started: bool) -> None:
        super().__init__(why)
        self.started = started


class Exchange:
    """One request sent on a channel: its answer's frames, in order (``next``)."""

    __slots__ = ("frames", "rid", "started")

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.frames: asyncio.Queue[list[Any] | Broken] = asyncio.Queue()  # bounded by the answer's frames
        self.started = False

    async def next(self) -> list[Any]:
        frame = await self.frames.get()
        if isinstance(frame, Broken):  # the frames before it were taken: ``started`` is what the caller saw
            raise Broken(str(frame), self.started)
        if frame[0] == START:
            self.started = True
        elif frame[0] == FAILED:
            raise Broken("the leader failed while answering", self.started)
        return frame


class ChannelClient(_Framed):
    """The forwarder's end of a channel to one node: requests multiplexed by id."""

    def __init__(self) -> None:
        super().__init__(
            limits.cluster_channel_chunk_bytes + limits.header_bytes_max + _FRAME_SLACK,
            limits.cluster_channel_idle_s,
        )
        self.exchanges: dict[int, Exchange] = {}
        self.lost: str | None = None  # why the connection ended (None: open)
        self._next_id = 0

    def busy(self) -> bool:
        return bool(self.exchanges)

    def usable(self) -> bool:
        """Open, and not closing (closed idle: its ``connection_lost`` is yet to come)."""
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    def request(
        self, method: str, raw_path: bytes, query: bytes, headers: list[Any], body: bytes
    ) -> Exchange:
        if self.lost is not None:
            raise Broken(self.lost, False)
        if len(self.exchanges) >= limits.cluster_channel_requests_max:
            raise Broken("too many requests at once on the channel", False)
        transport = self.transport
        if transport is None or transport.is_closing():  # closed idle: the caller opens a new one
            raise Broken("the channel was closed", False)
        self._next_id += 1
        exchange = self.exchanges[self._next_id] = Exchange(self._next_id)
        self.send_frame([REQUEST, self._next_id, method, raw_path, query, headers, body])
        return exchange

    def done(self, exchange: Exchange, answered: bool) -> None:
        """The caller is done with ``exchange``: if its answer did not end, the leader's app is told."""
        if self.exchanges.pop(exchange.rid, None) is not None and not answered:
            self.send_frame([CANCEL, exchange.rid])

    def on_frame(self, frame: list[Any]) -> None:
        exchange = self.exchanges.get(int(frame[1]))
        if frame[0] not in (START, BODY, FAILED):
            raise FrameError(f"frame {frame[0]}")
        if exchange is not None:
            exchange.frames.put_nowait(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_idle_check()
        self.lost = f"the connection to the leader was lost ({exc or 'closed'})"
        for exchange in self.exchanges.values():
            exchange.frames.put_nowait(Broken(self.lost, exchange.started))
        self.exchanges.clear()


async def connect(host: str, port: int) -> ChannelClient:
    """A channel to the node whose ingress listens at ``host:port`` (``OSError``/``TimeoutError``: none)."""
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(ChannelClient, host, port), limits.cluster_forward_connect_timeout_s
    )
    assert client.transport is not None
    client.transport.write(PREFACE)
    return client
