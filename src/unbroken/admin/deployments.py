"""Remote deployments in the admin API (``/deployments``): the register request, the JSON shapes.

The in-process services form one deployment of their own (``services.deployment_json``); each remote
deployment registered with ``POST /deployments`` is listed next to it, with the services it serves now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from unbroken.core import limits
from unbroken.core.deployments import Deployment
from unbroken.core.read_model import rfc3339
from unbroken.core.schema import Schemas
from unbroken.http.asgi import HttpError

from . import services as svcs

_REGISTER_FIELDS = {
    "uri",
    "force",
    "additional_headers",
    "use_http_11",
    "dry_run",
    "breaking",
    "metadata",
}


@dataclass(frozen=True)
class RegisterRequest:
    """``use_http_11``: discover and invoke over HTTP/1.1 (request/response) instead of HTTP/2."""

    uri: str
    force: bool
    headers: dict[str, str]
    use_http_11: bool
    dry_run: bool
    metadata: dict[str, str]


def _bad(field: str, reason: str) -> HttpError:
    return HttpError(400, f"The request field '{field}' is invalid. Reason: {reason}")


def parse_register(body: Any) -> RegisterRequest:
    """``RegisterDeploymentRequest`` (the HTTP variant; Lambda ARNs are refused)."""
    if not isinstance(body, dict):
        raise HttpError(400, 'The request body must be a JSON object {"uri": "http://..."}')
    if "arn" in body:
        raise _bad("arn", "Lambda deployments are not supported by Unbroken (register an HTTP uri)")
    unknown = sorted(set(body) - _REGISTER_FIELDS)
    if unknown:
        raise _bad(unknown[0], "unknown field")
    uri = body.get("uri")
    if not isinstance(uri, str) or not uri:
        raise _bad("uri", "expected a URL string like http://localhost:9080")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise _bad("uri", "expected an http:// or https:// URL without query or fragment")
    if len(uri) > limits.url_bytes_max:
        raise _bad("uri", f"longer than {limits.url_bytes_max} bytes")
    headers = _string_map(body, "additional_headers")
    if len(headers) > limits.header_count_max:
        raise _bad("additional_headers", f"more than {limits.header_count_max} headers")
    metadata = _string_map(body, "metadata")
    if len(metadata) > limits.deployment_metadata_entries_max:
        raise _bad("metadata", f"more than {limits.deployment_metadata_entries_max} entries")
    if (
        sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        > limits.deployment_metadata_bytes_max
    ):
        raise _bad("metadata", f"larger than {limits.deployment_metadata_bytes_max} bytes")
    flags = {}
    for name in ("force", "use_http_11", "dry_run", "breaking"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise _bad(name, "expected a boolean")
        flags[name] = value
    return RegisterRequest(
        uri.rstrip("/"),
        bool(flags["force"]),
        dict(headers),
        flags["use_http_11"] is True,  # as Restate: HTTP/2 (h2c prior knowledge) unless asked
        bool(flags["dry_run"]),
        metadata,
    )


def _string_map(body: dict[str, Any], field: str) -> dict[str, str]:
    value = body.get(field) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(field, "expected an object of strings")
    return dict(value)


def deployment_json(dep: Deployment, schemas: Schemas, detailed: bool) -> dict[str, Any]:
    """Restate's ``DeploymentResponse`` / list entry for a remote deployment."""
    served = [s for s in sorted(schemas.services.values(), key=lambda s: s.name) if s.deployment_id == dep.id]
    return {
        "id": dep.id,
        "uri": dep.uri,
        "protocol_type": "RequestResponse" if dep.protocol_mode == "REQUEST_RESPONSE" else "BidiStream",
        "http_version": "HTTP/1.1" if dep.use_http_11 else "HTTP/2.0",
        "additional_headers": dep.headers,
        **({"metadata": dep.metadata} if dep.metadata else {}),  # as Restate: only when there is some
        "created_at": rfc3339(dep.created_at_ms) or "",
        "min_protocol_version": dep.min_protocol_version,
        "max_protocol_version": dep.max_protocol_version,
        "sdk_version": dep.sdk_version or None,
        "services": [
            svcs.service_metadata(s, dep.id) if detailed else {"name": s.name, "revision": s.revision}
            for s in served
        ],
    }


def register_response(dep: Deployment, schemas: Schemas) -> dict[str, Any]:
    """``RegisterDeploymentResponse``: the id, the services as registered, the protocol range."""
    return {
        "id": dep.id,
        "services": deployment_json(dep, schemas, True)["services"],
        "min_protocol_version": dep.min_protocol_version,
        "max_protocol_version": dep.max_protocol_version,
        "sdk_version": dep.sdk_version or None,
    }


def sys_deployment_row(dep: Deployment) -> dict[str, Any]:
    """A remote deployment's row of ``sys_deployment`` (``/query``)."""
    return {
        "id": dep.id,
        "ty": "http",
        "endpoint": dep.uri,
        "created_at": rfc3339(dep.created_at_ms) or "",
        "min_service_protocol_version": dep.min_protocol_version,
        "max_service_protocol_version": dep.max_protocol_version,
        "services": sorted(s.name for s in dep.services),
    }
