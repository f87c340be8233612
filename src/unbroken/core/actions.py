"""Actions: what the runtime must do once the transaction that produced them has committed."""

from __future__ import annotations

import msgspec

from unbroken.core.deployments import Deployment
from unbroken.core.invocation import Invocation
from unbroken.core.journal import Entry, Failure, Notification, Result
from unbroken.core.schema import ServiceOverride


class StartAttempt(msgspec.Struct, frozen=True):
    """Run (or replay) an invocation: the journal so far and, for keyed handlers, its state."""

    invocation: Invocation
    journal: tuple[Entry, ...]
    state: dict[str, bytes] | None  # None = plain service (no state access)
    lazy_state: bool = False  # a lazy-state handler: ``state`` is empty, reads go through commands


class Deliver(msgspec.Struct, frozen=True):
    """Hand a stored notification to the running attempt (if the runtime still has it)."""

    invocation_id: str
    attempt: int
    notification: Notification


class AbortAttempt(msgspec.Struct, frozen=True):
    invocation_id: str


class ArmTimer(msgspec.Struct, frozen=True):
    """A timer was stored: arm it in the partition owning ``invocation_id`` (the invocation it wakes)."""

    timer_id: int
    fire_at_ms: int
    invocation_id: str


class Completed(msgspec.Struct, frozen=True):
    """The invocation finished: answer every in-memory waiter of it."""

    invocation_id: str
    result: Result
    expires_at_ms: int


# ------------------------------------------------------------------------------------------- outcomes
# What a waiting request is answered: a closed union, so the ingress and the admin API ``match`` every case
# (ending with ``assert_never``) and a new outcome cannot reach a caller unhandled.


class Output(msgspec.Struct, frozen=True):
    """The invocation completed: its result (value or terminal failure)."""

    invocation_id: str
    result: Result
    expires_at_ms: int = 0


class Accepted(msgspec.Struct, frozen=True):
    """A send was durably accepted (``execute_at_ms`` if delayed), or a cancel/signal was recorded."""

    invocation_id: str
    execute_at_ms: int = 0


class PreviouslyAccepted(msgspec.Struct, frozen=True):
    """An idempotent send repeated: the invocation already exists."""

    invocation_id: str


class WorkflowAlreadyInvoked(msgspec.Struct, frozen=True):
    invocation_id: str


class NotFound(msgspec.Struct, frozen=True):
    """The invocation (or, answering ``ModifyService``, the service) does not exist."""

    name: str


class NotAllocated(msgspec.Struct, frozen=True):
    """A signal resolved from outside that the invocation has not created (not an awakeable's index, or the
    invocation has not started): nobody may plant a result for it."""

    invocation_id: str


class NotReady(msgspec.Struct, frozen=True):
    """Output asked for an invocation that has not completed yet."""

    invocation_id: str


class AlreadyCompleted(msgspec.Struct, frozen=True):
    """A control request (cancel, kill, pause, resume) for an invocation that has completed."""

    invocation_id: str


class NotCompleted(msgspec.Struct, frozen=True):
    """A purge of an invocation that has not completed."""

    invocation_id: str


class NotStarted(msgspec.Struct, frozen=True):
    """A resume of an invocation still scheduled or inboxed."""

    invocation_id: str


class Done(msgspec.Struct, frozen=True):
    """The request took effect (``invocation_id`` None for requests about no invocation)."""

    invocation_id: str | None = None


class StoreFailed(msgspec.Struct, frozen=True):
    """The store kept refusing the record: it was given up without effect (507/500)."""

    failure: Failure


class Unavailable(msgspec.Struct, frozen=True):
    """The engine cannot take the record now (stopped partition, store failing): nothing was accepted. Or,
    with ``goes_on``, the invocation the caller waited on was accepted and goes on on another node (its
    partition moved there): a cluster's ingress attaches to it through that node."""

    failure: Failure
    goes_on: str | None = None


class StateChanged(msgspec.Struct, frozen=True):
    """An admin state change that named the version of the state it was made from (Restate's CLI does):
    the state is no longer that version, so nothing was changed."""

    version: str


class Gone(msgspec.Struct, frozen=True):
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
    | StateChanged
    | StoreFailed
    | Unavailable
    | Gone
)


class Reply(msgspec.Struct, frozen=True):
    """Answer one waiting request with ``outcome``."""

    request_id: int
    outcome: Outcome


class UpdateService(msgspec.Struct, frozen=True):
    """A service's stored override changed (``ModifyService`` committed): from now on the engine applies
    ``override`` (all of it, merged) over the service's schema. Applying a whole override again is harmless:
    its fields replace values, so the last one committed decides."""

    service: str
    override: ServiceOverride


class UpdateDeployments(msgspec.Struct, frozen=True):
    """A deployment was stored (``put``) and/or deployments removed (``RegisterDeployment`` or
    ``RemoveDeployment`` committed): the node serves the services of the deployments stored now."""

    put: Deployment | None
    removed: tuple[str, ...]


class AwaitCompletion(msgspec.Struct, frozen=True):
    """Register ``request_id`` as waiting for ``invocation_id`` to complete (answered by Completed)."""

    request_id: int
    invocation_id: str


class Log(msgspec.Struct, frozen=True):
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
