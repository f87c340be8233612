"""``unbroken.retry_policy``: the same module path as ``restate.retry_policy``."""

from unbroken.sdk.service import InvocationRetryPolicy

__all__ = ["InvocationRetryPolicy"]
