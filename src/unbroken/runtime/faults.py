"""Named fault points in production code: no-ops unless a test arms them.

Arm from the environment of a server process (crash tests): ``UNBROKEN_FAULTS=name:action[,name:action]``
with action ``crash`` (``os._exit(137)`` at that point, a SIGKILL stand-in that leaves no chance to clean
up), ``raise``, ``invariant`` (an ``InvariantViolation`` there, every time) or ``invariant-once``. Tests in the same process call :func:`arm` directly.

The points (tests/e2e/test_crash.py and tests/e2e/test_fault_points.py crash at each one):

* ``processor.mid_batch``: a batch of several records, the first applied, the rest not, nothing committed
* ``processor.before_commit``: a whole batch applied, not committed
* ``processor.after_commit``: committed, none of its actions (replies, attempt starts, timers) executed
* ``invoker.before_start``: an attempt is committed as running, its handler not started
* ``sdk.run.before_propose``: a ``ctx.run`` action ran, its result not yet proposed to the journal
* ``timer.before_fire``: a durable timer is due, its ``TimerFired`` record not yet submitted
* ``ingress.before_reply``: what an HTTP reply says is committed, the caller has not received it
"""

from __future__ import annotations

import os

from unbroken.core.errors import InvariantViolation

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
    if action.startswith("invariant"):
        if action == "invariant-once":
            del _armed[name]
        raise InvariantViolation(f"injected at {name}")


_load_env()
