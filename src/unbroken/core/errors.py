"""The engine's errors: what each one means and who handles it.

::

    Exception
     ├── EngineError                 base of the engine's own errors (not the SDK's, see sdk/exceptions.py)
     │    ├── InvariantViolation     a stored or computed invariant does not hold: a bug or corrupt data.
     │    │                          The processor rolls the batch back, drops its memory and recovers from
     │    │                          storage (crash-only); the same record breaking it again stops the
     │    │                          partition, and both health endpoints say so.
     │    ├── TransactionConflict    a store several partitions share refused a commit: another transaction
     │    │                          changed a row this one read or wrote since it did. Rolled back; the
     │    │                          processor handles it as a store failure (applies the batch again).
     │    ├── ProtocolViolation      a running attempt sent a command the protocol forbids (a shared
     │    │                          handler writing state, a promise outside a workflow, ...): the state
     │    │                          machine fails that attempt with ``code`` (571) in the same apply, and
     │    │                          the retry policy retries or pauses it. Raised before anything is written.
     │    └── EngineUnavailable      the engine cannot take a request now (queue full, store failing,
     │         │                     partition stopped): the ingress answers ``status`` (503) with
     │         │                     ``Retry-After``; nothing was accepted
     │         └── PartitionNotLed   the request's storage partition is led by another node (PostgreSQL,
     │                               several nodes): forwarded to its leader, or 503 + Retry-After
     ├── runtime.processor.StorageFailed   the store failed (a statement or the COMMIT): the batch was
     │                               rolled back and is applied again later; nothing of it was acknowledged
     └── runtime.faults.InjectedFault      a test's armed fault point

Input errors at the edges stay where they are raised and answered (``http.asgi.HttpError``,
``core.ids.InvalidId``, ``core.durations.InvalidDuration``, ``config.ConfigError``): they never reach the
state machine.

``invariant(cond, msg)`` is the always-on check: unlike ``assert`` it survives ``python -O``.
"""

from __future__ import annotations

from typing import NoReturn

PROTOCOL_VIOLATION = 571  # Restate's PROTOCOL_VIOLATION code (crates/types/src/errors.rs)
JOURNAL_MISMATCH = 570  # Restate's JOURNAL_MISMATCH: the handler's commands differ from its journal


class EngineError(Exception):
    """Base of the engine's errors."""


class InvariantViolation(EngineError):
    """An invariant does not hold. Never caught to go on: the partition recovers from storage or stops."""


class TransactionConflict(EngineError):
    """A commit refused, rolled back: another transaction changed a row it read or wrote. Apply it again."""


class ProtocolViolation(EngineError):
    """A command breaks the service protocol; fails the attempt with ``code`` (and is retried by policy)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EngineUnavailable(EngineError):
    """The engine refuses a new request for now (nothing was accepted): answer ``status``, retry later."""

    def __init__(self, message: str, status: int = 503, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class PartitionNotLed(EngineUnavailable):
    """The request belongs to storage partition ``part``, which this node does not lead now (another node
    does, or nobody during a failover): nothing was accepted. The ingress forwards it to the leader, or
    answers 503 with Retry-After."""

    def __init__(self, part: int, node: str, leader: str | None = None) -> None:
        by = f"it is led by node {leader}" if leader else "no node leads it now (a failover)"
        super().__init__(f"partition {part} is not led by node {node} now ({by}); retry later")
        self.part = part
        self.leader = leader


def invariant(cond: object, msg: str) -> None:
    """Check an invariant; raise :class:`InvariantViolation` with ``msg`` when it does not hold.

    Callers pass a plain string (an f-string is cheap next to the storage work around every check).
    """
    if not cond:
        violated(msg)


def violated(msg: str) -> NoReturn:
    raise InvariantViolation(msg)
