"""The retention sweep (``CleanExpired``) on both stores: the journal goes at ``journal_expires_at_ms``
while the result stays, everything goes at ``expires_at_ms``; a journal retention of 0 drops the journal
at completion; a workflow run takes its state and promises with it, an object keeps its state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId
from unbroken.core.invocation import Status
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.state_machine import apply
from unbroken.storage.memory import MemoryStore
from unbroken.storage.sqlite import SqliteStore

NOW = 1_700_000_000_000
S = 1000
SCHEMAS = Schemas(
    {
        "Svc": ServiceSchema(
            "Svc",
            ServiceKind.SERVICE,
            {"h": HandlerSchema("h", None)},
            idempotency_retention_ms=10 * S,
            journal_retention_ms=3 * S,
        ),
        "Obj": ServiceSchema(
            "Obj",
            ServiceKind.VIRTUAL_OBJECT,
            {"ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE)},
            idempotency_retention_ms=10 * S,
            journal_retention_ms=0,
        ),
        "Wf": ServiceSchema(
            "Wf",
            ServiceKind.WORKFLOW,
            {"run": HandlerSchema("run", HandlerKind.WORKFLOW)},
            workflow_completion_retention_ms=5 * S,
        ),
    }
)


class Machine:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.now = NOW
        self.n = 0

    def apply(self, record: r.Record) -> None:
        with self.store.transaction() as txn:
            apply(txn, record, self.now, SCHEMAS)

    def read(self, fn: Any) -> Any:
        with self.store.transaction() as txn:
            return fn(txn)

    def run(self, target: Target, *commands: j.Command) -> str:
        """Invoke, journal ``commands``, complete with ``"ok"``."""
        self.n += 1
        inv = str(InvocationId.new(3, self.n.to_bytes(10, "big"), self.now))
        if target.service == "Wf":
            inv = str(InvocationId.for_workflow("Wf", target.key or ""))
        self.apply(r.Invoke(inv, target, b"1"))
        for cmd in (*commands, j.OutputCommand(j.Result(value=b'"ok"'))):
            self.apply(r.JournalCommand(inv, 1, cmd))
        return inv

    def sweep_at(self, ms: int) -> None:
        self.now = NOW + ms
        self.apply(r.CleanExpired())


@pytest.fixture(params=["memory", "sqlite"])
def m(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machine]:
    if request.param == "memory":
        yield Machine(MemoryStore())
        return
    store = SqliteStore(str(tmp_path / "data"), fsync=False)
    yield Machine(store)
    store.close()


def test_journal_goes_first_then_the_invocation(m: Machine) -> None:
    inv = m.run(Target("Svc", "h"))
    m.sweep_at(3 * S - 1)
    assert len(m.read(lambda t: t.journal(inv))) == 2
    m.sweep_at(3 * S)
    stored = m.read(lambda t: t.get_invocation(inv))
    assert m.read(lambda t: t.journal(inv)) == [] and stored.journal_length == 0
    assert stored.status is Status.COMPLETED and stored.result == j.Result(value=b'"ok"')
    m.sweep_at(10 * S - 1)
    assert m.read(lambda t: t.get_invocation(inv)) is not None
    m.sweep_at(10 * S)
    assert m.read(lambda t: t.get_invocation(inv)) is None


def test_zero_journal_retention_drops_the_journal_at_completion_object_state_stays(m: Machine) -> None:
    inv = m.run(Target("Obj", "ex", "k"), j.SetStateCommand("n", b"1"))
    stored = m.read(lambda t: t.get_invocation(inv))
    assert m.read(lambda t: t.journal(inv)) == [] and stored.journal_length == 0 and stored.result is not None
    m.sweep_at(10 * S)
    assert m.read(lambda t: t.get_invocation(inv)) is None
    assert m.read(lambda t: t.state_all("Obj", "k")) == {"n": b"1"}


def test_a_workflow_run_takes_its_state_and_promises(m: Machine) -> None:
    inv = m.run(
        Target("Wf", "run", "w"),
        j.SetStateCommand("s", b"1"),
        j.CompletePromiseCommand("p", j.Result(value=b"2"), 1),
    )
    assert m.read(lambda t: t.state_all("Wf", "w")) == {"s": b"1"}
    assert m.read(lambda t: t.get_promise("Wf", "w", "p")) is not None
    m.sweep_at(5 * S - 1)
    assert m.read(lambda t: t.get_invocation(inv)) is not None
    m.sweep_at(5 * S)  # journal retention (1 day by default) is capped by the workflow retention
    assert m.read(lambda t: t.get_invocation(inv)) is None and m.read(lambda t: t.journal(inv)) == []
    assert m.read(lambda t: t.state_all("Wf", "w")) == {}
    assert m.read(lambda t: t.get_promise("Wf", "w", "p")) is None


def test_running_at_is_when_a_queued_invocation_took_the_lock() -> None:
    m = Machine(MemoryStore())
    holder, queued = (str(InvocationId.new(3, bytes([n]) * 10, NOW)) for n in (1, 2))
    m.apply(r.Invoke(holder, Target("Obj", "ex", "q"), b"1"))
    m.apply(r.Invoke(queued, Target("Obj", "ex", "q"), b"1"))
    assert m.read(lambda t: t.get_invocation(holder)).running_at_ms == NOW
    assert m.read(lambda t: t.get_invocation(queued)).running_at_ms == 0
    m.now = NOW + 5 * S
    m.apply(r.JournalCommand(holder, 1, j.OutputCommand(j.Result(value=b"1"))))
    assert m.read(lambda t: t.get_invocation(queued)).running_at_ms == NOW + 5 * S
