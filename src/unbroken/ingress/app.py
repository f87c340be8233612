"""The Restate-compatible ingress: turns HTTP requests into records and waits for their replies.

It never touches storage: every request becomes a record for the processor, and answers come back as
``Reply`` actions after the records that produced them committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.durations import InvalidDuration, format_rfc3339_ms, format_rfc3339_nanos, parse_delay_ms
from unbroken.core.errors import EngineUnavailable
from unbroken.core.ids import InvalidId, InvocationId, parse_awakeable_id, partition_key_for_key
from unbroken.core.journal import FIRST_AWAKEABLE_SIGNAL, Failure, Header, Result
from unbroken.core.model import HandlerKind, HandlerSchema, Target
from unbroken.http.asgi import (
    UNAUTHORIZED_HEADERS,
    BodyTooLarge,
    ClientDisconnected,
    HttpError,
    Receive,
    Scope,
    Send,
    authorized,
    header,
    lifespan,
    read_body,
    respond,
    respond_json,
)
from unbroken.http.wire import ON_DISCONNECT, check_head
from unbroken.ingress.body import BodyBudget, Overloaded, check_json
from unbroken.ingress.routing import Route, parse_route
from unbroken.runtime.node import Node

log = logging.getLogger("unbroken.ingress")

_SKIP_HEADERS = {b"connection", b"host", b"idempotency-key", b"idempotency-expires"}
_ERR_INGRESS = [(b"x-restate-error-source", b"ingress")]
_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")
_SHUTTING_DOWN = "the server is shutting down: the invocation goes on, attach to it again later"


class IngressApp:
    def __init__(
        self, engine: Node, body_limit_bytes: int = limits.request_body_bytes_max, token: str | None = None
    ) -> None:
        self.engine = engine
        self.body_limit = body_limit_bytes
        self._random = engine.entropy  # injected per node: the simulator seeds it
        self.token = token  # when set, every request but /restate/health needs ``authorization: Bearer <token>``
        # A single body of the configured limit always fits when nothing else is in flight.
        self.budget = BodyBudget(max(limits.ingress_inflight_body_bytes_max, body_limit_bytes))
        self.closing = False  # at shutdown, waiting requests answer 503 instead of being cancelled
        self._waiting: set[asyncio.Future[Reply]] = set()

    def close(self) -> None:
        self.closing = True
        for fut in list(self._waiting):
            fut.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except HttpError as exc:
            extra = UNAUTHORIZED_HEADERS if exc.status == 401 else None
            if isinstance(exc, Overloaded):
                extra = [(b"retry-after", str(exc.retry_after_s).encode())]
            await _error(send, exc.status, exc.message, extra=extra)
        except BodyTooLarge:
            await _error(send, 413, f"request body too large: the limit is {self.body_limit} bytes")
        except EngineUnavailable as exc:  # nothing was accepted: the caller retries
            retry_after = [(b"retry-after", str(exc.retry_after_s).encode())]
            await _error(send, exc.status, exc.message, extra=retry_after)
        except ClientDisconnected:
            return  # nobody to answer, nothing done
        except Exception:
            log.exception("ingress request failed: %s %s", scope.get("method"), scope.get("path"))
            await _error(send, 500, "internal error")

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        check_head(scope)
        path = _raw_path(scope)
        if path.rstrip("/") == "/restate/health":  # open even when a token is configured
            await self._health(send)
            return
        if not authorized(scope, self.token):
            raise HttpError(401, "unauthorized: this ingress requires the header 'authorization: Bearer <token>'")
        route = parse_route(path, self.engine.schemas)
        method = scope["method"]
        if route.kind == "health":
            await self._health(send)
            return
        if method not in ("GET", "POST"):
            raise HttpError(405, "method not allowed")
        if route.kind == "awakeable":
            await self._awakeable(scope, receive, send, route)
        elif route.kind in ("attach", "output"):
            await self._attach(scope, receive, send, route)
        else:
            await self._invoke(scope, receive, send, route)

    async def _health(self, send: Send) -> None:
        trouble = self.engine.health()
        if trouble is not None:  # the store fails or the partition stopped: say so, not 200
            await _error(send, 503, trouble, extra=[(b"retry-after", str(limits.retry_after_s).encode())])
            return
        await respond_json(send, 200, {"services": sorted(self.engine.schemas.services)})

    # ------------------------------------------------------------------------------- invoke
    async def _invoke(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        async with self.budget.reserve() as reservation:
            idem, pending = await self._submit(scope, receive, route, reservation.charge)
            reply = await self._wait(scope, receive, pending)
            self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
            await _answer(
                send, reply, dedup=idem is not None,
                content_type=route.handler.content_type if route.handler else "application/json",
            )

    async def _submit(
        self, scope: Scope, receive: Receive, route: Route, charge: Callable[[int], None]
    ) -> tuple[str | None, _Pending]:
        """Read, check and submit the request; the body is referenced by the record only from here on."""
        target = route.target
        assert target is not None and route.handler is not None
        body = await read_body(scope, receive, self.body_limit, charge)
        _check_body(scope, body, route.handler)
        _check_input(body, route.handler.input_validator)
        query = _query(scope)
        delay_ms = _delay(query, route.send)
        idem = header(scope, b"idempotency-key")
        if idem is not None:
            idem = _check_idempotency_key(idem, route.handler.kind)
        invocation_id = self._new_id(target, route.handler.kind, idem)
        execute_at = self.engine.clock.now_ms() + delay_ms if delay_ms else 0
        headers = _forwarded_headers(scope)
        seed = int.from_bytes(self._random.take(8), "big")
        reply_kind = "accepted" if route.send else "result"

        def record(request_id: int) -> r.Invoke:
            return r.Invoke(invocation_id, target, body, headers, idem, execute_at, request_id, reply_kind, seed)

        return idem, self._request(record, receive)

    def _request(self, make: Callable[[int], r.Record], receive: Receive) -> _Pending:
        ids: list[int] = []

        def record(request_id: int) -> r.Record:
            ids.append(request_id)
            return make(request_id)

        # bounded: refused (503) while the store fails or a bound is reached; while the store fails the
        # engine also withdraws a queued record whose caller left (never acknowledged, never applied)
        fut = self.engine.request(record, _client_gone(receive), bounded=True)
        return _Pending(fut, ids[0])

    async def _wait(self, scope: Scope, receive: Receive, pending: _Pending) -> Reply:
        """The reply, unless the client hangs up first (its waiter is forgotten: the invocation goes on)
        or the server shuts down (503: the invocation is durable, the client attaches again later)."""
        fut = pending.future
        if fut.done():
            return fut.result()
        if self.closing:  # a request that came in during the shutdown: close() will not see it
            self.engine.forget(pending.request_id)
            raise Overloaded(_SHUTTING_DOWN)

        def stop_waiting() -> None:
            if not fut.done():
                fut.cancel()

        unwatch = _watch_disconnect(scope, receive, stop_waiting)
        self._waiting.add(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request itself is cancelled
            self.engine.forget(pending.request_id)
            if self.closing:
                raise Overloaded(_SHUTTING_DOWN) from None
            raise ClientDisconnected() from None
        finally:
            unwatch()
            self._waiting.discard(fut)

    def _new_id(self, target: Target, kind: HandlerKind | None, idem: str | None) -> str:
        if kind is HandlerKind.WORKFLOW:
            assert target.key is not None
            return str(InvocationId.for_workflow(target.service, target.key))
        if idem is not None:
            return str(InvocationId.for_idempotent(target.service, target.key, target.handler, idem))
        rnd = self._random.take(18)
        pk = partition_key_for_key(target.key) if target.key is not None else int.from_bytes(rnd[10:], "big")
        return str(InvocationId.new(pk, rnd[:10], self.engine.clock.now_ms()))

    # ------------------------------------------------------------------------- attach/output
    async def _attach(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        invocation_id = route.invocation_id
        assert invocation_id is not None
        wait = route.kind == "attach"
        pending = self._request(lambda rid: r.Attach(invocation_id, wait, rid), receive)
        reply = await self._wait(scope, receive, pending)
        self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
        await _answer(send, reply, dedup=True)

    # ---------------------------------------------------------------------------- awakeables
    async def _awakeable(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        if scope["method"] != "POST":
            raise HttpError(405, "method not allowed: awakeables are resolved with POST")
        assert route.awakeable_id is not None
        aid = route.awakeable_id
        try:
            inv, idx = parse_awakeable_id(aid)
        except InvalidId as exc:
            raise HttpError(400, str(exc)) from None
        if idx < FIRST_AWAKEABLE_SIGNAL:  # 1 is CANCEL, the others are reserved: never an awakeable
            raise HttpError(400, f"bad awakeable id '{aid}': signal index {idx} is not an awakeable's")
        async with self.budget.reserve() as reservation:
            body = await read_body(scope, receive, self.body_limit, reservation.charge)
            if route.action == "resolve":
                _check_body(scope, body, None)  # the waiting handler decodes it as JSON, on every retry
                result = Result(value=body)
            else:
                result = Result(failure=Failure(500, body.decode("utf-8", "replace")))
            del body
            pending = self._request(lambda rid: r.ResolveSignal(str(inv), idx, result, rid), receive)
            reply = await self._wait(scope, receive, pending)
        if reply.kind == "not_found":
            raise HttpError(404, f"awakeable '{aid}' not found: its invocation does not exist")
        if reply.kind in ("store_failed", "unavailable", "gone"):
            self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
            await _answer(send, reply, dedup=False)
            return
        if reply.kind == "not_allocated":
            raise HttpError(404, f"awakeable '{aid}' not found: its invocation has not created it")
        await respond(send, 202)


def _client_gone(receive: Receive) -> Callable[[], Awaitable[object]]:
    """What completes when the caller hangs up (the body was read whole: only a disconnect comes now)."""

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return gone


def _raw_path(scope: Scope) -> str:
    """The path as sent (still percent-encoded): routing splits it first, then decodes each segment, so
    an encoded '/' or '%' stays inside its key."""
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        return raw.decode("latin-1")
    return quote(scope["path"], safe="/")


class _Pending:
    __slots__ = ("future", "request_id")

    def __init__(self, future: asyncio.Future[Reply], request_id: int) -> None:
        self.future = future
        self.request_id = request_id


def _watch_disconnect(scope: Scope, receive: Receive, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when the client hangs up; returns the function that stops watching.

    Under ``unbroken serve`` the connection tells us (ingress/wire.py, a scope extension): a task reading
    ``receive`` for each waiting call would cost ~20 µs a call. Under another ASGI server, that task."""
    watch = scope.get("extensions", {}).get(ON_DISCONNECT)
    if watch is not None:
        return watch(callback)  # type: ignore[no-any-return]
    gone = asyncio.ensure_future(_disconnected(receive))
    gone.add_done_callback(lambda _: callback())

    def unwatch() -> None:
        gone.cancel()

    return unwatch


async def _disconnected(receive: Receive) -> None:
    """Returns when the client hangs up (once the body is read, ``receive`` only answers that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _check_body(scope: Scope, body: bytes, handler: HandlerSchema | None) -> None:
    """The body against the handler's declared ``accept`` (as restate-server checks its ``input`` rules);
    without a handler (an awakeable's resolution) it must be JSON."""
    if not body:
        return
    ctype = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
    accept = handler.accept if handler is not None else "application/json"
    if ctype and not _content_type_matches(ctype, accept):
        raise HttpError(400, f"input validation error: Content-type '{ctype}' does not match '{accept}'")
    if handler is not None and not handler.input_json:
        return  # bytes (or a custom serde): the handler's serde judges the body
    check_json(body)


def _content_type_matches(ctype: str, accept: str) -> bool:
    """``ctype`` against an accept pattern: exact, ``type/*`` or ``*/*``; a JSON accept also takes ``+json``
    types and the form type curl's ``-d`` sends (Unbroken's leniency, kept from before)."""
    want = accept.split(";")[0].strip().lower()
    if want in ("*/*", "*", ctype):
        return True
    if want.endswith("/*") and ctype.startswith(want[:-1]):
        return True
    return want == "application/json" and (ctype in _JSON_TYPES or ctype.endswith("+json"))


def _check_input(body: bytes, validate: Callable[[bytes], str | None] | None) -> None:
    """The body against the handler's input type (the SDK's check): a bad one is refused before anything is
    stored, instead of running the handler with None, or failing inside it and being retried for an hour."""
    problem = validate(body) if validate is not None else None
    if problem is not None:
        raise HttpError(400, f"input validation error: {problem}")


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    if not raw:
        return {}
    return {k.lower(): v for k, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)}


def _delay(query: dict[str, str], is_send: bool) -> int:
    text = query.get("delay")
    if text is None:
        return 0
    if not is_send:
        raise HttpError(
            400, "cannot use the delay query parameter with calls. The delay is supported only with sends"
        )
    try:
        delay_ms = parse_delay_ms(text)
    except InvalidDuration as exc:
        raise HttpError(400, f"bad delay query parameter, must be a ISO8601 duration or milliseconds: {exc}") from None
    if delay_ms > limits.delay_ms_max:
        raise HttpError(400, f"bad delay query parameter: at most {limits.delay_ms_max} ms (10 years)")
    return delay_ms


def _check_idempotency_key(idem: str, kind: HandlerKind | None) -> str:
    if kind is HandlerKind.WORKFLOW:
        raise HttpError(
            400,
            "cannot use the idempotency key with workflow handlers. The handler invocation will already be "
            "idempotent by the workflow key itself.",
        )
    if not idem or len(idem.encode()) > limits.idempotency_key_bytes_max:
        raise HttpError(400, f"bad idempotency-key header: it must have 1 to {limits.idempotency_key_bytes_max} bytes")
    return idem


def _forwarded_headers(scope: Scope) -> tuple[Header, ...]:
    path = _raw_path(scope) + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
    out = [Header("x-restate-ingress-path", path)]
    for key, value in scope["headers"][: limits.header_count_max]:
        if key not in _SKIP_HEADERS:
            out.append(Header(key.decode("latin-1"), value.decode("latin-1")))
    return tuple(out)


async def _error(
    send: Send, status: int, message: str, source: str = "ingress", inv: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:  # fmt: skip
    headers = [(b"x-restate-error-source", source.encode()), *(extra or ())]
    if inv is not None:
        headers.append((b"x-restate-id", inv.encode()))
    await respond_json(send, status, {"code": status, "message": message, "source": source}, headers)


async def _answer(send: Send, reply: Reply, dedup: bool, content_type: str = "application/json") -> None:
    """Turn a Reply into Restate's HTTP answer."""
    inv = reply.invocation_id or ""
    match reply.kind:
        case "result":
            await _result(send, inv, reply.result, reply.expires_at_ms if dedup else 0, content_type)
        case "accepted" | "previously_accepted":
            payload: dict[str, Any] = {"invocationId": inv}
            if reply.execute_at_ms:
                payload["executionTime"] = format_rfc3339_nanos(reply.execute_at_ms)
            payload["status"] = "Accepted" if reply.kind == "accepted" else "PreviouslyAccepted"
            await respond_json(send, 202, payload, [(b"x-restate-id", inv.encode())])
        case "workflow_already_invoked":
            await _error(send, 409, "the workflow method was already invoked", "invocation", inv)
        case "not_found":
            await _error(send, 404, "not found", "invocation")
        case "not_ready":
            await _error(send, 470, "the invocation exists but has not completed yet", "ingress", inv)
        case "store_failed" | "unavailable":  # refused without being applied: nothing was accepted
            failure = reply.result.failure if reply.result is not None else None
            status, message = (failure.code, failure.message) if failure is not None else (503, reply.kind)
            await _error(send, status, message, extra=[(b"retry-after", str(limits.retry_after_s).encode())])
        case "gone":
            return  # the caller left before its record was applied; it was withdrawn
        case _:
            await _error(send, 500, f"internal error ({reply.kind})")


async def _result(
    send: Send, inv: str, result: Result | None, expires_at_ms: int, content_type: str = "application/json"
) -> None:
    assert result is not None
    headers = [(b"x-restate-id", inv.encode())]
    if expires_at_ms:
        headers.append((b"idempotency-expires", format_rfc3339_ms(expires_at_ms).encode()))
    if result.failure is not None:
        f = result.failure
        status = f.code if 100 <= f.code <= 599 else 500
        body: dict[str, Any] = {"code": f.code, "message": f.message}
        if f.metadata:
            body["metadata"] = f.metadata
        body["source"] = "invocation"
        headers.append((b"x-restate-error-source", b"invocation"))
        await respond_json(send, status, body, headers)
        return
    value = result.value or b""
    if value:
        headers.append((b"content-type", content_type.encode("latin-1", "replace")))
    await respond(send, 200, value, headers)


__all__ = ["IngressApp", "unquote"]
