"""One HTTP/2 request over cleartext with prior knowledge (h2c), both directions open at once: what
Restate's bidirectional streaming mode needs and what httpx does not offer (it sends the whole request body
before it reads the response).

One connection per attempt (an attempt is long-lived and its stream is the connection's only one). Flow
control both ways: received data is acknowledged as it is consumed, sent data waits for the peer's window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from unbroken.core import limits


class StreamError(Exception):
    """The connection or the stream failed (refused, reset, closed early)."""


class H2Request:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.stream_id = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self._pending = bytearray()  # request body waiting for the peer's flow-control window
        self._end_after_pending = False
        self._ended = False
        self._response: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._head = asyncio.get_running_loop().create_future()
        self._reader_task: asyncio.Task[None] | None = None
        self._failure: StreamError | None = None

    @classmethod
    async def open(cls, url: str, headers: dict[str, str]) -> H2Request:
        """Connect (bounded by ``limits.deployment_request_timeout_s``) and send the request head."""
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
        req = cls(reader, writer)
        req.conn.initiate_connection()
        req.stream_id = req.conn.get_next_available_stream_id()
        path = parts.path or "/"
        head = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", parts.netloc),
            (":path", path),
            *((k.lower(), v) for k, v in headers.items()),
        ]
        req.conn.send_headers(req.stream_id, head)
        req._flush()
        req._reader_task = asyncio.get_running_loop().create_task(req._read())
        return req

    async def response_head(self) -> tuple[int, dict[str, str]]:
        await self._head
        return self.status, self.headers

    def send(self, data: bytes) -> None:
        if self._ended or self._failure is not None:
            return
        self._pending += data
        self._push()

    def end(self) -> None:
        """Close the request side (after what is still waiting for the window)."""
        if self._ended or self._failure is not None:
            return
        self._end_after_pending = True
        self._push()

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._response.get()
            if chunk is None:
                if self._failure is not None:
                    raise self._failure
                return
            yield chunk

    def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.writer.close()

    # ------------------------------------------------------------------------------------- internals
    def _push(self) -> None:
        try:
            self._push_within_window()
        except h2.exceptions.H2Error:  # the peer ended or reset the stream meanwhile: nothing more to send
            self._ended = True
            self._pending.clear()

    def _push_within_window(self) -> None:
        while self._pending:
            window = min(
                self.conn.local_flow_control_window(self.stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                break
            chunk = bytes(self._pending[:window])
            del self._pending[:window]
            self.conn.send_data(self.stream_id, chunk)
        if self._end_after_pending and not self._pending and not self._ended:
            self._ended = True
            self.conn.end_stream(self.stream_id)
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def _fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = StreamError(message)
        if not self._head.done():
            self._head.set_exception(self._failure)
        self._response.put_nowait(None)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self._fail("the deployment closed the connection")
                    return
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self._fail(f"HTTP/2 protocol error: {exc}")
                    return
                for event in events:
                    if self._on_event(event):
                        self._flush()
                        return
                self._flush()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._fail(f"connection error: {type(exc).__name__}: {exc}")

    def _on_event(self, event: h2.events.Event) -> bool:
        """Handle one event; True once the response is over."""
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
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.data:
                self._response.put_nowait(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            if not self._head.done():
                self._head.set_exception(StreamError("the stream ended before a response head"))
            self._response.put_nowait(None)
            return True
        elif isinstance(event, h2.events.StreamReset):
            self._fail(f"the deployment reset the stream (error code {event.error_code})")
            return True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._fail(f"the deployment closed the HTTP/2 connection (error code {event.error_code})")
            return True
        elif isinstance(event, h2.events.WindowUpdated):
            self._push()
        return False
