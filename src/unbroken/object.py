"""``unbroken.object``: the same module path as ``restate.object``."""

from unbroken.sdk.service import VirtualObject

__all__ = ["VirtualObject"]
