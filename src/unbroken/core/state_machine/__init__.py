"""The pure state machine: ``apply(txn, record, now_ms, schemas) -> list[Action]``.

No I/O, no clock, no randomness: time comes in as ``now_ms`` and ids are derived from the record.
The processor calls ``apply`` for each record of a batch inside one storage transaction and runs the
returned actions only after that transaction committed.

Modules: ``invoke`` (new invocations), ``lifecycle`` (start, complete, suspend, retry, timers),
``commands`` (one function per journal command), ``control`` (cancel, kill, pause, resume, purge,
attach, signals, retention), ``services`` (schema changes), ``inbox`` (effects sent by other partitions'
batches), ``failures`` (attempts the engine fails: protocol violations, records the store kept refusing).
"""

from __future__ import annotations

from typing import assert_never

from unbroken.core import records as r
from unbroken.core.actions import Action
from unbroken.core.errors import ProtocolViolation, violated
from unbroken.core.schema import Schemas
from unbroken.core.state_machine import commands, control, failures, inbox, invoke, lifecycle, services
from unbroken.core.state_machine.step import Step
from unbroken.core.storage import Transaction

__all__ = ["apply", "Step"]


def apply(txn: Transaction, record: r.Record, now_ms: int, schemas: Schemas) -> list[Action]:
    """Apply one record; returns the actions to run after commit (in order).

    A :class:`ProtocolViolation` (raised before the record wrote anything) fails the sending attempt in the
    same apply. :class:`~unbroken.core.errors.InvariantViolation` and anything else propagate: the
    processor rolls the batch back and recovers (never drops the record and goes on).
    """
    step = Step(txn, now_ms, schemas)
    try:
        _dispatch(step, record)
    except ProtocolViolation as exc:
        if not isinstance(record, _ATTEMPT_RECORDS):
            violated(f"{type(record).__name__} raised a protocol violation: {exc.message}")
        step = Step(txn, now_ms, schemas)
        failures.on_protocol_violation(step, record, exc)
    step.flush()  # the identity map writes each row it changed once, checking its invariants
    return step.actions


_ATTEMPT_RECORDS = (r.JournalCommand, r.ProposeRunCompletion, r.AttemptSuspended, r.AttemptFailed)


def _dispatch(step: Step, record: r.Record) -> None:
    match record:
        case r.Invoke():
            invoke.on_invoke(step, record)
        case r.JournalCommand():
            commands.on_command(step, record)
        case r.ProposeRunCompletion():
            commands.on_run_completion(step, record)
        case r.AttemptSuspended():
            lifecycle.on_suspended(step, record)
        case r.AttemptFailed():
            lifecycle.on_failed(step, record)
        case r.TimerFired():
            lifecycle.on_timer(step, record)
        case r.CancelInvocation():
            control.on_cancel(step, record)
        case r.KillInvocation():
            control.on_kill(step, record)
        case r.ResolveSignal():
            control.on_resolve_signal(step, record)
        case r.Attach():
            control.on_attach(step, record)
        case r.PauseInvocation():
            control.on_pause(step, record)
        case r.ResumeInvocation():
            control.on_resume(step, record)
        case r.PurgeInvocation():
            control.on_purge(step, record)
        case r.PurgeJournal():
            control.on_purge_journal(step, record)
        case r.Recover():
            lifecycle.on_recover(step, record)
        case r.CleanExpired():
            control.on_clean_expired(step, record)
        case r.SetStateFromAdmin():
            control.on_set_state(step, record)
        case r.ModifyService():
            services.on_modify_service(step, record)
        case r.RegisterDeployment():
            services.on_register_deployment(step, record)
        case r.RemoveDeployment():
            services.on_remove_deployment(step, record)
        case r.FailInvocation():
            failures.on_fail_invocation(step, record)
        case r.InvokeCallee():
            inbox.on_invoke_callee(step, record)
        case r.Notify():
            inbox.on_notify(step, record)
        case r.AddSink():
            inbox.on_add_sink(step, record)
        case r.SendOutput():
            inbox.on_send_output(step, record)
        case _:
            assert_never(record)
