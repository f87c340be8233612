"""Control records: cancel, kill, pause, resume, purge, attach, signals, admin state, retention."""

from __future__ import annotations

import base64
import hashlib

from unbroken.core import records as r
from unbroken.core.actions import (
    AbortAttempt,
    Accepted,
    AlreadyCompleted,
    AwaitCompletion,
    Done,
    Log,
    NotAllocated,
    NotCompleted,
    NotFound,
    NotReady,
    NotStarted,
    Outcome,
    Output,
    StateChanged,
)
from unbroken.core.errors import violated
from unbroken.core.invocation import Invocation, Status
from unbroken.core.journal import CANCEL_SIGNAL, FIRST_AWAKEABLE_SIGNAL, Notification, Result
from unbroken.core.schema import HandlerKind
from unbroken.core.state_machine import lifecycle
from unbroken.core.state_machine.step import Step


def cancel(step: Step, invocation_id: str) -> Outcome:
    """Cancel: not yet started → completes as cancelled; started → CANCEL signal so compensations run.

    The cancel reaches the whole call tree in this same transaction (the calls it awaits, theirs, …), before
    any of them can complete and release a lock: a call queued behind the cancelled root's own lock (an
    A→B→A cycle, or A→A on one key) is cancelled while still queued and never runs, whatever the handlers do.
    One-way sends are not part of the tree (as in Restate). A repeated cancel changes nothing.

    Returns the outcome: ``NotFound``, ``AlreadyCompleted`` (nothing to do), ``Done`` or ``Accepted``. The tree is
    walked with a worklist, not recursion: a chain of calls is as deep as users make it.

    A call whose partition another node leads is sent a ``CancelInvocation`` (its partition inbox), which
    goes on from there: that part of the tree is cancelled in a later transaction of its own leader, so a
    call queued there behind a lock the root holds may start before its cancel arrives (it then runs with
    the cancel signal, as a running call does).
    """
    outcome, pending = _cancel_one(step, invocation_id)
    seen = {invocation_id}
    while pending:
        child = pending.pop()
        if child not in seen:
            seen.add(child)
            key = step.elsewhere(child)
            if key is not None:
                step.send(key, r.CancelInvocation(child), invocation_id)
                continue
            pending.extend(reversed(_cancel_one(step, child)[1]))
    return outcome


def _cancel_one(step: Step, invocation_id: str) -> tuple[Outcome, list[str]]:
    """Cancel one invocation; returns the outcome and the calls the cancel goes on to."""
    inv = step.load(invocation_id)
    if inv is None:
        return NotFound(invocation_id), []
    if inv.status is Status.COMPLETED:
        return AlreadyCompleted(invocation_id), []
    if inv.status in (Status.SCHEDULED, Status.PENDING):
        _dequeue(step, inv)
        lifecycle.complete(step, inv, Result(failure=lifecycle.CANCELLED))
        return Done(invocation_id), []
    if lifecycle.has_signal(step, inv, CANCEL_SIGNAL):
        return Accepted(invocation_id), []
    step.emit(Log(inv.id, "cancel requested"))
    inv.retries_since_progress = 0  # its next failure (one it had before seeing the cancel) retries at once
    step.save(inv)
    lifecycle.notify(step, inv.id, Notification("signal", 0, CANCEL_SIGNAL, Result()))
    inv = step.load(invocation_id)
    if inv is None:
        violated(f"{invocation_id} vanished while it was cancelled")
    if inv.status in (Status.PAUSED, Status.BACKING_OFF):
        lifecycle.start(step, inv)  # run now so the handler sees the cancel and compensates
    return Accepted(invocation_id), list(inv.children)


def _dequeue(step: Step, inv: Invocation) -> None:
    if inv.status is Status.PENDING:
        if inv.target.key is None:
            violated(f"{inv.id}: inboxed without a key")
        step.txn.inbox_remove(inv.target.service, inv.target.key, inv.id)


def kill(step: Step, invocation_id: str) -> Outcome:
    """Kill: complete now as ``409 killed`` without running user code; kills its pending calls too (a
    worklist, not recursion: a chain of calls is as deep as users make it). A call whose partition another
    node leads is sent a ``KillInvocation`` (its partition inbox)."""
    outcome, pending = _kill_one(step, invocation_id)
    while pending:
        child = pending.pop()
        key = step.elsewhere(child)
        if key is not None:
            step.send(key, r.KillInvocation(child), invocation_id)
            continue
        pending.extend(reversed(_kill_one(step, child)[1]))
    return outcome


def _kill_one(step: Step, invocation_id: str) -> tuple[Outcome, list[str]]:
    inv = step.load(invocation_id)
    if inv is None:
        return NotFound(invocation_id), []
    if inv.status is Status.COMPLETED:
        return AlreadyCompleted(
            invocation_id
        ), []  # a completed invocation's children were settled when it completed
    _dequeue(step, inv)
    if inv.status in (Status.RUNNING,):
        step.emit(AbortAttempt(inv.id))
    children = list(inv.children)
    lifecycle.complete(step, inv, Result(failure=lifecycle.KILLED))
    step.emit(Log(inv.id, "killed"))
    return Done(invocation_id), children


def on_cancel(step: Step, rec: r.CancelInvocation) -> None:
    step.reply(rec.request_id, cancel(step, rec.invocation_id))


def on_kill(step: Step, rec: r.KillInvocation) -> None:
    step.reply(rec.request_id, kill(step, rec.invocation_id))


def on_resolve_signal(step: Step, rec: r.ResolveSignal) -> None:
    inv = step.load(rec.invocation_id)
    if inv is None:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
        return
    if not may_resolve(step, inv, rec.signal_idx, rec.live_awakeables):
        step.reply(rec.request_id, NotAllocated(inv.id))
        return
    lifecycle.notify(step, inv.id, Notification("signal", 0, rec.signal_idx, rec.result))
    step.reply(rec.request_id, Accepted(inv.id))


def may_resolve(step: Step, inv: Invocation, signal_idx: int, live: int) -> bool:
    """Whether a resolve of awakeable ``signal_idx`` of ``inv`` is taken: an index it allocated, or one
    already resolved (a resolver retrying after its answer was lost is answered as the first time)."""
    if awakeable_allocated(inv, signal_idx, live):
        return True
    return signal_idx >= FIRST_AWAKEABLE_SIGNAL and lifecycle.has_signal(step, inv, signal_idx)


def awakeable_allocated(inv: Invocation, signal_idx: int, live: int = 0) -> bool:
    """Whether ``signal_idx`` is an awakeable ``inv``'s handler allocated, so that it may be completed.

    Only awakeables (17 and up) are resolved this way (1 is CANCEL: a workflow's id is computable). One
    that has not started has created none. Two counts bound the index, and an index past both was never
    allocated: refused, so nothing can be planted ahead of the awakeable it would complete.

    * ``inv.awakeables``: the highest count its attempts reported on the records they send (commands, run
      results, suspensions), kept in its row. An id handed out durably (in a journaled command or run
      result) is covered by it: the record that journals it was sent after the id was allocated.
    * ``live``: what its running attempt had allocated when the resolving record entered the engine. The
      in-process SDK reports each allocation in memory before the id reaches user code, so an id a
      ``ctx.run`` action hands out while its run's records are still on their way is covered by it.

    An id past both was allocated by an attempt that is gone (a crash, an abort) before anything durable
    carried it: what that attempt did after its last journaled record is redone by the next one, which
    allocates the same index and hands the id out again, so refusing it in between is right (docs/
    architecture.md, "Awakeable ids"). Unknown counts (-1: a row from before the count, an SDK that does not
    report it, e.g. a remote one): any awakeable index is accepted.
    """
    if signal_idx < FIRST_AWAKEABLE_SIGNAL or inv.status in (Status.SCHEDULED, Status.PENDING):
        return False
    if inv.awakeables < 0 or live < 0:
        return True
    return signal_idx < FIRST_AWAKEABLE_SIGNAL + max(inv.awakeables, live)


def on_attach(step: Step, rec: r.Attach) -> None:
    inv = step.load(rec.invocation_id)
    if inv is None:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
    elif inv.status is Status.COMPLETED:
        if inv.result is None:
            violated(f"{inv.id}: completed without a result")
        step.reply(rec.request_id, Output(inv.id, inv.result, inv.expires_at_ms))
    elif rec.wait:
        step.emit(AwaitCompletion(rec.request_id, inv.id))
    else:
        step.reply(rec.request_id, NotReady(inv.id))


def on_pause(step: Step, rec: r.PauseInvocation) -> None:
    inv = step.load(rec.invocation_id)
    if inv is None:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
        return
    if inv.status is Status.COMPLETED:
        step.reply(rec.request_id, AlreadyCompleted(inv.id))
        return
    if inv.status in (Status.RUNNING, Status.BACKING_OFF, Status.SUSPENDED):
        if inv.status is Status.RUNNING:
            step.emit(AbortAttempt(inv.id))
            # The aborted attempt's records still on their way are fenced out: what it allocated up to the
            # pause is kept from the live count the pause was stamped with (an id it hands out after that
            # is handed out again by the attempt after the resume: see awakeable_allocated).
            if inv.awakeables >= 0:
                inv.awakeables = -1 if rec.live_awakeables < 0 else max(inv.awakeables, rec.live_awakeables)
        inv.status = Status.PAUSED
        inv.waiting_completions, inv.waiting_signals = [], []
        step.save(inv)
    step.reply(rec.request_id, Done(inv.id))


def on_resume(step: Step, rec: r.ResumeInvocation) -> None:
    inv = step.load(rec.invocation_id)
    if inv is None:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
        return
    if inv.status in (Status.SCHEDULED, Status.PENDING):
        step.reply(rec.request_id, NotStarted(inv.id))
        return
    if inv.status is Status.COMPLETED:
        step.reply(rec.request_id, AlreadyCompleted(inv.id))
        return
    if inv.status in (Status.PAUSED, Status.BACKING_OFF, Status.SUSPENDED):
        inv.retries_since_progress = 0
        lifecycle.start(step, inv)
    step.reply(rec.request_id, Done(inv.id))


def purge(step: Step, inv: Invocation) -> None:
    """Forget a completed invocation: status, journal, and for a workflow run its state and promises."""
    if inv.status is not Status.COMPLETED:
        violated(f"{inv.id}: purged while {inv.status}")
    step.delete(inv.id)  # the row and its journal
    if inv.handler_kind is HandlerKind.WORKFLOW:
        if inv.target.key is None:
            violated(f"{inv.id}: a workflow run without a key")
        step.txn.state_clear_all(inv.target.service, inv.target.key)
        step.txn.clear_promises(inv.target.service, inv.target.key)


def on_purge(step: Step, rec: r.PurgeInvocation) -> None:
    inv = step.load(rec.invocation_id)
    if inv is None:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
    elif inv.status is not Status.COMPLETED:
        step.reply(rec.request_id, NotCompleted(inv.id))
    else:
        purge(step, inv)
        step.reply(rec.request_id, Done(inv.id))


def on_purge_journal(step: Step, rec: r.PurgeJournal) -> None:
    """Drop a completed invocation's journal; its result stays (attach, output, idempotency)."""
    inv = step.load(rec.invocation_id)
    if inv is None:
        step.reply(rec.request_id, NotFound(rec.invocation_id))
    elif inv.status is not Status.COMPLETED:
        step.reply(rec.request_id, NotCompleted(inv.id))
    else:
        step.txn.delete_journal(inv.id)
        inv.journal_length = 0
        step.save(inv)
        step.reply(rec.request_id, Done(inv.id))


def on_clean_expired(step: Step, rec: r.CleanExpired) -> None:
    """Retention: drop journals past ``journal_expires_at_ms``, purge invocations past ``expires_at_ms``."""
    for invocation_id in step.txn.expired_invocations(step.now_ms, rec.limit):
        inv = step.load(invocation_id)
        if inv is None or inv.status is not Status.COMPLETED:
            continue
        if 0 < inv.expires_at_ms <= step.now_ms:
            purge(step, inv)
        elif inv.journal_length and 0 < inv.journal_expires_at_ms <= step.now_ms:
            step.txn.delete_journal(inv.id)
            inv.journal_length = 0
            step.save(inv)


def state_version(state: dict[str, bytes]) -> str:
    """Restate's version of an object's state (``StateMutationVersion``): its CLI computes it from the state
    it read and sends it with an edit, so that an edit made from a stale read is refused. SHA-256 over the
    entries sorted by name, each as its position (8 bytes, big-endian), 0x01, name, 0x02, value, 0x03;
    unpadded URL-safe base64."""
    digest = hashlib.sha256()
    for i, (name, value) in enumerate(sorted((n.encode(), v) for n, v in state.items())):
        digest.update(i.to_bytes(8, "big") + b"\x01" + name + b"\x02" + value + b"\x03")
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def on_set_state(step: Step, rec: r.SetStateFromAdmin) -> None:
    if rec.expected_version is not None:
        version = state_version(step.txn.state_all(rec.service, rec.key))
        if version != rec.expected_version:
            step.reply(rec.request_id, StateChanged(version))
            return
    step.txn.state_clear_all(rec.service, rec.key)
    for name, value in rec.new_state.items():
        step.txn.state_set(rec.service, rec.key, name, value)
    step.reply(rec.request_id, Done())
