"""Actions: what the runtime must do once the transaction that produced them has committed."""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.core.deployments import Deployment
from unbroken.core.invocation import Invocation
from unbroken.core.journal import Entry, Failure, Notification, Result
from unbroken.core.schema import ServiceOverride


@dataclass(frozen=True, slots=True)
class StartAttempt:
    """Run (or replay) an invocation: the journal so far and, for keyed handlers, its state."""

    invocation: Invocation
    journal: tuple[Entry, ...]
    state: dict[str, bytes] | None  # None = plain service (no state access)
    lazy_state: bool = False  # a lazy-state handler: ``state`` is empty, reads go through commands


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand a stored notification to the running attempt (if the runtime still has it)."""

    invocation_id: str
    attempt: int
    notification: Notification


@dataclass(frozen=True, slots=True)
class AbortAttempt:
    invocation_id: str


@dataclass(frozen=True, slots=True)
class ArmTimer:
    timer_id: int
    fire_at_ms: int


@dataclass(frozen=True, slots=True)
class Completed:
    """The invocation finished: answer every in-memory waiter of it."""

    invocation_id: str
    result: Result
    expires_at_ms: int


# ------------------------------------------------------------------------------------------- outcomes
# What a waiting request is answered: a closed union, so the ingress and the admin API ``match`` every case
# (ending with ``assert_never``) and a new outcome cannot reach a caller unhandled.


@dataclass(frozen=True, slots=True)
class Output:
    """The invocation completed: its result (value or terminal failure)."""

    invocation_id: str
    result: Result
    expires_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Accepted:
    """A send was durably accepted (``execute_at_ms`` if delayed), or a cancel/signal was recorded."""

    invocation_id: str
    execute_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PreviouslyAccepted:
    """An idempotent send repeated: the invocation already exists."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class WorkflowAlreadyInvoked:
    invocation_id: str


@dataclass(frozen=True, slots=True)
class NotFound:
    """The invocation (or, answering ``ModifyService``, the service) does not exist."""

    name: str


@dataclass(frozen=True, slots=True)
class NotAllocated:
    """A signal resolved from outside that the invocation has not created (not an awakeable's index, or the
    invocation has not started): nobody may plant a result for it."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class NotReady:
    """Output asked for an invocation that has not completed yet."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class AlreadyCompleted:
    """A control request (cancel, kill, pause, resume) for an invocation that has completed."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class NotCompleted:
    """A purge of an invocation that has not completed."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class NotStarted:
    """A resume of an invocation still scheduled or inboxed."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class Done:
    """The request took effect (``invocation_id`` None for requests about no invocation)."""

    invocation_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The store kept refusing the record: it was given up without effect (507/500)."""

    failure: Failure


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The engine cannot take the record now (stopped partition, store failing): nothing was accepted."""

    failure: Failure


@dataclass(frozen=True, slots=True)
class Gone:
    """The caller left before its record was applied: it was withdrawn, nobody is answered."""


Outcome = (
    Output
    | Accepted
    | PreviouslyAccepted
    | WorkflowAlreadyInvoked
    | NotFound
    | NotAllocated
    | NotReady
    | AlreadyCompleted
    | NotCompleted
    | NotStarted
    | Done
    | StoreFailed
    | Unavailable
    | Gone
)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer one waiting request with ``outcome``."""

    request_id: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class UpdateService:
    """A service's stored override changed (``ModifyService`` committed): from now on the engine applies
    ``override`` (all of it, merged) over the service's schema. Applying a whole override again is harmless:
    its fields replace values, so the last one committed decides."""

    service: str
    override: ServiceOverride


@dataclass(frozen=True, slots=True)
class UpdateDeployments:
    """A deployment was stored (``put``) and/or deployments removed (``RegisterDeployment`` or
    ``RemoveDeployment`` committed): the node serves the services of the deployments stored now."""

    put: Deployment | None
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AwaitCompletion:
    """Register ``request_id`` as waiting for ``invocation_id`` to complete (answered by Completed)."""

    request_id: int
    invocation_id: str


@dataclass(frozen=True, slots=True)
class Log:
    """A human-readable event for dev mode and logs; ``warning`` ones (a failed attempt) are logged in
    every mode, the others only in dev mode."""

    invocation_id: str
    message: str
    warning: bool = False


Action = (
    StartAttempt
    | Deliver
    | AbortAttempt
    | ArmTimer
    | Completed
    | Reply
    | AwaitCompletion
    | Log
    | UpdateService
    | UpdateDeployments
)
