"""The pre-deploy replay check: replay stored journals against new code, with no side effect, and say which
invocations would diverge.

Each journal is replayed by the SDK's own replay matcher (``sdk/attempt.py``) in a dry run: the handler runs
from its input, every ``ctx`` command is matched against the journaled one at its position, results come
from the journal, and no ``ctx.run`` action ever runs (``Attempt.dry_run``); nothing is sent anywhere (the
attempt's sink only listens). The replay of one invocation ends when the handler

* issues a command past the journal's end, returns, or waits on a result the journal does not hold yet:
  the new code agrees with the journal (what follows is new work, checked when it happens);
* issues a different command than the journal holds: a divergence, with the entry index, the journaled
  command and the one the new code issues (after a deploy, that invocation would fail with 570 and retry);
* fails otherwise (an exception outside the journal's commands): reported too, it would fail after the deploy.

Code outside ``ctx`` calls runs as in any replay: a handler doing I/O without ``ctx.run`` does it here too.

Journals come from a store (``unbroken replay-check APP --data-dir DIR | --store URL``: the invocations not
completed), read through its read model beside a running node (no lease, no write), or from a file
``unbroken invocations export ID`` wrote (``check_journal`` in a test).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unbroken.config import Config
from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.limits import journal_entries_max
from unbroken.core.read_model import ReadModel, Snapshot
from unbroken.core.schema import HandlerKind, ServiceKind, Target
from unbroken.protocol.transport import AttemptStart
from unbroken.sdk.app import App
from unbroken.sdk.attempt import Attempt, describe_entry
from unbroken.sdk.local import LocalTransport
from unbroken.testing.tracking import settle
from unbroken.wiring import app_schemas, read_model_beside

EXPORT_FORMAT = "unbroken.journal/1"
_NO_SUSPENSION_MS = 24 * 3600 * 1000  # a dry replay never suspends: it is stopped when it waits


@dataclass(frozen=True)
class Divergence:
    """An invocation the new code would not replay: ``index``, ``expected`` (the journaled command) and
    ``actual`` (what the code issues now) for a mismatch; ``message`` says it in one line."""

    invocation_id: str
    target: str
    message: str
    index: int | None = None
    expected: str | None = None
    actual: str | None = None


@dataclass
class ExportedInvocation:
    """What ``unbroken invocations export`` writes: an invocation's journal and what replaying it needs."""

    invocation_id: str
    service: str
    handler: str
    key: str | None
    service_kind: str
    handler_kind: str | None
    status: str
    random_seed: int
    idempotency_key: str | None
    journal: list[j.Entry]
    state: dict[str, bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return Target(self.service, self.handler, self.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": EXPORT_FORMAT,
            "invocation_id": self.invocation_id,
            "target": {"service": self.service, "handler": self.handler, "key": self.key},
            "service_kind": self.service_kind,
            "handler_kind": self.handler_kind,
            "status": self.status,
            "random_seed": self.random_seed,
            "idempotency_key": self.idempotency_key,
            "state": None
            if self.state is None
            else {k: base64.b64encode(v).decode() for k, v in self.state.items()},
            "entries": [
                {"index": i, "entry": describe_entry(e), "data": base64.b64encode(j.encode_entry(e)).decode()}
                for i, e in enumerate(self.journal)
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ExportedInvocation:
        if doc.get("format") != EXPORT_FORMAT:
            raise ValueError(
                f"not an exported journal (format {doc.get('format')!r}, expected {EXPORT_FORMAT!r})"
            )
        target = doc["target"]
        entries = doc["entries"]
        if len(entries) > journal_entries_max:
            raise ValueError(f"an exported journal holds at most {journal_entries_max} entries")
        state = doc.get("state")
        return cls(
            invocation_id=str(doc["invocation_id"]),
            service=str(target["service"]),
            handler=str(target["handler"]),
            key=target.get("key"),
            service_kind=str(doc["service_kind"]),
            handler_kind=doc.get("handler_kind"),
            status=str(doc.get("status", "")),
            random_seed=int(doc.get("random_seed", 0)),
            idempotency_key=doc.get("idempotency_key"),
            journal=[j.decode_entry(base64.b64decode(e["data"])) for e in entries],
            state=None if state is None else {k: base64.b64decode(v) for k, v in state.items()},
        )


# ------------------------------------------------------------------------------------------ reading
def _exported(snapshot: Snapshot, invocation_id: str) -> ExportedInvocation | None:
    inv = snapshot.invocation(invocation_id)
    if inv is None:
        return None
    key = inv.target.key
    return ExportedInvocation(
        invocation_id=inv.id,
        service=inv.target.service,
        handler=inv.target.handler,
        key=key,
        service_kind=inv.service_kind.value,
        handler_kind=None if inv.handler_kind is None else inv.handler_kind.value,
        status=inv.status.value,
        random_seed=inv.random_seed,
        idempotency_key=inv.idempotency_key,
        journal=snapshot.journal(invocation_id),
        state=None if key is None else snapshot.state(inv.target.service, key),
    )


async def export_invocation(
    invocation_id: str, data_dir: str | None = None, *, store: str | None = None
) -> ExportedInvocation:
    """The journal (and what replaying it needs) of one invocation of the store in ``data_dir`` (SQLite)
    or at ``store`` (a PostgreSQL URL); ``KeyError`` if it holds no such invocation."""
    reads = read_model_beside(data_dir, store)
    try:
        return await export_from(reads, invocation_id)
    finally:
        reads.close()


async def export_from(reads: ReadModel, invocation_id: str) -> ExportedInvocation:
    """``export_invocation`` on a read model (``wiring.read_model_beside``) the caller closes."""
    exported = await reads.read(functools.partial(_exported, invocation_id=invocation_id))
    if exported is None:
        raise KeyError(f"no invocation {invocation_id} in that store")
    return exported


async def in_flight(reads: ReadModel) -> AsyncIterator[ExportedInvocation]:
    """Every invocation of the store behind ``reads`` that has not completed and has a journal: a page
    of ids per snapshot, then each invocation in a snapshot of its own (its journal and state agree)."""
    page = limits.testkit_replay_ids_per_read_max
    after: str | None = None
    while True:
        ids = await reads.read(functools.partial(_in_flight_ids, after=after, limit=page))
        for invocation_id in ids:
            exported = await reads.read(functools.partial(_exported, invocation_id=invocation_id))
            if exported is not None and exported.journal:  # completed meanwhile: gone, or no journal yet
                yield exported
        if len(ids) < page:
            return
        after = ids[-1]


def _in_flight_ids(snapshot: Snapshot, after: str | None, limit: int) -> list[str]:
    return snapshot.in_flight_ids(after, limit)


# ------------------------------------------------------------------------------------------ replaying
class _ListeningSink:
    """The dry attempt's sink: it forwards nothing; it notes whether the replay went past the journal."""

    def __init__(self) -> None:
        self.live: j.Command | None = None  # the first command past the journal's end
        self.failure: str | None = None
        self.session: Attempt | None = None

    def allocated(self, awakeables: int) -> None:
        pass  # a dry replay resolves nothing: the count goes nowhere

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        if self.live is None:
            self.live = command
        if self.session is not None:
            self.session.end()  # what follows is new work: the replay agreed with the journal

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        pass  # never: no action runs in a dry replay

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        pass

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        if self.failure is None:
            self.failure = f"{code}: {message}"

    def ended(self) -> None:
        pass


async def replay_one(
    app: App, exported: ExportedInvocation, config: Config | None = None
) -> Divergence | None:
    """Replay ``exported``'s journal against ``app`` (dry); None if the code agrees with it."""
    target = exported.target
    where = str(target)
    schemas = app_schemas(app, config or Config(), None)
    svc = schemas.service(target.service)
    if svc is None or target.handler not in svc.handlers:
        return Divergence(exported.invocation_id, where, f"the new code has no handler {where}")
    lazy = svc.lazy_state_for(target.handler)
    state = None if target.key is None else ({} if lazy else dict(exported.state or {}))
    start = AttemptStart(
        invocation_id=exported.invocation_id,
        attempt=1,
        target=target,
        service_kind=ServiceKind(exported.service_kind),
        handler_kind=None if exported.handler_kind is None else HandlerKind(exported.handler_kind),
        journal=tuple(exported.journal),
        state=state,
        random_seed=exported.random_seed,
        retries_since_progress=0,
        ms_since_progress=0,
        inactivity_timeout_ms=_NO_SUSPENSION_MS,
        idempotency_key=exported.idempotency_key,
        lazy_state=lazy,
    )
    loop = asyncio.get_running_loop()
    transport = LocalTransport(app.services, lambda: 0, loop, dry_run=True)
    sink = _ListeningSink()
    session = transport.start(start, sink)
    sink.session = session
    try:
        await _until_settled(session)
    finally:
        session.end()
    return _verdict(exported, where, session, sink)


async def _until_settled(session: Attempt) -> None:
    """Until the handler returned, failed, went past the journal, or waits on what the journal lacks."""
    deadline = asyncio.get_running_loop().time() + limits.testkit_replay_s_max
    waiting_rounds = 0
    while not session.ended and (session.task is None or not session.task.done()):
        await settle()
        waiting = bool(session.awaiting) and all(key not in session.results for key in session.awaiting)
        waiting_rounds = waiting_rounds + 1 if waiting else 0
        if waiting_rounds >= 3:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"the replay of {session.start.invocation_id} did not settle in {limits.testkit_replay_s_max}s"
            )
        await asyncio.sleep(0.001)


def _verdict(
    exported: ExportedInvocation, where: str, session: Attempt, sink: _ListeningSink
) -> Divergence | None:
    found = session.divergence
    if found is not None:
        return Divergence(
            exported.invocation_id,
            where,
            f"entry {found.index}: the journal has {found.expected}, the new code issues {found.actual}",
            found.index,
            found.expected,
            found.actual,
        )
    if sink.failure is not None:
        return Divergence(exported.invocation_id, where, f"the replay failed: {sink.failure.splitlines()[0]}")
    return None


async def check_journal(
    app: App, exported: ExportedInvocation | dict[str, Any] | str | Path
) -> Divergence | None:
    """Replay one exported journal (the object, its JSON document, or the path of the file ``unbroken
    invocations export`` wrote) against ``app``; None if the code agrees with it."""
    if isinstance(exported, str | Path):
        exported = json.loads(Path(exported).read_text())
    if not isinstance(exported, ExportedInvocation):
        exported = ExportedInvocation.from_json(exported)  # type: ignore[arg-type]  # a JSON document
    return await replay_one(app, exported)


async def replay_check(
    app: App, data_dir: str | None = None, *, store: str | None = None
) -> tuple[int, list[Divergence]]:
    """Replay every in-flight invocation of the store in ``data_dir`` (SQLite) or at ``store`` (a PostgreSQL
    URL) against ``app``: (how many, the divergent ones). Read-only: a node may run on the store meanwhile
    (on PostgreSQL no partition lease is taken, no epoch bumped)."""
    reads = read_model_beside(data_dir, store)
    try:
        return await replay_reads(app, reads)
    finally:
        reads.close()


async def replay_reads(app: App, reads: ReadModel) -> tuple[int, list[Divergence]]:
    """``replay_check`` on a read model (``wiring.read_model_beside``) the caller closes."""
    total = 0
    out = []
    async for exported in in_flight(reads):
        total += 1
        try:
            verdict = await replay_one(app, exported)
        except TimeoutError as exc:
            verdict = Divergence(exported.invocation_id, str(exported.target), str(exc))
        if verdict is not None:
            out.append(verdict)
    return total, out
