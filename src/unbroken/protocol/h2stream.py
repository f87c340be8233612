"""HTTP/2 requests over cleartext with prior knowledge (h2c), both directions open at once: what Restate's
bidirectional streaming mode needs and what httpx does not offer (it sends the whole request body before it
reads the response).

Attempts to the same deployment share connections (:class:`H2Pool`), each carrying up to
``limits.deployment_h2_streams_per_connection_max`` streams (fewer if the peer's SETTINGS say so), as
restate-server multiplexes them. One connection per attempt cost the deployment's HTTP server a connection
set-up each time (TCP connect, preface and SETTINGS, HPACK with an empty table): BENCHMARKS.md, "Remote
deployments". A connection idle for ``limits.deployment_h2_idle_close_s`` is closed by us, before servers'
keep-alive timeouts (hypercorn's: 5 s) close it under a request being sent.

Flow control both ways: received data is acknowledged as it is consumed, sent data waits for the peer's
window (the stream's and the connection's).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from unbroken.core import limits


class StreamError(Exception):
    """The connection or the stream failed (refused, reset, closed early)."""


class H2Request:
    """One request (one stream) on a shared :class:`_Connection`."""

    def __init__(self, connection: _Connection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.status = 0
        self.headers: dict[str, str] = {}
        self._pending = bytearray()  # request body waiting for the peer's flow-control window
        self._end_after_pending = False
        self._ended = False  # our side is closed
        self._over = False  # the response ended or failed, or we closed the request
        self._answered = False  # the response ended normally (END_STREAM)
        self._response: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._head = asyncio.get_running_loop().create_future()
        self._failure: StreamError | None = None

    async def response_head(self) -> tuple[int, dict[str, str]]:
        await self._head
        return self.status, self.headers

    def send(self, data: bytes) -> None:
        if self._ended or self._over:
            return
        self._pending += data
        self.push()

    def end(self) -> None:
        """Close the request side (after what is still waiting for the window)."""
        if self._ended or self._over:
            return
        self._end_after_pending = True
        self.push()

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._response.get()
            if chunk is None:
                if self._failure is not None:
                    raise self._failure
                return
            yield chunk

    def close(self) -> None:
        """Done with this request; the connection stays for others. A stream whose response ended gets the
        end of our side too (a server keeps a half-closed stream until then), one still running a reset."""
        if self._answered and not self._ended:
            self._ended = True
            self.connection.end(self.stream_id)
        elif not self._answered:
            self.connection.reset(self.stream_id)
        self._over = True
        self.connection.forget(self.stream_id)

    # ------------------------------------------------------------------------------------- internals
    def push(self) -> None:
        """Send what the windows allow of the pending body (and the end of the stream after it)."""
        if self._over or self._ended:
            return
        try:
            self._push_within_window()
        except h2.exceptions.H2Error:  # the peer ended or reset the stream meanwhile: nothing more to send
            self._ended = True
            self._pending.clear()
        self.connection.flush()

    def _push_within_window(self) -> None:
        conn = self.connection.h2
        while self._pending:
            window = min(conn.local_flow_control_window(self.stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk = bytes(self._pending[:window])
            del self._pending[:window]
            conn.send_data(self.stream_id, chunk)
        if self._end_after_pending and not self._pending and not self._ended:
            self._ended = True
            conn.end_stream(self.stream_id)

    def fail(self, message: str) -> None:
        if self._over:
            return
        self._over = True
        self._failure = StreamError(message)
        if not self._head.done():
            self._head.set_exception(self._failure)
        self._response.put_nowait(None)

    def on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            for name, value in event.headers:
                key = name.decode() if isinstance(name, bytes) else name
                val = value.decode() if isinstance(value, bytes) else value
                if key == ":status":
                    self.status = int(val)
                else:
                    self.headers[key] = val
            if not self._head.done():
                self._head.set_result(None)
        elif isinstance(event, h2.events.DataReceived):
            self.connection.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.data and not self._over:
                self._response.put_nowait(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            if not self._head.done():
                self._head.set_exception(StreamError("the stream ended before a response head"))
            if not self._over:
                self._over = self._answered = True
                self._response.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            self.fail(f"the deployment reset the stream (error code {event.error_code})")


class _Connection:
    """One h2c connection and the requests open on it; its reader task hands each event to its stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str) -> None:
        self.reader = reader
        self.writer = writer
        self.authority = authority
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.streams: dict[int, H2Request] = {}
        self.usable = True  # False once closing, failed or told GOAWAY: no new requests on it
        self.idle_timer: asyncio.TimerHandle | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str) -> _Connection:
        """Connect (bounded by ``limits.deployment_request_timeout_s``) and send the preface."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise StreamError(f"HTTP/2 streaming needs an http:// URL (h2c prior knowledge), not {url!r}")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or 80),
                limits.deployment_request_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise StreamError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        conn = cls(reader, writer, parts.netloc)
        conn.h2.initiate_connection()
        conn.flush()
        conn._reader_task = asyncio.get_running_loop().create_task(conn._read())
        return conn

    def has_room(self) -> bool:
        peer_max = self.h2.remote_settings.max_concurrent_streams
        room = min(peer_max, limits.deployment_h2_streams_per_connection_max)
        # stream ids are odd and below 2**31: a connection that used most of them retires
        return self.usable and len(self.streams) < room and self.h2.highest_outbound_stream_id < 2**30

    def request(self, url: str, headers: dict[str, str]) -> H2Request:
        """Open a stream and send the request head."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        stream_id = self.h2.get_next_available_stream_id()
        req = H2Request(self, stream_id)
        self.streams[stream_id] = req
        head = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", self.authority),
            (":path", urlsplit(url).path or "/"),
            *((k.lower(), v) for k, v in headers.items()),
        ]
        try:
            self.h2.send_headers(stream_id, head)
        except h2.exceptions.H2Error as exc:
            del self.streams[stream_id]
            raise StreamError(f"cannot open a stream: {exc}") from None
        self.flush()
        return req

    def reset(self, stream_id: int) -> None:
        try:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass  # already closed on the wire
        self.flush()

    def end(self, stream_id: int) -> None:
        try:
            self.h2.end_stream(stream_id)
        except h2.exceptions.H2Error:
            pass  # already closed on the wire
        self.flush()

    def forget(self, stream_id: int) -> None:
        if self.streams.pop(stream_id, None) is None:
            return
        if not self.streams and not self.usable:
            self.close()
        elif not self.streams:
            if self.idle_timer is not None:
                self.idle_timer.cancel()
            loop = asyncio.get_running_loop()
            self.idle_timer = loop.call_later(limits.deployment_h2_idle_close_s, self.close)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        self.usable = False
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        for req in list(self.streams.values()):
            req.fail("the connection was closed")
        if self._reader_task is not None:
            self._reader_task.cancel()
        if not self.writer.is_closing():
            try:
                self.h2.close_connection()
                self.flush()
            except h2.exceptions.H2Error:
                pass
            self.writer.close()

    def _fail_all(self, message: str) -> None:
        self.usable = False
        for req in list(self.streams.values()):
            req.fail(message)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self._fail_all("the deployment closed the connection")
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self._fail_all(f"HTTP/2 protocol error: {exc}")
                    break
                for event in events:
                    self._dispatch(event)
                self.flush()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._fail_all(f"connection error: {type(exc).__name__}: {exc}")
        self.usable = False
        self.writer.close()

    def _dispatch(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        if isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: the h2 library closes the whole connection at once (no stream below last_stream_id can
            # go on), so every open attempt fails (and is retried); new ones go to a new connection
            self._fail_all(f"the deployment closed the HTTP/2 connection (error code {event.error_code})")
            self.close()
        elif isinstance(event, h2.events.WindowUpdated) and stream_id == 0:
            for req in list(self.streams.values()):  # the connection's window grew: every stream may go on
                req.push()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for req in list(self.streams.values()):  # a new initial window changes every stream's
                req.push()
        elif stream_id and stream_id in self.streams:
            req = self.streams[stream_id]
            if isinstance(event, h2.events.WindowUpdated):
                req.push()
            else:
                req.on_event(event)
        elif isinstance(event, h2.events.DataReceived):
            # data for a stream we already closed still counts against the connection's window
            try:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            except h2.exceptions.H2Error:
                pass


class H2Pool:
    """The open connections per deployment origin; a request goes on one with room, else on a new one."""

    def __init__(self) -> None:
        self._connections: dict[str, list[_Connection]] = {}

    async def open(self, url: str, headers: dict[str, str]) -> H2Request:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        conns = self._connections.setdefault(origin, [])
        for gone in [c for c in conns if not c.usable]:
            if not gone.streams:
                gone.close()
                conns.remove(gone)
        for conn in conns:
            if conn.has_room():
                return conn.request(url, headers)
        conn = await _Connection.connect(url)
        conns.append(conn)
        return conn.request(url, headers)

    def close(self) -> None:
        for conns in self._connections.values():
            for conn in conns:
                conn.close()
        self._connections.clear()
