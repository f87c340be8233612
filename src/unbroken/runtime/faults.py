"""Named fault points in production code: no-ops unless a test arms them.

Arm from the environment of a server process (crash tests): ``UNBROKEN_FAULTS=name:action[,name:action]``
with action ``crash`` (``os._exit(137)`` at that point, a SIGKILL stand-in that leaves no chance to clean
up) or ``raise``. Tests in the same process call :func:`arm` directly.
"""

from __future__ import annotations

import os

_armed: dict[str, str] = {}


def _load_env() -> None:
    spec = os.environ.get("UNBROKEN_FAULTS", "")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition(":")
        _armed[name] = action or "crash"


class InjectedFault(RuntimeError):
    pass


def arm(name: str, action: str = "raise") -> None:
    _armed[name] = action


def disarm_all() -> None:
    _armed.clear()


def point(name: str) -> None:
    """Declare a fault point. Costs one dict lookup when nothing is armed."""
    if not _armed:
        return
    action = _armed.get(name)
    if action is None:
        return
    if action == "crash":
        os._exit(137)
    if action == "raise":
        raise InjectedFault(name)


_load_env()
