"""Admin records on the pure state machine: purge-journal, resume of a completed invocation, admin state,
service changes (``ModifyService``)."""

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
    RetryOverride,
    Schemas,
    ServiceKind,
    ServiceOverride,
    ServiceSchema,
    Target,
    with_overrides,
)
from unbroken.core.state_machine import apply

NOW = 1_700_000_000_000
SCHEMAS = Schemas(
    {
        "Svc": ServiceSchema("Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)}),
        "Obj": ServiceSchema(
            "Obj", ServiceKind.VIRTUAL_OBJECT, {"ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE)}
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
        self.apply(r.Invoke(inv_id, target, b"1", (), request_id=0, reply=r.ReplyMode.NONE))
        return inv_id

    def complete(self, inv_id: str, value: bytes) -> None:
        self.apply(r.JournalCommand(inv_id, 1, j.OutputCommand(j.Result(value=value))))


def _replies(actions: list[a.Action]) -> list[str]:
    return [type(x.outcome).__name__ for x in actions if isinstance(x, a.Reply)]


def test_purge_journal_drops_the_journal_and_keeps_the_result() -> None:
    m = Machine()
    inv_id = m.invoke(Target("Svc", "h"))
    m.complete(inv_id, b"42")
    assert len(m.journal(inv_id)) == 2
    assert _replies(m.apply(r.PurgeJournal(inv_id, 7))) == ["Done"]
    stored = m.inv(inv_id)
    assert m.journal(inv_id) == []
    assert stored.status is Status.COMPLETED and stored.journal_length == 0
    assert stored.result == j.Result(value=b"42")
    # The result is still served to an attach.
    (reply,) = [x for x in m.apply(r.Attach(inv_id, wait=False, request_id=8)) if isinstance(x, a.Reply)]
    assert reply.outcome == a.Output(inv_id, j.Result(value=b"42"), reply.outcome.expires_at_ms)  # type: ignore[union-attr]


def test_purge_journal_of_a_running_or_unknown_invocation_is_refused() -> None:
    m = Machine()
    running = m.invoke(Target("Svc", "h"))
    assert _replies(m.apply(r.PurgeJournal(running, 1))) == ["NotCompleted"]
    assert len(m.journal(running)) == 1 and m.inv(running).status is Status.RUNNING
    unknown = str(InvocationId.new(3, b"\xff" * 10, NOW))
    assert _replies(m.apply(r.PurgeJournal(unknown, 2))) == ["NotFound"]


def test_resume_answers_completed_for_a_completed_invocation() -> None:
    m = Machine()
    inv_id = m.invoke(Target("Svc", "h"))
    m.complete(inv_id, b"1")
    actions = m.apply(r.ResumeInvocation(inv_id, 3))
    assert _replies(actions) == ["AlreadyCompleted"]
    assert not [x for x in actions if isinstance(x, a.StartAttempt)]


def test_resume_of_an_inboxed_invocation_is_not_started() -> None:
    m = Machine()
    m.invoke(Target("Obj", "ex", "k"))
    queued = m.invoke(Target("Obj", "ex", "k"))
    assert m.inv(queued).status is Status.PENDING
    assert _replies(m.apply(r.ResumeInvocation(queued, 4))) == ["NotStarted"]


def test_admin_state_replaces_the_whole_state_and_empty_clears_it() -> None:
    m = Machine()
    m.apply(r.SetStateFromAdmin("Obj", "k", {"a": b"1", "b": b"2"}, 1))
    m.apply(r.SetStateFromAdmin("Obj", "k", {"c": b"3"}, 2))
    with m.store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {"c": b"3"}
    assert _replies(m.apply(r.SetStateFromAdmin("Obj", "k", {}, 3))) == ["Done"]
    with m.store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {}


def test_modify_service_merges_into_the_stored_override_and_tells_the_engine_after_commit() -> None:
    m = Machine()
    first = ServiceOverride(journal_retention_ms=0, retry_policy=RetryOverride(max_attempts=4))
    actions = m.apply(r.ModifyService("Svc", first, 5))
    assert actions == [a.UpdateService("Svc", first), a.Reply(5, a.Done())]
    second = ServiceOverride(
        inactivity_timeout_ms=500, retry_policy=RetryOverride(on_max_attempts=OnMaxAttempts.KILL)
    )
    merged = ServiceOverride(
        journal_retention_ms=0,
        inactivity_timeout_ms=500,
        retry_policy=RetryOverride(max_attempts=4, on_max_attempts=OnMaxAttempts.KILL),
    )
    assert m.apply(r.ModifyService("Svc", second, 6)) == [
        a.UpdateService("Svc", merged),
        a.Reply(6, a.Done()),
    ]
    assert m.store.service_overrides() == {"Svc": merged}
    assert _replies(m.apply(r.ModifyService("Nope", second, 7))) == ["NotFound"]
    assert "Nope" not in m.store.service_overrides()

    svc = with_overrides(SCHEMAS, m.store.service_overrides()).services["Svc"]
    assert (svc.journal_retention_ms, svc.inactivity_timeout_ms) == (0, 500)
    assert svc.retry_policy.max_attempts == 4 and svc.retry_policy.on_max_attempts is OnMaxAttempts.KILL
    assert svc.retry_policy.initial_interval_ms == SCHEMAS.services["Svc"].retry_policy.initial_interval_ms
    assert with_overrides(SCHEMAS, m.store.service_overrides()).services["Obj"] == SCHEMAS.services["Obj"]
