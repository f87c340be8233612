"""Actions: what the runtime must do once the transaction that produced them has committed."""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.core.journal import Entry, Notification, Result
from unbroken.core.model import Invocation


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


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer one waiting request. ``kind`` says what ``payload`` is (see ingress/admin)."""

    request_id: int
    kind: str
    invocation_id: str | None = None
    result: Result | None = None
    expires_at_ms: int = 0
    execute_at_ms: int = 0


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


Action = StartAttempt | Deliver | AbortAttempt | ArmTimer | Completed | Reply | AwaitCompletion | Log
