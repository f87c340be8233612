"""The endpoint manifest an App answers ``GET /discover`` with, when a Restate server registers it.

Versions 2-4 of Restate's manifest (``application/vnd.restate.endpointmanifest.vN+json``): v2 carries
documentation and metadata, v3 adds timeouts, retentions, private handlers and lazy state, v4 the retry
policy. The server names the versions it reads in ``Accept``; the highest one both sides know is answered.
Durations are milliseconds, as the manifest's schema says.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from unbroken.core.schema import HandlerKind, ServiceKind
from unbroken.sdk.serde import BytesSerde, json_schema_for
from unbroken.sdk.service import HandlerDef, HandlerOptions, InvocationRetryPolicy, _ServiceBase

MANIFEST_VERSIONS = (2, 3, 4)
_PREFIX = "application/vnd.restate.endpointmanifest.v"
_SUFFIX = "+json"

_SERVICE_TY = {
    ServiceKind.SERVICE: "SERVICE",
    ServiceKind.VIRTUAL_OBJECT: "VIRTUAL_OBJECT",
    ServiceKind.WORKFLOW: "WORKFLOW",
}
_HANDLER_TY = {
    HandlerKind.EXCLUSIVE: "EXCLUSIVE",
    HandlerKind.SHARED: "SHARED",
    HandlerKind.WORKFLOW: "WORKFLOW",
}


def manifest_content_type(version: int) -> str:
    return f"{_PREFIX}{version}{_SUFFIX}"


def pick_manifest_version(accept: str) -> int | None:
    """The highest manifest version named in an ``Accept`` header that this SDK writes; None if none is."""
    best: int | None = None
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("*/*", "application/*", "application/json"):
            continue  # a manifest must be asked for by its version
        if media.startswith(_PREFIX) and media.endswith(_SUFFIX):
            digits = media[len(_PREFIX) : -len(_SUFFIX)]
            if digits.isdigit() and int(digits) in MANIFEST_VERSIONS:
                best = max(best or 0, int(digits))
    return best


def build_manifest(
    services: list[_ServiceBase], version: int, protocol_mode: str, min_protocol: int, max_protocol: int
) -> dict[str, Any]:
    return {
        "protocolMode": protocol_mode,
        "minProtocolVersion": min_protocol,
        "maxProtocolVersion": max_protocol,
        "services": [_service(svc, version) for svc in services],
    }


def _service(svc: _ServiceBase, version: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": svc.name,
        "ty": _SERVICE_TY[svc.kind],
        "handlers": [_handler(h, version) for h in svc.handlers.values()],
    }
    _common(out, svc.options, version)
    if version >= 3 and svc.enable_lazy_state:
        out["enableLazyState"] = True
    return out


def _handler(h: HandlerDef, version: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": h.name}
    if h.kind is not None and h.service_kind is not ServiceKind.SERVICE:
        out["ty"] = _HANDLER_TY[h.kind]
    if h.takes_input:
        inp: dict[str, Any] = {"required": False, "contentType": h.accept}
        schema = None if isinstance(h.input_serde, BytesSerde) else json_schema_for(h.input_type)
        if schema is not None:
            inp["jsonSchema"] = schema
        out["input"] = inp
    else:
        out["input"] = {}  # no input accepted
    output: dict[str, Any] = {"setContentTypeIfEmpty": False}
    if h.output_type is not None:
        output["contentType"] = h.content_type
        schema = None if isinstance(h.output_serde, BytesSerde) else json_schema_for(h.output_type)
        if schema is not None:
            output["jsonSchema"] = schema
    out["output"] = output
    _common(out, h.options, version)
    if version >= 3:
        if h.options.workflow_retention is not None and h.kind is HandlerKind.WORKFLOW:
            out["workflowCompletionRetention"] = _ms(h.options.workflow_retention)
        if h.options.enable_lazy_state is not None:
            out["enableLazyState"] = h.options.enable_lazy_state
    return out


def _common(out: dict[str, Any], o: HandlerOptions, version: int) -> None:
    """What services and handlers both carry, in the manifest versions that know it."""
    if o.description:
        out["documentation"] = o.description
    if o.metadata:
        out["metadata"] = {str(k): str(v) for k, v in o.metadata.items()}
    if version >= 3:
        for key, value in (
            ("inactivityTimeout", o.inactivity_timeout),
            ("abortTimeout", o.abort_timeout),
            ("journalRetention", o.journal_retention),
            ("idempotencyRetention", o.idempotency_retention),
        ):
            if value is not None:
                out[key] = _ms(value)
        if o.ingress_private:
            out["ingressPrivate"] = True
    if version >= 4 and o.invocation_retry_policy is not None:
        _retry(out, o.invocation_retry_policy)


def _retry(out: dict[str, Any], p: InvocationRetryPolicy) -> None:
    if p.initial_interval is not None:
        out["retryPolicyInitialInterval"] = _ms(p.initial_interval)
    if p.max_interval is not None:
        out["retryPolicyMaxInterval"] = _ms(p.max_interval)
    if p.max_attempts is not None:
        out["retryPolicyMaxAttempts"] = p.max_attempts
    if p.exponentiation_factor is not None:
        out["retryPolicyExponentiationFactor"] = p.exponentiation_factor
    if p.on_max_attempts is not None:
        out["retryPolicyOnMaxAttempts"] = p.on_max_attempts.upper()


def _ms(d: timedelta) -> int:
    return int(d.total_seconds() * 1000)
