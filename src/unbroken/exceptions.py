"""``unbroken.exceptions``: the same module path as ``restate.exceptions``."""

from unbroken.sdk.exceptions import (
    RetryableError,
    SdkInternalBaseException,
    SdkInternalException,
    SuspendedException,
    TerminalError,
    is_internal_exception,
)

__all__ = [
    "RetryableError",
    "SdkInternalBaseException",
    "SdkInternalException",
    "SuspendedException",
    "TerminalError",
    "is_internal_exception",
]
