"""The ``HandlerTransport`` for remote deployments: each attempt is one HTTP request to the deployment
(``POST {uri}/invoke/{service}/{handler}``) speaking Restate's service protocol.

Streaming mode (HTTP/2 with prior knowledge, Restate's default; ``h2stream.py``, one stream per attempt on
connections shared per deployment): the request stays open,
the engine writes the ``StartMessage`` and the stored journal, then each notification as it is stored; the
SDK answers with commands as it goes. After the inactivity timeout without a message either way, the engine
closes its side and the SDK suspends on what it awaits.

Request/response mode (HTTP/1.1, what an SDK served by an HTTP/1.1 server announces): the request body is
the ``StartMessage`` and the whole stored journal; the SDK replays it, runs until it needs something the
engine has not sent (a sleep's end, a call's result, a run's stored result), and answers with the commands
it wrote and a ``SuspensionMessage`` (or ``EndMessage`` after its output, or an ``ErrorMessage``). The
engine stores the commands; when what the suspension waits on is stored, it starts a new attempt with the
longer journal. Notifications the engine produces during an attempt are not sent (the request is over):
they reach the SDK in the next attempt's replay.

Whatever the deployment answers, the attempt ends with one of ``sink.command`` / ``propose_run`` followed by
``suspend``, ``fail`` or the output command: a malformed frame, an unknown message, a truncated body or a
wrong version fails the attempt with code 571 and a message saying what was wrong; an unreachable
deployment fails it with 503. The engine's retry policy decides what follows; the engine never stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.deployments import Deployment
from unbroken.core.errors import ProtocolViolation
from unbroken.protocol import framing as f
from unbroken.protocol.control import (
    End,
    Error,
    NewCommand,
    ProposeRun,
    Suspend,
    decode_sdk_frame,
    encode_start,
)
from unbroken.protocol.entries import completion_type, encode_command, encode_notification
from unbroken.protocol.pb import violation
from unbroken.protocol.transport import AttemptHandle, AttemptSink, AttemptStart, HandlerTransport

if TYPE_CHECKING:  # imported on first use: a node without remote deployments starts without them
    import httpx

    from unbroken.protocol.h2stream import H2Pool, H2Request

log = logging.getLogger("unbroken.protocol")

UNREACHABLE_CODE = 503  # the deployment could not be reached or broke the connection: retried by policy


@dataclass(frozen=True, slots=True)
class Endpoint:
    deployment_id: str
    uri: str
    version: int
    headers: dict[str, str]
    streaming: bool = False  # HTTP/2 bidirectional streaming (else request/response over HTTP/1.1)


def endpoints(deployments: list[Deployment]) -> tuple[dict[str, Endpoint], dict[str, Endpoint]]:
    """(service name -> the endpoint serving new invocations: the newest deployment declaring it,
    deployment id -> its endpoint: where the invocations pinned to it run)."""
    by_service: dict[str, Endpoint] = {}
    by_id: dict[str, Endpoint] = {}
    for dep in sorted(deployments, key=lambda d: (d.created_at_ms, d.id)):
        version = f.pick_version(dep.min_protocol_version, dep.max_protocol_version)
        if version is None:  # refused at registration; a stored one from elsewhere is skipped, not fatal
            log.warning("deployment %s speaks no protocol version Unbroken speaks: not served", dep.id)
            continue
        # Streams need HTTP/2; over https that would take TLS with ALPN, which is not done yet: request/response
        streaming = dep.protocol_mode == "BIDI_STREAM" and not dep.use_http_11 and dep.uri.startswith("http:")
        endpoint = Endpoint(dep.id, dep.uri.rstrip("/"), version, dict(dep.headers), streaming)
        by_id[dep.id] = endpoint
        for svc in dep.services:
            by_service[svc.name] = endpoint
    return by_service, by_id


def build_request_body(start: AttemptStart, version: int) -> tuple[bytes, dict[int, int]]:
    """The Start message and the replayed journal; also the notification types of the completion ids the
    journal's commands allocated (to type the notifications that answer them)."""
    kinds: dict[int, int] = {}
    parts = [f.encode_frame(f.START, encode_start(start, version))]
    for entry in start.journal:
        if isinstance(entry, j.Notification):
            parts.append(f.encode_frame(*encode_notification(entry, kinds, version)))
        else:
            kinds.update(completion_type(entry))
            parts.append(f.encode_frame(*encode_command(entry, version)))
    return b"".join(parts), kinds


class _RemoteAttempt:
    """One attempt over HTTP; ``abort`` cancels it (the request is dropped, nothing more is recorded).

    Streaming (HTTP/2): the request stays open; notifications the engine stores are sent as they come, and
    after the inactivity timeout without a message either way the request side is closed, so that the SDK
    suspends (as restate-server does)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        pool: H2Pool,
        endpoint: Endpoint,
        start: AttemptStart,
        sink: AttemptSink,
    ) -> None:
        self.client = client
        self.pool = pool
        self.endpoint = endpoint
        self.start = start
        self.sink = sink
        self.over = False
        self.kinds: dict[int, int] = {}  # completion id -> the type of the notification answering it
        self.req: H2Request | None = None
        self.outbox: list[bytes] = []  # notifications delivered before the stream opened
        self.loop = asyncio.get_running_loop()
        self.inactivity: asyncio.TimerHandle | None = None
        self.task = self.loop.create_task(self._run())

    def notify(self, notification: j.Notification) -> None:
        if not self.endpoint.streaming or self.over:
            return  # request/response: the request is over; the next attempt replays it
        frame = f.encode_frame(*encode_notification(notification, self.kinds, self.endpoint.version))
        if self.req is None:
            self.outbox.append(frame)
        else:
            self.req.send(frame)
            self._touch()

    def abort(self) -> None:
        self.over = True
        self.task.cancel()
        self._stop()

    def _stop(self) -> None:
        if self.inactivity is not None:
            self.inactivity.cancel()
            self.inactivity = None
        if self.req is not None:
            self.req.close()

    def _touch(self) -> None:
        if self.inactivity is not None:
            self.inactivity.cancel()
        self.inactivity = self.loop.call_later(self.start.inactivity_timeout_ms / 1000, self._inactive)

    def _inactive(self) -> None:
        self.inactivity = None
        if self.req is not None and not self.over:
            self.req.end()  # the SDK, told nothing more is coming, suspends on what it awaits

    def _finish(self, code: int | None = None, message: str = "") -> None:
        if self.over:
            return
        self.over = True
        if code is not None:
            self.sink.fail(code, message)
        self.sink.ended()

    async def _run(self) -> None:
        import httpx

        from unbroken.protocol.h2stream import StreamError

        ep = self.endpoint
        target = self.start.target
        url = f"{ep.uri}/invoke/{target.service}/{target.handler}"
        try:
            body, self.kinds = build_request_body(self.start, ep.version)
            headers = {
                **ep.headers,
                "content-type": f.content_type(ep.version),
                "accept": f.content_type(ep.version),
                "x-restate-invocation-id": self.start.invocation_id,
            }
            if ep.streaming:
                await self._stream(url, headers, body)
            else:
                async with self.client.stream("POST", url, content=body, headers=headers) as resp:
                    ctype = resp.headers.get("content-type", "")
                    await self._answer(resp.status_code, ctype, resp.aiter_raw(), url)
        except ProtocolViolation as exc:
            self._finish(exc.code, f"[{url}] protocol violation: {exc.message}")
        except (httpx.HTTPError, StreamError) as exc:
            self._finish(UNREACHABLE_CODE, f"[{url}] deployment unreachable: {type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            self.over = True
            raise
        except Exception as exc:  # a bug here must fail this attempt, never the engine's loop
            log.exception("remote attempt %s failed", self.start.invocation_id)
            self._finish(500, f"[{url}] internal error talking to the deployment: {exc!r}")
        finally:
            self._stop()

    async def _stream(self, url: str, headers: dict[str, str], body: bytes) -> None:
        self.req = await self.pool.open(url, headers)
        self.req.send(body + b"".join(self.outbox))
        self.outbox.clear()
        self._touch()
        status, head = await self.req.response_head()
        await self._answer(status, head.get("content-type", ""), self.req.body(), url)

    async def _answer(self, status: int, ctype: str, chunks: AsyncIterator[bytes], url: str) -> None:
        if status != 200:
            quoted = bytearray()
            async for chunk in chunks:  # quoted, never read whole: the body is the deployment's
                quoted += chunk
                if len(quoted) >= limits.deployment_error_quote_bytes_max:
                    break
            text = bytes(quoted[: limits.deployment_error_quote_bytes_max]).decode("utf-8", "replace")
            self._finish(status, f"[{url}] the deployment answered {status}: {text}")
            return
        if f.parse_content_type(ctype) != self.endpoint.version:
            raise violation(
                f"the deployment answered content-type {ctype!r}, expected "
                f"{f.content_type(self.endpoint.version)!r} (protocol version mismatch)"
            )
        decoder = f.FrameDecoder()
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > limits.protocol_response_bytes_max:
                raise violation(f"the response exceeds {limits.protocol_response_bytes_max} bytes")
            for frame in decoder.feed(chunk):
                msg = decode_sdk_frame(frame)
                if isinstance(msg, NewCommand):
                    self.kinds.update(completion_type(msg.command))
                if self.req is not None:
                    self._touch()
                if self._handle(msg):
                    return
        decoder.finish()
        raise violation("the deployment ended its response without an End, Suspension or Error message")

    def _handle(self, msg: NewCommand | ProposeRun | Suspend | Error | End) -> bool:
        """Pass one message on; True once the attempt is over."""
        if self.over:
            return True
        sink = self.sink
        match msg:
            case NewCommand(command):
                sink.command(command)
            case ProposeRun(completion_id, result):
                sink.propose_run(completion_id, result)
            case Suspend(completions, signals, named):
                if named and not signals and not completions:  # any named signal wakes a suspension
                    signals = (j.CANCEL_SIGNAL,)
                sink.suspend(completions, signals)
                self._finish()
                return True
            case Error(code, message, stacktrace, delay, related):
                where = f" (at {related})" if related else ""
                text = f"{message}{where}" + (f"\n{stacktrace}" if stacktrace else "")
                self.over = True
                sink.fail(code if 0 < code < 65536 else 500, text, delay)
                sink.ended()
                return True
            case End():
                self._finish()
                return True
        return False


class RemoteTransport:
    """Routes each attempt by its service: to the remote deployment serving it, else to ``local`` (the
    in-process handlers, if any)."""

    def __init__(self, local: HandlerTransport | None) -> None:
        self.local = local
        self.routes: dict[str, Endpoint] = {}
        self.pinned: dict[str, Endpoint] = {}
        self._client: httpx.AsyncClient | None = None
        self._pool: H2Pool | None = None

    def set_deployments(self, deployments: list[Deployment]) -> None:
        self.routes, self.pinned = endpoints(deployments)

    def _http(self) -> httpx.AsyncClient:
        import httpx

        if self._client is None:  # made on the engine's loop, on first use
            timeout = httpx.Timeout(None, connect=limits.deployment_request_timeout_s)
            self._client = httpx.AsyncClient(timeout=timeout, http1=True, http2=False, trust_env=False)
        return self._client

    def start(self, start: AttemptStart, sink: AttemptSink) -> AttemptHandle:
        # An invocation stays on the deployment it started on; one whose deployment is gone (removed, or
        # replaced by a forced registration of its URI) goes to the service's current one.
        endpoint = self.pinned.get(start.deployment_id or "") or self.routes.get(start.target.service)
        if endpoint is None:
            if self.local is not None:
                return self.local.start(start, sink)
            sink.fail(404, f"no deployment serves {start.target}")
            sink.ended()
            return _Nothing()
        if self._pool is None:  # h2 is imported on first use, as httpx is
            from unbroken.protocol.h2stream import H2Pool

            self._pool = H2Pool()
        return _RemoteAttempt(self._http(), self._pool, endpoint, start, sink)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._client is not None:
            await self._client.aclose()


class _Nothing:
    def notify(self, notification: j.Notification) -> None:
        pass

    def abort(self) -> None:
        pass


__all__ = ["Endpoint", "RemoteTransport", "build_request_body", "endpoints"]
