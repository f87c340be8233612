"""How the runtime talks to handlers, wherever they run.

An attempt is a conversation shaped like Restate's service protocol: the engine starts it with the
journal so far (``AttemptStart``), the handler side writes commands and run proposals to an
``AttemptSink`` and ends with an output command, a suspension or an error; the engine streams
notifications back through the ``AttemptHandle``. The in-process SDK implements it with Python objects;
a remote deployment implements it over HTTP with Restate's framing.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from unbroken.core.journal import Command, Entry, Notification, Result
from unbroken.core.schema import HandlerKind, ServiceKind, Target


class AttemptStart(msgspec.Struct, frozen=True):
    invocation_id: str
    attempt: int
    target: Target
    service_kind: ServiceKind
    handler_kind: HandlerKind | None
    journal: tuple[Entry, ...]
    state: dict[str, bytes] | None
    random_seed: int
    retries_since_progress: int
    ms_since_progress: int
    inactivity_timeout_ms: int
    idempotency_key: str | None
    # Restate's partial state: ``state`` holds nothing, reads of the key's state are commands the engine
    # answers (GetLazyState, GetLazyStateKeys).
    lazy_state: bool = False
    created_at_ms: int = 0  # when the invocation was created (its trace span starts there); 0: unknown
    # The remote deployment the invocation is pinned to (its first attempt's); None: in-process.
    deployment_id: str | None = None


class AttemptSink(Protocol):
    """Engine side of an attempt, called by the handler side (never blocks).

    ``awakeables``: how many awakeables the handler allocated so far, when the SDK knows it (the
    in-process one does); the engine refuses to complete an awakeable index past it. ``None`` (a remote
    SDK: Restate's protocol does not carry it) turns that check off for the invocation.

    ``allocated(awakeables)``: the same count, reported at once, in memory only: when the attempt starts
    (0) and at each allocation, before the awakeable's id reaches the handler's code. An id can then
    leave the attempt (e.g. from a ``ctx.run`` action) before any record carrying the count is applied: a
    resolve of it is checked against this live count. An SDK that never calls it (a remote one) leaves
    its running attempt unchecked.
    """

    def allocated(self, awakeables: int) -> None: ...

    def command(self, command: Command, awakeables: int | None = None) -> None: ...
    def propose_run(self, completion_id: int, result: Result, awakeables: int | None = None) -> None: ...
    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None: ...
    # pause: stop retrying now (a programming error no retry fixes); the operator resumes after a fix
    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None: ...
    def ended(self) -> None: ...


class AttemptHandle(Protocol):
    """Handler side of an attempt, called by the engine."""

    def notify(self, notification: Notification) -> None: ...
    def abort(self) -> None: ...


class HandlerTransport(Protocol):
    def start(self, start: AttemptStart, sink: AttemptSink) -> AttemptHandle: ...
