"""An App as a Restate deployment: the SDK side of Restate's service protocol, as an ASGI application.

A Restate server (or ``unbroken serve`` with remote deployments) registers the App by ``GET …/discover`` and
runs each attempt of a handler as ``POST …/invoke/{service}/{handler}``. The request body is the
``StartMessage``, the stored journal (``known_entries`` commands and notifications, beginning with the
input), then, over HTTP/2, each notification as the server stores it; the response body is the commands the
handler writes and one final ``EndMessage`` (after the output), ``SuspensionMessage`` or ``ErrorMessage``.

The handler runs exactly as in-process: :class:`~unbroken.sdk.local.LocalTransport` drives it with an
:class:`~unbroken.sdk.attempt.Attempt` whose sink (:class:`_FrameSink`) encodes commands as frames, and
decoded notifications are passed to ``Attempt.notify``. When the request body ends (the server closes its
side after its inactivity timeout, or at once in request/response mode) nothing more can arrive: the attempt
suspends as soon as the handler only waits (``Attempt.input_closed``), listing what it waits on.

Request/response (HTTP/1.1: what the manifest announces when discovered over HTTP/1.1) and bidirectional
streaming (HTTP/2) are the same code: only when the body ends differs. Only the paths' last segments are
matched, so the endpoint works mounted under any prefix (``fastapi_app.mount("/restate", app)``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.errors import ProtocolViolation
from unbroken.core.ids import InvocationId
from unbroken.core.schema import ServiceKind, Target
from unbroken.protocol import framing as f
from unbroken.protocol.control import (
    Error,
    ProposeRun,
    StartInfo,
    Suspend,
    decode_start,
    encode_error,
    encode_propose_run,
    encode_suspension,
)
from unbroken.protocol.entries import decode_command, decode_notification, encode_command
from unbroken.protocol.pb import violation
from unbroken.protocol.transport import AttemptStart
from unbroken.sdk.asgi import Receive, Scope, Send
from unbroken.sdk.attempt import Attempt
from unbroken.sdk.local import LocalTransport
from unbroken.sdk.manifest import build_manifest, manifest_content_type, pick_manifest_version

if TYPE_CHECKING:
    from unbroken.sdk.service import _ServiceBase

log = logging.getLogger("unbroken.deployment")

SERVER_HEADER = b"unbroken/0.1.0"
_MODES = {"bidi": "BIDI_STREAM", "request_response": "REQUEST_RESPONSE", None: None}


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeploymentEndpoint:
    """The protocol side of an App (``App.deployment()``): ``/discover``, ``/invoke/{service}/{handler}``
    and ``/health``; anything else is 404. Its lifespan starts nothing: the server keeps the state."""

    def __init__(
        self, services: list[_ServiceBase], protocol: str | None = None, identity_keys: Any = None
    ) -> None:
        if protocol not in _MODES:
            raise ValueError(f"protocol must be 'bidi', 'request_response' or None, not {protocol!r}")
        # Request signing is not built: with keys given, serving unsigned requests would be the opposite of
        # what was asked, so the protocol's routes refuse (501) instead.
        self.refused = (
            b"request signing (identity_keys) is not supported by Unbroken yet: this deployment refuses "
            b"every request rather than accept unsigned ones"
            if identity_keys
            else None
        )
        self.services = services
        self.by_name = {s.name: s for s in services}
        self.mode = _MODES[protocol]
        self._transport: LocalTransport | None = None  # made on the serving loop, at the first attempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        segments = [unquote(s) for s in scope["path"].split("/") if s]
        method = scope["method"]
        if self.refused is not None and segments[-1:] != ["health"]:
            await _answer(send, 501, self.refused)
        elif segments[-1:] == ["discover"] and method == "GET":
            await self._discover(scope, send)
        elif segments[-1:] == ["health"] and method == "GET":
            await _answer(send, 200, b'{"status":"ok"}', b"application/json")
        elif len(segments) >= 3 and segments[-3] == "invoke" and method == "POST":
            await self._invoke(scope, receive, send, segments[-2], segments[-1])
        else:
            await _answer(
                send, 404, b"not a Restate deployment route: /discover, /invoke/{service}/{handler}"
            )

    async def _discover(self, scope: Scope, send: Send) -> None:
        version = pick_manifest_version(_header(scope, b"accept"))
        if version is None:
            text = (
                b"no endpoint manifest version this SDK writes was asked for: it writes v2, v3 and v4 (+json)"
            )
            await _answer(send, 415, text)
            return
        mode = self.mode or ("BIDI_STREAM" if scope.get("http_version") == "2" else "REQUEST_RESPONSE")
        doc = build_manifest(self.services, version, mode, f.OLDEST_VERSION, f.NEWEST_VERSION)
        await _answer(send, 200, orjson.dumps(doc), manifest_content_type(version).encode())

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, service: str, handler: str) -> None:
        ctype = _header(scope, b"content-type")
        version = f.parse_content_type(ctype)
        if version is None or not f.OLDEST_VERSION <= version <= f.NEWEST_VERSION:
            text = (
                f"unsupported service protocol {ctype!r}: this deployment speaks "
                f"{f.content_type(f.OLDEST_VERSION)} to {f.content_type(f.NEWEST_VERSION)}"
            )
            await _answer(send, 415, text.encode())
            return
        svc = self.by_name.get(service)
        if svc is None or handler not in svc.handlers:
            await _answer(send, 404, f"no handler {service}/{handler} in this deployment".encode())
            return
        loop = asyncio.get_running_loop()
        if self._transport is None or self._transport.loop is not loop:  # one per serving loop
            self._transport = LocalTransport(self.services, _now_ms, loop)
        await _Invocation(self._transport, svc.kind, version, service, handler).serve(receive, send)


class _Invocation:
    """One attempt: reads the Start message and the journal, runs the handler, streams its messages."""

    def __init__(
        self, transport: LocalTransport, kind: ServiceKind, version: int, service: str, handler: str
    ) -> None:
        self.transport = transport
        self.kind = kind
        self.version = version
        self.service = service
        self.handler = handler
        self.decoder = f.FrameDecoder()
        self.sink = _FrameSink(version)
        self.attempt: Attempt | None = None
        self.closed = False  # the request body ended
        self.leftover: list[f.Frame] = []  # notifications that came in the same chunks as the journal

    async def serve(self, receive: Receive, send: Send) -> None:
        ctype = f.content_type(self.version).encode()
        head = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", ctype), (b"x-restate-server", SERVER_HEADER)],
        }
        try:
            start = await self._read_start(receive)
        except ProtocolViolation as exc:
            # Answered in the protocol (an ErrorMessage, code 571), after the request ended: the server
            # records the reason and retries by its policy.
            log.warning("%s/%s: bad invocation request: %s", self.service, self.handler, exc.message)
            error = Error(exc.code, f"bad invocation request: {exc.message}", "", None, "")
            await send(head)
            body = f.encode_frame(f.ERROR, encode_error(error))
            await send({"type": "http.response.body", "body": body, "more_body": True})
            try:
                await asyncio.wait_for(self._discard(receive), limits.deployment_request_end_wait_s)
            except TimeoutError:
                pass
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if start is None:
            return  # the server went away before the Start message was whole
        await send(head)
        attempt = self.attempt = self.transport.start(start, self.sink)
        self.sink.attempt = attempt
        reader = None
        if self.closed:  # the whole request is here (request/response): what came after the journal, then end
            try:
                for leftover in self.leftover:
                    self._deliver(attempt, leftover)
            except ProtocolViolation as exc:
                attempt.fail(exc.code, f"the server sent a bad message: {exc.message}")
            attempt.input_closed()
        else:
            reader = asyncio.get_running_loop().create_task(self._read_rest(receive))
        try:
            await self.sink.drain(send)
            if reader is not None and not reader.done():
                # the server ends its side once it has read our last message; the response ends after it
                await asyncio.wait([reader], timeout=limits.deployment_request_end_wait_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if reader is not None:
                reader.cancel()
            attempt.abort()  # nothing of it reaches the server any more: no side effect after the end

    async def _read_start(self, receive: Receive) -> AttemptStart | None:
        """The Start message and the ``known_entries`` journal entries after it (the first attempt's: the
        input alone)."""
        info: StartInfo | None = None
        journal: list[j.Entry] = []
        pending: list[f.Frame] = []
        while info is None or len(journal) < info.known_entries:
            if not pending:
                if self.closed:
                    raise violation(
                        "the request ended before the Start message and its journal"
                        + ("" if info is None else f" ({len(journal)} of {info.known_entries} entries)")
                    )
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                pending = self._feed(message)
                continue
            frame = pending.pop(0)
            if info is None:
                if frame.type != f.START:
                    raise violation(f"the request begins with message type 0x{frame.type:04x}, not Start")
                info = decode_start(frame.body)
                if not 1 <= info.known_entries <= limits.journal_entries_max:
                    raise violation(f"known_entries is {info.known_entries}")
            else:
                journal.append(_journal_entry(frame, not journal))
        self.leftover = pending
        return self._attempt_start(info, journal)

    def _feed(self, message: MutableMapping[str, Any]) -> list[f.Frame]:
        if not message.get("more_body", False):
            self.closed = True  # first: a bad chunk still ends the request
        frames = self.decoder.feed(message.get("body", b""))
        if self.closed:
            self.decoder.finish()
        return frames

    def _attempt_start(self, info: StartInfo, journal: list[j.Entry]) -> AttemptStart:
        inv = info.debug_id or str(InvocationId.from_bytes(info.id))
        seed = info.random_seed if self.version >= 6 else int.from_bytes(hashlib.sha256(info.id).digest()[:8])
        keyed = self.kind is not ServiceKind.SERVICE
        hdef = self.transport.handlers[(self.service, self.handler)]
        return AttemptStart(
            invocation_id=inv,
            attempt=info.retry_count,
            target=Target(self.service, self.handler, info.key if keyed else None),
            service_kind=self.kind,
            handler_kind=hdef.kind,
            journal=tuple(journal),
            state=dict(info.state) if keyed else None,
            random_seed=seed,
            retries_since_progress=info.retry_count,
            ms_since_progress=info.ms_since_progress,
            inactivity_timeout_ms=limits.deployment_open_input_timeout_ms,
            idempotency_key=None,
            lazy_state=keyed and info.partial_state,
        )

    async def _read_rest(self, receive: Receive) -> None:
        """Notifications the server stores while the attempt runs (HTTP/2), until it ends its side."""
        attempt = self.attempt
        assert attempt is not None
        try:
            for frame in self.leftover:
                self._deliver(attempt, frame)
            while not self.closed:
                message = await receive()
                if message["type"] == "http.disconnect":
                    attempt.abort()
                    self.sink.finish()
                    return
                for frame in self._feed(message):
                    self._deliver(attempt, frame)
            attempt.input_closed()
        except ProtocolViolation as exc:
            attempt.fail(exc.code, f"the server sent a bad message: {exc.message}")
            await self._discard(receive)

    async def _discard(self, receive: Receive) -> None:
        """Read the rest of the request (the attempt is over) until the server ends it."""
        while not self.closed:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                self.closed = True

    def _deliver(self, attempt: Attempt, frame: f.Frame) -> None:
        if frame.type == f.COMMAND_ACK:
            return  # asked for by no command this SDK writes
        if not f.FIRST_NOTIFICATION <= frame.type < f.FIRST_CUSTOM and frame.type != f.SIGNAL:
            raise violation(f"message type 0x{frame.type:04x} after the journal (a notification expected)")
        attempt.notify(decode_notification(frame.type, frame.body))


def _journal_entry(frame: f.Frame, first: bool) -> j.Entry:
    if first and frame.type != f.INPUT:
        raise violation(f"the journal begins with message type 0x{frame.type:04x}, not the input")
    if f.FIRST_COMMAND <= frame.type < f.FIRST_NOTIFICATION:
        return decode_command(frame.type, frame.body)
    if f.FIRST_NOTIFICATION <= frame.type < f.FIRST_CUSTOM or frame.type == f.SIGNAL:
        return decode_notification(frame.type, frame.body)
    raise violation(f"message type 0x{frame.type:04x} in the journal (custom entries are not supported)")


class _FrameSink:
    """The attempt's sink: each message becomes a frame for the response body (never blocks). The frames
    wait for the writer in ``out``; its size is bounded by the journal's limits (one frame per entry)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.attempt: Attempt | None = None
        self.out: list[bytes] = []
        self.wake = asyncio.Event()
        self.done = False
        self.output_written = False

    def _put(self, msg_type: int, body: bytes) -> None:
        if not self.done:
            self.out.append(f.encode_frame(msg_type, body))
            self.wake.set()

    def allocated(self, awakeables: int) -> None:
        pass  # the server checks nothing of it

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        self._put(*encode_command(command, self.version))
        if isinstance(command, j.OutputCommand):
            self.output_written = True

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        self._put(
            f.PROPOSE_RUN_COMPLETION, encode_propose_run(ProposeRun(completion_id, result), self.version)
        )

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        named: tuple[str, ...] = ()
        if self.attempt is not None:  # named signals (ctx.signal) are not in the engine's own suspension
            named = tuple(sorted(k[1] for k in self.attempt.awaiting if k[0] == "n"))
        self._put(f.SUSPENSION, encode_suspension(Suspend(waiting_completions, waiting_signals, named)))
        self.finish()

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        # v5/v6 have no way to ask for a pause: the server's retry policy decides
        self._put(f.ERROR, encode_error(Error(code, message, "", next_retry_delay_ms, "")))
        self.finish()

    def ended(self) -> None:
        if self.output_written:
            self._put(f.END, b"")
        elif not self.done:  # ended without saying how (aborted): never a response the server must guess at
            self._put(f.ERROR, encode_error(Error(500, "the attempt ended without an output", "", None, "")))
        self.finish()

    def finish(self) -> None:
        self.done = True
        self.wake.set()

    async def drain(self, send: Send) -> None:
        """Write the frames as they come, then end the response."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            chunk, self.out = b"".join(self.out), []
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self.done:
                return


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def _answer(send: Send, status: int, body: bytes, ctype: bytes = b"text/plain; charset=utf-8") -> None:
    headers = [(b"content-type", ctype), (b"x-restate-server", SERVER_HEADER)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["DeploymentEndpoint"]
