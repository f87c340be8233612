"""Exceptions a handler sees or raises.

::

    Exception
     ├── TerminalError            fail the invocation (or a ctx.run / call) for good: never retried
     │    └── (status_code 409 "cancelled" is raised at an await when the invocation is cancelled)
     └── RetryableError           fail this attempt; the engine retries, after ``retry_after`` if given

    BaseException
     └── SdkInternalBaseException  the SDK's own control flow (suspension, abort): never catch it
          └── NonDeterminismError  the journal does not match the code (code 570)
"""

from __future__ import annotations

from datetime import timedelta

from unbroken.core.errors import JOURNAL_MISMATCH


class TerminalError(Exception):
    """Raise to fail the invocation (or a ``ctx.run``) with ``status_code``: it is never retried."""

    def __init__(self, message: str, status_code: int = 500, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"TerminalError({self.message!r}, status_code={self.status_code})"


class RetryableError(Exception):
    """Fail this attempt; the engine retries it (after ``retry_after`` when given)."""

    def __init__(self, message: str, status_code: int = 500, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class SdkInternalBaseException(BaseException):
    """Control flow of the SDK. Catching it (``except BaseException``) breaks suspension."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)


class SuspendedException(SdkInternalBaseException):
    """restate-sdk's name for "the invocation suspended"; Unbroken's handlers see :class:`AttemptEnded`."""

    def __init__(self) -> None:
        super().__init__("the invocation suspended: it resumes when what it waits for completes")


class SdkInternalException(SdkInternalBaseException):
    """restate-sdk's name for "this attempt failed with a retryable error"."""

    def __init__(self) -> None:
        super().__init__("the attempt failed with a retryable error: it is retried from where it left off")


class NonDeterminismError(SdkInternalBaseException):
    """The handler issued a different command than the journal recorded at this position."""

    code = JOURNAL_MISMATCH

    def __init__(self, index: int, expected: str, actual: str) -> None:
        super().__init__(
            f"non-deterministic handler: journal entry {index} is {expected}, but the code now issues {actual}"
        )
        self.index = index
        self.expected = expected
        self.actual = actual


class AttemptEnded(SdkInternalBaseException):
    """The attempt was suspended, failed or aborted; the handler's coroutine is being dropped."""


def is_internal_exception(e: BaseException) -> bool:
    """Whether ``e`` is the SDK's control flow, which a handler's ``except`` must let through."""
    return isinstance(e, SdkInternalBaseException)
