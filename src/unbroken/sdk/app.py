"""``unbroken.app([...])``: the set of services one process serves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from unbroken.core.schema import HandlerSchema, OnMaxAttempts, RetryPolicy, Schemas, ServiceSchema
from unbroken.sdk.serde import BytesSerde, json_schema_for
from unbroken.sdk.serde.input_check import input_validator
from unbroken.sdk.service import HandlerOptions, InvocationRetryPolicy, _ServiceBase

if TYPE_CHECKING:  # imported on first use: an App that is never a deployment does not load the codec
    from unbroken.sdk.deployment import DeploymentEndpoint


class App:
    """The services of one process. ``unbroken serve`` runs it, and so does any ASGI server (it is an ASGI
    application, see ``sdk/asgi.py``); restate-sdk's extra arguments are accepted."""

    def __init__(self, services: Iterable[_ServiceBase], **options: Any) -> None:
        self.services: list[_ServiceBase] = []
        names: set[str] = set()
        for svc in services:
            if not isinstance(svc, _ServiceBase):
                raise TypeError(f"{svc!r} is not a Service, VirtualObject or Workflow")
            if svc.name in names:
                raise ValueError(f"two services are named {svc.name!r}")
            names.add(svc.name)
            self.services.append(svc)
        self.options = options
        self._node: Any = None  # the embedded engine when an ASGI server runs this App (unbroken/embedded.py)
        self._deployment: DeploymentEndpoint | None = None

    def deployment(self) -> DeploymentEndpoint:
        """This App as a Restate deployment only (``sdk/deployment.py``): an ASGI application answering
        Restate's service protocol (``/discover``, ``/invoke/...``, ``/health``) and nothing else; it starts
        no engine (a Restate server, or ``unbroken serve``, keeps the journal and the state)."""
        if self._deployment is None:
            from unbroken.sdk.deployment import DeploymentEndpoint

            self._deployment = DeploymentEndpoint(
                self.services, self.options.get("protocol"), self.options.get("identity_keys")
            )
        return self._deployment

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI: ``hypercorn.asyncio.serve(app, conf)`` or ``uvicorn module:app`` serve both roles.

        The service protocol's requests — ``GET …/discover`` asking for an endpoint manifest, ``POST
        …/invoke/{service}/{handler}`` with an ``application/vnd.restate.invocation.vN`` body — go to the
        deployment endpoint (a Restate server drives the handlers); every other request goes to the
        embedded engine's ingress. With ``protocol=`` given (restate-sdk's argument, which only a deployment
        has a use for) the App is a deployment only and starts no engine."""
        if self.options.get("protocol") is not None or (scope["type"] == "http" and _speaks_protocol(scope)):
            await self.deployment()(scope, receive, send)
            return
        if self._node is None:
            from unbroken.sdk.asgi import embedded_node

            self._node = embedded_node(self)
        await self._node(scope, receive, send)

    def schemas(
        self,
        defaults: RetryPolicy,
        inactivity_timeout_ms: int,
        abort_timeout_ms: int,
        idempotency_retention_ms: int,
        workflow_retention_ms: int,
        journal_retention_ms: int,
    ) -> Schemas:
        out: dict[str, ServiceSchema] = {}
        for svc in self.services:
            o = svc.options
            handlers = {
                name: HandlerSchema(
                    name=name,
                    kind=h.kind,
                    public=not bool(h.options.ingress_private),
                    retry_policy=_policy(h.options.invocation_retry_policy, defaults)
                    if h.options.invocation_retry_policy
                    else None,
                    inactivity_timeout_ms=_ms(h.options.inactivity_timeout),
                    abort_timeout_ms=_ms(h.options.abort_timeout),
                    input_schema=LazyJsonSchema(h.input_type) if h.takes_input else None,
                    input_validator=input_validator(f"{svc.name}/{name}", h.input_type, h.input_serde)
                    if h.takes_input
                    else None,
                    output_schema=LazyJsonSchema(h.output_type),
                    accept=h.accept,
                    content_type=h.content_type,
                    input_json=h.takes_input and not isinstance(h.input_serde, BytesSerde),
                    enable_lazy_state=h.options.enable_lazy_state,
                )
                for name, h in svc.handlers.items()
            }
            out[svc.name] = ServiceSchema(
                name=svc.name,
                kind=svc.kind,
                handlers=handlers,
                public=not bool(o.ingress_private),
                retry_policy=_policy(o.invocation_retry_policy, defaults),
                inactivity_timeout_ms=_ms(o.inactivity_timeout) or inactivity_timeout_ms,
                abort_timeout_ms=_ms(o.abort_timeout) or abort_timeout_ms,
                idempotency_retention_ms=_ms_or(o.idempotency_retention, idempotency_retention_ms),
                workflow_completion_retention_ms=_ms_or(_workflow_retention(svc), workflow_retention_ms),
                journal_retention_ms=_ms_or(o.journal_retention, journal_retention_ms),
                enable_lazy_state=svc.enable_lazy_state,
            )
        return Schemas(out)


def _speaks_protocol(scope: Any) -> bool:
    """A request of Restate's service protocol: by its path first (cheap), then its media type, so that an
    ingress route with the same segments (an object named ``invoke``) still reaches the ingress."""
    path: str = scope["path"]
    if path.endswith("/discover"):
        wanted, header = b"application/vnd.restate.endpointmanifest.", b"accept"
    elif "/invoke/" in path:
        wanted, header = b"application/vnd.restate.invocation.", b"content-type"
    else:
        return False
    return any(k.lower() == header and wanted in v.lower() for k, v in scope.get("headers", ()))


class LazyJsonSchema:
    """A handler type's JSON schema, computed when first asked for (admin metadata), not at start-up:
    building schemas imports pydantic, which cost ~0.15 s of the time to the first successful call."""

    __slots__ = ("tp", "_value", "_done")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self._value: dict[str, Any] | None = None
        self._done = False

    def __call__(self) -> dict[str, Any] | None:
        if not self._done:
            self._value = json_schema_for(self.tp)
            self._done = True
        return self._value


def _workflow_retention(svc: _ServiceBase) -> timedelta | None:
    for h in svc.handlers.values():
        if h.options.workflow_retention is not None:
            return h.options.workflow_retention
    return None


def _ms(d: timedelta | None) -> int | None:
    return None if d is None else int(d.total_seconds() * 1000)


def _ms_or(d: timedelta | None, default: int) -> int:
    return default if d is None else int(d.total_seconds() * 1000)


def _policy(p: InvocationRetryPolicy | None, defaults: RetryPolicy) -> RetryPolicy:
    if p is None:
        return defaults
    return RetryPolicy(
        initial_interval_ms=_ms(p.initial_interval) or defaults.initial_interval_ms,
        exponentiation_factor=p.exponentiation_factor or defaults.exponentiation_factor,
        max_interval_ms=_ms(p.max_interval) or defaults.max_interval_ms,
        max_attempts=p.max_attempts or defaults.max_attempts,
        on_max_attempts=OnMaxAttempts(p.on_max_attempts) if p.on_max_attempts else defaults.on_max_attempts,
    )


def app(
    services: Sequence[_ServiceBase],
    protocol: str | None = None,
    identity_keys: Any = None,
    journal_value_codec: Any = None,
) -> App:
    """Bundle services into an app (same signature as restate-sdk's ``restate.app``)."""
    if journal_value_codec is not None:
        # Refused rather than ignored: a codec is usually encryption, and values would be stored in clear.
        raise ValueError(
            "journal_value_codec is not supported by Unbroken yet: journal values would be stored unencoded"
        )
    if protocol not in (None, "bidi", "request_response"):  # refused here, not at the first request
        raise ValueError(f"protocol must be 'bidi', 'request_response' or None, not {protocol!r}")
    return App(services, protocol=protocol, identity_keys=identity_keys)


__all__ = ["App", "HandlerOptions", "app"]
