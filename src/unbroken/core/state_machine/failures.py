"""Attempts the engine fails itself: a command that broke the protocol, a record the store kept refusing."""

from __future__ import annotations

from unbroken.core import records as r
from unbroken.core.actions import AbortAttempt, Log
from unbroken.core.errors import ProtocolViolation
from unbroken.core.journal import Failure, Result
from unbroken.core.state_machine import lifecycle
from unbroken.core.state_machine.step import Step

# The records a running attempt sends: the only ones that can break the protocol.
AttemptRecord = r.JournalCommand | r.ProposeRunCompletion | r.AttemptSuspended | r.AttemptFailed


def on_protocol_violation(step: Step, rec: AttemptRecord, exc: ProtocolViolation) -> None:
    """Fail the attempt with ``exc.code`` as if it had failed itself; the retry policy takes it from there.

    ``step`` is fresh: the violation was raised before the record wrote anything.
    """
    if lifecycle.fenced(step, rec.invocation_id, rec.attempt) is None:
        return
    step.emit(AbortAttempt(rec.invocation_id))  # the handler may still be running: stop it
    step.emit(Log(rec.invocation_id, f"protocol violation [{exc.code}]: {exc.message}"))
    lifecycle.on_failed(step, r.AttemptFailed(rec.invocation_id, rec.attempt, exc.code, exc.message))


def on_fail_invocation(step: Step, rec: r.FailInvocation) -> None:
    """Complete the attempt's invocation with the failure (it releases the lock and answers its callers)."""
    inv = lifecycle.fenced(step, rec.invocation_id, rec.attempt)
    if inv is None:
        return  # killed, cancelled or retried meanwhile: nothing of that attempt is left to fail
    step.emit(AbortAttempt(inv.id))
    lifecycle.complete(step, inv, Result(failure=Failure(rec.code, rec.message)))
