"""The Restate-compatible ingress: turns HTTP requests into records and waits for their replies.

It never touches storage: every request becomes a record for the processor, and answers come back as
``Reply`` actions after the records that produced them committed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import orjson

from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.durations import InvalidDuration, format_rfc3339_ms, format_rfc3339_nanos, parse_delay_ms
from unbroken.core.errors import EngineUnavailable
from unbroken.core.ids import InvalidId, InvocationId, parse_awakeable_id, partition_key_for_key
from unbroken.core.journal import Failure, Header, Result
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
from unbroken.http.wire import check_head
from unbroken.ingress.routing import Route, parse_route
from unbroken.runtime.node import Node

log = logging.getLogger("unbroken.ingress")

_SKIP_HEADERS = {b"connection", b"host", b"idempotency-key", b"idempotency-expires"}
_ERR_INGRESS = [(b"x-restate-error-source", b"ingress")]
_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")


class IngressApp:
    def __init__(
        self, engine: Node, body_limit_bytes: int = limits.request_body_bytes_max, token: str | None = None
    ) -> None:
        self.engine = engine
        self.body_limit = body_limit_bytes
        self._random = engine.entropy  # injected per node: the simulator seeds it
        self.token = token  # when set, every request but /restate/health needs ``authorization: Bearer <token>``

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
            await self._attach(receive, send, route)
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
        target = route.target
        assert target is not None and route.handler is not None
        body = await read_body(scope, receive, self.body_limit)
        _check_body(scope, body, route.handler)
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

        reply = await self.engine.request(record, _client_gone(receive), bounded=True)
        self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
        await _answer(send, reply, dedup=idem is not None, content_type=route.handler.content_type)

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
    async def _attach(self, receive: Receive, send: Send, route: Route) -> None:
        invocation_id = route.invocation_id
        assert invocation_id is not None
        wait = route.kind == "attach"
        reply = await self.engine.request(
            lambda rid: r.Attach(invocation_id, wait, rid), _client_gone(receive), bounded=True
        )
        self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
        await _answer(send, reply, dedup=True)

    # ---------------------------------------------------------------------------- awakeables
    async def _awakeable(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        if scope["method"] != "POST":
            raise HttpError(405, "method not allowed: awakeables are resolved with POST")
        assert route.awakeable_id is not None
        try:
            inv, idx = parse_awakeable_id(route.awakeable_id)
        except InvalidId as exc:
            raise HttpError(400, str(exc)) from None
        body = await read_body(scope, receive, self.body_limit)
        if route.action == "resolve":
            result = Result(value=body)
        else:
            result = Result(failure=Failure(500, body.decode("utf-8", "replace")))
        reply = await self.engine.request(
            lambda rid: r.ResolveSignal(str(inv), idx, result, rid), _client_gone(receive), bounded=True
        )
        if reply.kind == "not_found":
            raise HttpError(404, f"awakeable '{route.awakeable_id}' not found: its invocation does not exist")
        if reply.kind in ("store_failed", "unavailable", "gone"):
            self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
            await _answer(send, reply, dedup=False)
            return
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


def _check_body(scope: Scope, body: bytes, handler: HandlerSchema) -> None:
    """The body against the handler's declared ``accept`` (as restate-server checks its ``input`` rules)."""
    if not body:
        return
    ctype = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if ctype and not _content_type_matches(ctype, handler.accept):
        raise HttpError(
            400, f"input validation error: Content-type '{ctype}' does not match '{handler.accept}'"
        )
    if not handler.input_json:
        return  # bytes (or a custom serde): the handler's serde judges the body
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"input validation error: the body is not valid JSON ({exc})") from None


def _content_type_matches(ctype: str, accept: str) -> bool:
    """``ctype`` against an accept pattern: exact, ``type/*`` or ``*/*``; a JSON accept also takes ``+json``
    types and the form type curl's ``-d`` sends (Unbroken's leniency, kept from before)."""
    want = accept.split(";")[0].strip().lower()
    if want in ("*/*", "*", ctype):
        return True
    if want.endswith("/*") and ctype.startswith(want[:-1]):
        return True
    return want == "application/json" and (ctype in _JSON_TYPES or ctype.endswith("+json"))


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
