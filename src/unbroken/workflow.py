"""``unbroken.workflow``: the same module path as ``restate.workflow``."""

from unbroken.sdk.service import Workflow

__all__ = ["Workflow"]
