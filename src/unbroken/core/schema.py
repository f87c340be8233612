"""The service registry: services, handlers, their kinds and options, retry policy, overrides, targets."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec

from unbroken.core.errors import invariant


class ServiceKind(enum.StrEnum):
    SERVICE = "Service"
    VIRTUAL_OBJECT = "VirtualObject"
    WORKFLOW = "Workflow"

    @property
    def keyed(self) -> bool:
        return self is not _SERVICE


class HandlerKind(enum.StrEnum):
    """Absent (None) for plain services, as in Restate's metadata."""

    EXCLUSIVE = "Exclusive"
    SHARED = "Shared"
    WORKFLOW = "Workflow"


# Enum members named through their class cost ~170 ns each on Python 3.11 (EnumType defines
# ``__getattr__``, which sends every attribute lookup on the class through a slow hook): the per-call
# code reads module constants instead (docs/architecture.md, "What a call may cost").
_SERVICE: Final = ServiceKind.SERVICE


class OnMaxAttempts(enum.StrEnum):
    """What happens once a retry policy's attempts are spent (Restate's ``on_max_attempts``)."""

    PAUSE = "pause"
    KILL = "kill"


@dataclass(frozen=True)
class RetryPolicy:
    """Restate's invocation retry policy; ``max_attempts`` counts the first attempt too."""

    initial_interval_ms: int = 500
    exponentiation_factor: float = 2.0
    max_interval_ms: int = 60_000
    max_attempts: int = 70
    on_max_attempts: OnMaxAttempts = OnMaxAttempts.PAUSE

    def delay_ms(self, failed_attempts: int) -> int:
        """Delay before the next attempt after ``failed_attempts`` (>= 1) consecutive failures."""
        invariant(failed_attempts >= 1, "a retry delay is computed after at least one failure")
        delay = self.initial_interval_ms * (self.exponentiation_factor ** (failed_attempts - 1))
        return int(min(delay, self.max_interval_ms))


@dataclass(frozen=True)
class HandlerSchema:
    name: str
    kind: HandlerKind | None
    public: bool = True
    retry_policy: RetryPolicy | None = None
    inactivity_timeout_ms: int | None = None
    abort_timeout_ms: int | None = None
    input_schema: object | None = None
    output_schema: object | None = None
    # The handler's declared content types (restate-sdk's ``accept=`` and ``content_type=``): the ingress
    # checks a request's content-type against ``accept`` (wildcards allowed, e.g. ``application/*``) and
    # answers with ``content_type``; ``input_json`` says whether the body must parse as JSON.
    accept: str = "application/json"
    content_type: str = "application/json"
    input_json: bool = True
    # The body -> None when it fits the handler's input type, else what is wrong. The ingress calls it
    # before accepting an invocation (given by the SDK, which the ingress may not import).
    input_validator: Callable[[bytes], str | None] | None = field(default=None, compare=False, repr=False)
    enable_lazy_state: bool | None = None  # None: the service's setting


@dataclass(frozen=True)
class ServiceSchema:
    name: str
    kind: ServiceKind
    handlers: dict[str, HandlerSchema]
    public: bool = True
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    inactivity_timeout_ms: int = 60_000
    abort_timeout_ms: int = 600_000
    idempotency_retention_ms: int = 86_400_000
    workflow_completion_retention_ms: int = 86_400_000
    journal_retention_ms: int = 86_400_000
    revision: int = 1
    # Restate's lazy state: attempts start without the key's state, each read asks the engine for what it
    # needs (GetLazyState / GetLazyStateKeys commands), so a key with a large state starts fast.
    enable_lazy_state: bool = False
    # The remote deployment serving it (``core/deployments.py``); None: a handler of this process.
    deployment_id: str | None = None

    def retry_policy_for(self, handler: str) -> RetryPolicy:
        h = self.handlers.get(handler)
        return h.retry_policy if h is not None and h.retry_policy is not None else self.retry_policy

    def lazy_state_for(self, handler: str) -> bool:
        h = self.handlers.get(handler)
        return (
            h.enable_lazy_state
            if h is not None and h.enable_lazy_state is not None
            else self.enable_lazy_state
        )


@dataclass(frozen=True)
class Schemas:
    """The registered services, as the state machine needs them (read-only)."""

    services: dict[str, ServiceSchema]

    def service(self, name: str) -> ServiceSchema | None:
        return self.services.get(name)


class RetryOverride(msgspec.Struct, frozen=True, omit_defaults=True):
    """Retry-policy fields changed through the admin API; None keeps the code's (or an earlier) value."""

    initial_interval_ms: int | None = None
    exponentiation_factor: float | None = None
    max_interval_ms: int | None = None
    max_attempts: int | None = None
    on_max_attempts: OnMaxAttempts | None = None


class ServiceOverride(msgspec.Struct, frozen=True, omit_defaults=True):
    """A service's options changed through the admin API (``PATCH /services/{name}``), stored in the
    ``service_override`` table; None keeps the value the code declares. An override wins over the code's own
    option until it is changed again. Field names are ``ServiceSchema``'s, which is also what the old
    ``service_overrides.json`` side file held, so it imports as is (encoded by name: fields can be added)."""

    public: bool | None = None
    idempotency_retention_ms: int | None = None
    workflow_completion_retention_ms: int | None = None
    journal_retention_ms: int | None = None
    inactivity_timeout_ms: int | None = None
    abort_timeout_ms: int | None = None
    retry_policy: RetryOverride | None = None

    def merged(self, newer: ServiceOverride) -> ServiceOverride:
        """This override with every field ``newer`` sets replaced (retry-policy fields one by one)."""
        retry = self.retry_policy
        if newer.retry_policy is not None:
            retry = newer.retry_policy if retry is None else _merge(retry, newer.retry_policy)
        return msgspec.structs.replace(_merge(self, newer), retry_policy=retry)

    def applied_to(self, svc: ServiceSchema) -> ServiceSchema:
        fields = {
            k: v for k, v in msgspec.structs.asdict(self).items() if v is not None and k != "retry_policy"
        }
        if self.retry_policy is not None:
            retry = {k: v for k, v in msgspec.structs.asdict(self.retry_policy).items() if v is not None}
            fields["retry_policy"] = dataclasses.replace(svc.retry_policy, **retry)
        return dataclasses.replace(svc, **fields)


_S = TypeVar("_S", RetryOverride, ServiceOverride)


def _merge(old: _S, new: _S) -> _S:
    changed = {k: v for k, v in msgspec.structs.asdict(new).items() if v is not None}
    return msgspec.structs.replace(old, **changed)


def with_overrides(schemas: Schemas, overrides: dict[str, ServiceOverride]) -> Schemas:
    """The app's schemas with the stored overrides applied (an override of a service the app no longer
    declares is kept in storage and ignored)."""
    services = dict(schemas.services)
    for name, override in overrides.items():
        if name in services:
            services[name] = override.applied_to(services[name])
    return Schemas(services)


class Target(msgspec.Struct, frozen=True, array_like=True):
    service: str
    handler: str
    key: str | None = None

    def __str__(self) -> str:
        if self.key is None:
            return f"{self.service}/{self.handler}"
        return f"{self.service}/{self.key}/{self.handler}"
