"""Typed engine errors: invariants always checked, protocol violations fail the attempt (571) in the same apply.

Before: ``assert``s (gone under ``python -O``); a shared handler's state write or a promise outside a
workflow raised ``AssertionError`` inside apply, which the processor took for a poison record and dropped:
the invocation stayed running forever, holding its key's lock.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.unit.test_state_machine import Machine, _of, backend  # noqa: F401 - autouse: runs on every backend
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.errors import PROTOCOL_VIOLATION, InvariantViolation, invariant
from unbroken.core.invocation import Invocation, Status, check_invocation
from unbroken.core.schema import (
    HandlerKind,
    HandlerSchema,
    OnMaxAttempts,
    RetryPolicy,
    Schemas,
    ServiceKind,
    ServiceSchema,
    Target,
)


def test_invariants_are_checked_under_python_O() -> None:
    code = (
        "from unbroken.core.invocation import *\n"
        "from unbroken.core.schema import *\n"
        "inv = Invocation('inv_1', Target('Svc', 'h'), ServiceKind.SERVICE, None, Status.SUSPENDED, 0, 0, 0)\n"
        "try:\n    check_invocation(inv)\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "InvariantViolation inv_1: suspended on nothing"


def test_invariant_raises_a_typed_error() -> None:
    invariant(True, "fine")
    with pytest.raises(InvariantViolation, match="broken"):
        invariant(False, "broken")
    inv = Invocation("inv_2", Target("Svc", "h"), ServiceKind.SERVICE, None, Status.COMPLETED, 0, 0, 0)
    with pytest.raises(InvariantViolation, match="inv_2: completed without a result"):
        check_invocation(inv)


def _failed_with_571(m: Machine, inv_id: str, actions: list[a.Action]) -> Any:
    assert _of(actions, a.AbortAttempt) == [a.AbortAttempt(inv_id)]
    stored = m.inv(inv_id)
    assert stored.last_failure_code == PROTOCOL_VIOLATION
    return stored


def test_a_shared_handler_writing_state_fails_its_attempt_with_571_and_is_retried_by_policy() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Obj", "sh", "k"))
    actions = m.apply(r.JournalCommand(inv_id, 1, j.SetStateCommand("x", b"1")))
    stored = _failed_with_571(m, inv_id, actions)
    assert stored.status is Status.BACKING_OFF and "only exclusive object handlers" in stored.last_failure
    assert stored.journal_length == 1  # nothing of the command was journaled
    with m.store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {}
    (arm,) = _of(actions, a.ArmTimer)
    (start,) = _of(m.apply(r.TimerFired(arm.timer_id)), a.StartAttempt)  # the retry policy retries it
    assert start.invocation.attempts == 2


def test_a_promise_outside_a_workflow_fails_the_attempt_and_the_lock_passes_on_when_killed_by_policy() -> (
    None
):
    policy = RetryPolicy(100, 2.0, 1000, 1, OnMaxAttempts.KILL)
    m = Machine()
    m.schemas = Schemas(
        {
            "Obj": ServiceSchema(
                "Obj",
                ServiceKind.VIRTUAL_OBJECT,
                {"ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE)},
                retry_policy=policy,
            ),
        }
    )
    first, _ = m.invoke(Target("Obj", "ex", "k"))
    second, queued = m.invoke(Target("Obj", "ex", "k"), request_id=2)
    assert not _of(queued, a.StartAttempt)
    actions = m.apply(r.JournalCommand(first, 1, j.GetPromiseCommand("p", 1)))
    stored = _failed_with_571(m, first, actions)
    assert stored.status is Status.COMPLETED and stored.result.failure.code == PROTOCOL_VIOLATION
    assert "durable promises belong to workflows" in stored.result.failure.message
    (start,) = _of(actions, a.StartAttempt)  # the key's lock is not stranded: the next one runs
    assert start.invocation.id == second


@pytest.mark.parametrize(
    "command",
    [
        j.ClearStateCommand("x"),
        j.ClearAllStateCommand(),
        j.PeekPromiseCommand("p", 1),
        j.CompletePromiseCommand("p", j.Result(value=b"1"), 1),
        j.CompleteAwakeableCommand("not-an-awakeable-id", j.Result(value=b"1")),
    ],
)
def test_each_protocol_violation_fails_the_attempt(command: Any) -> None:
    m = Machine(max_attempts=1)
    inv_id, _ = m.invoke(Target("Svc", "h"))
    actions = m.apply(r.JournalCommand(inv_id, 1, command))
    stored = _failed_with_571(m, inv_id, actions)
    assert stored.status is Status.PAUSED and stored.journal_length == 1


def test_a_suspension_on_nothing_is_a_protocol_violation() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    actions = m.apply(r.AttemptSuspended(inv_id, 1, (), ()))
    assert _failed_with_571(m, inv_id, actions).status is Status.BACKING_OFF


def test_fail_invocation_completes_the_current_attempt_only() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Obj", "ex", "k"))
    assert m.apply(r.FailInvocation(inv_id, 7, 507, "too big")) == []  # not its attempt: nothing
    actions = m.apply(r.FailInvocation(inv_id, 1, 507, "too big"))
    assert _of(actions, a.AbortAttempt) and _of(actions, a.Completed)
    stored = m.inv(inv_id)
    assert stored.status is Status.COMPLETED and stored.result.failure == j.Failure(507, "too big")
