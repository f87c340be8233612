"""Service and deployment metadata (Restate's shapes) and the validation of ``PATCH /services/{name}``.

A change is a ``ModifyService`` record: the state machine merges it into the service's stored override
(``service_override`` table) in the store's transaction, and the engine applies the overrides over the
schemas the code declares (at start, and after each such commit), so they survive restarts. An override
wins over the code's own option until it is changed again through the API.
"""

from __future__ import annotations

from typing import Any

from unbroken.core.durations import InvalidDuration, format_duration, parse_duration_ms
from unbroken.core.schema import (
    HandlerSchema,
    OnMaxAttempts,
    RetryOverride,
    RetryPolicy,
    Schemas,
    ServiceKind,
    ServiceOverride,
    ServiceSchema,
)
from unbroken.http.asgi import HttpError

DEPLOYMENT_URI = "local://in-process"
PROTOCOL_VERSIONS = (5, 6)

# PATCH field -> ServiceSchema attribute (durations)
_DURATIONS = {
    "idempotency_retention": "idempotency_retention_ms",
    "workflow_completion_retention": "workflow_completion_retention_ms",
    "journal_retention": "journal_retention_ms",
    "inactivity_timeout": "inactivity_timeout_ms",
    "abort_timeout": "abort_timeout_ms",
}
_MODIFY_FIELDS = frozenset({"public", "retry_policy", *_DURATIONS})
_RETRY_DURATIONS = {"initial_interval": "initial_interval_ms", "max_interval": "max_interval_ms"}
_SERVICE_TY = {
    ServiceKind.SERVICE: "service",
    ServiceKind.VIRTUAL_OBJECT: "virtual_object",
    ServiceKind.WORKFLOW: "workflow",
}


# --------------------------------------------------------------------------------------------- metadata
def retry_policy_json(p: RetryPolicy) -> dict[str, Any]:
    return {
        "initial_interval": format_duration(p.initial_interval_ms),
        "exponentiation_factor": p.exponentiation_factor,
        "max_attempts": p.max_attempts,
        "max_interval": format_duration(p.max_interval_ms),
        "on_max_attempts": p.on_max_attempts.capitalize(),
    }


def _json_description(schema: Any, default: str) -> str:
    """Restate's one-line description of a JSON payload: its schema's title, else its type, else ``default``."""
    if isinstance(schema, dict):
        if isinstance(schema.get("title"), str):
            return f"JSON '{schema['title']}'"
        if isinstance(schema.get("type"), str):
            return f"JSON {schema['type']}"
    return default


def input_description(h: HandlerSchema, schema: Any) -> str:
    """What the handler accepts, worded as Restate words its input rules (``none``, ``JSON 'User'``, ``*/*``)."""
    if h.input_schema is None:
        return "none"  # the handler takes no input: only an empty body without content-type is accepted
    if not h.input_json:
        return h.accept
    return _json_description(schema, h.accept)


def output_description(h: HandlerSchema, schema: Any) -> str:
    return _json_description(schema, h.content_type)


def handler_metadata(h: HandlerSchema) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": h.name}
    if h.kind is not None:
        meta["ty"] = h.kind.value
    meta["public"] = h.public
    input_schema = h.input_schema() if callable(h.input_schema) else h.input_schema
    output_schema = h.output_schema() if callable(h.output_schema) else h.output_schema
    # Restate's CLI requires both descriptions; it leaves the schemas out when there are none.
    meta["input_description"] = input_description(h, input_schema)
    meta["output_description"] = output_description(h, output_schema)
    if input_schema is not None:
        meta["input_json_schema"] = input_schema
    if output_schema is not None:
        meta["output_json_schema"] = output_schema
    if h.inactivity_timeout_ms is not None:
        meta["inactivity_timeout"] = format_duration(h.inactivity_timeout_ms)
    if h.abort_timeout_ms is not None:
        meta["abort_timeout"] = format_duration(h.abort_timeout_ms)
    if h.enable_lazy_state is not None:  # the handler's own setting (else the service's applies)
        meta["enable_lazy_state"] = h.enable_lazy_state
    meta["retry_policy"] = retry_policy_json(h.retry_policy) if h.retry_policy else {"max_attempts": None}
    return meta


def service_metadata(svc: ServiceSchema, deployment_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": svc.name,
        "ty": svc.kind.value,
        "handlers": [handler_metadata(h) for h in svc.handlers.values()],
        "deployment_id": deployment_id,
        "revision": svc.revision,
        "public": svc.public,
        "idempotency_retention": format_duration(svc.idempotency_retention_ms),
        "journal_retention": format_duration(svc.journal_retention_ms),
        "inactivity_timeout": format_duration(svc.inactivity_timeout_ms),
        "abort_timeout": format_duration(svc.abort_timeout_ms),
        "enable_lazy_state": svc.enable_lazy_state,
        "retry_policy": retry_policy_json(svc.retry_policy),
    }
    if svc.kind is ServiceKind.WORKFLOW:
        meta["workflow_completion_retention"] = format_duration(svc.workflow_completion_retention_ms)
    return meta


def deployment_json(
    schemas: Schemas, deployment_id: str, created_at: str, sdk_version: str, detailed: bool
) -> dict[str, Any]:
    """The one deployment that holds every in-process service (``detailed``: full service metadata)."""
    services = sorted(schemas.services.values(), key=lambda s: s.name)
    return {
        "id": deployment_id,
        "uri": DEPLOYMENT_URI,
        "protocol_type": "BidiStream",
        "http_version": "HTTP/2.0",
        "additional_headers": {},
        "created_at": created_at,
        "min_protocol_version": PROTOCOL_VERSIONS[0],
        "max_protocol_version": PROTOCOL_VERSIONS[1],
        "sdk_version": sdk_version,
        "services": [
            service_metadata(s, deployment_id) if detailed else {"name": s.name, "revision": s.revision}
            for s in services
        ],
    }


def sys_service_rows(schemas: Schemas, deployment_id: str) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "revision": s.revision,
            "public": s.public,
            "ty": _SERVICE_TY[s.kind],
            "deployment_id": s.deployment_id or deployment_id,
        }
        for s in sorted(schemas.services.values(), key=lambda s: s.name)
    ]


def sys_deployment_rows(schemas: Schemas, deployment_id: str, created_at: str) -> list[dict[str, Any]]:
    return [
        {
            "id": deployment_id,
            "ty": "local",
            "endpoint": DEPLOYMENT_URI,
            "created_at": created_at,
            "min_service_protocol_version": PROTOCOL_VERSIONS[0],
            "max_service_protocol_version": PROTOCOL_VERSIONS[1],
            "services": sorted(schemas.services),
        }
    ]


# ---------------------------------------------------------------------------------------------- PATCH
def _duration(body: dict[str, Any], field: str, path: str) -> int:
    value = body[field]
    if not isinstance(value, str):
        raise HttpError(
            400, f"The request field '{path}' is invalid. Reason: expected a duration string like '2s'"
        )
    try:
        return parse_duration_ms(value)
    except InvalidDuration as exc:
        raise HttpError(400, f"The request field '{path}' is invalid. Reason: {exc}") from None


def _bad(path: str, reason: str) -> HttpError:
    return HttpError(400, f"The request field '{path}' is invalid. Reason: {reason}")


def _retry_override(body: Any) -> RetryOverride:
    if not isinstance(body, dict):
        raise _bad("retry_policy", "expected an object")
    out: dict[str, Any] = {}
    for field, value in body.items():
        path = f"retry_policy.{field}"
        if field in _RETRY_DURATIONS:
            out[_RETRY_DURATIONS[field]] = _duration(body, field, path)
        elif field == "exponentiation_factor":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 1.0 <= value <= 1e6:
                raise _bad(path, "expected a number >= 1")
            out["exponentiation_factor"] = float(value)
        elif field == "max_attempts":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _bad(path, "expected an integer >= 1")
            out["max_attempts"] = value
        elif field == "on_max_attempts":
            if not isinstance(value, str) or value.lower() not in ("pause", "kill"):
                raise _bad(path, "expected 'Pause' or 'Kill'")
            out["on_max_attempts"] = OnMaxAttempts(value.lower())
        else:
            raise _bad(path, "unknown field")
    return RetryOverride(**out)


def parse_modify(body: Any, svc: ServiceSchema) -> ServiceOverride:
    """Validate a ``ModifyServiceRequest`` into the override it makes."""
    if not isinstance(body, dict):
        raise HttpError(400, "The request body must be a JSON object")
    out: dict[str, Any] = {}
    for field, value in body.items():
        if value is None and field in _MODIFY_FIELDS:
            continue  # Restate's CLI sends every field, null for the ones left unchanged
        if field == "public":
            if not isinstance(value, bool):
                raise _bad("public", "expected true or false")
            out["public"] = value
        elif field in _DURATIONS:
            if field == "workflow_completion_retention" and svc.kind is not ServiceKind.WORKFLOW:
                raise _bad(field, f"service '{svc.name}' is not a workflow")
            out[_DURATIONS[field]] = _duration(body, field, field)
        elif field == "retry_policy":
            out["retry_policy"] = _retry_override(value)
        else:
            raise _bad(field, "unknown field")
    return ServiceOverride(**out)
