"""Bounds on the request head, enforced while it is parsed (before any ASGI app sees the request).

uvicorn's httptools protocol accumulates the request target and the headers in memory without a limit,
so a client streaming an endless header could exhaust memory. :func:`bounded_protocol` returns a subclass
that counts them as they arrive and answers ``414`` (target longer than ``limits.url_bytes_max``) or
``431`` (more than ``limits.header_count_max`` headers, or more than ``limits.header_bytes_max`` bytes of
them) at once, then closes the connection. The apps check the same bounds again (:func:`check_head`) so
that they hold under any ASGI server.

It also bounds connections: a request head must be complete ``limits.http_head_timeout_ms`` after the
connection opened (or after its first byte), and a body must bring ``limits.http_body_window_bytes_min`` bytes
in each ``limits.http_body_idle_timeout_ms`` window
(a stalled upload would hold its share of the ingress's body budget), so idle, stalled or trickling
clients cannot hold descriptors for ever; past ``connections_max`` open connections a new one gets a 503 and is closed; and a head that does
not parse (raw non-ASCII bytes in the path, a control character in a header) gets the listener's JSON
error body rather than uvicorn's plain-text 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from unbroken.cluster.channel import PREFACE, ChannelServer
from unbroken.core import limits
from unbroken.http.asgi import ON_DISCONNECT, HttpError, Scope

ErrorBody = Callable[[int, str], bytes]

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
_MALFORMED = (
    "invalid HTTP request: the request line or a header could not be parsed (raw non-ASCII bytes in the "
    "path must be percent-encoded; header values cannot contain control characters)"
)


class _HeadRejected(Exception):
    pass


def url_too_long() -> str:
    return f"request target too long: at most {limits.url_bytes_max} bytes"


def too_many_headers() -> str:
    return f"too many request headers: at most {limits.header_count_max}"


def headers_too_large() -> str:
    return f"request headers too large: at most {limits.header_bytes_max} bytes in total"


# The parser hands a header to the protocol only once it is complete, so an endless header value is
# bounded by counting the bytes received while the head is still incomplete.
_HEAD_BYTES_MAX = limits.url_bytes_max + limits.header_bytes_max + 8 * 1024


def _nothing() -> None:
    pass


def head_timeout() -> str:
    return f"request head not received in time: send it within {limits.http_head_timeout_ms} ms"


def body_timeout() -> str:
    return (
        f"request body too slow: fewer than {limits.http_body_window_bytes_min} bytes arrived in "
        f"{limits.http_body_idle_timeout_ms} ms"
    )


def _tick_s() -> float:
    """How often a connection's deadlines are checked: a quarter of the shorter timeout, 5 ms to 1 s."""
    return min(1.0, max(0.005, min(limits.http_head_timeout_ms, limits.http_body_idle_timeout_ms) / 4000))


def too_many_connections(connections_max: int) -> str:
    return f"too many open connections: at most {connections_max}; retry later"


def check_head(scope: Scope) -> None:
    """The head bounds, for requests that reached the app (raises ``HttpError`` 414 or 431)."""
    if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > limits.url_bytes_max:
        raise HttpError(414, url_too_long())
    headers = scope["headers"]
    if len(headers) > limits.header_count_max:
        raise HttpError(431, too_many_headers())
    if sum(len(k) + len(v) for k, v in headers) > limits.header_bytes_max:
        raise HttpError(431, headers_too_large())


def bounded_protocol(
    error_body: ErrorBody,
    error_headers: bytes = b"",
    connections_max: int = limits.http_connections_max,
    channel_body_limit: int | None = None,
) -> type[HttpToolsProtocol]:
    """An httptools protocol class that rejects oversized request heads with ``error_body(status, msg)``
    (and the raw header lines ``error_headers``, each ending in CRLF), and bounds connections (above).
    ``channel_body_limit``: a connection opening with the node channel's preface is handed to the channel
    (``cluster/channel.py``), whose requests' bodies are bounded so; None: this listener has no channel."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _url_bytes = 0
        _header_count = 0
        _header_bytes = 0
        _head_pending = 0  # bytes received since the current request began, while its head is incomplete
        _in_head = False
        _rejected = False
        # The deadlines are loop times checked by one timer per connection (``_tick``), not timers armed
        # and cancelled per request: two of each per call cost ~2% of a short call's instructions.
        _tick: asyncio.TimerHandle | None = None
        _head_deadline = 0.0  # the head must be complete by then (0: no head pending)
        _in_body = False  # the head is complete, the body is not
        _body_window_end = 0.0  # end of the current body window
        _body_window_bytes = 0  # body bytes received in the current window
        _on_lost: dict[int, Callable[[], None]] | None = None
        _sniffing = channel_body_limit is not None  # no byte yet that rules out the channel's preface
        _sniffed = b""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > connections_max:
                self._answer_and_close(503, too_many_connections(connections_max))
                return
            self._head_deadline = self.loop.time() + limits.http_head_timeout_ms / 1000
            self._tick = self.loop.call_later(_tick_s(), self._check_deadlines)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            super().connection_lost(exc)
            callbacks, self._on_lost = self._on_lost, None
            for callback in (callbacks or {}).values():
                callback()

        def _watch_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
            if self.transport.is_closing():
                callback()
                return _nothing
            if self._on_lost is None:
                self._on_lost = {}
            key = id(callback)
            self._on_lost[key] = callback

            def unwatch() -> None:
                if self._on_lost is not None:
                    self._on_lost.pop(key, None)

            return unwatch

        def _check_deadlines(self) -> None:
            """Every ``_tick_s()`` while the connection is open: a head past its deadline, or a body window
            that ended (each is noticed at most a tick late: a quarter of the shorter timeout)."""
            self._tick = None
            if self.transport.is_closing():
                return
            now = self.loop.time()
            if self._head_deadline and now >= self._head_deadline:
                self._head_deadline = 0.0
                self._head_timeout()
            elif self._in_body and now >= self._body_window_end:
                self._body_window_ended(now)
            if not self.transport.is_closing():
                self._tick = self.loop.call_later(_tick_s(), self._check_deadlines)

        def _head_timeout(self) -> None:
            if self._in_head:  # a request began: say why it is not served
                self._answer_and_close(408, head_timeout())
            else:
                self.transport.close()  # never sent a byte: nobody to answer

        def on_message_begin(self) -> None:
            super().on_message_begin()
            extensions: Any = {ON_DISCONNECT: self._watch_disconnect}
            self.scope["extensions"] = extensions
            self._url_bytes = self._header_count = self._header_bytes = self._head_pending = 0
            self._in_head = True
            if not self._head_deadline:  # a request after a keep-alive pause gets its own deadline
                self._head_deadline = self.loop.time() + limits.http_head_timeout_ms / 1000

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._in_body = True
            self._head_deadline = 0.0
            self._start_body_window(self.loop.time())
            super().on_headers_complete()

        def _start_body_window(self, now: float) -> None:
            self._body_window_bytes = 0
            self._body_window_end = now + limits.http_body_idle_timeout_ms / 1000

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def _body_window_ended(self, now: float) -> None:
            """A body that keeps arriving at the minimum rate gets another window; a stalled or trickling
            one (slowloris: a byte now and then would restart a plain idle timer) is answered 408 and
            closed, so it cannot hold a connection and its share of the body budget."""
            if self._body_window_bytes >= limits.http_body_window_bytes_min:
                self._start_body_window(now)
                return
            if self.cycle is not None and self.cycle.response_started:  # answered already (413, 503...)
                self.transport.close()
            else:
                self._answer_and_close(408, body_timeout())

        def on_url(self, url: bytes) -> None:
            self._url_bytes += len(url)
            if self._url_bytes > limits.url_bytes_max:
                self._reject(414, url_too_long())
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._header_bytes += len(name) + len(value)
            if self._header_count > limits.header_count_max:
                self._reject(431, too_many_headers())
            if self._header_bytes > limits.header_bytes_max:
                self._reject(431, headers_too_large())
            super().on_header(name, value)

        def _answer_and_close(self, status: int, message: str) -> None:
            body = error_body(status, message)
            head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n%scontent-length: %d\r\nconnection: close\r\n\r\n"
            self._rejected = True
            extra = error_headers + (b"retry-after: 1\r\n" if status == 503 else b"")
            self.transport.write(head % (status, _REASONS[status], extra, len(body)) + body)
            self.transport.close()

        def _reject(self, status: int, message: str) -> None:
            self._answer_and_close(status, message)
            raise _HeadRejected()  # stops the parser; uvicorn's generic 400 is suppressed below

        def send_400_response(self, msg: str) -> None:
            if not self._rejected:  # uvicorn's own 400 is plain text: answer in the listener's JSON shape
                self._answer_and_close(400, _MALFORMED)

        def _sniff(self, data: bytes) -> bytes | None:
            """The connection's first bytes: None while they may still be the channel's preface (or once
            the connection went to the channel), else the bytes for the HTTP parser."""
            pending = self._sniffed + data
            if pending.startswith(PREFACE):
                self._to_channel(pending[len(PREFACE) :])
                return None
            if PREFACE.startswith(pending):
                self._sniffed = pending
                return None
            self._sniffing, self._sniffed = False, b""
            return pending

        def _to_channel(self, rest: bytes) -> None:
            assert channel_body_limit is not None
            self._sniffing = False
            self._head_deadline = 0.0
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            channel = ChannelServer(self.app, lambda: self.connection_lost(None), channel_body_limit)
            self.transport.set_protocol(channel)
            channel.connection_made(self.transport)
            if rest:
                channel.data_received(rest)

        def data_received(self, data: bytes) -> None:
            if self._rejected:
                return
            if self._sniffing:
                sniffed = self._sniff(data)
                if sniffed is None:
                    return
                data = sniffed
            super().data_received(data)
            if self._in_head and not self._rejected:  # all of ``data`` went into a head still incomplete
                self._head_pending += len(data)
                if self._head_pending > _HEAD_BYTES_MAX:
                    self._answer_and_close(431, headers_too_large())
            if self._in_body:  # a body still arriving: counted against its window's minimum
                self._body_window_bytes += len(data)

    return BoundedHttpToolsProtocol
