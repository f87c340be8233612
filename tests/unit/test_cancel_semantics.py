"""Cancel and failure semantics of the pure state machine: a cancel reaches the whole call tree at once,
a failure racing a cancel retries at once, a failure no retry fixes pauses at once."""

from __future__ import annotations

from tests.unit.test_state_machine import Machine, _of, backend  # noqa: F401 - autouse: runs on every backend
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.invocation import Status
from unbroken.core.schema import Target


def _call(m: Machine, caller: str, target: Target) -> str:
    """``caller`` calls ``target`` (completion ids 1 and 2); returns the callee's id."""
    m.apply(
        r.JournalCommand(
            caller, 1, j.CallCommand(target.service, target.handler, b"1", [], target.key, None, 1, 2)
        )
    )
    (callee,) = m.inv(caller).children
    return str(callee)


def test_cancelling_the_root_of_a_cycle_cancels_the_call_queued_behind_its_lock() -> None:
    m = Machine()
    root, _ = m.invoke(Target("Obj", "ex", "a"))
    middle = _call(m, root, Target("Obj", "ex", "b"))
    inner = _call(m, middle, Target("Obj", "ex", "a"))
    assert m.inv(inner).status is Status.PENDING  # behind the root's lock: A→B→A
    actions = m.apply(r.CancelInvocation(root, 7))
    assert m.inv(inner).status is Status.COMPLETED
    assert m.inv(inner).result == j.Result(failure=j.Failure(409, "cancelled"))
    delivered = {(d.invocation_id, d.notification.signal_idx) for d in _of(actions, a.Deliver)}
    assert {(root, j.CANCEL_SIGNAL), (middle, j.CANCEL_SIGNAL)} <= delivered
    # The middle's journal has the cancel before its call's result (the handler raises it at that await).
    kinds = [(e.signal_idx, e.completion_id) for e in m.journal(middle) if isinstance(e, j.Notification)]
    assert kinds.index((j.CANCEL_SIGNAL, 0)) < kinds.index((0, 2))


def test_a_failure_racing_the_cancel_retries_at_once_then_backs_off() -> None:
    m = Machine(max_attempts=10)
    inv, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.CancelInvocation(inv, 7))
    (arm,) = _of(m.apply(r.AttemptFailed(inv, 1, 500, "failed before it saw the cancel")), a.ArmTimer)
    assert arm.fire_at_ms == m.now
    m.apply(r.TimerFired(arm.timer_id))
    (arm,) = _of(m.apply(r.AttemptFailed(inv, 2, 500, "the compensation fails")), a.ArmTimer)
    assert arm.fire_at_ms == m.now + 200  # the policy's second delay: no hot loop


def test_a_failure_no_retry_fixes_pauses_at_once_and_logs_a_warning() -> None:
    m = Machine(max_attempts=10)
    inv, _ = m.invoke(Target("Svc", "h"))
    actions = m.apply(r.AttemptFailed(inv, 1, 500, "ctx.run 'x' returned a value of type T ...", pause=True))
    assert m.inv(inv).status is Status.PAUSED and not _of(actions, a.ArmTimer)
    (log,) = _of(actions, a.Log)
    assert log.warning and "ctx.run 'x'" in log.message and "invocations resume" in log.message
