"""The admin API (Restate-compatible): health, version, OpenAPI, deployments, services (read and PATCH),
handlers, object state, invocation control and read-only SQL introspection (``POST /query``).

Routes are listed in ``routes.py``; errors are ``{"message": ..., "restate_code": null}`` with 4xx codes
for anything the client got wrong (never a 500 for bad input).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, assert_never
from urllib.parse import parse_qsl

import msgspec
import orjson

from unbroken.admin import deployments as deps
from unbroken.admin import services as svcs
from unbroken.admin.cluster import WRITES, ClusterRoutes, forward_write
from unbroken.admin.explain import explain
from unbroken.admin.openapi import openapi_document
from unbroken.admin.operator import OperatorRoutes
from unbroken.admin.routes import PUBLIC_ROUTES, match, split_path
from unbroken.cluster.forward import Forwarder, ResponseBroken
from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.deployments import Deployment, deployed_schemas
from unbroken.core.durations import InvalidDuration, parse_duration_ms
from unbroken.core.errors import EngineUnavailable
from unbroken.core.ids import InvalidId, InvocationId, deployment_id
from unbroken.core.query_tables import NON_TEXT_COLUMNS
from unbroken.core.read_model import QueryBusy, QueryError, ReadModel, rfc3339
from unbroken.core.schema import Schemas, ServiceSchema
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
from unbroken.runtime.node import Node

log = logging.getLogger("unbroken.admin")

VERSION = "0.1.0"
# The restate-server release whose admin API this one answers like. ``/version`` reports it as ``version``:
# Restate's CLI and UI pick their requests by it (from 1.5 on, the CLI lists invocations by id).
RESTATE_VERSION = "1.7.12"
# Restate's experimental features, all off here (``/version`` must list them: the CLI needs the field).
_FEATURES = {"protocol_v7": False}
BODY_LIMIT_BYTES = limits.request_body_bytes_max  # the default; `unbroken serve` passes the configured limit

ARROW_STREAM = "application/vnd.apache.arrow.stream"
_ARROW_INLINE_ROWS = 200
_DELETE_MODES: dict[str, Callable[[str, int], r.Record]] = {
    "cancel": lambda i, rid: r.CancelInvocation(i, rid),
    "kill": lambda i, rid: r.KillInvocation(i, rid),
    "purge": lambda i, rid: r.PurgeInvocation(i, rid),
}


@dataclass
class Request:
    scope: Scope
    receive: Receive
    send: Send
    params: dict[str, str]
    query: dict[str, str]
    body_limit: int = BODY_LIMIT_BYTES

    async def json(self) -> Any:
        try:
            body = await read_body(self.scope, self.receive, self.body_limit)
        except BodyTooLarge:
            raise HttpError(413, f"request body too large: the limit is {self.body_limit} bytes") from None
        try:
            return orjson.loads(body) if body.strip() else None
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"malformed JSON body: {exc}") from None


def _bad_field(field: str, reason: str) -> HttpError:
    return HttpError(400, f"The request field '{field}' is invalid. Reason: {reason}")


class AdminApp(OperatorRoutes, ClusterRoutes):
    """The admin API of ``engine``. It reads the store only through ``reads`` (explain, state, ``/query``)
    and changes it only with records (``ModifyService``, ``SetStateFromAdmin``, the invocation controls)."""

    def __init__(
        self,
        engine: Node,
        reads: ReadModel,
        deployment_id: str,
        ingress_url: str,
        *,
        body_limit_bytes: int = BODY_LIMIT_BYTES,
        token: str | None = None,
        cluster: Forwarder | None = None,
        node_name: str = "",
        admin_url: str = "",
    ) -> None:
        self.engine = engine
        self.cluster = cluster  # a store shared by several nodes: writes go to their partition's leader
        self.node_name = node_name
        self.admin_url = admin_url
        self.reads = reads
        self.body_limit = body_limit_bytes
        self.token = token  # when set, every route but /health needs ``authorization: Bearer <token>``
        self.deployment_id = deployment_id
        self.ingress_url = ingress_url
        self.created_at = rfc3339(engine.clock.now_ms()) or ""
        self._patch_lock = asyncio.Lock()
        self._json_cache: dict[str, tuple[Schemas, str]] = {}

    # ------------------------------------------------------------------------------------------ plumbing
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._dispatch(scope, receive, send)
        except HttpError as exc:
            extra = UNAUTHORIZED_HEADERS if exc.status == 401 else None
            await respond_json(send, exc.status, {"message": exc.message, "restate_code": None}, extra)
        except EngineUnavailable as exc:  # the partition stopped, or has no leader: nothing was accepted
            retry = [(b"retry-after", str(exc.retry_after_s).encode())]
            await respond_json(send, exc.status, {"message": exc.message, "restate_code": None}, retry)
        except (ClientDisconnected, ResponseBroken):
            return  # nobody to answer, nothing done; or the leader failed mid-answer: the connection closes
        except Exception:
            log.exception("admin request failed: %s %s", scope.get("method"), scope.get("path"))
            await respond_json(send, 500, {"message": "internal error", "restate_code": None})

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        check_head(scope)
        try:
            found = match(split_path(scope.get("raw_path"), scope["path"]))
        except UnicodeDecodeError:  # two different invalid sequences must not name the same key
            raise HttpError(400, "bad path: a percent-encoded segment is not valid UTF-8") from None
        if (found is None or found.template not in PUBLIC_ROUTES) and not authorized(scope, self.token):
            raise HttpError(
                401, "unauthorized: the admin API requires the header 'authorization: Bearer <token>'"
            )
        if found is None:
            raise HttpError(404, f"not found: {scope['path']}")
        method = scope["method"]
        name = found.methods.get("GET" if method == "HEAD" else method)
        if name is None:
            allowed = ", ".join(sorted(found.methods))
            raise HttpError(405, f"method {method} not allowed on {found.template} (allowed: {allowed})")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if self.cluster is not None and name in WRITES:
            forwarded = await forward_write(
                self.cluster, name, found.params, scope, receive, send, self.body_limit
            )
            if forwarded is None:
                return  # the leader answered
            receive = forwarded
        handler: Callable[[Request], Awaitable[None]] = getattr(self, name)
        await handler(Request(scope, receive, send, found.params, query, self.body_limit))

    def close(self) -> None:
        self.reads.close()

    def _service(self, name: str) -> ServiceSchema:
        if len(name.encode()) > limits.service_name_bytes_max:
            raise HttpError(400, f"service name too long: at most {limits.service_name_bytes_max} bytes")
        svc = self.engine.schemas.service(name)
        if svc is None:
            raise HttpError(404, f"The requested service '{name}' does not exist")
        return svc

    def _keyed_service(self, name: str) -> ServiceSchema:
        svc = self._service(name)
        if not svc.kind.keyed:
            raise HttpError(
                400,
                f"The service '{name}' is a {svc.kind.value}: only virtual objects and workflows have state",
            )
        return svc

    def _cached_json(self, what: str, make: Callable[[Schemas], Any]) -> str:
        schemas = self.engine.schemas
        cached = self._json_cache.get(what)
        if cached is None or cached[0] is not schemas:
            cached = (schemas, orjson.dumps(make(schemas)).decode())
            self._json_cache[what] = cached
        return cached[1]

    # the catalog /query's sys_service and sys_deployment read (core.read_model.Catalog)
    def services_json(self) -> str:
        return self._cached_json("services", lambda s: svcs.sys_service_rows(s, self.deployment_id))

    def deployments_json(self) -> str:
        # the schemas change whenever the deployments do: caching on them keeps both in step
        return self._cached_json("deployments", lambda s: self._sys_deployment_rows())

    def _sys_deployment_rows(self) -> list[dict[str, Any]]:
        local = self._local()
        rows = svcs.sys_deployment_rows(local, self.deployment_id, self.created_at) if local.services else []
        remote = sorted(self.engine.deployments.values(), key=lambda d: (d.created_at_ms, d.id))
        return rows + [deps.sys_deployment_row(d) for d in remote]

    # ------------------------------------------------------------------------------------------- general
    async def health(self, req: Request) -> None:
        trouble = self.engine.health()
        if trouble is not None:  # the store fails or the partition stopped: say so, not 200
            await respond_json(req.send, 503, {"message": trouble, "restate_code": None})
            return
        await respond(req.send, 200)

    async def version(self, req: Request) -> None:
        await respond_json(
            req.send,
            200,
            {
                "version": RESTATE_VERSION,
                "min_admin_api_version": 2,
                "max_admin_api_version": 4,
                "ingress_endpoint": self.ingress_url,
                "features": _FEATURES,
                "unbroken_version": VERSION,
            },
        )

    async def openapi(self, req: Request) -> None:
        await respond_json(req.send, 200, openapi_document(VERSION))

    async def query(self, req: Request) -> None:
        body = await req.json()
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise _bad_field("query", 'expected a JSON object {"query": "SELECT ..."}')
        timeout_s = None
        if body.get("timeout") is not None:
            if not isinstance(body["timeout"], str):
                raise _bad_field("timeout", "expected a duration string like '2s'")
            try:
                timeout_s = parse_duration_ms(body["timeout"]) / 1000
            except InvalidDuration as exc:
                raise _bad_field("timeout", str(exc)) from None
        try:
            answer = await self.reads.query(body["query"], timeout_s, self)
        except QueryBusy as exc:
            raise HttpError(429, str(exc)) from None
        except QueryError as exc:
            raise HttpError(400, str(exc)) from None
        if _wants_json(req.scope):
            await respond_json(
                req.send, 200, {"rows": answer.rows, **({"truncated": True} if answer.truncated else {})}
            )
            return
        from unbroken.admin import arrow_ipc  # on the first Arrow answer, not on the way to the first call

        encode = functools.partial(arrow_ipc.answer_stream, answer.columns, answer.rows, NON_TEXT_COLUMNS)
        # a big answer takes ~0.1 s to encode: off the event loop, which serves the ingress too
        body = encode() if len(answer.rows) <= _ARROW_INLINE_ROWS else await asyncio.to_thread(encode)
        headers = [(b"content-type", ARROW_STREAM.encode())]
        if answer.truncated:  # the stream has no room for it: a header says the rows were cut
            headers.append((b"x-unbroken-truncated", b"true"))
        await respond(req.send, 200, body, headers)

    # --------------------------------------------------------------------------------------- deployments
    def _deployment(self, detailed: bool) -> dict[str, Any]:
        return svcs.deployment_json(
            self._local(), self.deployment_id, self.created_at, f"unbroken/{VERSION}", detailed
        )

    def _local(self) -> Schemas:
        """The in-process services as served now (with their PATCH /services changes)."""
        services = self.engine.schemas.services
        return Schemas({n: s for n, s in services.items() if s.deployment_id is None})

    def _deployments(self, detailed: bool) -> list[dict[str, Any]]:
        schemas = self.engine.schemas
        local = [self._deployment(detailed)] if self.engine.local_schemas.services else []
        remote = sorted(self.engine.deployments.values(), key=lambda d: (d.created_at_ms, d.id))
        return local + [deps.deployment_json(d, schemas, detailed) for d in remote]

    async def list_deployments(self, req: Request) -> None:
        await respond_json(req.send, 200, {"deployments": self._deployments(False)})

    async def get_deployment(self, req: Request) -> None:
        wanted = req.params["deployment"]
        remote = self.engine.deployments.get(wanted)
        if remote is not None:
            await respond_json(req.send, 200, deps.deployment_json(remote, self.engine.schemas, True))
            return
        if wanted != self.deployment_id or not self.engine.local_schemas.services:
            raise HttpError(404, f"The requested deployment '{wanted}' does not exist")
        await respond_json(req.send, 200, self._deployment(True))

    async def register_deployment(self, req: Request) -> None:
        """Discover the endpoint, check its services against those served now, store it (a record)."""
        from unbroken.protocol.discovery import DiscoveryError, discover  # httpx: loaded when first used

        ask = deps.parse_register(await req.json())
        try:
            manifest = await discover(ask.uri, ask.headers, ask.use_http_11)
        except DiscoveryError as exc:
            raise HttpError(exc.status, exc.message) from None
        async with self._patch_lock:
            services = []
            for svc in manifest.services:
                current = self.engine.schemas.service(svc.name)
                if current is not None and current.deployment_id is None:
                    raise HttpError(409, f"The service '{svc.name}' is served in-process by this Unbroken")
                revision = 1 if current is None else current.revision + 1  # as Restate: a new revision
                services.append(msgspec.structs.replace(svc, revision=revision))
            same_uri = [d for d in self.engine.deployments.values() if d.uri == ask.uri]
            if same_uri and not ask.force:  # as Restate: the existing registration, unchanged
                await respond_json(req.send, 200, deps.register_response(same_uri[0], self.engine.schemas))
                return
            dep = Deployment(
                deployment_id(self.engine.entropy.take(16)),
                ask.uri,
                manifest.min_protocol_version,
                manifest.max_protocol_version,
                services,
                self.engine.clock.now_ms(),
                manifest.protocol_mode,
                manifest.sdk_version,
                ask.headers,
                ask.use_http_11,
                ask.metadata,
            )
            if ask.dry_run:
                # as Restate (admin API v3+): 201 for a new deployment, 200 for one it would overwrite,
                # named by the id the CLI then fetches to show what changes
                if same_uri:
                    dep = msgspec.structs.replace(dep, id=same_uri[0].id)
                preview = Schemas(deployed_schemas([dep], self.engine.service_defaults))
                status = 200 if same_uri else 201
                await respond_json(req.send, status, deps.register_response(dep, preview))
                return
            replaces = tuple(d.id for d in same_uri)
            reply = await self.engine.request(lambda rid: r.RegisterDeployment(dep, replaces, rid))
            _expect_done(reply.outcome, f"registering deployment {ask.uri}")
        log.info(
            "deployment %s registered: %s (%s)", dep.id, ask.uri, ", ".join(s.name for s in dep.services)
        )
        location = [(b"location", f"deployments/{dep.id}".encode())]
        status = 200 if same_uri else 201
        await respond_json(req.send, status, deps.register_response(dep, self.engine.schemas), location)

    async def remove_deployment(self, req: Request) -> None:
        wanted = req.params["deployment"]
        if wanted == self.deployment_id and self.engine.local_schemas.services:
            raise HttpError(
                409, "The in-process deployment cannot be removed (its services are this process's)"
            )
        async with self._patch_lock:
            reply = await self.engine.request(lambda rid: r.RemoveDeployment(wanted, rid))
        if isinstance(reply.outcome, a.NotFound):
            raise HttpError(404, f"The requested deployment '{wanted}' does not exist")
        _expect_done(reply.outcome, f"removing deployment {wanted}")
        log.info("deployment %s removed", wanted)
        await respond(req.send, 202)

    # ------------------------------------------------------------------------------------------ services
    async def list_services(self, req: Request) -> None:
        services = [
            svcs.service_metadata(s, s.deployment_id or self.deployment_id)
            for s in self.engine.schemas.services.values()
        ]
        await respond_json(req.send, 200, {"services": services})

    async def get_service(self, req: Request) -> None:
        svc = self._service(req.params["service"])
        await respond_json(req.send, 200, svcs.service_metadata(svc, svc.deployment_id or self.deployment_id))

    async def modify_service(self, req: Request) -> None:
        name = req.params["service"]
        self._service(name)
        body = await req.json()
        async with self._patch_lock:
            svc = self._service(name)
            change = svcs.parse_modify(body, svc)
            reply = await self.engine.request(lambda rid: r.ModifyService(name, change, rid))
            _expect_done(reply.outcome, f"modifying service '{name}'")
            updated = self._service(name)  # the engine took the committed override before the reply came
        log.info("service %s modified: %s", name, change)
        await respond_json(
            req.send, 200, svcs.service_metadata(updated, updated.deployment_id or self.deployment_id)
        )

    async def list_handlers(self, req: Request) -> None:
        svc = self._service(req.params["service"])
        await respond_json(
            req.send, 200, {"handlers": [svcs.handler_metadata(h) for h in svc.handlers.values()]}
        )

    async def get_handler(self, req: Request) -> None:
        svc = self._service(req.params["service"])
        handler = svc.handlers.get(req.params["handler"])
        if handler is None:
            raise HttpError(
                404, f"The requested handler '{req.params['handler']}' of service '{svc.name}' does not exist"
            )
        await respond_json(req.send, 200, svcs.handler_metadata(handler))

    # --------------------------------------------------------------------------------------------- state
    async def get_state(self, req: Request) -> None:
        svc = self._keyed_service(req.params["service"])
        key = req.params["key"]
        state = await self.reads.read(lambda snap: snap.state(svc.name, key))
        await respond_json(
            req.send, 200, {name: _text_or_base64(value) for name, value in sorted(state.items())}
        )

    async def set_state(self, req: Request) -> None:
        svc = self._keyed_service(req.params["service"])
        key, new_state, version = _parse_set_state(await req.json())
        await self._submit_state(svc.name, key, new_state, version)
        await respond(req.send, 202)

    async def clear_state(self, req: Request) -> None:
        svc = self._keyed_service(req.params["service"])
        await self._submit_state(svc.name, req.params["key"], {})
        await respond(req.send, 202)

    async def _submit_state(
        self, service: str, key: str, new_state: dict[str, bytes], version: str | None = None
    ) -> None:
        reply = await self.engine.request(
            lambda rid: r.SetStateFromAdmin(service, key, new_state, rid, expected_version=version)
        )
        if isinstance(reply.outcome, a.StateChanged):  # Restate drops such a change silently: say so
            raise HttpError(
                409,
                f"the state of {service}/{key} changed since it was read (expected version {version}, now "
                f"{reply.outcome.version}): nothing was changed; read it again and retry",
            )
        _expect_done(reply.outcome, "state change")

    # --------------------------------------------------------------------------------------- invocations
    async def cancel_invocation(self, req: Request) -> None:
        await self._control(req, lambda i, rid: r.CancelInvocation(i, rid))

    async def kill_invocation(self, req: Request) -> None:
        await self._control(req, lambda i, rid: r.KillInvocation(i, rid))

    async def purge_invocation(self, req: Request) -> None:
        await self._control(req, lambda i, rid: r.PurgeInvocation(i, rid))

    async def purge_journal(self, req: Request) -> None:
        await self._control(req, lambda i, rid: r.PurgeJournal(i, rid))

    async def pause_invocation(self, req: Request) -> None:
        await self._control(req, lambda i, rid: r.PauseInvocation(i, rid))

    async def resume_invocation(self, req: Request) -> None:
        deployment = req.query.get("deployment")
        if deployment is not None and deployment not in ("Keep", "Latest", self.deployment_id):
            raise _bad_field("deployment", f"expected 'Keep', 'Latest' or '{self.deployment_id}'")
        await self._control(req, lambda i, rid: r.ResumeInvocation(i, rid))

    async def explain_invocation(self, req: Request) -> None:
        try:
            invocation_id = str(InvocationId.parse(req.params["invocation_id"]))
        except InvalidId:
            raise _bad_field("invocation_id", "bad format") from None
        answer = await self.reads.read(lambda snap: explain(snap, invocation_id))
        if answer is None:
            raise HttpError(404, f"The requested invocation '{invocation_id}' does not exist")
        await respond_json(req.send, 200, answer)

    async def delete_invocation(self, req: Request) -> None:
        """Deprecated ``DELETE /invocations/{id}?mode=Cancel|Kill|Purge`` (default Cancel) → 202."""
        mode = req.query.get("mode", "cancel").lower()
        make = _DELETE_MODES.get(mode)
        if make is None:
            raise _bad_field("mode", "expected 'Cancel', 'Kill' or 'Purge'")
        await self._control(req, make, success=202)

    async def _control(
        self, req: Request, make: Callable[[str, int], r.Record], success: int | None = None
    ) -> None:
        try:
            invocation_id = str(InvocationId.parse(req.params["invocation_id"]))
        except InvalidId:
            raise _bad_field("invocation_id", "bad format") from None
        reply = await self.engine.request(lambda rid: make(invocation_id, rid))
        outcome = reply.outcome
        match outcome:
            case a.NotFound():
                raise HttpError(404, f"The requested invocation '{invocation_id}' does not exist")
            case a.AlreadyCompleted():
                raise HttpError(409, f"The invocation '{invocation_id}' was already completed.")
            case a.NotCompleted():
                raise HttpError(409, f"The invocation '{invocation_id}' is not yet completed.")
            case a.NotStarted():
                raise HttpError(
                    425, f"The invocation '{invocation_id}' has not started yet (inboxed or scheduled)."
                )
            case a.StoreFailed(failure) | a.Unavailable(failure):  # refused without being applied
                raise HttpError(failure.code, failure.message)
            case a.Gone():
                return  # withdrawn: the caller left
            case a.Accepted():
                await respond(req.send, success or 202)
            case a.Done():
                await respond(req.send, success or 200)
            case (
                a.Output()
                | a.PreviouslyAccepted()
                | a.WorkflowAlreadyInvoked()
                | a.NotReady()
                | a.NotAllocated()
                | a.StateChanged()
            ):
                # answers to ingress records, never to these
                raise HttpError(500, f"internal error (unexpected {type(outcome).__name__})")
            case _:
                assert_never(outcome)


def _wants_json(scope: Scope) -> bool:
    """Restate answers ``/query`` in Arrow unless asked for JSON (its CLI sends ``accept: */*`` for Arrow)."""
    accept = header(scope, b"accept") or ""
    return "application/json" in accept.lower()


def _expect_done(outcome: a.Outcome, what: str) -> None:
    """For admin records whose only success is ``Done``: raise the HTTP error of any other outcome."""
    match outcome:
        case a.Done():
            return
        case a.StoreFailed(failure) | a.Unavailable(failure):
            raise HttpError(failure.code, f"{what} failed: {failure.message}")
        case a.NotFound():
            raise HttpError(404, f"{what} failed: not found")
        case _:
            raise HttpError(500, f"{what} failed: unexpected {type(outcome).__name__}")


def _text_or_base64(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()


def _parse_set_state(body: Any) -> tuple[str, dict[str, bytes], str | None]:
    """``{object_key, new_state: {name: [bytes as ints] | "text"}, version?}`` (``scope`` unsupported):
    ``version`` is the version of the state the change was made from (applied only if it still is)."""
    if not isinstance(body, dict):
        raise HttpError(400, 'The request body must be a JSON object {"object_key": ..., "new_state": {...}}')
    unknown = set(body) - {"object_key", "new_state", "version", "scope"}
    if unknown:
        raise _bad_field(sorted(unknown)[0], "unknown field")
    if body.get("scope") is not None:
        raise _bad_field("scope", "not supported by Unbroken: state has no scopes")
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise _bad_field("version", "expected a string (the version of the state the change was made from)")
    key = body.get("object_key")
    if not isinstance(key, str):
        raise _bad_field("object_key", "expected a string")
    if len(key.encode()) > limits.object_key_bytes_max:
        raise _bad_field("object_key", f"too long: at most {limits.object_key_bytes_max} bytes")
    new_state = body.get("new_state")
    if not isinstance(new_state, dict):
        raise _bad_field("new_state", "expected an object mapping state names to values")
    return key, {name: _state_value(name, value) for name, value in new_state.items()}, version


def _state_value(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value
    ):
        data = bytes(value)
    else:
        raise _bad_field(f"new_state.{name}", "expected a list of byte values (0-255) or a string")
    if len(data) > limits.state_value_bytes_max:
        raise _bad_field(f"new_state.{name}", f"too large: at most {limits.state_value_bytes_max} bytes")
    return data
