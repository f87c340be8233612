"""Awakeables the engine lets others complete: only indexes the invocation's handler allocated.

The in-process SDK reports how many awakeables it allocated on the records it sends anyway (commands, run
results, suspensions); a resolve past that count must neither wake nor change the invocation.
"""

from __future__ import annotations

import asyncio

import msgspec

import unbroken as restate
from tests.unit.test_replay import INPUT, FakeSink, _start
from tests.unit.test_state_machine import Machine, _of, backend  # noqa: F401 - backend: the fixture
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId, awakeable_id
from unbroken.core.invocation import Invocation, Status
from unbroken.core.schema import Target
from unbroken.sdk.local import LocalTransport


def _suspended_on_awakeable(m: Machine, reported: int | None = 1) -> str:
    """A service invocation that allocated one awakeable (17), handed it out in a send, and suspended."""
    inv_id, _ = m.invoke(Target("Svc", "h"))
    send = j.OneWayCallCommand("Svc", "h", b"1", 0, [], None, None, 1)
    m.apply(r.JournalCommand(inv_id, 1, send, reported))
    m.apply(r.AttemptSuspended(inv_id, 1, (), (1, 17), reported))
    assert m.inv(inv_id).status is Status.SUSPENDED
    return inv_id


def _resolve(m: Machine, inv_id: str, idx: int) -> list[a.Action]:
    return m.apply(r.ResolveSignal(inv_id, idx, j.Result(value=b'"planted"'), request_id=5))


def test_a_never_allocated_index_is_refused_and_changes_nothing() -> None:
    m = Machine()
    inv_id = _suspended_on_awakeable(m)
    before, journal = m.inv(inv_id), m.journal(inv_id)
    for idx in (18, 19, 1_000):
        actions = _resolve(m, inv_id, idx)
        assert actions == [a.Reply(5, a.NotAllocated(inv_id))]
    assert m.inv(inv_id) == before and m.journal(inv_id) == journal
    woken = _resolve(m, inv_id, 17)
    assert _of(woken, a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    assert len(_of(woken, a.StartAttempt)) == 1


def test_the_count_never_shrinks_while_a_replay_catches_up() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.JournalCommand(inv_id, 1, j.RunCommand(1, "publish"), 3))
    m.apply(r.ProposeRunCompletion(inv_id, 1, 1, j.Result(value=b"1"), 3))
    m.apply(r.AttemptFailed(inv_id, 1, 500, "boom", 0))
    m.apply(r.ResumeInvocation(inv_id))  # retry now: attempt 2 replays
    m.apply(r.JournalCommand(inv_id, 2, j.SleepCommand(m.now + 10_000, 2), 1))  # mid-replay: 1 so far
    m.apply(r.AttemptSuspended(inv_id, 2, (2,), (1,), 1))
    assert m.inv(inv_id).awakeables == 3
    assert _resolve(m, inv_id, 20) == [a.Reply(5, a.NotAllocated(inv_id))]
    assert _of(_resolve(m, inv_id, 19), a.Reply) == [a.Reply(5, a.Accepted(inv_id))]


def test_while_an_attempt_runs_its_newest_awakeables_may_not_be_reported_yet() -> None:
    """An id handed out by a ``ctx.run`` action races the run's own command (and a crash can lose that
    command): while the attempt runs, a resolve past the count is accepted, as it always was."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    assert m.inv(inv_id).awakeables == 0
    actions = _resolve(m, inv_id, 17)
    assert _of(actions, a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    assert len(m.journal(inv_id)) == 2


def test_an_sdk_that_does_not_report_turns_the_check_off() -> None:
    """A remote SDK (Restate's protocol has no such count) cannot say: any awakeable index passes."""
    m = Machine()
    inv_id = _suspended_on_awakeable(m, reported=None)
    assert m.inv(inv_id).awakeables == -1
    assert _of(_resolve(m, inv_id, 40), a.Reply) == [a.Reply(5, a.Accepted(inv_id))]


def test_a_handler_completing_a_never_allocated_awakeable_is_ignored() -> None:
    m = Machine()
    target = _suspended_on_awakeable(m)
    other, _ = m.invoke(Target("Svc", "h"))
    bogus = awakeable_id(InvocationId.parse(target), 18)
    actions = m.apply(r.JournalCommand(other, 1, j.CompleteAwakeableCommand(bogus, j.Result(value=b"1")), 0))
    assert not _of(actions, a.StartAttempt)
    assert any("did not allocate" in x.message for x in _of(actions, a.Log))
    assert m.inv(target).status is Status.SUSPENDED
    real = awakeable_id(InvocationId.parse(target), 17)
    actions = m.apply(r.JournalCommand(other, 1, j.CompleteAwakeableCommand(real, j.Result(value=b"1")), 0))
    assert len(_of(actions, a.StartAttempt)) == 1


def test_a_row_stored_before_the_count_existed_decodes_as_unknown() -> None:
    m = Machine()
    inv_id = _suspended_on_awakeable(m)
    fields = msgspec.to_builtins(m.inv(inv_id))
    cut = Invocation.__struct_fields__.index("awakeables")
    old = msgspec.msgpack.encode(fields[:cut])  # the row as written before the field (and those after it)
    assert msgspec.msgpack.decode(old, type=Invocation).awakeables == -1


# ------------------------------------------------------------------------- what the in-process SDK reports
class CountingSink(FakeSink):
    """Keeps the awakeable count each record carried, by record kind."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[tuple[str, int | None]] = []

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        self.counts.append((j.command_name(command), awakeables))
        super().command(command, awakeables)

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        self.counts.append(("propose_run", awakeables))
        super().propose_run(completion_id, result, awakeables)

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        self.counts.append(("suspend", awakeables))
        super().suspend(waiting_completions, waiting_signals, awakeables)


def _handing_out() -> restate.VirtualObject:
    """Hands each new awakeable out through a different journaled operation, then waits on the last."""
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        ctx.set("aid", ctx.awakeable()[0])
        ctx.generic_send("Obj", "h", ctx.awakeable()[0].encode(), key="other")
        aid = ctx.awakeable()[0]
        await ctx.run("publish", lambda: aid)
        _, fut = ctx.awakeable()
        await fut

    return obj


async def test_every_record_an_attempt_sends_carries_its_awakeable_count() -> None:
    sink = CountingSink()
    transport = LocalTransport([_handing_out()], lambda: 1_000)
    sink.session = transport.start(_start([INPUT], timeout_ms=20), sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    assert sink.counts == [
        ("SetState", 1),
        ("OneWayCall", 2),
        ("Run", 3),
        ("propose_run", 3),
        ("suspend", 4),
    ]


async def test_a_replay_counts_the_awakeables_of_the_journal_it_replays() -> None:
    """Replayed commands are not sent again; the first live record counts the replayed allocations too."""
    journal: list[j.Entry] = [
        INPUT,
        j.SetStateCommand("aid", b""),
        j.OneWayCallCommand("Obj", "h", b"", 0, [], "other", None, 1),
    ]
    sink = CountingSink()
    transport = LocalTransport([_handing_out()], lambda: 1_000)
    sink.session = transport.start(_start(journal, timeout_ms=20), sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    assert sink.counts == [("Run", 3), ("propose_run", 3), ("suspend", 4)]


def test_a_pause_that_aborts_a_running_attempt_makes_the_count_unknown_until_the_next_attempt() -> None:
    """The aborted attempt may have handed an awakeable out from a ``ctx.run`` action whose command the
    pause fenced out: its resolve must not be refused (simulator seed 200197 at 3x fault rate: stuck)."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.PauseInvocation(inv_id))
    m.apply(r.JournalCommand(inv_id, 1, j.RunCommand(1, "publish"), 1))  # fenced: the attempt was aborted
    assert m.inv(inv_id).status is Status.PAUSED
    assert _of(_resolve(m, inv_id, 17), a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    m.apply(r.ResumeInvocation(inv_id))
    m.apply(r.JournalCommand(inv_id, 2, j.RunCommand(1, "publish"), 1))
    m.apply(r.AttemptSuspended(inv_id, 2, (1,), (1,), 1))
    assert m.inv(inv_id).awakeables == 1
    assert _resolve(m, inv_id, 18) == [a.Reply(5, a.NotAllocated(inv_id))]
