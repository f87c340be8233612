"""Awakeables the engine lets others complete: only indexes the invocation's handler allocated.

The in-process SDK reports how many awakeables it allocated on the records it sends anyway (commands, run
results, suspensions), and to the engine in memory at each allocation (the running attempt's live count,
stamped on the resolving record); a resolve past both counts must neither wake nor change the invocation.
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


def test_while_an_attempt_runs_its_live_count_decides_what_the_records_do_not_say_yet() -> None:
    """An id a ``ctx.run`` action hands out may reach a resolver before any record saying it was allocated:
    the resolve carries the running attempt's live count (stamped by the partition). Past both counts it is
    refused, running or not, and plants nothing."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    assert m.inv(inv_id).awakeables == 0 and m.inv(inv_id).status is Status.RUNNING
    journal = m.journal(inv_id)
    for live in (0, 1):
        refused = m.apply(r.ResolveSignal(inv_id, 17 + live, j.Result(value=b'"x"'), 5, live_awakeables=live))
        assert refused == [a.Reply(5, a.NotAllocated(inv_id))]
    assert m.journal(inv_id) == journal
    accepted = m.apply(r.ResolveSignal(inv_id, 17, j.Result(value=b'"x"'), 5, live_awakeables=1))
    assert _of(accepted, a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    assert [d.notification.signal_idx for d in _of(accepted, a.Deliver)] == [17]
    assert m.inv(inv_id).awakeables == 0  # the live count is not stored: the attempt's records say it


def test_a_running_attempt_that_does_not_report_is_not_checked() -> None:
    """A remote SDK never reports a live count (-1 on the resolve): as before, any awakeable index."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    unchecked = m.apply(r.ResolveSignal(inv_id, 40, j.Result(value=b'"x"'), 5, live_awakeables=-1))
    assert _of(unchecked, a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    below = m.apply(r.ResolveSignal(inv_id, 1, j.Result(value=b'"x"'), 5, live_awakeables=-1))
    assert below == [a.Reply(5, a.NotAllocated(inv_id))]  # never a signal below 17


def test_a_resolve_retried_after_its_answer_was_lost_is_accepted_again() -> None:
    """Accepted while the live count covered it, the attempt then lost (a crash): the resolver retries and
    is answered as the first time, although no stored count covers the index yet."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    first = m.apply(r.ResolveSignal(inv_id, 17, j.Result(value=b'"x"'), 5, live_awakeables=1))
    assert _of(first, a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    journal = m.journal(inv_id)
    again = m.apply(r.ResolveSignal(inv_id, 17, j.Result(value=b'"x"'), 6))
    assert again == [a.Reply(6, a.Accepted(inv_id))]
    assert m.journal(inv_id) == journal  # a signal completes once


def test_a_handler_command_carries_the_target_live_count() -> None:
    m = Machine()
    target, _ = m.invoke(Target("Svc", "h"))  # running, nothing reported
    other, _ = m.invoke(Target("Svc", "h"))
    aid = awakeable_id(InvocationId.parse(target), 17)
    complete = j.CompleteAwakeableCommand(aid, j.Result(value=b"1"))
    ignored = m.apply(r.JournalCommand(other, 1, complete, 0, target_live_awakeables=0))
    assert any("did not allocate" in x.message for x in _of(ignored, a.Log))
    assert not _of(ignored, a.Deliver)
    heard = m.apply(r.JournalCommand(other, 1, complete, 0, target_live_awakeables=1))
    assert [d.notification.signal_idx for d in _of(heard, a.Deliver)] == [17]
    send = j.SendSignalCommand(target, 18, j.Result(value=b"2"))
    assert not _of(m.apply(r.JournalCommand(other, 1, send, 0, target_live_awakeables=1)), a.Deliver)
    assert _of(m.apply(r.JournalCommand(other, 1, send, 0, target_live_awakeables=2)), a.Deliver)


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
    assert sink.allocations == [0, 1, 2, 3, 4]  # live: at the start, then at each allocation
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


def test_a_pause_that_aborts_a_running_attempt_keeps_what_it_had_allocated() -> None:
    """The aborted attempt may have handed an awakeable out from a ``ctx.run`` action whose command the
    pause fenced out: the pause carries its live count, so that resolve is not refused (simulator seed
    200197 at 3x fault rate: stuck), while an index it never allocated still is."""
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.PauseInvocation(inv_id, live_awakeables=1))
    m.apply(r.JournalCommand(inv_id, 1, j.RunCommand(1, "publish"), 1))  # fenced: the attempt was aborted
    assert m.inv(inv_id).status is Status.PAUSED and m.inv(inv_id).awakeables == 1
    assert _resolve(m, inv_id, 18) == [a.Reply(5, a.NotAllocated(inv_id))]
    assert _of(_resolve(m, inv_id, 17), a.Reply) == [a.Reply(5, a.Accepted(inv_id))]
    m.apply(r.ResumeInvocation(inv_id))
    m.apply(r.JournalCommand(inv_id, 2, j.RunCommand(1, "publish"), 1))
    m.apply(r.AttemptSuspended(inv_id, 2, (1,), (1,), 1))
    assert m.inv(inv_id).awakeables == 1
    assert _resolve(m, inv_id, 18) == [a.Reply(5, a.NotAllocated(inv_id))]


def test_a_pause_of_an_attempt_that_does_not_report_turns_the_check_off() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    m.apply(r.PauseInvocation(inv_id, live_awakeables=-1))
    assert m.inv(inv_id).awakeables == -1
    assert _of(_resolve(m, inv_id, 40), a.Reply) == [a.Reply(5, a.Accepted(inv_id))]


async def test_an_allocation_is_reported_before_its_id_reaches_the_handler() -> None:
    seen: list[tuple[str, list[int]]] = []
    sink = CountingSink()
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        for _ in range(2):
            aid, _fut = ctx.awakeable()
            seen.append((aid, list(sink.allocations)))

    sink.session = LocalTransport([obj], lambda: 1_000).start(_start([INPUT], timeout_ms=20), sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    assert [allocations for _, allocations in seen] == [[0, 1], [0, 1, 2]]
