"""The admin API's route table: path templates, methods and the AdminApp method serving each.

One table serves both the dispatcher and the tests that check ``/openapi`` describes exactly these
routes. Paths also answer under the ``/v2``, ``/v3`` and ``/v4`` prefixes (as Restate's admin API).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

API_PREFIXES = ("v2", "v3", "v4")

# path template -> {method: handler name}
ROUTES: dict[str, dict[str, str]] = {
    "/health": {"GET": "health"},
    "/version": {"GET": "version"},
    "/openapi": {"GET": "openapi"},
    "/query": {"POST": "query"},
    "/deployments": {"GET": "list_deployments", "POST": "register_deployment"},
    "/deployments/{deployment}": {"GET": "get_deployment", "DELETE": "remove_deployment"},
    "/services": {"GET": "list_services"},
    "/services/{service}": {"GET": "get_service", "PATCH": "modify_service"},
    "/services/{service}/handlers": {"GET": "list_handlers"},
    "/services/{service}/handlers/{handler}": {"GET": "get_handler"},
    "/services/{service}/state": {"POST": "set_state"},
    "/services/{service}/state/{key}": {"GET": "get_state", "DELETE": "clear_state"},
    "/invocations/{invocation_id}": {"DELETE": "delete_invocation"},
    "/invocations/{invocation_id}/cancel": {"PATCH": "cancel_invocation"},
    "/invocations/{invocation_id}/kill": {"PATCH": "kill_invocation"},
    "/invocations/{invocation_id}/purge": {"PATCH": "purge_invocation"},
    "/invocations/{invocation_id}/purge-journal": {"PATCH": "purge_journal"},
    "/invocations/{invocation_id}/pause": {"PATCH": "pause_invocation"},
    "/invocations/{invocation_id}/resume": {"PATCH": "resume_invocation"},
    "/invocations/{invocation_id}/explain": {"GET": "explain_invocation"},
}

# Unbroken's own, not Restate's admin API (so not in /openapi): Prometheus metrics and the web UI, served by
# ``admin/operator.py``. The UI's static files need no token (a browser cannot send one when it opens a
# page; they hold no data): the page asks for the token and sends it on every API call.
OPERATOR_ROUTES: dict[str, dict[str, str]] = {
    "/metrics": {"GET": "metrics"},
    "/cluster": {"GET": "cluster_status"},
    "/ui": {"GET": "ui_page"},
    "/ui/{asset}": {"GET": "ui_asset"},
}
PUBLIC_ROUTES = frozenset({"/health", "/ui", "/ui/{asset}"})

_TEMPLATES = [(template, template.strip("/").split("/")) for template in (*ROUTES, *OPERATOR_ROUTES)]
_ALL_ROUTES = {**ROUTES, **OPERATOR_ROUTES}


@dataclass(frozen=True)
class Match:
    template: str
    methods: dict[str, str]
    params: dict[str, str]


def split_path(raw_path: bytes | None, path: str) -> list[str]:
    """Percent-decoded path segments (an encoded '/' inside a segment stays inside it); prefix removed."""
    if raw_path is not None:
        parts = [unquote(p, errors="strict") for p in raw_path.decode("latin-1").split("/") if p]
    else:
        parts = [p for p in path.split("/") if p]
    if parts and parts[0] in API_PREFIXES:
        parts = parts[1:]
    return parts


def match(parts: list[str]) -> Match | None:
    for template, pattern in _TEMPLATES:
        if len(pattern) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return Match(template, _ALL_ROUTES[template], params)
    return None
