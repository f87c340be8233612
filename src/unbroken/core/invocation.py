"""The stored state of one invocation (besides its journal), its status and its invariants."""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from unbroken.core.errors import violated
from unbroken.core.journal import Result
from unbroken.core.schema import HandlerKind, ServiceKind, Target


class Status(enum.StrEnum):
    """Invocation status, spelled as Restate's ``sys_invocation.status``."""

    SCHEDULED = "scheduled"
    PENDING = "pending"  # queued in its key's inbox behind the lock holder (Restate's internal name: Inboxed)
    RUNNING = "running"
    SUSPENDED = "suspended"
    BACKING_OFF = "backing-off"
    PAUSED = "paused"
    COMPLETED = "completed"


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
    running_at_ms: int = (
        0  # when its first attempt started (for a lock-taking handler: when it took the lock)
    )
    # How many awakeables (signal indexes 17, 18, ...) its handler allocated, as reported by the SDK on the
    # records it sends anyway (commands, run results, suspensions); -1 = unknown (a row from before this
    # field, an SDK that does not report it, an attempt aborted by a pause): then any awakeable index is
    # accepted. See ``control.awakeable_allocated``. Last, with a default, so that older rows still decode.
    awakeables: int = -1
    # The remote deployment its first attempt ran on (None: in-process): every later attempt runs there too,
    # even once a newer deployment serves the service (Restate's pinned deployment). Last, for older rows.
    deployment_id: str | None = None


# Enum members named through their class cost ~170 ns each on Python 3.11 (EnumType defines
# ``__getattr__``, which sends every attribute lookup on the class through a slow hook): the per-call
# code reads module constants instead (docs/architecture.md, "What a call may cost").
_COMPLETED: Final = Status.COMPLETED
_SUSPENDED: Final = Status.SUSPENDED


def cleanup_due_ms(inv: Invocation) -> int:
    """When the retention sweep next has work on a completed invocation (0: never / not completed).

    The journal goes at ``journal_expires_at_ms`` (while the result stays), everything at ``expires_at_ms``.
    """
    if inv.status is not _COMPLETED:
        return 0
    if inv.journal_length and 0 < inv.journal_expires_at_ms < inv.expires_at_ms:
        return inv.journal_expires_at_ms
    return inv.expires_at_ms


def check_invocation(inv: Invocation) -> None:
    """Check the stored invariants (always, even under ``python -O``); called on write and on read.

    Written as ``if``s so that the messages are formatted only when one fails (this runs on every row).
    """
    if inv.status is _COMPLETED:
        if inv.result is None:
            violated(f"{inv.id}: completed without a result")
        if inv.waiting_completions or inv.waiting_signals:
            violated(f"{inv.id}: completed but waiting")
    elif inv.result is not None:
        violated(f"{inv.id}: {inv.status} but has a result")
    if inv.status is _SUSPENDED and not (inv.waiting_completions or inv.waiting_signals):
        violated(f"{inv.id}: suspended on nothing")
    if inv.status in _STARTED and inv.journal_length < 1:
        violated(f"{inv.id}: {inv.status} without an input entry")
    if (inv.target.key is not None) != inv.service_kind.keyed:
        violated(f"{inv.id}: key does not match kind")


_STARTED = frozenset({Status.RUNNING, Status.SUSPENDED, Status.BACKING_OFF})
