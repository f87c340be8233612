"""Records: every input to the engine. The state machine applies one record inside one transaction.

A record carries everything the apply step needs that does not live in storage, including the time it
happened (``now_ms`` is passed by the processor, taken once per batch from the injected clock).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from unbroken.core.deployments import Deployment
from unbroken.core.journal import Command, Header, Result
from unbroken.core.schema import ServiceOverride, Target


class ReplyMode(enum.Enum):
    """What the caller of an ``Invoke`` waits for."""

    NONE = "none"  # nobody waits
    RESULT = "result"  # a call: answer with the result when done
    ACCEPTED = "accepted"  # a send: answer once the invocation is durably accepted


@dataclass(frozen=True, slots=True)
class Invoke:
    """A new invocation from the ingress (``request_id`` set when a caller waits for an answer)."""

    invocation_id: str
    target: Target
    argument: bytes
    headers: tuple[Header, ...] = ()
    idempotency_key: str | None = None
    execute_at_ms: int = 0
    request_id: int = 0
    reply: ReplyMode = ReplyMode.NONE
    random_seed: int = 0


# ``awakeables`` on the records an attempt sends: how many awakeables its handler has allocated so far
# (the in-process SDK reports it; None = not reported, e.g. a remote SDK: the engine then stops checking
# the awakeable indexes resolved for that invocation). Carried on records that are written anyway, so
# knowing it costs no storage write of its own.


@dataclass(frozen=True, slots=True)
class JournalCommand:
    """A command written by a running attempt (``attempt`` fences out zombie attempts)."""

    invocation_id: str
    attempt: int
    command: Command
    awakeables: int | None = None


@dataclass(frozen=True, slots=True)
class ProposeRunCompletion:
    invocation_id: str
    attempt: int
    completion_id: int
    result: Result
    awakeables: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptSuspended:
    invocation_id: str
    attempt: int
    waiting_completions: tuple[int, ...]
    waiting_signals: tuple[int, ...]
    awakeables: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt ended with a retryable error (exception, non-determinism, lost handler), or one that
    pauses the invocation at once (``pause``)."""

    invocation_id: str
    attempt: int
    code: int
    message: str
    next_retry_delay_ms: int | None = None
    pause: bool = False  # no retry can fix it (e.g. a ctx.run value that cannot be serialized): pause now


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer_id: int


@dataclass(frozen=True, slots=True)
class CancelInvocation:
    invocation_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class KillInvocation:
    invocation_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class ResolveSignal:
    """An awakeable resolved or rejected from outside (ingress) or by another handler."""

    invocation_id: str
    signal_idx: int
    result: Result
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class Attach:
    """A caller wants an invocation's result: now (``wait=False``, 'output') or when done ('attach')."""

    invocation_id: str
    wait: bool
    request_id: int


@dataclass(frozen=True, slots=True)
class ResumeInvocation:
    """Admin resume of a paused invocation (or a retry that the runtime lost on crash)."""

    invocation_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class PauseInvocation:
    invocation_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class PurgeInvocation:
    invocation_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class PurgeJournal:
    """Admin: drop the journal of a completed invocation, keeping its result (for attach/idempotency)."""

    invocation_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class Recover:
    """After a restart: an invocation stored as running lost its attempt; start a new one."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class CleanExpired:
    """Retention sweep: remove what expired before ``now`` (at most ``limit`` invocations)."""

    limit: int = 1000


@dataclass(frozen=True, slots=True)
class SetStateFromAdmin:
    service: str
    key: str
    new_state: dict[str, bytes] = field(default_factory=dict)
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class ModifyService:
    """Admin ``PATCH /services/{name}``: ``change`` is merged into the service's stored override."""

    service: str
    change: ServiceOverride
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class RegisterDeployment:
    """Admin ``POST /deployments``: store ``deployment`` (what discovery found) and remove the deployments
    it ``replaces`` (a forced re-registration of the same URI), in one transaction."""

    deployment: Deployment
    replaces: tuple[str, ...] = ()
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class RemoveDeployment:
    """Admin ``DELETE /deployments/{id}``."""

    deployment_id: str
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class FailInvocation:
    """The engine gives up on a record of ``attempt`` that the store kept refusing (runtime/processor.py):
    the invocation completes with this failure, so that it neither hangs nor holds its lock."""

    invocation_id: str
    attempt: int
    code: int
    message: str


Record = (
    Invoke
    | JournalCommand
    | ProposeRunCompletion
    | AttemptSuspended
    | AttemptFailed
    | TimerFired
    | CancelInvocation
    | KillInvocation
    | ResolveSignal
    | Attach
    | ResumeInvocation
    | PauseInvocation
    | PurgeInvocation
    | PurgeJournal
    | CleanExpired
    | Recover
    | SetStateFromAdmin
    | ModifyService
    | RegisterDeployment
    | RemoveDeployment
    | FailInvocation
)
