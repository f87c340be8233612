"""The pure state machine: ``apply(txn, record, now_ms, schemas) -> list[Action]``.

No I/O, no clock, no randomness: time comes in as ``now_ms`` and ids are derived from the record.
The processor calls ``apply`` for each record of a batch inside one storage transaction and runs the
returned actions only after that transaction committed.

Modules: ``invoke`` (new invocations), ``lifecycle`` (start, complete, suspend, retry, timers),
``commands`` (one function per journal command), ``control`` (cancel, kill, pause, resume, purge,
attach, signals, retention).
"""

from __future__ import annotations

from unbroken.core import records as r
from unbroken.core.actions import Action
from unbroken.core.model import Schemas
from unbroken.core.state_machine import commands, control, invoke, lifecycle
from unbroken.core.state_machine.step import Step
from unbroken.core.storage import Transaction

__all__ = ["apply", "Step"]


def apply(txn: Transaction, record: r.Record, now_ms: int, schemas: Schemas) -> list[Action]:
    """Apply one record; returns the actions to run after commit (in order)."""
    step = Step(txn, now_ms, schemas)
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
        case _:
            raise AssertionError(f"unknown record {record!r}")
    step.flush()
    return step.actions
