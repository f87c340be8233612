"""Property tests of the replay matcher (``sdk/attempt.py``) over generated handler programs.

A program is a list of ctx operations (state get/set/clear, ``ctx.run``, sleep, call, awakeable; runs,
sleeps and calls either awaited at once or at the end). It runs through the real in-process transport
(``LocalTransport``) against a sink that plays the engine: it journals every command and answers it with
the notification the engine would send. Then the journal it produced is replayed:

* replaying the whole journal issues no new command and runs no ``ctx.run`` action again;
* replaying any prefix continues with exactly the commands that were not in it, re-runs exactly the
  actions whose result was not in it, and ends with the same output;
* a program changed at one operation fails with a ``NonDeterminismError`` (570) naming the journal
  index of the first command whose identity differs (computed independently, from the programs).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unbroken as restate
from unbroken.core import journal as j
from unbroken.core.ids import InvocationId, parse_awakeable_id
from unbroken.core.schema import HandlerKind, ServiceKind, Target
from unbroken.protocol.transport import AttemptStart
from unbroken.sdk.local import LocalTransport

INVOCATION_ID = str(InvocationId(7, bytes(range(16))))
NOW_MS = 1_000_000
TIMEOUT_S = 5

Op = tuple[Any, ...]

keys = st.sampled_from(["a", "b", "c"])
small = st.integers(0, 9)
ops = st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("set"), keys, small),
    st.tuples(st.just("clear"), keys),
    st.tuples(st.just("run"), st.sampled_from(["r1", "r2", "r3"]), small, st.booleans()),
    st.tuples(st.just("sleep"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("call"), st.sampled_from(["x", "y"]), small, st.booleans()),
    st.tuples(st.just("awakeable"), small),
)
programs = st.lists(ops, max_size=12)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------- the model
def identity(op: Op) -> tuple[Any, ...] | None:
    """What replay matches for the command an op issues (None: the op issues no command)."""
    match op[0]:
        case "get" | "set" | "clear":
            return (op[0], op[1])
        case "run":
            return ("run", op[1])
        case "sleep":
            return ("sleep",)
        case "call":
            return ("call", op[1])
    return None


def identities(program: list[Op]) -> list[tuple[Any, ...]]:
    return [i for i in map(identity, program) if i is not None] + [("output",)]


def command_identity(cmd: j.Entry) -> tuple[Any, ...]:
    match cmd:
        case j.GetEagerStateCommand(key=k):
            return ("get", k)
        case j.SetStateCommand(key=k):
            return ("set", k)
        case j.ClearStateCommand(key=k):
            return ("clear", k)
        case j.RunCommand(name=n):
            return ("run", n)
        case j.SleepCommand():
            return ("sleep",)
        case j.CallCommand(handler=h):
            return ("call", h)
        case j.OutputCommand():
            return ("output",)
    raise AssertionError(f"unexpected command {cmd!r}")


def expected_output(program: list[Op]) -> list[Any]:
    """What the handler returns, computed without the SDK."""
    state: dict[str, int] = {}
    now: list[Any] = []
    later: list[Any] = []
    for op in program:
        match op:
            case ("get", k):
                now.append(state.get(k))
            case ("set", k, v):
                state[k] = v
            case ("clear", k):
                state.pop(k, None)
            case ("run", _, v, deferred):
                (later if deferred else now).append(v)
            case ("sleep", _, deferred):
                (later if deferred else now).append(None)
            case ("call", h, v, deferred):
                (later if deferred else now).append(f"{h}:{v}")
            case ("awakeable", v):
                now.append(f"awoken {v}")
    return now + later


def state_after(journal: list[j.Entry]) -> dict[str, bytes]:
    """The object's stored state once the journaled commands were applied (what a new attempt gets)."""
    state: dict[str, bytes] = {}
    for entry in journal:
        if isinstance(entry, j.SetStateCommand):
            state[entry.key] = entry.value
        elif isinstance(entry, j.ClearStateCommand):
            state.pop(entry.key, None)
    return state


# ---------------------------------------------------------------------------------- engine stand-in
@dataclass
class Sink:
    """Plays the engine for one attempt: journals commands, answers them with notifications."""

    journal: list[j.Entry]
    new_commands: list[j.Command] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    suspended: bool = False
    session: Any = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _deliver(self, n: j.Notification) -> None:
        if n.signal_idx and any(
            isinstance(e, j.Notification) and e.signal_idx == n.signal_idx for e in self.journal
        ):
            return  # a signal completes once (as in the state machine)
        self.journal.append(n)
        self.session.notify(n)

    def _later(self, n: j.Notification) -> None:
        asyncio.get_running_loop().call_soon(self._deliver, n)

    def answer(self, cmd: j.Entry, answered: frozenset[int] = frozenset()) -> None:
        """Send the notifications ``cmd`` gets from the engine (but those already ``answered``)."""
        notifications: list[j.Notification] = []
        match cmd:
            case j.SleepCommand():
                notifications.append(j.Notification("sleep", cmd.completion_id, 0, j.VOID))
            case j.CallCommand():
                child = str(InvocationId(cmd.invocation_id_completion_id, bytes(16)))
                value = json.dumps(f"{cmd.handler}:{cmd.parameter.decode()}").encode()
                notifications.append(
                    j.Notification(
                        "call_id", cmd.invocation_id_completion_id, 0, j.Result(child.encode()), child
                    )
                )
                notifications.append(j.Notification("call", cmd.completion_id, 0, j.Result(value)))
        for n in notifications:
            if n.completion_id not in answered:
                self._later(n)

    def allocated(self, awakeables: int) -> None:
        pass

    def command(self, cmd: j.Command, awakeables: int | None = None) -> None:
        self.journal.append(cmd)
        self.new_commands.append(cmd)
        self.answer(cmd)

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        self._later(j.Notification("run", completion_id, 0, result))

    def resolve(self, awakeable: str, value: int) -> None:
        _, idx = parse_awakeable_id(awakeable)
        self._later(j.Notification("signal", 0, idx, j.Result(json.dumps(f"awoken {value}").encode())))

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        self.suspended = True

    def fail(self, code: int, message: str, next_retry_delay_ms: int | None = None) -> None:
        self.failures.append((code, message))

    def ended(self) -> None:
        self.done.set()


def program_object(program: list[Op], ran: list[int], sink_ref: list[Sink]) -> restate.VirtualObject:
    obj = restate.VirtualObject("Prog")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> list[Any]:
        now: list[Any] = []
        later: list[Any] = []

        async def take(fut: Any, deferred: bool, decode: Any = lambda v: v) -> None:
            if deferred:
                later.append((fut, decode))
            else:
                now.append(decode(await fut))

        for i, op in enumerate(program):
            match op:
                case ("get", k):
                    now.append(await ctx.get(k))
                case ("set", k, v):
                    ctx.set(k, v)
                case ("clear", k):
                    ctx.clear(k)
                case ("run", name, v, deferred):

                    def action(i: int = i, v: int = v) -> int:
                        ran.append(i)
                        return v

                    await take(ctx.run(name, action), deferred)
                case ("sleep", ms, deferred):
                    await take(ctx.sleep(timedelta(milliseconds=ms)), deferred)
                case ("call", handler, v, deferred):
                    await take(ctx.generic_call("Callee", handler, str(v).encode()), deferred, json.loads)
                case ("awakeable", v):
                    awakeable, fut = ctx.awakeable()
                    sink_ref[0].resolve(awakeable, v)
                    now.append(await fut)
        for fut, decode in later:
            now.append(decode(await fut))
        return now

    return obj


@dataclass
class Attempt:
    sink: Sink
    ran: list[int]


def attempt(program: list[Op], journal: list[j.Entry]) -> Attempt:
    """Run one attempt of ``program`` over ``journal`` (a journal prefix, maybe just the input)."""

    async def go() -> Attempt:
        sink = Sink(list(journal))
        ran: list[int] = []
        transport = LocalTransport([program_object(program, ran, [sink])], lambda: NOW_MS)
        start = AttemptStart(
            INVOCATION_ID,
            1,
            Target("Prog", "h", "k"),
            ServiceKind.VIRTUAL_OBJECT,
            HandlerKind.EXCLUSIVE,
            tuple(journal),
            state_after(journal),
            42,
            0,
            0,
            60_000,
            None,
        )
        sink.session = transport.start(start, sink)
        # What the engine still owes this attempt: answers to journaled commands that have none yet.
        answered = frozenset(
            n.completion_id for n in journal if isinstance(n, j.Notification) and n.completion_id
        )
        for cmd in journal:
            sink.answer(cmd, answered)
        await asyncio.wait_for(sink.done.wait(), TIMEOUT_S)
        return Attempt(sink, ran)

    return asyncio.run(go())


INPUT = j.InputCommand([], b"")


def first_run(program: list[Op]) -> Attempt:
    done = attempt(program, [INPUT])
    assert done.sink.failures == [] and not done.sink.suspended
    return done


def output_of(journal: list[j.Entry]) -> Any:
    (out,) = [e for e in journal if isinstance(e, j.OutputCommand)]
    assert out.result.failure is None, out.result.failure
    return json.loads(out.result.value or b"null")


def commands_of(journal: list[j.Entry]) -> list[tuple[int, j.Entry]]:
    return [(i, e) for i, e in enumerate(journal) if i > 0 and not isinstance(e, j.Notification)]


# --------------------------------------------------------------------------------------------- tests
@SETTINGS
@given(programs)
def test_first_run_journals_one_command_per_operation(program: list[Op]) -> None:
    done = first_run(program)
    journal = done.sink.journal
    assert [command_identity(c) for _, c in commands_of(journal)] == identities(program)
    assert output_of(journal) == expected_output(program)
    assert sorted(done.ran) == [i for i, op in enumerate(program) if op[0] == "run"]


@SETTINGS
@given(programs)
def test_replaying_the_whole_journal_issues_nothing_and_runs_nothing(program: list[Op]) -> None:
    journal = first_run(program).sink.journal
    replay = attempt(program, journal)
    assert replay.sink.failures == []
    assert replay.sink.new_commands == []
    assert replay.ran == []
    assert replay.sink.journal == journal


@SETTINGS
@given(programs, st.data())
def test_replaying_a_prefix_continues_exactly_where_it_stopped(
    program: list[Op], data: st.DataObject
) -> None:
    journal = first_run(program).sink.journal
    cut = data.draw(st.integers(1, len(journal)), label="cut")
    prefix = journal[:cut]
    replay = attempt(program, prefix)
    assert replay.sink.failures == []
    assert replay.sink.new_commands == [c for i, c in commands_of(journal) if i >= cut]
    completed_runs = {n.completion_id for n in prefix if isinstance(n, j.Notification) and n.kind == "run"}
    run_cids = [c.completion_id for _, c in commands_of(journal) if isinstance(c, j.RunCommand)]
    run_ops = [i for i, op in enumerate(program) if op[0] == "run"]
    assert sorted(replay.ran) == [
        op for op, cid in zip(run_ops, run_cids, strict=True) if cid not in completed_runs
    ]
    assert output_of(replay.sink.journal) == expected_output(program)


_OTHER = {
    "get": ["a", "b", "c"],
    "set": ["a", "b", "c"],
    "clear": ["a", "b", "c"],
    "run": ["r1", "r2", "r3"],
    "call": ["x", "y"],
}


def changes_of(op: Op) -> st.SearchStrategy[Op]:
    """Another op: the same call with another key/name/target (the subtle change), or any other op."""
    renamed = [(op[0], other, *op[2:]) for other in _OTHER.get(op[0], []) if other != op[1]]
    anything = ops.filter(lambda new: identity(new) != identity(op))
    return st.one_of(st.sampled_from(renamed), anything) if renamed else anything


@settings(SETTINGS, max_examples=120)
@given(programs.filter(lambda p: any(identity(op) for op in p)), st.data())
def test_a_changed_program_fails_naming_the_first_differing_entry(
    program: list[Op], data: st.DataObject
) -> None:
    journal = first_run(program).sink.journal
    positions = [i for i, op in enumerate(program) if identity(op) is not None]
    k = data.draw(st.sampled_from(positions), label="changed op")
    replacement = data.draw(changes_of(program[k]), label="replacement")
    changed = [*program[:k], replacement, *program[k + 1 :]]

    recorded, now = identities(program), identities(changed)
    p = next(i for i, (a, b) in enumerate(zip(recorded, now, strict=False)) if a != b)
    index = commands_of(journal)[p][0]

    replay = attempt(changed, journal)
    assert replay.sink.new_commands == []
    assert replay.ran == []
    ((code, message),) = replay.sink.failures
    assert code == 570
    assert f"journal entry {index} is " in message, (index, message)
