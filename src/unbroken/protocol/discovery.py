"""Deployment discovery: ``GET {uri}/discover`` and the endpoint manifest it answers (versions 1-4).

The manifest is untrusted input: :func:`parse_manifest` turns any JSON into the deployed services or raises
:class:`DiscoveryError` naming the field that is wrong; nothing else escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import orjson

from unbroken.core import limits
from unbroken.core.deployments import DeployedHandler, DeployedService
from unbroken.core.schema import HandlerKind, ServiceKind
from unbroken.protocol import framing

MANIFEST_VERSIONS = (1, 2, 3, 4)
ACCEPT = ", ".join(f"application/vnd.restate.endpointmanifest.v{v}+json" for v in MANIFEST_VERSIONS)

_SERVICE_KINDS = {
    "SERVICE": ServiceKind.SERVICE,
    "VIRTUAL_OBJECT": ServiceKind.VIRTUAL_OBJECT,
    "WORKFLOW": ServiceKind.WORKFLOW,
}
_HANDLER_KINDS = {
    "EXCLUSIVE": HandlerKind.EXCLUSIVE,
    "SHARED": HandlerKind.SHARED,
    "WORKFLOW": HandlerKind.WORKFLOW,
}


class DiscoveryError(ValueError):
    """The deployment could not be discovered (unreachable, bad answer, bad manifest): the admin API answers
    400 with the message (Restate's META0003 when unreachable)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.status = 400


@dataclass(frozen=True)
class Manifest:
    protocol_mode: str
    min_protocol_version: int
    max_protocol_version: int
    services: list[DeployedService]
    sdk_version: str = ""


async def discover(uri: str, headers: dict[str, str], use_http_11: bool = True) -> Manifest:
    """Ask the endpoint at ``uri`` for its manifest: over HTTP/1.1, or HTTP/2 (h2c prior knowledge for
    http://), as Restate does unless told ``use_http_11``. The SDKs answer the protocol mode that fits: an
    endpoint discovered over HTTP/2 is invoked with bidirectional streams."""
    timeout = httpx.Timeout(limits.deployment_request_timeout_s)
    url = uri.rstrip("/") + "/discover"
    try:
        async with httpx.AsyncClient(
            timeout=timeout, trust_env=False, http1=use_http_11, http2=not use_http_11
        ) as client:
            async with client.stream("GET", url, headers={**headers, "accept": ACCEPT}) as resp:
                body = bytearray()
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > limits.discovery_manifest_bytes_max:
                        raise DiscoveryError(
                            f"the manifest of {url} exceeds {limits.discovery_manifest_bytes_max} bytes"
                        )
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"[META0003] cannot reach {url}: {type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        text = bytes(body[:500]).decode("utf-8", "replace")
        raise DiscoveryError(f"{url} answered {resp.status_code} to discovery: {text}")
    manifest = parse_manifest(bytes(body))
    return Manifest(
        manifest.protocol_mode,
        manifest.min_protocol_version,
        manifest.max_protocol_version,
        manifest.services,
        resp.headers.get("x-restate-server", ""),
    )


def parse_manifest(data: bytes) -> Manifest:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DiscoveryError(f"the manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DiscoveryError("the manifest is not a JSON object")
    mode = doc.get("protocolMode", "BIDI_STREAM")
    if mode not in ("BIDI_STREAM", "REQUEST_RESPONSE"):
        raise DiscoveryError(f"protocolMode: expected BIDI_STREAM or REQUEST_RESPONSE, got {mode!r}")
    low = _int(doc, "minProtocolVersion", "manifest", required=True)
    high = _int(doc, "maxProtocolVersion", "manifest", required=True)
    assert low is not None and high is not None
    if framing.pick_version(low, high) is None:
        raise DiscoveryError(
            f"the deployment speaks service protocol versions {low}-{high}; Unbroken speaks "
            f"{framing.OLDEST_VERSION}-{framing.NEWEST_VERSION}"
        )
    services = doc.get("services")
    if not isinstance(services, list):
        raise DiscoveryError("services: expected a list")
    if len(services) > limits.deployment_services_max:
        raise DiscoveryError(f"services: more than {limits.deployment_services_max}")
    parsed = [_service(s, i) for i, s in enumerate(services)]
    names = [s.name for s in parsed]
    if len(set(names)) != len(names):
        raise DiscoveryError("services: a service name appears twice")
    return Manifest(mode, low, high, parsed)


def _service(doc: Any, index: int) -> DeployedService:
    where = f"services[{index}]"
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{where}: expected an object")
    name = _name(doc, where)
    kind = _SERVICE_KINDS.get(doc.get("ty", ""))
    if kind is None:
        raise DiscoveryError(f"{where}.ty: expected SERVICE, VIRTUAL_OBJECT or WORKFLOW")
    handlers = doc.get("handlers")
    if not isinstance(handlers, list):
        raise DiscoveryError(f"{where}.handlers: expected a list")
    parsed = [_handler(h, f"{where}.handlers[{i}]", kind) for i, h in enumerate(handlers)]
    if len({h.name for h in parsed}) != len(parsed):
        raise DiscoveryError(f"{where}.handlers: a handler name appears twice")
    return DeployedService(
        name,
        kind,
        parsed,
        public=not _bool(doc, "ingressPrivate", where),
        inactivity_timeout_ms=_int(doc, "inactivityTimeout", where),
        abort_timeout_ms=_int(doc, "abortTimeout", where),
        idempotency_retention_ms=_int(doc, "idempotencyRetention", where),
        journal_retention_ms=_int(doc, "journalRetention", where),
        workflow_completion_retention_ms=_int(doc, "workflowCompletionRetention", where),
        enable_lazy_state=doc.get("enableLazyState")
        if isinstance(doc.get("enableLazyState"), bool)
        else None,
        retry_max_attempts=_int(doc, "retryPolicyMaxAttempts", where),
        retry_initial_interval_ms=_int(doc, "retryPolicyInitialInterval", where),
        retry_max_interval_ms=_int(doc, "retryPolicyMaxInterval", where),
    )


def _handler(doc: Any, where: str, service_kind: ServiceKind) -> DeployedHandler:
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{where}: expected an object")
    name = _name(doc, where)
    kind: HandlerKind | None = None
    if "ty" in doc and doc["ty"] is not None:
        kind = _HANDLER_KINDS.get(doc["ty"])
        if kind is None:
            raise DiscoveryError(f"{where}.ty: expected EXCLUSIVE, SHARED or WORKFLOW")
    elif service_kind is ServiceKind.VIRTUAL_OBJECT:
        kind = HandlerKind.EXCLUSIVE  # Restate's default for an object handler
    elif service_kind is ServiceKind.WORKFLOW:
        kind = HandlerKind.SHARED
    if service_kind is ServiceKind.SERVICE:
        kind = None
    inp: dict[str, Any] = doc["input"] if isinstance(doc.get("input"), dict) else {}
    out: dict[str, Any] = doc["output"] if isinstance(doc.get("output"), dict) else {}
    accept = inp.get("contentType") if isinstance(inp.get("contentType"), str) else None
    content_type = out.get("contentType") if isinstance(out.get("contentType"), str) else None
    return DeployedHandler(
        name,
        kind,
        public=not _bool(doc, "ingressPrivate", where),
        accept=accept or "*/*",
        content_type=content_type or "application/json",
        input_json=(accept or "").startswith("application/json"),
        input_schema=_schema(inp.get("jsonSchema")),
        output_schema=_schema(out.get("jsonSchema")),
        inactivity_timeout_ms=_int(doc, "inactivityTimeout", where),
        abort_timeout_ms=_int(doc, "abortTimeout", where),
        enable_lazy_state=doc.get("enableLazyState")
        if isinstance(doc.get("enableLazyState"), bool)
        else None,
    )


def _name(doc: dict[str, Any], where: str) -> str:
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise DiscoveryError(f"{where}.name: expected a non-empty string")
    if len(name.encode()) > limits.service_name_bytes_max or "/" in name:
        raise DiscoveryError(f"{where}.name: at most {limits.service_name_bytes_max} bytes, no '/'")
    return name


def _int(doc: dict[str, Any], key: str, where: str, required: bool = False) -> int | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise DiscoveryError(f"{where}.{key}: required")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise DiscoveryError(f"{where}.{key}: expected a non-negative integer")
    return value


def _bool(doc: dict[str, Any], key: str, where: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise DiscoveryError(f"{where}.{key}: expected a boolean")
    return value


def _schema(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
