"""The admin API (Restate-compatible subset): health, version, services, invocation control."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from unbroken.core import records as r
from unbroken.core.durations import format_duration
from unbroken.core.ids import InvalidId, InvocationId
from unbroken.core.model import ServiceSchema
from unbroken.ingress.http import HttpError, Receive, Scope, Send, lifespan, respond, respond_json
from unbroken.runtime.engine import Engine

log = logging.getLogger("unbroken.admin")

VERSION = "0.1.0"

_CONTROL: dict[str, Callable[[str, int], r.Record]] = {
    "cancel": lambda i, rid: r.CancelInvocation(i, rid),
    "kill": lambda i, rid: r.KillInvocation(i, rid),
    "purge": lambda i, rid: r.PurgeInvocation(i, rid),
    "pause": lambda i, rid: r.PauseInvocation(i, rid),
    "resume": lambda i, rid: r.ResumeInvocation(i, rid),
}


def service_metadata(svc: ServiceSchema, deployment_id: str) -> dict[str, Any]:
    p = svc.retry_policy
    meta: dict[str, Any] = {
        "name": svc.name,
        "ty": svc.kind.value,
        "handlers": [
            {"name": h.name, **({"ty": h.kind.value} if h.kind is not None else {}), "public": h.public}
            for h in svc.handlers.values()
        ],
        "deployment_id": deployment_id,
        "revision": svc.revision,
        "public": svc.public,
        "idempotency_retention": format_duration(svc.idempotency_retention_ms),
        "journal_retention": format_duration(svc.journal_retention_ms),
        "inactivity_timeout": format_duration(svc.inactivity_timeout_ms),
        "abort_timeout": format_duration(svc.abort_timeout_ms),
        "enable_lazy_state": False,
        "retry_policy": {
            "initial_interval": format_duration(p.initial_interval_ms),
            "exponentiation_factor": p.exponentiation_factor,
            "max_attempts": p.max_attempts,
            "max_interval": format_duration(p.max_interval_ms),
            "on_max_attempts": p.on_max_attempts.capitalize(),
        },
    }
    if svc.kind.value == "Workflow":
        meta["workflow_completion_retention"] = format_duration(svc.workflow_completion_retention_ms)
    return meta


class AdminApp:
    def __init__(self, engine: Engine, deployment_id: str, ingress_url: str) -> None:
        self.engine = engine
        self.deployment_id = deployment_id
        self.ingress_url = ingress_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, send)
        except HttpError as exc:
            await respond_json(send, exc.status, {"message": exc.message, "restate_code": None})
        except Exception:
            log.exception("admin request failed: %s %s", scope.get("method"), scope.get("path"))
            await respond_json(send, 500, {"message": "internal error", "restate_code": None})

    async def _handle(self, scope: Scope, send: Send) -> None:
        parts = [p for p in scope["path"].split("/") if p]
        if parts and parts[0] in ("v2", "v3", "v4"):
            parts = parts[1:]
        method = scope["method"]
        match (method, parts):
            case ("GET", ["health"]):
                await respond(send, 200)
            case ("GET", ["version"]):
                await respond_json(send, 200, {
                    "version": VERSION, "min_admin_api_version": 2, "max_admin_api_version": 4,
                    "ingress_endpoint": self.ingress_url,
                })  # fmt: skip
            case ("GET", ["services"]):
                services = [service_metadata(s, self.deployment_id) for s in self.engine.schemas.services.values()]
                await respond_json(send, 200, {"services": services})
            case ("GET", ["services", name]):
                svc = self.engine.schemas.service(name)
                if svc is None:
                    raise HttpError(404, f"The requested service '{name}' does not exist")
                await respond_json(send, 200, service_metadata(svc, self.deployment_id))
            case ("PATCH", ["invocations", inv, action]) if action in _CONTROL:
                await self._control(send, inv, action)
            case (_, ["invocations", _, _]) | (_, ["services", *_]) | (_, ["health" | "version"]):
                raise HttpError(405, f"method {method} not allowed on {scope['path']}")
            case _:
                raise HttpError(404, f"not found: {scope['path']}")

    async def _control(self, send: Send, inv: str, action: str) -> None:
        try:
            invocation_id = str(InvocationId.parse(inv))
        except InvalidId:
            raise HttpError(400, "The request field 'invocation_id' is invalid. Reason: bad format") from None
        make = _CONTROL[action]
        reply = await self.engine.request(lambda rid: make(invocation_id, rid))
        match reply.kind:
            case "not_found":
                raise HttpError(404, f"The requested invocation '{invocation_id}' does not exist")
            case "completed":
                raise HttpError(409, f"The invocation '{invocation_id}' was already completed.")
            case "not_completed":
                raise HttpError(409, f"The invocation '{invocation_id}' is not yet completed.")
            case "not_started":
                raise HttpError(425, f"The invocation '{invocation_id}' has not started yet (inboxed or scheduled).")
            case "accepted":
                await respond(send, 202)
            case _:
                await respond(send, 200)
