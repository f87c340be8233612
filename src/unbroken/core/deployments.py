"""Deployments: services served by a remote endpoint speaking Restate's service protocol.

A deployment is what ``POST /deployments`` discovered at a URI: the endpoint's protocol range and the
services (with handler kinds and options) its manifest declared. It is stored (``deployment`` table) by a
``RegisterDeployment`` record in the store's transaction, so a registration survives a crash; the node turns
the stored deployments into service schemas (``service_schema``) next to the in-process ones.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import msgspec

from unbroken.core.schema import HandlerKind, HandlerSchema, RetryPolicy, ServiceKind, ServiceSchema


class DeployedHandler(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    kind: HandlerKind | None = None
    public: bool = True
    accept: str = "application/json"
    content_type: str = "application/json"
    input_json: bool = True
    input_schema: str | None = None  # JSON text of the manifest's jsonSchema
    output_schema: str | None = None
    inactivity_timeout_ms: int | None = None
    abort_timeout_ms: int | None = None
    enable_lazy_state: bool | None = None


class DeployedService(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    kind: ServiceKind
    handlers: list[DeployedHandler]
    public: bool = True
    inactivity_timeout_ms: int | None = None
    abort_timeout_ms: int | None = None
    idempotency_retention_ms: int | None = None
    journal_retention_ms: int | None = None
    workflow_completion_retention_ms: int | None = None
    enable_lazy_state: bool | None = None
    retry_max_attempts: int | None = None
    retry_initial_interval_ms: int | None = None
    retry_max_interval_ms: int | None = None
    retry_exponentiation_factor: float | None = None
    revision: int = 1  # one more than the service's when this deployment registered it again


class Deployment(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    uri: str
    min_protocol_version: int
    max_protocol_version: int
    services: list[DeployedService]
    created_at_ms: int
    protocol_mode: str = "REQUEST_RESPONSE"  # or BIDI_STREAM
    sdk_version: str = ""
    headers: dict[str, str] = {}
    use_http_11: bool = True
    metadata: dict[str, str] = {}  # the user's labels (``restate deployments register --metadata k=v``)


_T = TypeVar("_T")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Deployment)


def encode_deployment(dep: Deployment) -> bytes:
    return _encoder.encode(dep)


def decode_deployment(data: bytes) -> Deployment:
    return _decoder.decode(data)


def service_schema(svc: DeployedService, deployment_id: str, defaults: ServiceSchema) -> ServiceSchema:
    """The schema of a deployed service: the manifest's options over the configured ``defaults``."""
    handlers = {
        h.name: HandlerSchema(
            h.name,
            h.kind,
            public=h.public,
            inactivity_timeout_ms=h.inactivity_timeout_ms,
            abort_timeout_ms=h.abort_timeout_ms,
            input_schema=msgspec.json.decode(h.input_schema) if h.input_schema else None,
            output_schema=msgspec.json.decode(h.output_schema) if h.output_schema else None,
            accept=h.accept,
            content_type=h.content_type,
            input_json=h.input_json,
            enable_lazy_state=h.enable_lazy_state,
        )
        for h in svc.handlers
    }
    base = defaults.retry_policy
    retry = RetryPolicy(
        svc.retry_initial_interval_ms or base.initial_interval_ms,
        svc.retry_exponentiation_factor or base.exponentiation_factor,
        svc.retry_max_interval_ms or base.max_interval_ms,
        svc.retry_max_attempts or base.max_attempts,
        base.on_max_attempts,
    )
    return dataclasses.replace(
        defaults,
        name=svc.name,
        kind=svc.kind,
        handlers=handlers,
        public=svc.public,
        retry_policy=retry,
        inactivity_timeout_ms=_or(svc.inactivity_timeout_ms, defaults.inactivity_timeout_ms),
        abort_timeout_ms=_or(svc.abort_timeout_ms, defaults.abort_timeout_ms),
        idempotency_retention_ms=_or(svc.idempotency_retention_ms, defaults.idempotency_retention_ms),
        journal_retention_ms=_or(svc.journal_retention_ms, defaults.journal_retention_ms),
        workflow_completion_retention_ms=_or(
            svc.workflow_completion_retention_ms, defaults.workflow_completion_retention_ms
        ),
        enable_lazy_state=_or(svc.enable_lazy_state, defaults.enable_lazy_state),
        revision=svc.revision,
        deployment_id=deployment_id,
    )


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def deployed_schemas(deployments: list[Deployment], defaults: ServiceSchema) -> dict[str, ServiceSchema]:
    """Every deployed service's schema; a service several deployments declare is the newest one's."""
    out: dict[str, ServiceSchema] = {}
    for dep in sorted(deployments, key=lambda d: (d.created_at_ms, d.id)):
        for svc in dep.services:
            out[svc.name] = service_schema(svc, dep.id, defaults)
    return out
