"""``unbroken.logging``: the same module path as ``restate.logging``."""

from unbroken.sdk.replay_logging import RestateLoggingFilter, getLogger

__all__ = ["RestateLoggingFilter", "getLogger"]
