"""Lazy state (``enable_lazy_state``): attempts start without the key's state; reads are commands the engine
answers with the value at the time it applies them, journaled so that a replay reads the same."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

import unbroken as restate
from tests.unit.test_replay import INPUT, FakeSink, _start
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.state_machine import apply
from unbroken.sdk.local import LocalTransport
from unbroken.storage.memory import MemoryStore

NOW = 1_700_000_000_000
SCHEMAS = Schemas(
    {
        "Lazy": ServiceSchema(
            "Lazy",
            ServiceKind.VIRTUAL_OBJECT,
            {
                "ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE),
                "eager": HandlerSchema("eager", HandlerKind.SHARED, enable_lazy_state=False),
            },
            enable_lazy_state=True,
        ),
        "Svc": ServiceSchema(
            "Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)}, enable_lazy_state=True
        ),
    }
)


class Machine:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.n = 0

    def apply(self, record: r.Record) -> list[a.Action]:
        with self.store.transaction() as txn:
            return apply(txn, record, NOW, SCHEMAS)

    def invoke(self, target: Target) -> tuple[str, list[a.Action]]:
        self.n += 1
        inv_id = str(InvocationId.new(7, self.n.to_bytes(10, "big"), NOW))
        return inv_id, self.apply(r.Invoke(inv_id, target, b"1", ()))

    def journal(self, inv_id: str) -> list[j.Entry]:
        with self.store.transaction() as txn:
            return txn.journal(inv_id)


def _of(actions: list[a.Action], kind: type) -> list[Any]:
    return [x for x in actions if isinstance(x, kind)]


def test_a_lazy_handler_starts_without_the_state_and_a_handler_can_opt_out() -> None:
    m = Machine()
    m.apply(r.SetStateFromAdmin("Lazy", "k", {"big": b"x" * 1000}))
    _, actions = m.invoke(Target("Lazy", "ex", "k"))
    (start,) = _of(actions, a.StartAttempt)
    assert start.state == {} and start.lazy_state
    _, actions = m.invoke(Target("Lazy", "eager", "k"))
    (start,) = _of(actions, a.StartAttempt)
    assert start.state == {"big": b"x" * 1000} and not start.lazy_state


def test_a_lazy_get_is_answered_with_the_value_when_the_command_is_applied() -> None:
    m = Machine()
    m.apply(r.SetStateFromAdmin("Lazy", "k", {"a": b"1", "b": b"2"}))
    inv_id, _ = m.invoke(Target("Lazy", "ex", "k"))
    m.apply(r.JournalCommand(inv_id, 1, j.SetStateCommand("a", b"10")))
    (got,) = _of(m.apply(r.JournalCommand(inv_id, 1, j.GetLazyStateCommand("a", 1))), a.Deliver)
    assert got.notification == j.Notification("get_lazy_state", 1, 0, j.Result(value=b"10"))
    (absent,) = _of(m.apply(r.JournalCommand(inv_id, 1, j.GetLazyStateCommand("zz", 2))), a.Deliver)
    assert absent.notification.result == j.Result()
    (keys,) = _of(m.apply(r.JournalCommand(inv_id, 1, j.GetLazyStateKeysCommand(3))), a.Deliver)
    assert j.decode_state_keys(keys.notification.result.value) == ["a", "b"]
    m.apply(r.SetStateFromAdmin("Lazy", "k", {"a": b"99"}))  # later changes do not touch what was answered
    journal = m.journal(inv_id)
    assert j.Notification("get_lazy_state", 1, 0, j.Result(value=b"10")) in journal
    assert j.entry_type_name(journal[3]) == "Notification: GetLazyState"


def test_a_lazy_read_from_a_plain_service_breaks_the_protocol() -> None:
    m = Machine()
    inv_id, _ = m.invoke(Target("Svc", "h"))
    actions = m.apply(r.JournalCommand(inv_id, 1, j.GetLazyStateCommand("a", 1)))
    assert any("has no state" in x.message for x in _of(actions, a.Log))
    assert all(not isinstance(e, j.GetLazyStateCommand) for e in m.journal(inv_id))


# ----------------------------------------------------------------------------------------------- the SDK
class StateSink(FakeSink):
    """Answers lazy reads from ``state`` like the engine (after 'commit'), and applies the writes."""

    def __init__(self, state: dict[str, bytes]) -> None:
        super().__init__()
        self.state = state

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        super().command(command, awakeables)
        answer: j.Result | None = None
        if isinstance(command, j.SetStateCommand):
            self.state[command.key] = command.value
        elif isinstance(command, j.GetLazyStateCommand):
            answer, cid, kind = (
                j.Result(value=self.state.get(command.key)),
                command.completion_id,
                "get_lazy_state",
            )
        elif isinstance(command, j.GetLazyStateKeysCommand):
            answer = j.Result(value=j.encode_state_keys(list(self.state)))
            cid, kind = command.completion_id, "get_lazy_state_keys"
        if answer is not None:
            n = j.Notification(kind, cid, 0, answer)
            asyncio.get_running_loop().call_soon(self.session.notify, n)


def _lazy_object() -> restate.VirtualObject:
    obj = restate.VirtualObject("Obj", enable_lazy_state=True)

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> dict[str, Any]:
        count = await ctx.get("count", type_hint=int) or 0
        ctx.set("count", count + 1)
        again = await ctx.get("count", type_hint=int)  # its own write: known, no round trip
        ctx.clear("gone")
        gone = await ctx.get("gone")
        keys = await ctx.state_keys()
        return {"count": count, "again": again, "gone": gone, "keys": keys}

    return obj


async def _run(journal: list[j.Entry], state: dict[str, bytes], lazy: bool = True) -> StateSink:
    sink = StateSink(state)
    start = msgspec.structs.replace(_start(journal, state={} if lazy else dict(state)), lazy_state=lazy)
    sink.session = LocalTransport([_lazy_object()], lambda: 1_000).start(start, sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    return sink


async def test_lazy_reads_are_commands_and_writes_are_known_locally() -> None:
    sink = await _run([INPUT], {"count": b"4", "other": b"1"})
    assert sink.commands == [
        j.GetLazyStateCommand("count", 1),
        j.SetStateCommand("count", b"5"),
        j.GetEagerStateCommand("count", b"5"),
        j.ClearStateCommand("gone"),
        j.GetEagerStateCommand("gone", None),
        j.GetLazyStateKeysCommand(2),
        j.OutputCommand(j.Result(value=b'{"count":4,"again":5,"gone":null,"keys":["count","other"]}')),
    ]


async def test_a_replay_reads_the_journaled_value_not_the_state_now() -> None:
    journal: list[j.Entry] = [
        INPUT,
        j.GetLazyStateCommand("count", 1),
        j.Notification("get_lazy_state", 1, 0, j.Result(value=b"4")),
        j.SetStateCommand("count", b"5"),
    ]
    sink = await _run(journal, {"count": b"77"})  # changed since (e.g. by the admin API)
    assert sink.commands == [
        j.GetEagerStateCommand("count", b"5"),
        j.ClearStateCommand("gone"),
        j.GetEagerStateCommand("gone", None),
        j.GetLazyStateKeysCommand(2),
        j.OutputCommand(j.Result(value=b'{"count":4,"again":5,"gone":null,"keys":["count"]}')),
    ]


async def test_a_replay_follows_its_journal_when_the_lazy_setting_changed() -> None:
    """Journaled eagerly (before ``enable_lazy_state`` was turned on): the replay reads the journaled values
    and allocates the same completion ids, then goes on lazily."""
    journal: list[j.Entry] = [
        INPUT,
        j.GetEagerStateCommand("count", b"4"),
        j.SetStateCommand("count", b"5"),
        j.GetEagerStateCommand("count", b"5"),
        j.ClearStateCommand("gone"),
        j.GetEagerStateCommand("gone", None),
    ]
    sink = await _run(journal, {"count": b"77"})
    assert sink.commands == [
        j.GetLazyStateKeysCommand(1),
        j.OutputCommand(j.Result(value=b'{"count":4,"again":5,"gone":null,"keys":["count"]}')),
    ]


async def test_a_lazy_journal_replays_lazily_after_the_setting_was_turned_off() -> None:
    journal: list[j.Entry] = [
        INPUT,
        j.GetLazyStateCommand("count", 1),
        j.Notification("get_lazy_state", 1, 0, j.Result(value=b"4")),
    ]
    sink = await _run(journal, {"count": b"77"}, lazy=False)
    assert sink.commands == [
        j.SetStateCommand("count", b"5"),
        j.GetEagerStateCommand("count", b"5"),
        j.ClearStateCommand("gone"),
        j.GetEagerStateCommand("gone", None),
        j.GetEagerStateKeysCommand(["count"]),
        j.OutputCommand(j.Result(value=b'{"count":4,"again":5,"gone":null,"keys":["count"]}')),
    ]
