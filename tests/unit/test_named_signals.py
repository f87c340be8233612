"""Named signals in the state machine (``ctx.resolve_signal(id, name, v)`` / ``ctx.signal(name)``)."""

from __future__ import annotations

from tests.unit.test_state_machine import Machine, _of, backend  # noqa: F401 - autouse: runs on every backend
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.invocation import Status
from unbroken.core.schema import Target


def _signal(m: Machine, sender: str, target: str, name: str, value: bytes) -> list[a.Action]:
    cmd = j.SendSignalCommand(target, 0, j.Result(value=value), signal_name=name)
    return m.apply(r.JournalCommand(sender, 1, cmd))  # attempt 1 of the sender


def test_a_named_signal_is_delivered_to_a_running_invocation_once() -> None:
    m = Machine()
    waiter, _ = m.invoke(Target("Svc", "h"))
    sender, _ = m.invoke(Target("Svc", "h"))
    (deliver,) = _of(_signal(m, sender, waiter, "approved", b'"yes"'), a.Deliver)
    assert deliver.notification.signal_name == "approved" and deliver.notification.signal_idx == 0
    assert _of(_signal(m, sender, waiter, "approved", b'"again"'), a.Deliver) == []  # repeats ignored
    other = _of(_signal(m, sender, waiter, "other", b"1"), a.Deliver)
    assert len(other) == 1  # another name is another signal
    names = [e.signal_name for e in m.journal(waiter) if isinstance(e, j.Notification)]
    assert names == ["approved", "other"]


def test_a_named_signal_wakes_a_suspended_invocation() -> None:
    m = Machine()
    waiter, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.AttemptSuspended(waiter, 1, (), (j.CANCEL_SIGNAL,)))
    assert m.inv(waiter).status is Status.SUSPENDED
    sender, _ = m.invoke(Target("Svc", "h"))
    (start,) = _of(_signal(m, sender, waiter, "approved", b'"yes"'), a.StartAttempt)
    assert start.invocation.id == waiter and start.journal[-1].signal_name == "approved"


def test_entries_journaled_before_signal_names_existed_still_decode() -> None:
    old = j.Notification("signal", 0, 17, j.Result(value=b"1"))
    assert j.decode_entry(j.encode_entry(old)).signal_name == ""
