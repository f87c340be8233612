"""Service definitions: ``Service``, ``VirtualObject``, ``Workflow`` and their handler decorators."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from unbroken.core.schema import HandlerKind, ServiceKind
from unbroken.sdk.serde import Serde
from unbroken.sdk.serde.select import pick_serde

HANDLER_ATTR = "__unbroken_handler__"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class InvocationRetryPolicy:
    initial_interval: timedelta | None = None
    exponentiation_factor: float | None = None
    max_interval: timedelta | None = None
    max_attempts: int | None = None
    on_max_attempts: Literal["pause", "kill"] | None = None


@dataclass
class HandlerOptions:
    inactivity_timeout: timedelta | None = None
    abort_timeout: timedelta | None = None
    journal_retention: timedelta | None = None
    idempotency_retention: timedelta | None = None
    workflow_retention: timedelta | None = None
    invocation_retry_policy: InvocationRetryPolicy | None = None
    ingress_private: bool | None = None
    metadata: dict[str, str] | None = None
    description: str | None = None
    enable_lazy_state: bool | None = None  # None: the service's setting (see ServiceSchema.enable_lazy_state)
    # restate-sdk's invocation_context_managers: entered around each attempt of the handler
    invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None


@dataclass
class HandlerDef:
    service: str
    service_kind: ServiceKind
    name: str
    kind: HandlerKind | None
    fn: Callable[..., Any]
    takes_input: bool
    input_serde: Serde[Any]
    output_serde: Serde[Any]
    input_type: Any
    output_type: Any
    accept: str
    content_type: str
    options: HandlerOptions = field(default_factory=HandlerOptions)


def _signature_types(fn: Callable[..., Any]) -> tuple[bool, Any, Any]:
    """(takes an input argument, input type, output type) from the handler's signature."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(f"handler {fn.__qualname__} must take the context as its first parameter")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    takes_input = len(params) >= 2
    in_type = hints.get(params[1].name) if takes_input else None
    out_type = hints.get("return")
    return takes_input, in_type, (None if out_type is type(None) else out_type)


class _ServiceBase:
    kind: ServiceKind

    def __init__(
        self,
        name: str,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        inactivity_timeout: timedelta | None = None,
        abort_timeout: timedelta | None = None,
        journal_retention: timedelta | None = None,
        idempotency_retention: timedelta | None = None,
        enable_lazy_state: bool | None = None,
        ingress_private: bool | None = None,
        invocation_retry_policy: InvocationRetryPolicy | None = None,
        invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None,
    ) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid service name {name!r}: it must be non-empty and contain no '/'")
        self._name = name
        self.handlers: dict[str, HandlerDef] = {}
        self.options = HandlerOptions(
            inactivity_timeout=inactivity_timeout,
            abort_timeout=abort_timeout,
            journal_retention=journal_retention,
            idempotency_retention=idempotency_retention,
            invocation_retry_policy=invocation_retry_policy,
            ingress_private=ingress_private,
            metadata=metadata,
            description=description,
            invocation_context_managers=invocation_context_managers,
        )
        self.enable_lazy_state = bool(enable_lazy_state)

    @property
    def name(self) -> str:
        return self._name

    def _decorator(self, name: str | Callable[..., Any] | None, kind: HandlerKind | None, **kw: Any) -> Any:
        if callable(name):  # used as @svc.handler without parentheses
            return self._register(name, None, kind, **kw)

        def wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
            return self._register(fn, name, kind, **kw)

        return wrapper

    def _register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        kind: HandlerKind | None,
        accept: str = "application/json",
        content_type: str = "application/json",
        input_serde: Serde[Any] | None = None,
        output_serde: Serde[Any] | None = None,
        **options: Any,
    ) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"handler {fn.__qualname__} must be an async function")
        handler_name = name or fn.__name__
        if handler_name in self.handlers:
            raise ValueError(f"service {self.name!r} already has a handler named {handler_name!r}")
        takes_input, in_type, out_type = _signature_types(fn)
        unknown = sorted(k for k in options if k not in HandlerOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"handler {fn.__qualname__}: unexpected option(s) {', '.join(unknown)}")
        known = dict(options)
        managers = [
            *(self.options.invocation_context_managers or ()),
            *(options.get("invocation_context_managers") or ()),
        ]
        known["invocation_context_managers"] = managers or None
        hdef = HandlerDef(
            self.name,
            self.kind,
            handler_name,
            kind,
            fn,
            takes_input,
            pick_serde(input_serde, in_type, hint_wins=False),
            pick_serde(output_serde, out_type, hint_wins=False),
            in_type,
            out_type,
            accept,
            content_type,
            HandlerOptions(**known),
        )
        self.handlers[handler_name] = hdef
        setattr(fn, HANDLER_ATTR, hdef)
        return fn


class Service(_ServiceBase):
    """A plain service: handlers run concurrently and have no state."""

    kind = ServiceKind.SERVICE

    def __init__(
        self,
        name: str,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        inactivity_timeout: timedelta | None = None,
        abort_timeout: timedelta | None = None,
        journal_retention: timedelta | None = None,
        idempotency_retention: timedelta | None = None,
        ingress_private: bool | None = None,
        invocation_retry_policy: InvocationRetryPolicy | None = None,
        invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None,
    ) -> None:  # restate-sdk's parameters, in its order (a service has no state to load lazily)
        super().__init__(
            name,
            description,
            metadata,
            inactivity_timeout,
            abort_timeout,
            journal_retention,
            idempotency_retention,
            None,
            ingress_private,
            invocation_retry_policy,
            invocation_context_managers,
        )

    def handler(
        self,
        name: Any = None,
        accept: str = "application/json",
        content_type: str = "application/json",
        input_serde: Serde[Any] | None = None,
        output_serde: Serde[Any] | None = None,
        metadata: dict[str, str] | None = None,
        inactivity_timeout: timedelta | None = None,
        abort_timeout: timedelta | None = None,
        journal_retention: timedelta | None = None,
        idempotency_retention: timedelta | None = None,
        ingress_private: bool | None = None,
        invocation_retry_policy: InvocationRetryPolicy | None = None,
        invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None,
    ) -> Callable[[F], F]:
        return self._decorator(  # type: ignore[no-any-return]
            name,
            None,
            accept=accept,
            content_type=content_type,
            input_serde=input_serde,
            output_serde=output_serde,
            metadata=metadata,
            inactivity_timeout=inactivity_timeout,
            abort_timeout=abort_timeout,
            journal_retention=journal_retention,
            idempotency_retention=idempotency_retention,
            ingress_private=ingress_private,
            invocation_retry_policy=invocation_retry_policy,
            invocation_context_managers=invocation_context_managers,
        )


class VirtualObject(_ServiceBase):
    """A keyed actor: exclusive handlers run one at a time per key; shared handlers read concurrently."""

    kind = ServiceKind.VIRTUAL_OBJECT

    def handler(
        self,
        name: Any = None,
        kind: Literal["exclusive", "shared"] | None = "exclusive",
        accept: str = "application/json",
        content_type: str = "application/json",
        input_serde: Serde[Any] | None = None,
        output_serde: Serde[Any] | None = None,
        metadata: dict[str, str] | None = None,
        inactivity_timeout: timedelta | None = None,
        abort_timeout: timedelta | None = None,
        journal_retention: timedelta | None = None,
        idempotency_retention: timedelta | None = None,
        enable_lazy_state: bool | None = None,
        ingress_private: bool | None = None,
        invocation_retry_policy: InvocationRetryPolicy | None = None,
        invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None,
    ) -> Callable[[F], F]:
        if kind not in ("exclusive", "shared", None):
            raise ValueError(f"handler kind must be 'exclusive' or 'shared', not {kind!r}")
        return self._decorator(  # type: ignore[no-any-return]
            name,
            HandlerKind.SHARED if kind == "shared" else HandlerKind.EXCLUSIVE,
            accept=accept,
            content_type=content_type,
            input_serde=input_serde,
            output_serde=output_serde,
            metadata=metadata,
            inactivity_timeout=inactivity_timeout,
            abort_timeout=abort_timeout,
            journal_retention=journal_retention,
            idempotency_retention=idempotency_retention,
            enable_lazy_state=enable_lazy_state,
            ingress_private=ingress_private,
            invocation_retry_policy=invocation_retry_policy,
            invocation_context_managers=invocation_context_managers,
        )


class Workflow(_ServiceBase):
    """A workflow: ``main`` runs once per key; shared handlers and durable promises around it."""

    kind = ServiceKind.WORKFLOW

    def main(
        self,
        name: Any = None,
        accept: str = "application/json",
        content_type: str = "application/json",
        input_serde: Serde[Any] | None = None,
        output_serde: Serde[Any] | None = None,
        metadata: dict[str, str] | None = None,
        inactivity_timeout: timedelta | None = None,
        abort_timeout: timedelta | None = None,
        journal_retention: timedelta | None = None,
        workflow_retention: timedelta | None = None,
        enable_lazy_state: bool | None = None,
        ingress_private: bool | None = None,
        invocation_retry_policy: InvocationRetryPolicy | None = None,
        invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None,
    ) -> Callable[[F], F]:
        return self._decorator(  # type: ignore[no-any-return]
            name,
            HandlerKind.WORKFLOW,
            accept=accept,
            content_type=content_type,
            input_serde=input_serde,
            output_serde=output_serde,
            metadata=metadata,
            inactivity_timeout=inactivity_timeout,
            abort_timeout=abort_timeout,
            journal_retention=journal_retention,
            workflow_retention=workflow_retention,
            enable_lazy_state=enable_lazy_state,
            ingress_private=ingress_private,
            invocation_retry_policy=invocation_retry_policy,
            invocation_context_managers=invocation_context_managers,
        )

    def handler(
        self,
        name: Any = None,
        accept: str = "application/json",
        content_type: str = "application/json",
        input_serde: Serde[Any] | None = None,
        output_serde: Serde[Any] | None = None,
        metadata: dict[str, str] | None = None,
        inactivity_timeout: timedelta | None = None,
        abort_timeout: timedelta | None = None,
        journal_retention: timedelta | None = None,
        idempotency_retention: timedelta | None = None,
        enable_lazy_state: bool | None = None,
        ingress_private: bool | None = None,
        invocation_retry_policy: InvocationRetryPolicy | None = None,
        invocation_context_managers: list[Callable[[], AbstractAsyncContextManager[None]]] | None = None,
    ) -> Callable[[F], F]:
        return self._decorator(  # type: ignore[no-any-return]
            name,
            HandlerKind.SHARED,
            accept=accept,
            content_type=content_type,
            input_serde=input_serde,
            output_serde=output_serde,
            metadata=metadata,
            inactivity_timeout=inactivity_timeout,
            abort_timeout=abort_timeout,
            journal_retention=journal_retention,
            idempotency_retention=idempotency_retention,
            enable_lazy_state=enable_lazy_state,
            ingress_private=ingress_private,
            invocation_retry_policy=invocation_retry_policy,
            invocation_context_managers=invocation_context_managers,
        )


def handler_of(fn: Any) -> HandlerDef:
    """The definition behind a decorated handler function (as passed to ``ctx.service_call``)."""
    hdef = getattr(fn, HANDLER_ATTR, None)
    if hdef is None:
        raise TypeError(f"{fn!r} is not a handler: decorate it with @service.handler()")
    return typing.cast(HandlerDef, hdef)
