"""New invocations: from the ingress (``Invoke`` records) and from handlers (calls and sends)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from unbroken.core import records as r
from unbroken.core.actions import (
    Accepted,
    AwaitCompletion,
    NotFound,
    Output,
    PreviouslyAccepted,
    WorkflowAlreadyInvoked,
)
from unbroken.core.errors import violated
from unbroken.core.invocation import Invocation, Sink, Status
from unbroken.core.journal import Failure, Header, InputCommand
from unbroken.core.schema import HandlerKind, ServiceSchema, Target
from unbroken.core.state_machine import lifecycle
from unbroken.core.state_machine.step import Step
from unbroken.core.storage import TimerKind

WORKFLOW_ALREADY_INVOKED = Failure(409, "the workflow method was already invoked")


def on_invoke(step: Step, rec: r.Invoke) -> None:
    existing = step.load(rec.invocation_id)
    if existing is not None:
        _answer_duplicate(step, existing, rec)
        return
    svc = step.service(rec.target.service)
    if svc is None or rec.target.handler not in svc.handlers:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
        return
    if rec.reply is r.ReplyMode.RESULT:
        step.emit(AwaitCompletion(rec.request_id, rec.invocation_id))
    inv = create(
        step,
        svc,
        rec.invocation_id,
        rec.target,
        rec.argument,
        rec.headers,
        idempotency_key=rec.idempotency_key,
        random_seed=rec.random_seed,
        execute_at_ms=rec.execute_at_ms,
        invoked_by="ingress",
        invoked_by_id=None,
        sinks=[],
    )
    if rec.reply is r.ReplyMode.ACCEPTED:
        step.reply(rec.request_id, Accepted(inv.id, inv.execute_at_ms))


def _answer_duplicate(step: Step, existing: Invocation, rec: r.Invoke) -> None:
    """Same id again: an idempotent request repeated, or a workflow key run a second time."""
    if rec.reply is r.ReplyMode.ACCEPTED:
        step.reply(rec.request_id, PreviouslyAccepted(existing.id))
    elif rec.reply is r.ReplyMode.RESULT:
        if existing.handler_kind is HandlerKind.WORKFLOW and rec.idempotency_key is None:
            step.reply(rec.request_id, WorkflowAlreadyInvoked(existing.id))
        elif existing.status is Status.COMPLETED:
            if existing.result is None:
                violated(f"{existing.id}: completed without a result")
            step.reply(rec.request_id, Output(existing.id, existing.result, existing.expires_at_ms))
        else:
            step.emit(AwaitCompletion(rec.request_id, existing.id))


def create(
    step: Step,
    svc: ServiceSchema,
    invocation_id: str,
    target: Target,
    argument: bytes,
    headers: Sequence[Header],
    *,
    idempotency_key: str | None,
    random_seed: int,
    execute_at_ms: int,
    invoked_by: str,
    invoked_by_id: str | None,
    sinks: list[Sink],
) -> Invocation:
    """Store a new invocation with its Input entry and admit it (schedule, inbox or start)."""
    handler = svc.handlers[target.handler]
    inv = Invocation(
        id=invocation_id,
        target=target,
        service_kind=svc.kind,
        handler_kind=handler.kind,
        status=Status.SCHEDULED,
        created_at_ms=step.now_ms,
        modified_at_ms=step.now_ms,
        random_seed=random_seed,
        invoked_by=invoked_by,
        invoked_by_id=invoked_by_id,
        idempotency_key=idempotency_key,
        sinks=sinks,
        execute_at_ms=execute_at_ms if execute_at_ms > step.now_ms else 0,
        journal_length=1,
        last_progress_at_ms=step.now_ms,
        awakeables=0,  # none yet: the attempts report what they allocate (-1 once one does not)
    )
    entry = InputCommand(list(headers), argument)
    step.txn.append_journal(invocation_id, 0, entry, step.now_ms)
    if inv.execute_at_ms:
        step.save(inv)
        lifecycle.arm_timer(step, inv.execute_at_ms, TimerKind.INVOKE, inv.id, 0)
    else:
        lifecycle.admit(step, inv, (entry,))
    return inv


def callee(
    step: Step,
    svc: ServiceSchema,
    invocation_id: str,
    target: Target,
    argument: bytes,
    headers: Sequence[Header],
    *,
    idempotency_key: str | None,
    execute_at_ms: int,
    caller_id: str,
    sinks: list[Sink],
) -> Failure | None:
    """A call (``sinks``: the caller's completion) or a send from the handler ``caller_id``: create the
    callee, or add the caller to the existing one (an idempotent call repeated). Returns the failure the
    call is answered with instead (a workflow's run invoked a second time), else None. The same whether the
    caller's partition is this one or the call came through the partition inbox (``r.InvokeCallee``)."""
    existing = step.load(invocation_id)
    if existing is not None:
        kind = svc.handlers[target.handler].kind
        if kind is HandlerKind.WORKFLOW and sinks and idempotency_key is None:
            return WORKFLOW_ALREADY_INVOKED
        for sink in sinks:
            lifecycle.add_sink(step, existing, sink)
        return None
    seed = int.from_bytes(hashlib.sha256(invocation_id.encode()).digest()[:8], "big")
    create(
        step,
        svc,
        invocation_id,
        target,
        argument,
        headers,
        idempotency_key=idempotency_key,
        random_seed=seed,
        execute_at_ms=execute_at_ms,
        invoked_by="service",
        invoked_by_id=caller_id,
        sinks=sinks,
    )
    return None
