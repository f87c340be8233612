"""Ingress URL parsing, following Restate's rules (the service's kind decides whether a key follows)."""

from __future__ import annotations

import enum
from typing import Final
from urllib.parse import unquote

import msgspec

from unbroken.core import limits
from unbroken.core.ids import InvalidId, InvocationId, idempotent_invocation_id, workflow_invocation_id
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, ServiceKind, Target
from unbroken.http.asgi import HttpError

_BAD_PATH = "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"


class RouteKind(enum.Enum):
    INVOKE = "invoke"
    ATTACH = "attach"  # wait for the invocation's result
    OUTPUT = "output"  # its result now, or 470 if not completed
    AWAKEABLE = "awakeable"
    HEALTH = "health"


# Enum members named through their class cost ~170 ns each on Python 3.11 (EnumType defines
# ``__getattr__``, which sends every attribute lookup on the class through a slow hook): the per-call
# code reads module constants instead (docs/architecture.md, "What a call may cost").
_INVOKE: Final = RouteKind.INVOKE


class AwakeableAction(enum.Enum):
    """What ``/restate/awakeables/{id}/{action}`` does to the awakeable."""

    RESOLVE = "resolve"  # with the body, JSON
    REJECT = "reject"  # with the body as the failure's message


class Route(msgspec.Struct, frozen=True):
    kind: RouteKind
    target: Target | None = None
    handler: HandlerSchema | None = None
    send: bool = False
    invocation_id: str | None = None
    awakeable_id: str | None = None
    action: AwakeableAction | None = None  # of an AWAKEABLE route


def parse_route(path: str, schemas: Schemas) -> Route:
    try:  # strict: two different invalid byte sequences must not decode to the same key
        parts = [unquote(p, errors="strict") for p in path.split("/")[1:]]
    except UnicodeDecodeError:
        raise HttpError(400, "bad path: a percent-encoded segment is not valid UTF-8") from None
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()  # tolerate one trailing slash
    if not parts or not parts[0]:
        raise HttpError(404, "not found: call /{service}/{handler} or /{object}/{key}/{handler}")
    if parts[0] == "restate":
        return _restate_route(parts[1:], schemas)
    return _invoke_route(parts, schemas)


def _service(name: str, schemas: Schemas) -> tuple[ServiceKind, dict[str, HandlerSchema]]:
    if len(name.encode("utf-8", "surrogateescape")) > limits.service_name_bytes_max:
        raise HttpError(400, f"service name too long: at most {limits.service_name_bytes_max} bytes")
    svc = schemas.service(name)
    if svc is None:
        raise HttpError(
            404, f"service '{name}' not found, make sure to register the service before calling it."
        )
    if not svc.public:
        raise HttpError(400, "the invoked service is not public")
    return svc.kind, svc.handlers


def _handler(service: str, name: str, handlers: dict[str, HandlerSchema]) -> HandlerSchema:
    if len(name.encode("utf-8", "surrogateescape")) > limits.handler_name_bytes_max:
        raise HttpError(400, f"handler name too long: at most {limits.handler_name_bytes_max} bytes")
    h = handlers.get(name)
    if h is None:
        raise HttpError(
            404,
            f"the service '{service}' exists, but the handler '{name}' was not found, check that the handler "
            "exists in the latest registered service version.",
        )
    if not h.public:
        raise HttpError(400, "the invoked handler is not public")
    return h


def _invoke_route(parts: list[str], schemas: Schemas) -> Route:
    if len(parts) > 4:
        raise HttpError(400, _BAD_PATH)
    kind, handlers = _service(parts[0], schemas)
    rest = parts[1:]
    send = bool(rest) and rest[-1] == "send" and len(rest) == (3 if kind.keyed else 2)
    if send:
        rest = rest[:-1]
    if kind.keyed:
        if len(rest) == 1 and rest[0] in handlers:
            raise HttpError(
                400,
                f"'{parts[0]}' is a {_kind_name(kind)}: call /{parts[0]}/{{key}}/{rest[0]} with the key in the path",
            )
        if len(rest) != 2:
            raise HttpError(400, _BAD_PATH)
        key, name = rest
        if len(key.encode("utf-8", "surrogateescape")) > limits.object_key_bytes_max:
            raise HttpError(400, f"object key too long: at most {limits.object_key_bytes_max} bytes")
        handler = _handler(parts[0], name, handlers)
        return Route(_INVOKE, Target(parts[0], name, key), handler, send)
    if len(rest) != 1:
        raise HttpError(400, _BAD_PATH)
    handler = _handler(parts[0], rest[0], handlers)
    return Route(_INVOKE, Target(parts[0], rest[0]), handler, send)


def _kind_name(kind: ServiceKind) -> str:
    return "virtual object" if kind is ServiceKind.VIRTUAL_OBJECT else "workflow"


def _restate_route(parts: list[str], schemas: Schemas) -> Route:
    if parts == ["health"]:
        return Route(RouteKind.HEALTH)
    if (
        parts and parts[0] == "scope"
    ):  # restate-sdk's client.scope(...): like restate-server with flow control off
        raise HttpError(
            501,
            "scoped invocations (/restate/scope/..., limit keys: Restate's flow control) are not supported "
            "by Unbroken yet: call /{service}/{handler} without a scope",
        )
    if len(parts) == 3 and parts[0] in ("awakeables", "a") and parts[2] in ("resolve", "reject"):
        return Route(RouteKind.AWAKEABLE, awakeable_id=parts[1], action=AwakeableAction(parts[2]))
    if len(parts) >= 3 and parts[0] == "invocation" and parts[-1] in ("attach", "output"):
        return Route(RouteKind(parts[-1]), invocation_id=_invocation_ref(parts[1:-1], schemas))
    if len(parts) == 4 and parts[0] == "workflow" and parts[3] in ("attach", "output"):
        kind, handlers = _service(parts[1], schemas)
        if kind is not ServiceKind.WORKFLOW:
            raise HttpError(400, f"'{parts[1]}' is not a workflow")
        return Route(RouteKind(parts[3]), invocation_id=workflow_invocation_id(parts[1], parts[2]))
    raise HttpError(404, f"not found: unknown path /restate/{'/'.join(parts)}")


def _invocation_ref(ref: list[str], schemas: Schemas) -> str:
    """``{id}`` or ``{Service}[/{key}]/{handler}/{idempotencyKey}``."""
    if len(ref) == 1:
        try:
            return str(InvocationId.parse(ref[0]))
        except InvalidId as exc:
            raise HttpError(400, str(exc)) from None
    if len(ref) not in (3, 4):
        raise HttpError(
            400,
            "bad path: expected /restate/invocation/{id}/attach or .../{service}[/{key}]/{handler}/{idempotency-key}/attach",
        )
    kind, handlers = _service(ref[0], schemas)
    if kind.keyed != (len(ref) == 4):
        raise HttpError(400, f"bad path: '{ref[0]}' {'needs' if kind.keyed else 'takes no'} key")
    key = ref[1] if len(ref) == 4 else None
    _handler(ref[0], ref[-2], handlers)  # an unknown handler is a 404, as for a call
    return idempotent_invocation_id(Target(ref[0], ref[-2], key), ref[-1])


__all__ = ["Route", "RouteKind", "parse_route", "HandlerKind"]
