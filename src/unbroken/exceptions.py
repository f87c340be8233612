"""``unbroken.exceptions``: the same module path as ``restate.exceptions``."""

from unbroken.sdk.exceptions import RetryableError, SdkInternalBaseException, TerminalError

__all__ = ["RetryableError", "SdkInternalBaseException", "TerminalError"]
