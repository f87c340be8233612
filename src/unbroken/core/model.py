"""The engine's data model: service schemas and the stored state of one invocation."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from unbroken.core.errors import invariant, violated
from unbroken.core.journal import Result


class ServiceKind(enum.StrEnum):
    SERVICE = "Service"
    VIRTUAL_OBJECT = "VirtualObject"
    WORKFLOW = "Workflow"

    @property
    def keyed(self) -> bool:
        return self is not ServiceKind.SERVICE


class HandlerKind(enum.StrEnum):
    """Absent (None) for plain services, as in Restate's metadata."""

    EXCLUSIVE = "Exclusive"
    SHARED = "Shared"
    WORKFLOW = "Workflow"


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

    def retry_policy_for(self, handler: str) -> RetryPolicy:
        h = self.handlers.get(handler)
        return h.retry_policy if h is not None and h.retry_policy is not None else self.retry_policy

    def lazy_state_for(self, handler: str) -> bool:
        h = self.handlers.get(handler)
        return h.enable_lazy_state if h is not None and h.enable_lazy_state is not None else self.enable_lazy_state


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
        fields = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None and k != "retry_policy"}
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


class Status(enum.StrEnum):
    """Invocation status, spelled as Restate's ``sys_invocation.status``."""

    SCHEDULED = "scheduled"
    PENDING = "pending"  # queued in its key's inbox behind the lock holder (Restate's internal name: Inboxed)
    RUNNING = "running"
    SUSPENDED = "suspended"
    BACKING_OFF = "backing-off"
    PAUSED = "paused"
    COMPLETED = "completed"


class Target(msgspec.Struct, frozen=True, array_like=True):
    service: str
    handler: str
    key: str | None = None

    def __str__(self) -> str:
        if self.key is None:
            return f"{self.service}/{self.handler}"
        return f"{self.service}/{self.key}/{self.handler}"


class Sink(msgspec.Struct, frozen=True, array_like=True):
    """Where an invocation's result goes when it completes: a completion of another invocation."""

    invocation_id: str
    completion_id: int


class Invocation(msgspec.Struct, array_like=True):
    """Everything the engine stores about one invocation besides its journal.

    Invariants (checked by :func:`check_invocation`): a completed invocation has a result and no waits;
    a suspended one waits on something; ``journal_length`` >= 1 once started (the Input entry).
    """

    id: str
    target: Target
    service_kind: ServiceKind
    handler_kind: HandlerKind | None
    status: Status
    created_at_ms: int
    modified_at_ms: int
    random_seed: int
    invoked_by: str = "ingress"
    invoked_by_id: str | None = None
    idempotency_key: str | None = None
    sinks: list[Sink] = []
    execute_at_ms: int = 0
    journal_length: int = 0
    attempts: int = 0
    retry_count: int = 0
    retries_since_progress: int = 0
    last_progress_at_ms: int = 0
    next_retry_at_ms: int = 0
    last_failure: str | None = None
    last_failure_code: int | None = None
    waiting_completions: list[int] = []
    waiting_signals: list[int] = []
    result: Result | None = None
    completed_at_ms: int = 0
    expires_at_ms: int = 0
    journal_expires_at_ms: int = 0
    cancel_requested: bool = False
    children: list[str] = []
    running_at_ms: int = 0  # when its first attempt started (for a lock-taking handler: when it took the lock)
    # How many awakeables (signal indexes 17, 18, ...) its handler allocated, as reported by the SDK on the
    # records it sends anyway (commands, run results, suspensions); -1 = unknown (a row from before this
    # field, an SDK that does not report it, an attempt aborted by a pause): then any awakeable index is
    # accepted. See ``control.awakeable_allocated``. Last, with a default, so that older rows still decode.
    awakeables: int = -1


def cleanup_due_ms(inv: Invocation) -> int:
    """When the retention sweep next has work on a completed invocation (0: never / not completed).

    The journal goes at ``journal_expires_at_ms`` (while the result stays), everything at ``expires_at_ms``.
    """
    if inv.status is not Status.COMPLETED:
        return 0
    if inv.journal_length and 0 < inv.journal_expires_at_ms < inv.expires_at_ms:
        return inv.journal_expires_at_ms
    return inv.expires_at_ms


def check_invocation(inv: Invocation) -> None:
    """Check the stored invariants (always, even under ``python -O``); called on write and on read.

    Written as ``if``s so that the messages are formatted only when one fails (this runs on every row).
    """
    if inv.status is Status.COMPLETED:
        if inv.result is None:
            violated(f"{inv.id}: completed without a result")
        if inv.waiting_completions or inv.waiting_signals:
            violated(f"{inv.id}: completed but waiting")
    elif inv.result is not None:
        violated(f"{inv.id}: {inv.status} but has a result")
    if inv.status is Status.SUSPENDED and not (inv.waiting_completions or inv.waiting_signals):
        violated(f"{inv.id}: suspended on nothing")
    if inv.status in _STARTED and inv.journal_length < 1:
        violated(f"{inv.id}: {inv.status} without an input entry")
    if (inv.target.key is not None) != inv.service_kind.keyed:
        violated(f"{inv.id}: key does not match kind")


_STARTED = frozenset({Status.RUNNING, Status.SUSPENDED, Status.BACKING_OFF})
