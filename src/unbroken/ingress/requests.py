"""The ingress core: what a request means (a record, or an :class:`HttpError`) and how its outcome is said
in HTTP (status, headers, body), as plain functions.

No ASGI, no engine, no clock, no randomness: time and fresh bytes come in as arguments. ``IngressApp``
(ingress/app.py) reads and writes the connection around these; the simulator's client (testing/sim) builds
its records through them too, so every rule here (routing, delays, idempotency keys, content types, input
checks, awakeable ids, the answers' shapes) is what both the real ingress and the simulator run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, assert_never
from urllib.parse import parse_qsl, quote

import orjson

from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.durations import InvalidDuration, format_rfc3339_ms, format_rfc3339_nanos, parse_delay_ms
from unbroken.core.errors import EngineUnavailable, violated
from unbroken.core.ids import (
    FRESH_ID_BYTES,
    InvalidId,
    InvocationId,
    fixed_invocation_id,
    idempotent_invocation_id,
    invocation_id_for,
    parse_awakeable_id,
    partition_key_for_key,
)
from unbroken.core.journal import FIRST_AWAKEABLE_SIGNAL, Failure, Header, Result
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, Target
from unbroken.http.asgi import UNAUTHORIZED_HEADERS, HttpError
from unbroken.ingress.body import Overloaded, check_json
from unbroken.ingress.routing import AwakeableAction, Route, RouteKind, parse_route

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, bytes]  # status, headers (content-length is added when written), body

# What one request takes from the entropy source: the id's fresh bytes, then 8 for the handler's seed.
FRESH_BYTES = FRESH_ID_BYTES + 8

# x-unbroken-forwarded: set by the node that proxied the request here (cluster/forward.py), not the caller's
_SKIP_HEADERS = {b"connection", b"host", b"idempotency-key", b"idempotency-expires", b"x-unbroken-forwarded"}
_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")
_JSON = b"application/json"


class Request:
    """A parsed HTTP request head: ``path`` as sent (still percent-encoded), the raw query string and
    the header pairs (names lower-case, as ASGI gives them)."""

    __slots__ = ("method", "path", "query_string", "headers")

    def __init__(
        self, method: str, path: str, query_string: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def path_of(target: Target, send: bool = False) -> str:
    """The ingress path that calls (or with ``send``, sends to) ``target``; each segment percent-encoded."""
    parts = [target.service] + ([target.key] if target.key is not None else []) + [target.handler]
    return "/" + "/".join(quote(p, safe="") for p in parts) + ("/send" if send else "")


# Enum members named through their class cost ~170 ns each on Python 3.11 (EnumType defines
# ``__getattr__``, which sends every attribute lookup on the class through a slow hook): the per-call
# code reads module constants instead (docs/architecture.md, "What a call may cost").
_HEALTH: Final = RouteKind.HEALTH
_AWAKEABLE: Final = RouteKind.AWAKEABLE
_ACCEPTED: Final = r.ReplyMode.ACCEPTED
_RESULT: Final = r.ReplyMode.RESULT


def route_request(request: Request, schemas: Schemas) -> Route:
    """Where the request goes (raises :class:`HttpError` for an unknown path or a method it does not take);
    decided before the body is read, so a wrong request is answered without reading it."""
    route = parse_route(request.path, schemas)
    if route.kind is _HEALTH:
        return route
    if request.method not in ("GET", "POST"):
        raise HttpError(405, "method not allowed")
    if route.kind is _AWAKEABLE:
        if request.method != "POST":
            raise HttpError(405, "method not allowed: awakeables are resolved with POST")
        awakeable_signal(route)
    return route


def partition_key_of(request: Request, route: Route) -> int | None:
    """The u64 partition key of the invocation a routed request concerns, known before its body is read
    (a cluster forwards it to the partition's leader); None for a new call of an unkeyed service without an
    idempotency key (its id is minted where it is accepted), and for an id that does not parse (the node
    called answers the 400 itself)."""
    try:
        if route.kind is RouteKind.INVOKE:
            target = route.target
            assert target is not None, "an invoke route has a target"
            if target.key is not None:
                return partition_key_for_key(target.key)
            idem = request.header(b"idempotency-key")
            if not idem:
                return None
            return InvocationId.parse(idempotent_invocation_id(target, idem)).partition_key
        if route.kind is RouteKind.AWAKEABLE and route.awakeable_id is not None:
            return parse_awakeable_id(route.awakeable_id)[0].partition_key
        if route.invocation_id is not None:  # attach, output
            return InvocationId.parse(route.invocation_id).partition_key
    except InvalidId:
        return None
    return None


def resend_safe(request: Request, route: Route) -> bool:
    """Whether sending the request again cannot make a second invocation (a forwarder may resend it to a
    new leader): it carries an idempotency key, runs a workflow (its id is the workflow's), attaches, reads
    an output or completes an awakeable. Only a plain call or send without a key may not be resent."""
    if route.kind is not RouteKind.INVOKE:
        return True
    if route.handler is not None and route.handler.kind is HandlerKind.WORKFLOW:
        return True
    return bool(request.header(b"idempotency-key"))


# ----------------------------------------------------------------------------------------- invoke
class Submission:
    """A checked invocation request: called with the engine's request id, it is the ``Invoke`` record."""

    __slots__ = (
        "invocation_id",
        "target",
        "body",
        "headers",
        "idempotency_key",
        "execute_at_ms",
        "reply",
        "seed",
        "content_type",
        "new_id",
    )

    def __init__(
        self,
        invocation_id: str,
        target: Target,
        body: bytes,
        headers: tuple[Header, ...],
        idempotency_key: str | None,
        execute_at_ms: int,
        reply: r.ReplyMode,
        seed: int,
        content_type: str,
        new_id: bool = False,
    ) -> None:
        self.invocation_id = invocation_id
        self.target = target
        self.body = body
        self.headers = headers
        self.idempotency_key = idempotency_key
        self.execute_at_ms = execute_at_ms
        self.reply = reply
        self.seed = seed
        self.content_type = content_type  # of a successful result's body (the handler's declared one)
        self.new_id = new_id  # minted here from fresh bytes (``records.Invoke.new_id``)

    @property
    def dedup(self) -> bool:
        """Answers of an idempotent call say until when they are kept (``idempotency-expires``)."""
        return self.idempotency_key is not None

    def __call__(self, request_id: int) -> r.Invoke:
        return r.Invoke(
            self.invocation_id,
            self.target,
            self.body,
            self.headers,
            self.idempotency_key,
            self.execute_at_ms,
            request_id,
            self.reply,
            self.seed,
            self.new_id,
        )


def submission(request: Request, route: Route, body: bytes, now_ms: int, fresh: bytes) -> Submission:
    """The invocation an ``invoke`` route asks for, with every input check (``fresh``: at least
    :data:`FRESH_BYTES` unpredictable bytes; they make a new id and the handler's random seed)."""
    target = route.target
    handler = route.handler
    assert target is not None and handler is not None, "submission() takes an invoke route"
    check_body(request, body, handler)
    check_input(body, handler.input_validator)
    delay_ms = _delay(_query(request.query_string), route.send)
    idem = request.header(b"idempotency-key")
    if idem is not None:
        idem = _check_idempotency_key(idem, handler.kind)
    fixed = fixed_invocation_id(target, handler.kind, idem)  # None: a new id, minted from ``fresh``
    invocation_id = (
        fixed if fixed is not None else invocation_id_for(target, handler.kind, None, fresh, now_ms)
    )
    execute_at = now_ms + delay_ms if delay_ms else 0
    seed = int.from_bytes(fresh[FRESH_ID_BYTES:FRESH_BYTES], "big")
    mode = _ACCEPTED if route.send else _RESULT
    headers = _forwarded_headers(request)
    return Submission(
        invocation_id,
        target,
        body,
        headers,
        idem,
        execute_at,
        mode,
        seed,
        handler.content_type,
        fixed is None,
    )


def attach_record(route: Route) -> Callable[[int], r.Attach]:
    """The record of an ``attach`` (wait for the result) or ``output`` (the result if there is one) route."""
    invocation_id = route.invocation_id
    assert invocation_id is not None, "attach_record() takes an attach or output route"
    wait = route.kind is RouteKind.ATTACH
    return lambda request_id: r.Attach(invocation_id, wait, request_id)


def check_body(request: Request, body: bytes, handler: HandlerSchema | None) -> None:
    """The body against the handler's declared ``accept`` (as restate-server checks its ``input`` rules);
    without a handler (an awakeable's resolution) it must be JSON."""
    if not body:
        return
    ctype = (request.header(b"content-type") or "").split(";")[0].strip().lower()
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


def check_input(body: bytes, validate: Callable[[bytes], str | None] | None) -> None:
    """The body against the handler's input type (the SDK's check): a bad one is refused before anything is
    stored, instead of running the handler with None, or failing inside it and being retried for an hour."""
    problem = validate(body) if validate is not None else None
    if problem is not None:
        raise HttpError(400, f"input validation error: {problem}")


def _query(raw: bytes) -> dict[str, str]:
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
        raise HttpError(
            400, f"bad delay query parameter, must be a ISO8601 duration or milliseconds: {exc}"
        ) from None
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
        raise HttpError(
            400, f"bad idempotency-key header: it must have 1 to {limits.idempotency_key_bytes_max} bytes"
        )
    return idem


def _forwarded_headers(request: Request) -> tuple[Header, ...]:
    query = request.query_string
    path = request.path + ("?" + query.decode("latin-1") if query else "")
    out = [Header("x-restate-ingress-path", path)]
    for key, value in request.headers[: limits.header_count_max]:
        if key not in _SKIP_HEADERS:
            out.append(Header(key.decode("latin-1"), value.decode("latin-1")))
    return tuple(out)


# ------------------------------------------------------------------------------------- awakeables
def awakeable_signal(route: Route) -> tuple[str, int]:
    """The invocation and signal index an awakeable route resolves (400 for an id that is no awakeable's)."""
    aid = route.awakeable_id
    assert aid is not None, "awakeable_signal() takes an awakeable route"
    try:
        inv, idx = parse_awakeable_id(aid)
    except InvalidId as exc:
        raise HttpError(400, str(exc)) from None
    if idx < FIRST_AWAKEABLE_SIGNAL:  # 1 is CANCEL, the others are reserved: never an awakeable
        raise HttpError(400, f"bad awakeable id '{aid}': signal index {idx} is not an awakeable's")
    return str(inv), idx


def resolve_record(request: Request, route: Route, body: bytes) -> Callable[[int], r.ResolveSignal]:
    """The record that resolves (the body, JSON) or rejects (the body, a message) an awakeable."""
    inv, idx = awakeable_signal(route)
    match route.action:
        case AwakeableAction.RESOLVE:
            check_body(request, body, None)  # the waiting handler decodes it as JSON, on every retry
            result = Result(value=body)
        case AwakeableAction.REJECT:
            result = Result(failure=Failure(500, body.decode("utf-8", "replace")))
        case None:
            violated("resolve_record() takes an awakeable route")
        case _:
            assert_never(route.action)
    return lambda request_id: r.ResolveSignal(inv, idx, result, request_id)


def awakeable_response(route: Route, reply: Reply) -> Response | None:
    """The answer to an awakeable's resolution: 202 once it is recorded."""
    aid = route.awakeable_id
    match reply.outcome:
        case a.NotFound():
            raise HttpError(404, f"awakeable '{aid}' not found: its invocation does not exist")
        case a.NotAllocated():
            raise HttpError(404, f"awakeable '{aid}' not found: its invocation has not created it")
        case a.Accepted():
            return 202, [], b""
        case _:  # refused or withdrawn without being applied
            return reply_response(reply, dedup=False)


# ---------------------------------------------------------------------------------- outcome -> HTTP
def error_response(
    status: int, message: str, source: str = "ingress", inv: str | None = None, extra: Headers | None = None
) -> Response:
    headers: Headers = [
        (b"content-type", _JSON),
        (b"x-restate-error-source", source.encode()),
        *(extra or ()),
    ]
    if inv is not None:
        headers.append((b"x-restate-id", inv.encode()))
    return status, headers, orjson.dumps({"code": status, "message": message, "source": source})


def exception_response(exc: HttpError | EngineUnavailable) -> Response:
    """The answer to a refused request: bad input, or a bound reached (the same request succeeds later)."""
    if isinstance(exc, EngineUnavailable):  # nothing was accepted: the caller retries
        return error_response(
            exc.status, exc.message, extra=[(b"retry-after", str(exc.retry_after_s).encode())]
        )
    extra = UNAUTHORIZED_HEADERS if exc.status == 401 else None
    if isinstance(exc, Overloaded):
        extra = [(b"retry-after", str(exc.retry_after_s).encode())]
    return error_response(exc.status, exc.message, extra=extra)


def _json_response(status: int, payload: Any, headers: Headers) -> Response:
    return status, [(b"content-type", _JSON), *headers], orjson.dumps(payload)


def reply_response(reply: Reply, dedup: bool, content_type: str = "application/json") -> Response | None:
    """Turn a Reply into Restate's HTTP answer (None: nobody is left to answer)."""
    outcome = reply.outcome
    match outcome:
        case a.Output(inv, result, expires_at_ms):
            return _result(inv, result, expires_at_ms if dedup else 0, content_type)
        case a.Accepted(inv, execute_at_ms):
            return _accepted(inv, "Accepted", execute_at_ms)
        case a.PreviouslyAccepted(inv):
            return _accepted(inv, "PreviouslyAccepted", 0)
        case a.WorkflowAlreadyInvoked(inv):
            return error_response(409, "the workflow method was already invoked", "invocation", inv)
        case a.NotFound():
            return error_response(404, "not found", "invocation")
        case a.NotReady(inv):
            return error_response(470, "the invocation exists but has not completed yet", "ingress", inv)
        case a.StoreFailed(failure) | a.Unavailable(
            failure
        ):  # refused without being applied: nothing accepted
            retry_after = [(b"retry-after", str(limits.retry_after_s).encode())]
            return error_response(failure.code, failure.message, extra=retry_after)
        case a.Gone():
            return None  # the caller left before its record was applied; it was withdrawn
        case (
            a.NotAllocated()
            | a.AlreadyCompleted()
            | a.NotCompleted()
            | a.NotStarted()
            | a.Done()
            | a.StateChanged()
        ):
            # answers to records this path does not submit (awakeables and admin records)
            return error_response(500, f"internal error (unexpected {type(outcome).__name__})")
        case _:
            assert_never(outcome)


def _accepted(inv: str, status: str, execute_at_ms: int) -> Response:
    payload: dict[str, Any] = {"invocationId": inv}
    if execute_at_ms:
        payload["executionTime"] = format_rfc3339_nanos(execute_at_ms)
    payload["status"] = status
    return _json_response(202, payload, [(b"x-restate-id", inv.encode())])


def _result(inv: str, result: Result, expires_at_ms: int, content_type: str = "application/json") -> Response:
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
        return _json_response(status, body, headers)
    value = result.value or b""
    if value:
        headers.append((b"content-type", content_type.encode("latin-1", "replace")))
    return 200, headers, value


__all__ = [
    "FRESH_BYTES",
    "Request",
    "Response",
    "Submission",
    "attach_record",
    "awakeable_response",
    "awakeable_signal",
    "error_response",
    "exception_response",
    "partition_key_of",
    "path_of",
    "reply_response",
    "resolve_record",
    "route_request",
    "submission",
]
