"""The pure state machine: records in, table changes and actions out (memory store, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import BACKENDS, Opener, opener
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId
from unbroken.core.invocation import Status
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
from unbroken.core.state_machine import apply
from unbroken.core.storage import TimerKind

NOW = 1_700_000_000_000


def _schemas(max_attempts: int = 3) -> Schemas:
    policy = RetryPolicy(100, 2.0, 1000, max_attempts, OnMaxAttempts.PAUSE)
    return Schemas(
        {
            "Svc": ServiceSchema(
                "Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)}, retry_policy=policy
            ),
            "Obj": ServiceSchema(
                "Obj",
                ServiceKind.VIRTUAL_OBJECT,
                {
                    "ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE),
                    "sh": HandlerSchema("sh", HandlerKind.SHARED),
                },
                retry_policy=policy,
            ),
            "Wf": ServiceSchema(
                "Wf",
                ServiceKind.WORKFLOW,
                {
                    "run": HandlerSchema("run", HandlerKind.WORKFLOW),
                    "click": HandlerSchema("click", HandlerKind.SHARED),
                },
                retry_policy=policy,
            ),
        }
    )


@pytest.fixture(autouse=True, params=BACKENDS, ids=lambda b: b.name)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    for stores in opener(request, tmp_path):
        monkeypatch.setattr(Machine, "stores", stores, raising=False)
        yield


class Machine:
    stores: Opener  # set per test by the ``backend`` fixture: every test runs on every backend
    """A store plus apply, with helpers to read what a test needs."""

    def __init__(self, max_attempts: int = 3) -> None:
        self.store = Machine.stores()
        self.schemas = _schemas(max_attempts)
        self.now = NOW
        self.n = 0

    def apply(self, record: r.Record) -> list[a.Action]:
        with self.store.transaction() as txn:
            return apply(txn, record, self.now, self.schemas)

    def inv(self, invocation_id: str) -> Any:
        with self.store.transaction() as txn:
            return txn.get_invocation(invocation_id)

    def journal(self, invocation_id: str) -> list[j.Entry]:
        with self.store.transaction() as txn:
            return txn.journal(invocation_id)

    def new_id(self, key: str | None = None) -> str:
        self.n += 1
        return str(InvocationId.new(7, self.n.to_bytes(10, "big"), self.now))

    def invoke(
        self, target: Target, reply: r.ReplyMode = r.ReplyMode.RESULT, request_id: int = 1, **kw: Any
    ) -> tuple[str, list[a.Action]]:
        inv_id = kw.pop("invocation_id", None) or self.new_id()
        return inv_id, self.apply(
            r.Invoke(inv_id, target, b"1", (), request_id=request_id, reply=reply, **kw)
        )


def _of(actions: list[a.Action], kind: type) -> list[Any]:
    return [x for x in actions if isinstance(x, kind)]


def test_invoke_starts_an_attempt_with_the_input_entry() -> None:
    m = Machine()
    inv_id, actions = m.invoke(Target("Svc", "h"))
    (start,) = _of(actions, a.StartAttempt)
    assert start.invocation.id == inv_id and start.invocation.attempts == 1
    assert start.journal == (j.InputCommand([], b"1"),)
    assert start.state is None
    assert _of(actions, a.AwaitCompletion) == [a.AwaitCompletion(1, inv_id)]
    assert m.inv(inv_id).status is Status.RUNNING


def test_send_is_answered_accepted_once_and_output_completes() -> None:
    m = Machine()
    inv_id, actions = m.invoke(Target("Svc", "h"), reply=r.ReplyMode.ACCEPTED, request_id=9)
    assert _of(actions, a.Reply) == [a.Reply(9, a.Accepted(inv_id, execute_at_ms=0))]
    out = m.apply(r.JournalCommand(inv_id, 1, j.OutputCommand(j.Result(value=b"42"))))
    (done,) = _of(out, a.Completed)
    assert done.result == j.Result(value=b"42")
    stored = m.inv(inv_id)
    assert stored.status is Status.COMPLETED and stored.expires_at_ms > NOW
    assert [type(e) for e in m.journal(inv_id)] == [j.InputCommand, j.OutputCommand]


def test_exclusive_handlers_queue_per_key_and_shared_ones_do_not() -> None:
    m = Machine()
    first, a1 = m.invoke(Target("Obj", "ex", "k"))
    second, a2 = m.invoke(Target("Obj", "ex", "k"))
    other_key, a3 = m.invoke(Target("Obj", "ex", "k2"))
    shared, a4 = m.invoke(Target("Obj", "sh", "k"))
    assert _of(a1, a.StartAttempt) and _of(a3, a.StartAttempt) and _of(a4, a.StartAttempt)
    assert not _of(a2, a.StartAttempt)
    assert m.inv(second).status is Status.PENDING
    done = m.apply(r.JournalCommand(first, 1, j.OutputCommand(j.Result(value=b"1"))))
    (start,) = _of(done, a.StartAttempt)
    assert start.invocation.id == second


def test_object_state_is_written_by_commands_and_given_to_the_next_attempt() -> None:
    m = Machine()
    first, _ = m.invoke(Target("Obj", "ex", "k"))
    m.apply(r.JournalCommand(first, 1, j.SetStateCommand("count", b"5")))
    m.apply(r.JournalCommand(first, 1, j.OutputCommand(j.Result(value=b"5"))))
    _, actions = m.invoke(Target("Obj", "sh", "k"))
    (start,) = _of(actions, a.StartAttempt)
    assert start.state == {"count": b"5"}


def test_a_zombie_attempt_cannot_write() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Obj", "ex", "k"))
    m.apply(r.AttemptFailed(inv_id, 1, 500, "boom"))
    m.now += 10_000
    (timer,) = [t for t in m.store.timers() if t.kind is TimerKind.RETRY]
    m.apply(r.TimerFired(timer.timer_id))
    assert m.inv(inv_id).attempts == 2
    assert m.apply(r.JournalCommand(inv_id, 1, j.SetStateCommand("x", b"1"))) == []
    with m.store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {}


def test_failures_back_off_exponentially_then_pause() -> None:
    m = Machine(max_attempts=3)
    inv_id, _ = m.invoke(Target("Svc", "h"))
    delays = []
    for attempt in (1, 2):
        actions = m.apply(r.AttemptFailed(inv_id, attempt, 500, f"boom {attempt}"))
        (arm,) = _of(actions, a.ArmTimer)
        delays.append(arm.fire_at_ms - m.now)
        assert m.inv(inv_id).status is Status.BACKING_OFF
        m.apply(r.TimerFired(arm.timer_id))
    assert delays == [100, 200]
    m.apply(r.AttemptFailed(inv_id, 3, 500, "boom 3"))
    stored = m.inv(inv_id)
    assert stored.status is Status.PAUSED and stored.last_failure == "boom 3" and stored.retry_count == 3
    resumed = m.apply(r.ResumeInvocation(inv_id, 5))
    assert _of(resumed, a.StartAttempt) and m.inv(inv_id).attempts == 4


def test_sleep_arms_a_timer_whose_firing_is_delivered() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    (arm,) = _of(m.apply(r.JournalCommand(inv_id, 1, j.SleepCommand(NOW + 500, 1))), a.ArmTimer)
    assert arm.fire_at_ms == NOW + 500
    (deliver,) = _of(m.apply(r.TimerFired(arm.timer_id)), a.Deliver)
    assert deliver.notification.completion_id == 1 and deliver.attempt == 1
    assert m.apply(r.TimerFired(arm.timer_id)) == []  # firing twice is harmless


def test_suspended_invocation_resumes_with_the_full_journal() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    (arm,) = _of(m.apply(r.JournalCommand(inv_id, 1, j.SleepCommand(NOW + 500, 1))), a.ArmTimer)
    m.apply(r.AttemptSuspended(inv_id, 1, (1,), (1,)))
    assert m.inv(inv_id).status is Status.SUSPENDED
    (start,) = _of(m.apply(r.TimerFired(arm.timer_id)), a.StartAttempt)
    assert start.invocation.attempts == 2
    assert [type(e) for e in start.journal] == [j.InputCommand, j.SleepCommand, j.Notification]


def test_suspension_racing_its_own_completion_restarts_at_once() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    (arm,) = _of(m.apply(r.JournalCommand(inv_id, 1, j.SleepCommand(NOW, 1))), a.ArmTimer)
    m.apply(r.TimerFired(arm.timer_id))  # delivered while the attempt decided to suspend
    actions = m.apply(r.AttemptSuspended(inv_id, 1, (1,), (1,)))
    assert _of(actions, a.StartAttempt) and m.inv(inv_id).status is Status.RUNNING


def test_workflow_runs_once_per_key() -> None:
    m = Machine()
    wf_id = str(InvocationId.for_workflow("Wf", "k"))
    m.invoke(Target("Wf", "run", "k"), invocation_id=wf_id)
    _, again = m.invoke(Target("Wf", "run", "k"), invocation_id=wf_id, request_id=2)
    assert _of(again, a.Reply)[0].outcome == a.WorkflowAlreadyInvoked(wf_id)
    _, send = m.invoke(
        Target("Wf", "run", "k"), invocation_id=wf_id, reply=r.ReplyMode.ACCEPTED, request_id=3
    )
    assert _of(send, a.Reply)[0].outcome == a.PreviouslyAccepted(wf_id)


def test_promise_waiters_are_completed_once_and_second_completion_conflicts() -> None:
    m = Machine()
    wf_id = str(InvocationId.for_workflow("Wf", "k"))
    m.invoke(Target("Wf", "run", "k"), invocation_id=wf_id)
    m.apply(r.JournalCommand(wf_id, 1, j.GetPromiseCommand("p", 1)))
    click, _ = m.invoke(Target("Wf", "click", "k"))
    actions = m.apply(r.JournalCommand(click, 1, j.CompletePromiseCommand("p", j.Result(value=b"7"), 1)))
    delivered = {
        (d.invocation_id, d.notification.completion_id): d.notification.result
        for d in _of(actions, a.Deliver)
    }
    assert delivered[(wf_id, 1)] == j.Result(value=b"7")
    assert delivered[(click, 1)] == j.Result()
    again = m.apply(r.JournalCommand(click, 1, j.CompletePromiseCommand("p", j.Result(value=b"8"), 2)))
    (conflict,) = _of(again, a.Deliver)
    assert conflict.notification.result.failure == j.Failure(409, "promise was already completed")


def test_call_creates_a_child_whose_result_completes_the_caller() -> None:
    m = Machine()
    parent, _ = m.invoke(Target("Svc", "h"))
    call = j.CallCommand("Obj", "ex", b"3", [], "k", None, 1, 2)
    actions = m.apply(r.JournalCommand(parent, 1, call))
    (child_start,) = _of(actions, a.StartAttempt)
    child = child_start.invocation.id
    (id_note,) = _of(actions, a.Deliver)
    assert id_note.notification.invocation_id == child and id_note.notification.completion_id == 1
    # replaying the same call derives the same child id
    from unbroken.core.ids import child_invocation_id

    assert child_invocation_id(parent, Target("Obj", "ex", "k"), HandlerKind.EXCLUSIVE, None, 1) == child
    done = m.apply(r.JournalCommand(child, 1, j.OutputCommand(j.Result(value=b"9"))))
    (result,) = [d for d in _of(done, a.Deliver) if d.invocation_id == parent]
    assert result.notification.completion_id == 2 and result.notification.result == j.Result(value=b"9")


def test_cancel_of_an_inboxed_invocation_completes_it_without_running() -> None:
    m = Machine()
    m.invoke(Target("Obj", "ex", "k"))
    queued, _ = m.invoke(Target("Obj", "ex", "k"))
    actions = m.apply(r.CancelInvocation(queued, 4))
    assert _of(actions, a.Reply) == [a.Reply(4, a.Done(queued))]
    stored = m.inv(queued)
    assert stored.result == j.Result(failure=j.Failure(409, "cancelled"))


def test_cancel_of_a_running_invocation_delivers_the_cancel_signal() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    actions = m.apply(r.CancelInvocation(inv_id, 4))
    (deliver,) = _of(actions, a.Deliver)
    assert deliver.notification.signal_idx == j.CANCEL_SIGNAL
    assert isinstance(_of(actions, a.Reply)[0].outcome, a.Accepted)


class _CountingTxn:
    """Forwards to a transaction, counting the calls by name."""

    def __init__(self, txn: Any, counts: dict[str, int]) -> None:
        self._txn, self._counts = txn, counts

    def __getattr__(self, name: str) -> Any:
        self._counts[name] = self._counts.get(name, 0) + 1
        return getattr(self._txn, name)


def test_a_repeated_signal_is_recognised_without_reading_the_journal() -> None:
    """[hardening] 7: each resolve re-read and decoded the target's whole journal (200 forged resolves
    against a 40,000-entry journal held the loop for seconds); now a lookup in the signal index."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    for n in range(1, 51):  # a long journal
        m.apply(r.ProposeRunCompletion(inv_id, 1, n, j.Result(value=b"x")))
    counts: dict[str, int] = {}
    delivered = []
    for _ in range(3):
        with m.store.transaction() as txn:
            actions = apply(
                _CountingTxn(txn, counts), r.ResolveSignal(inv_id, 17, j.Result(value=b"s")), m.now, m.schemas
            )
        delivered += _of(actions, a.Deliver)
    assert counts.get("journal", 0) == 0
    assert [d.notification.signal_idx for d in delivered] == [17]  # repeats are still ignored
    signals = [e for e in m.journal(inv_id) if isinstance(e, j.Notification) and e.signal_idx == 17]
    assert len(signals) == 1


def _row_calls(m: Machine, record: r.Record) -> tuple[int, int]:
    counts: dict[str, int] = {}
    with m.store.transaction() as txn:
        apply(_CountingTxn(txn, counts), record, m.now, m.schemas)
    return counts.get("get_invocation", 0), counts.get("put_invocation", 0)


def test_a_record_reads_and_writes_each_invocation_row_once() -> None:
    """The step's identity map: a Call touches two rows (caller, new child) and cost 4 reads + 4 writes
    when each helper reloaded and rewrote the caller; a run completion cost 2 + 2 of one row."""
    m = Machine()
    caller, _ = m.invoke(Target("Svc", "h"))
    assert _row_calls(m, r.ProposeRunCompletion(caller, 1, 1, j.Result(value=b"x"))) == (1, 1)
    assert _row_calls(
        m, r.JournalCommand(caller, 1, j.CallCommand("Svc", "h", b"", [], None, None, 2, 3))
    ) == (2, 2)
    stored = m.inv(caller)
    assert len(stored.children) == 1 and stored.journal_length == 4  # input, run result, call, call_id
    (child,) = stored.children
    assert _row_calls(m, r.JournalCommand(child, 1, j.OutputCommand(j.Result(value=b"4")))) == (2, 2)
    assert [type(e) for e in m.journal(caller)][-1] is j.Notification


def test_kill_aborts_releases_the_lock_and_kills_pending_calls() -> None:
    m = Machine()
    holder, _ = m.invoke(Target("Obj", "ex", "k"))
    queued, _ = m.invoke(Target("Obj", "ex", "k"))
    m.apply(r.JournalCommand(holder, 1, j.CallCommand("Svc", "h", b"", [], None, None, 1, 2)))
    child = m.inv(holder).children[0]
    actions = m.apply(r.KillInvocation(holder, 8))
    assert a.AbortAttempt(holder) in actions
    assert m.inv(holder).result == j.Result(failure=j.Failure(409, "killed"))
    assert m.inv(child).result == j.Result(failure=j.Failure(409, "killed"))
    assert m.inv(queued).status is Status.RUNNING
    assert _of(m.apply(r.KillInvocation(holder, 9)), a.Reply)[0].outcome == a.AlreadyCompleted(holder)


def test_delayed_invocation_waits_for_its_timer() -> None:
    m = Machine()
    inv_id, actions = m.invoke(Target("Svc", "h"), reply=r.ReplyMode.ACCEPTED, execute_at_ms=NOW + 1000)
    assert not _of(actions, a.StartAttempt)
    (arm,) = _of(actions, a.ArmTimer)
    assert m.inv(inv_id).status is Status.SCHEDULED
    assert _of(m.apply(r.TimerFired(arm.timer_id)), a.StartAttempt)


def test_retention_sweep_purges_expired_completions() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.JournalCommand(inv_id, 1, j.OutputCommand(j.Result(value=b"1"))))
    m.apply(r.CleanExpired())
    assert m.inv(inv_id) is not None
    m.now += 86_400_000 + 1
    m.apply(r.CleanExpired())
    assert m.inv(inv_id) is None and m.journal(inv_id) == []


def test_idempotent_duplicate_gets_the_stored_result() -> None:
    m = Machine()
    idem = str(InvocationId.for_idempotent("Svc", None, "h", "key-1"))
    m.invoke(Target("Svc", "h"), invocation_id=idem, idempotency_key="key-1")
    m.apply(r.JournalCommand(idem, 1, j.OutputCommand(j.Result(value=b"first"))))
    _, again = m.invoke(Target("Svc", "h"), invocation_id=idem, idempotency_key="key-1", request_id=5)
    (reply,) = _of(again, a.Reply)
    assert isinstance(reply.outcome, a.Output) and reply.outcome.result == j.Result(value=b"first")


@pytest.mark.parametrize("bad", ["missing", "done"])
def test_control_records_on_unknown_or_completed_invocations(bad: str) -> None:
    m = Machine()
    inv_id = m.new_id()
    if bad == "done":
        m.invoke(Target("Svc", "h"), invocation_id=inv_id)
        m.apply(r.JournalCommand(inv_id, 1, j.OutputCommand(j.Result(value=b"1"))))
    kinds = [
        type(_of(m.apply(rec), a.Reply)[0].outcome).__name__
        for rec in (r.CancelInvocation(inv_id, 1), r.KillInvocation(inv_id, 2))
    ]
    assert kinds == (["NotFound"] * 2 if bad == "missing" else ["AlreadyCompleted"] * 2)
