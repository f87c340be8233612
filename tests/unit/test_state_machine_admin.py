"""Admin records on the pure state machine: purge-journal, resume of a completed invocation, admin state."""

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
from unbroken.core.model import (
    HandlerKind,
    HandlerSchema,
    Schemas,
    ServiceKind,
    ServiceSchema,
    Status,
    Target,
)
from unbroken.core.state_machine import apply

NOW = 1_700_000_000_000
SCHEMAS = Schemas({
    "Svc": ServiceSchema("Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)}),
    "Obj": ServiceSchema("Obj", ServiceKind.VIRTUAL_OBJECT, {"ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE)}),
})  # fmt: skip


@pytest.fixture(autouse=True, params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for stores in opener(request, tmp_path):
        monkeypatch.setattr(Machine, "stores", stores, raising=False)
        yield


class Machine:
    stores: Opener  # set per test by the ``backend`` fixture: every test runs on every backend
    def __init__(self) -> None:
        self.store = Machine.stores()
        self.n = 0

    def apply(self, record: r.Record) -> list[a.Action]:
        with self.store.transaction() as txn:
            return apply(txn, record, NOW, SCHEMAS)

    def inv(self, invocation_id: str) -> Any:
        with self.store.transaction() as txn:
            return txn.get_invocation(invocation_id)

    def journal(self, invocation_id: str) -> list[j.Entry]:
        with self.store.transaction() as txn:
            return txn.journal(invocation_id)

    def invoke(self, target: Target) -> str:
        self.n += 1
        inv_id = str(InvocationId.new(3, self.n.to_bytes(10, "big"), NOW))
        self.apply(r.Invoke(inv_id, target, b"1", (), request_id=0, reply="none"))
        return inv_id

    def complete(self, inv_id: str, value: bytes) -> None:
        self.apply(r.JournalCommand(inv_id, 1, j.OutputCommand(j.Result(value=value))))


def _replies(actions: list[a.Action]) -> list[str]:
    return [x.kind for x in actions if isinstance(x, a.Reply)]


def test_purge_journal_drops_the_journal_and_keeps_the_result() -> None:
    m = Machine()
    inv_id = m.invoke(Target("Svc", "h"))
    m.complete(inv_id, b"42")
    assert len(m.journal(inv_id)) == 2
    assert _replies(m.apply(r.PurgeJournal(inv_id, 7))) == ["done"]
    stored = m.inv(inv_id)
    assert m.journal(inv_id) == []
    assert stored.status is Status.COMPLETED and stored.journal_length == 0
    assert stored.result == j.Result(value=b"42")
    # The result is still served to an attach.
    (reply,) = [x for x in m.apply(r.Attach(inv_id, wait=False, request_id=8)) if isinstance(x, a.Reply)]
    assert reply.kind == "result" and reply.result == j.Result(value=b"42")


def test_purge_journal_of_a_running_or_unknown_invocation_is_refused() -> None:
    m = Machine()
    running = m.invoke(Target("Svc", "h"))
    assert _replies(m.apply(r.PurgeJournal(running, 1))) == ["not_completed"]
    assert len(m.journal(running)) == 1 and m.inv(running).status is Status.RUNNING
    unknown = str(InvocationId.new(3, b"\xff" * 10, NOW))
    assert _replies(m.apply(r.PurgeJournal(unknown, 2))) == ["not_found"]


def test_resume_answers_completed_for_a_completed_invocation() -> None:
    m = Machine()
    inv_id = m.invoke(Target("Svc", "h"))
    m.complete(inv_id, b"1")
    actions = m.apply(r.ResumeInvocation(inv_id, 3))
    assert _replies(actions) == ["completed"]
    assert not [x for x in actions if isinstance(x, a.StartAttempt)]


def test_resume_of_an_inboxed_invocation_is_not_started() -> None:
    m = Machine()
    m.invoke(Target("Obj", "ex", "k"))
    queued = m.invoke(Target("Obj", "ex", "k"))
    assert m.inv(queued).status is Status.PENDING
    assert _replies(m.apply(r.ResumeInvocation(queued, 4))) == ["not_started"]


def test_admin_state_replaces_the_whole_state_and_empty_clears_it() -> None:
    m = Machine()
    m.apply(r.SetStateFromAdmin("Obj", "k", {"a": b"1", "b": b"2"}, 1))
    m.apply(r.SetStateFromAdmin("Obj", "k", {"c": b"3"}, 2))
    with m.store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {"c": b"3"}
    assert _replies(m.apply(r.SetStateFromAdmin("Obj", "k", {}, 3))) == ["done"]
    with m.store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {}
