"""``unbroken.service``: the same module path as ``restate.service``."""

from unbroken.sdk.service import Service

__all__ = ["Service"]
