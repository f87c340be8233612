"""Records: every input to the engine. The state machine applies one record inside one transaction.

A record carries everything the apply step needs that does not live in storage, including the time it
happened (``now_ms`` is passed by the processor, taken once per batch from the injected clock).
"""

from __future__ import annotations

import enum

import msgspec

from unbroken.core.deployments import Deployment
from unbroken.core.invocation import Sink
from unbroken.core.journal import Command, Header, Notification, Result
from unbroken.core.schema import ServiceOverride, Target


class ReplyMode(enum.Enum):
    """What the caller of an ``Invoke`` waits for."""

    NONE = "none"  # nobody waits
    RESULT = "result"  # a call: answer with the result when done
    ACCEPTED = "accepted"  # a send: answer once the invocation is durably accepted


class Invoke(msgspec.Struct, frozen=True):
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
    # minted by the ingress that made this record from fresh random bytes (no idempotency key, no workflow
    # id): no row can hold it yet, so a store need not look (``Transaction.prefetch_invocations``)
    new_id: bool = False


# ``awakeables`` on the records an attempt sends: how many awakeables its handler has allocated so far
# (the in-process SDK reports it; None = not reported, e.g. a remote SDK: the engine then stops checking
# the awakeable indexes resolved for that invocation). Carried on records that are written anyway, so
# knowing it costs no storage write of its own.
#
# ``live_awakeables`` on the records that resolve an awakeable (or pause an invocation): how many its
# *running* attempt had allocated when the record entered the engine, stamped by the partition from the
# count the in-process SDK reports in memory at each allocation, before the id reaches user code (see
# ``control.awakeable_allocated``). 0: no attempt of it runs here (the stored count decides alone); -1:
# its attempt does not report (a remote SDK): unchecked. The state machine stays pure: the count is in
# the record.


class JournalCommand(msgspec.Struct, frozen=True):
    """A command written by a running attempt (``attempt`` fences out zombie attempts)."""

    invocation_id: str
    attempt: int
    command: Command
    awakeables: int | None = None
    # a command completing another invocation's awakeable or signal (CompleteAwakeable, SendSignal):
    # that invocation's live count (see above), stamped by the runtime when the command was sent
    target_live_awakeables: int = 0


class ProposeRunCompletion(msgspec.Struct, frozen=True):
    invocation_id: str
    attempt: int
    completion_id: int
    result: Result
    awakeables: int | None = None


class AttemptSuspended(msgspec.Struct, frozen=True):
    invocation_id: str
    attempt: int
    waiting_completions: tuple[int, ...]
    waiting_signals: tuple[int, ...]
    awakeables: int | None = None


class AttemptFailed(msgspec.Struct, frozen=True):
    """An attempt ended with a retryable error (exception, non-determinism, lost handler), or one that
    pauses the invocation at once (``pause``)."""

    invocation_id: str
    attempt: int
    code: int
    message: str
    next_retry_delay_ms: int | None = None
    pause: bool = False  # no retry can fix it (e.g. a ctx.run value that cannot be serialized): pause now


class TimerFired(msgspec.Struct, frozen=True):
    timer_id: int


class CancelInvocation(msgspec.Struct, frozen=True):
    invocation_id: str
    request_id: int = 0


class KillInvocation(msgspec.Struct, frozen=True):
    invocation_id: str
    request_id: int = 0


class ResolveSignal(msgspec.Struct, frozen=True):
    """An awakeable resolved or rejected from outside (ingress) or by another handler."""

    invocation_id: str
    signal_idx: int
    result: Result
    request_id: int = 0
    live_awakeables: int = 0  # stamped by the partition (see above)


class Attach(msgspec.Struct, frozen=True):
    """A caller wants an invocation's result: now (``wait=False``, 'output') or when done ('attach')."""

    invocation_id: str
    wait: bool
    request_id: int


class ResumeInvocation(msgspec.Struct, frozen=True):
    """Admin resume of a paused invocation (or a retry that the runtime lost on crash)."""

    invocation_id: str
    request_id: int = 0


class PauseInvocation(msgspec.Struct, frozen=True):
    invocation_id: str
    request_id: int = 0
    live_awakeables: int = 0  # stamped by the partition: what the attempt the pause aborts allocated


class PurgeInvocation(msgspec.Struct, frozen=True):
    invocation_id: str
    request_id: int = 0


class PurgeJournal(msgspec.Struct, frozen=True):
    """Admin: drop the journal of a completed invocation, keeping its result (for attach/idempotency)."""

    invocation_id: str
    request_id: int = 0


class Recover(msgspec.Struct, frozen=True):
    """After a restart: an invocation stored as running lost its attempt; start a new one."""

    invocation_id: str


class CleanExpired(msgspec.Struct, frozen=True):
    """Retention sweep: remove what expired before ``now`` (at most ``limit`` invocations)."""

    limit: int = 1000


class SetStateFromAdmin(msgspec.Struct, frozen=True):
    service: str
    key: str
    new_state: dict[str, bytes] = msgspec.field(default_factory=dict)
    request_id: int = 0
    # Restate's ``version``: applied only if the key's state is still this one (``state_version``)
    expected_version: str | None = None


class ModifyService(msgspec.Struct, frozen=True):
    """Admin ``PATCH /services/{name}``: ``change`` is merged into the service's stored override."""

    service: str
    change: ServiceOverride
    request_id: int = 0


class RegisterDeployment(msgspec.Struct, frozen=True):
    """Admin ``POST /deployments``: store ``deployment`` (what discovery found) and remove the deployments
    it ``replaces`` (a forced re-registration of the same URI), in one transaction."""

    deployment: Deployment
    replaces: tuple[str, ...] = ()
    request_id: int = 0


class RemoveDeployment(msgspec.Struct, frozen=True):
    """Admin ``DELETE /deployments/{id}``."""

    deployment_id: str
    request_id: int = 0


class FailInvocation(msgspec.Struct, frozen=True):
    """The engine gives up on a record of ``attempt`` that the store kept refusing (runtime/processor.py):
    the invocation completes with this failure, so that it neither hangs nor holds its lock."""

    invocation_id: str
    attempt: int
    code: int
    message: str


# Cross-partition records (``state_machine/inbox.py``): an effect of one invocation on another whose
# partition this node does not lead is sent to that partition's inbox as one of these (or as a
# ``CancelInvocation``, ``KillInvocation`` or ``ResolveSignal``), and its leader applies it as any record.


class InvokeCallee(msgspec.Struct, frozen=True):
    """A call (``sink`` set: where the result goes) or a one-way send (``sink`` None) from a handler: create
    the callee, or add the caller to an existing one (an idempotent call, a workflow's run)."""

    invocation_id: str
    target: Target
    argument: bytes
    headers: tuple[Header, ...]
    idempotency_key: str | None
    execute_at_ms: int
    invoked_by_id: str
    sink: Sink | None = None


class Notify(msgspec.Struct, frozen=True):
    """A notification for an invocation's journal: a call's result, a named signal, a promise."""

    invocation_id: str
    notification: Notification


class AddSink(msgspec.Struct, frozen=True):
    """A handler attaches to an invocation: its result goes to ``sink`` (now, if it is completed)."""

    invocation_id: str
    sink: Sink


class SendOutput(msgspec.Struct, frozen=True):
    """A handler asks for an invocation's output now (``GetInvocationOutput``): answered to ``sink``."""

    invocation_id: str
    sink: Sink


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
    | InvokeCallee
    | Notify
    | AddSink
    | SendOutput
)
