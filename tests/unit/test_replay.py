"""The SDK's replay matcher: journaled results are reused, changed code is reported precisely."""

from __future__ import annotations

import asyncio
from typing import Any

import unbroken as restate
from unbroken.core import journal as j
from unbroken.core.schema import HandlerKind, ServiceKind, Target
from unbroken.protocol.transport import AttemptStart
from unbroken.sdk.local import LocalTransport


class FakeSink:
    """Records what an attempt says, and answers run proposals like the engine would (after 'commit')."""

    def __init__(self) -> None:
        self.commands: list[j.Command] = []
        self.proposals: list[tuple[int, j.Result]] = []
        self.failures: list[tuple[int, str]] = []
        self.suspended: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.done = asyncio.Event()
        self.session: Any = None
        self.paused = False
        self.allocations: list[int] = []  # the live awakeable counts the attempt reported

    def allocated(self, awakeables: int) -> None:
        self.allocations.append(awakeables)

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        self.commands.append(command)

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        self.proposals.append((completion_id, result))
        asyncio.get_running_loop().call_soon(
            self.session.notify, j.Notification("run", completion_id, 0, result)
        )

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        self.suspended = (waiting_completions, waiting_signals)

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        self.failures.append((code, message))
        self.paused = pause

    def ended(self) -> None:
        self.done.set()


def _start(
    journal: list[j.Entry], state: dict[str, bytes] | None = None, timeout_ms: int = 60_000
) -> AttemptStart:
    return AttemptStart(
        "inv_1000000000001000000000000000000016",
        1,
        Target("Obj", "h", "k"),
        ServiceKind.VIRTUAL_OBJECT,
        HandlerKind.EXCLUSIVE,
        tuple(journal),
        state if state is not None else {},
        42,
        0,
        0,
        timeout_ms,
        None,
    )


async def _run(obj: restate.VirtualObject, journal: list[j.Entry], **kw: Any) -> FakeSink:
    sink = FakeSink()
    transport = LocalTransport([obj], lambda: 1_000)
    sink.session = transport.start(_start(journal, **kw), sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    return sink


def _object(step_name: str, ran: list[str]) -> restate.VirtualObject:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext, x: int) -> int:
        def side_effect() -> int:
            ran.append(step_name)
            return x + 1

        y = await ctx.run(step_name, side_effect)
        ctx.set("y", y)
        return y

    return obj


INPUT = j.InputCommand([], b"1")


async def test_first_attempt_journals_run_set_and_output() -> None:
    ran: list[str] = []
    sink = await _run(_object("step", ran), [INPUT])
    assert ran == ["step"]
    assert sink.commands == [
        j.RunCommand(1, "step"),
        j.SetStateCommand("y", b"2"),
        j.OutputCommand(j.Result(value=b"2")),
    ]
    assert sink.proposals == [(1, j.Result(value=b"2"))]


async def test_replay_reuses_the_journaled_run_result_and_does_not_run_it_again() -> None:
    ran: list[str] = []
    journal: list[j.Entry] = [
        INPUT,
        j.RunCommand(1, "step"),
        j.Notification("run", 1, 0, j.Result(value=b"7")),
    ]
    sink = await _run(_object("step", ran), journal)
    assert ran == []
    assert sink.commands == [j.SetStateCommand("y", b"7"), j.OutputCommand(j.Result(value=b"7"))]


async def test_changed_code_is_a_non_determinism_error_naming_the_entry() -> None:
    ran: list[str] = []
    journal: list[j.Entry] = [
        INPUT,
        j.RunCommand(1, "step"),
        j.Notification("run", 1, 0, j.Result(value=b"7")),
    ]
    sink = await _run(_object("renamed", ran), journal)
    assert ran == [] and sink.commands == []
    (code, message) = sink.failures[0]
    assert code == 570
    assert "journal entry 1 is Run('step')" in message and "Run('renamed')" in message


async def test_replayed_state_reads_use_the_journaled_value() -> None:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> int:
        return await ctx.get("n") or 0

    journal: list[j.Entry] = [INPUT, j.GetEagerStateCommand("n", b"3")]
    sink = await _run(obj, journal, state={"n": b"99"})
    assert sink.commands == [j.OutputCommand(j.Result(value=b"3"))]


async def test_random_is_seeded_per_invocation() -> None:
    seen: list[float] = []
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        seen.append(ctx.random().random())
        seen.append(ctx.uuid().int)

    await _run(obj, [INPUT])
    await _run(obj, [INPUT])
    assert seen[:2] == seen[2:]


async def test_waiting_longer_than_the_inactivity_timeout_suspends_with_the_wait_set() -> None:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        _, fut = ctx.awakeable()
        await fut

    sink = await _run(obj, [INPUT], timeout_ms=20)
    assert sink.suspended == ((), (1, 17))
    assert sink.commands == []


async def test_terminal_error_becomes_a_failed_output() -> None:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        raise restate.TerminalError("nope", 418)

    sink = await _run(obj, [INPUT])
    assert sink.commands == [j.OutputCommand(j.Result(failure=j.Failure(418, "nope")))]


async def test_cancel_signal_raises_at_the_pending_await_and_cancels_children() -> None:
    obj = restate.VirtualObject("Obj")
    caught: list[int] = []

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        call = ctx.generic_call("Other", "x", b"1")
        try:
            await call
        except restate.TerminalError as e:
            caught.append(e.status_code)
            raise

    journal: list[j.Entry] = [
        INPUT,
        j.CallCommand("Other", "x", b"1", [], None, None, 1, 2),
        j.Notification("call_id", 1, 0, j.Result(value=b"inv_1child"), "inv_1child"),
        j.Notification("signal", 0, j.CANCEL_SIGNAL, j.Result()),
    ]
    sink = await _run(obj, journal)
    assert caught == [409]
    assert sink.commands == [
        j.SendSignalCommand("inv_1child", j.CANCEL_SIGNAL, j.Result()),
        j.OutputCommand(j.Result(failure=j.Failure(409, "cancelled"))),
    ]


def _saga(ran: list[str]) -> restate.VirtualObject:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext, x: int) -> int:
        try:
            return await ctx.run("a", lambda: ran.append("a"))  # type: ignore[func-returns-value]
        except restate.TerminalError:
            await ctx.run("undo", lambda: ran.append("undo"))
            raise

    return obj


async def test_a_replayed_run_without_result_does_not_start_while_a_cancel_waits_for_the_handler() -> None:
    """The journal has step a (no result: it failed and was retried) then the cancel: the replay surfaces
    the cancel at a's await without running a again; only the compensation runs."""
    ran: list[str] = []
    cancel = j.Notification("signal", 0, j.CANCEL_SIGNAL, j.Result())
    sink = await _run(_saga(ran), [INPUT, j.RunCommand(1, "a"), cancel])
    assert ran == ["undo"]
    assert sink.commands == [
        j.RunCommand(2, "undo"),
        j.OutputCommand(j.Result(failure=j.Failure(409, "cancelled"))),
    ]


async def test_a_run_value_that_cannot_be_serialized_pauses_the_invocation() -> None:
    ran: list[str] = []
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        def make() -> object:
            ran.append("make")
            return object()

        await ctx.run("make", make)

    sink = await _run(obj, [INPUT])
    assert ran == ["make"] and sink.paused and sink.proposals == []
    (code, message) = sink.failures[0]
    assert "ctx.run 'make' returned a value of type object" in message and "serde=" in message
