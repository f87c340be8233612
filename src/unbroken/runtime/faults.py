"""Named fault points in production code: no-ops unless a test arms them.

Arm from the environment of a server process (crash tests): ``UNBROKEN_FAULTS=name:action[,name:action]``
with action ``crash`` (``os._exit(137)`` at that point, a SIGKILL stand-in that leaves no chance to clean
up), ``raise``, ``invariant`` (an ``InvariantViolation`` there, every time) or ``invariant-once``. Tests in the same process arm the :class:`FaultPoints` of the node they built.

Injected, never global: each node has its own ``FaultPoints`` (``FaultPoints.from_env()`` in ``unbroken
serve``; the simulator's or a test's otherwise), passed to the processor, the invoker, the timers, the ingress
and, as a plain ``point`` callable, to the SDK's in-process transport.

The points (tests/e2e/test_crash.py and tests/e2e/test_fault_points.py crash at each of the first seven;
the crash torture on PostgreSQL, ``python -m tests.torture.driver --store postgres``, at every one):

* ``processor.mid_batch``: a batch of several records, the first applied, the rest not, nothing committed
* ``processor.before_commit``: a whole batch applied, not committed
* ``processor.after_commit``: committed, none of its actions (replies, attempt starts, timers) executed
* ``invoker.before_start``: an attempt is committed as running, its handler not started
* ``sdk.run.before_propose``: a ``ctx.run`` action ran, its result not yet proposed to the journal
* ``timer.before_fire``: a durable timer is due, its ``TimerFired`` record not yet submitted
* ``ingress.before_reply``: what an HTTP reply says is committed, the caller has not received it
* ``lease.before_renew`` / ``lease.after_renew`` (PostgreSQL, several nodes; the lease thread): a renewal
  round not sent yet (the leases run down) / acknowledged by the table, the node not told yet
* ``lease.before_acquire`` / ``lease.after_acquire``: free or expired leases chosen, not claimed / claimed
  with new epochs (the old leader fenced), the partitions not recovered yet (at start too: a restart takes
  its own leases back)
* ``lease.before_release``: extras set aside to balance the cluster (the runtime let go of them), their
  leases not handed over yet
* ``takeover.mid_recovery``: gained partitions led here, their ``Recover`` records queued, none committed,
  their timers not read yet
* ``pg.commit`` (the PostgreSQL store; armed as ``pg.commit:40001@P``): a share P of the COMMITs fail with a
  serialization failure raised by the server (SQLSTATE 40001), as distributed SQL fails them; the store
  takes the rate when it opens (``rate``), it is not a point the code passes
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from unbroken.core.errors import InvariantViolation

# Every point declared in the code (the list above): a test arming another name is told so.
POINTS = frozenset(
    {
        "processor.mid_batch",
        "processor.before_commit",
        "processor.after_commit",
        "invoker.before_start",
        "sdk.run.before_propose",
        "timer.before_fire",
        "ingress.before_reply",
        "lease.before_renew",
        "lease.after_renew",
        "lease.before_acquire",
        "lease.after_acquire",
        "lease.before_release",
        "takeover.mid_recovery",
        "pg.commit",
    }
)


class InjectedFault(RuntimeError):
    pass


class FaultPoints:
    """The armed fault points of one node (none by default)."""

    __slots__ = ("_armed",)

    def __init__(self, armed: Mapping[str, str] | None = None) -> None:
        self._armed: dict[str, str] = dict(armed or {})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FaultPoints:
        """``UNBROKEN_FAULTS=name:action[,name:action]`` (action defaults to ``crash``)."""
        armed = {}
        for item in filter(None, (part.strip() for part in environ.get("UNBROKEN_FAULTS", "").split(","))):
            name, _, action = item.partition(":")
            armed[name] = action or "crash"
        return cls(armed)

    def arm(self, name: str, action: str = "raise") -> None:
        self._armed[name] = action

    def disarm_all(self) -> None:
        self._armed.clear()

    def rate(self, name: str, action: str) -> float:
        """The probability a point armed as ``name:action@P`` is given (``name:action`` alone: 1; 0 when it
        is armed otherwise or not at all). Raises ``ValueError`` for a P that is not in [0, 1]."""
        armed = self._armed.get(name, "")
        if armed == action:
            return 1.0
        if not armed.startswith(f"{action}@"):
            return 0.0
        p = float(armed.partition("@")[2])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault point {name}: {armed!r}, the probability must be in [0, 1]")
        return p

    def point(self, name: str) -> None:
        """Declare a fault point. Costs one dict lookup when nothing is armed."""
        if not self._armed:
            return
        action = self._armed.get(name)
        if action is None:
            return
        if action == "crash":
            os._exit(137)
        if action == "raise":
            raise InjectedFault(name)
        if action.startswith("invariant"):
            if action == "invariant-once":
                del self._armed[name]
            raise InvariantViolation(f"injected at {name}")


NO_FAULTS = FaultPoints()  # never armed: for tools and tests that build parts without a node
