"""Lifecycle of an invocation: admit, start, notify, suspend, fail and retry, complete."""

from __future__ import annotations

import msgspec

from unbroken.core import records as r
from unbroken.core.actions import ArmTimer, Completed, Deliver, Log, StartAttempt
from unbroken.core.errors import PROTOCOL_VIOLATION, ProtocolViolation, violated
from unbroken.core.invocation import Invocation, Sink, Status
from unbroken.core.journal import CANCEL_SIGNAL, Entry, Failure, Notification, Result
from unbroken.core.schema import HandlerKind, OnMaxAttempts
from unbroken.core.state_machine.step import Step
from unbroken.core.storage import TimerKind

KILLED = Failure(409, "killed")
CANCELLED = Failure(409, "cancelled")


def arm_timer(step: Step, fire_at_ms: int, kind: TimerKind, invocation_id: str, completion_id: int) -> None:
    timer_id = step.txn.add_timer(fire_at_ms, kind, invocation_id, completion_id)
    step.emit(ArmTimer(timer_id, fire_at_ms, invocation_id))


def _takes_lock(inv: Invocation) -> bool:
    return inv.handler_kind is HandlerKind.EXCLUSIVE or inv.handler_kind is HandlerKind.WORKFLOW


def admit(step: Step, inv: Invocation, journal: tuple[Entry, ...] | None = None) -> None:
    """A due invocation: take its key's lock and start, or queue behind the current holder.

    ``journal``: the invocation's whole journal when the caller has it at hand (a new invocation's Input).
    """
    if _takes_lock(inv):
        key = inv.target.key
        if key is None:
            violated(f"{inv.id}: a lock-taking handler without a key")
        holder = step.txn.lock_holder(inv.target.service, key)
        if holder is not None:
            if holder == inv.id:
                violated(f"{inv.id} already holds its lock")
            inv.status = Status.PENDING
            step.save(inv)
            step.txn.inbox_push(inv.target.service, key, inv.id, step.now_ms)
            return
        step.txn.set_lock_holder(inv.target.service, key, inv.id)
    start(step, inv, journal)


def start(step: Step, inv: Invocation, journal: tuple[Entry, ...] | None = None) -> None:
    """Begin a new attempt: the runtime replays the journal and continues the handler."""
    inv.status = Status.RUNNING
    inv.attempts += 1
    if not inv.running_at_ms:
        inv.running_at_ms = step.now_ms
    inv.waiting_completions = []
    inv.waiting_signals = []
    inv.next_retry_at_ms = 0
    svc = step.service(inv.target.service)
    if inv.attempts == 1 and svc is not None:
        inv.deployment_id = svc.deployment_id  # pinned: later attempts replay on the same deployment
    step.save(inv)
    if journal is None:
        journal = tuple(step.txn.journal(inv.id))
    if len(journal) != inv.journal_length:
        violated(f"{inv.id}: journal has {len(journal)} entries, the invocation says {inv.journal_length}")
    lazy = svc is not None and svc.lazy_state_for(inv.target.handler)
    state: dict[str, bytes] | None = None
    if inv.target.key is not None:  # lazy: none now, the handler reads what it needs through commands
        state = {} if lazy else step.txn.state_all(inv.target.service, inv.target.key)
    step.emit(StartAttempt(msgspec.structs.replace(inv), journal, state, lazy))


def append(step: Step, inv: Invocation, entry: object) -> int:
    index = inv.journal_length
    step.txn.append_journal(inv.id, index, entry, step.now_ms)  # type: ignore[arg-type]
    inv.journal_length = index + 1
    return index


def notify(step: Step, invocation_id: str, notification: Notification) -> None:
    """Store a notification in an invocation's journal and wake the invocation if it waits on it."""
    inv = step.load(invocation_id)
    if inv is None or inv.status is Status.COMPLETED:
        return
    signalled = notification.signal_idx or notification.signal_name
    if signalled and has_signal(step, inv, notification.signal_idx, notification.signal_name):
        return  # a signal (awakeable, cancel, named) completes once; repeats are ignored
    append(step, inv, notification)
    if inv.status is Status.RUNNING:
        step.save(inv)
        step.emit(Deliver(inv.id, inv.attempts, notification))
    elif inv.status is Status.SUSPENDED and _wakes(inv, notification):
        start(step, inv)
    else:
        step.save(inv)


def notify_anywhere(step: Step, invocation_id: str, notification: Notification, source_id: str) -> None:
    """``notify``, or, when another node leads that invocation's partition, send it there (``r.Notify``) on
    behalf of ``source_id``."""
    key = step.elsewhere(invocation_id)
    if key is None:
        notify(step, invocation_id, notification)
    else:
        step.send(key, r.Notify(invocation_id, notification), source_id)


def _wakes(inv: Invocation, n: Notification) -> bool:
    if n.completion_id:
        return n.completion_id in inv.waiting_completions
    if n.signal_name:
        return (
            True  # suspensions do not list the named signals awaited: the replay suspends again if unwanted
        )
    return n.signal_idx in inv.waiting_signals


def has_signal(step: Step, inv: Invocation, signal_idx: int, signal_name: str = "") -> bool:
    """Whether this signal was received: numbered signals through the store's index (one lookup, never a
    journal read); named signals, rare, by a scan of the journal."""
    if not signal_name:
        return step.txn.has_signal(inv.id, signal_idx)
    for entry in step.txn.journal(inv.id):
        if isinstance(entry, Notification) and entry.signal_name == signal_name:
            return True
    return False


def complete(step: Step, inv: Invocation, result: Result) -> None:
    """Finish an invocation: store the result, release the lock, answer callers and waiters."""
    svc = step.service(inv.target.service)
    inv.status = Status.COMPLETED
    inv.result = result
    inv.completed_at_ms = step.now_ms
    inv.waiting_completions = []
    inv.waiting_signals = []
    inv.next_retry_at_ms = 0
    if svc is not None:
        retention = (
            svc.workflow_completion_retention_ms
            if inv.handler_kind is HandlerKind.WORKFLOW
            else svc.idempotency_retention_ms
        )
        inv.expires_at_ms = step.now_ms + retention
        inv.journal_expires_at_ms = step.now_ms + min(svc.journal_retention_ms, retention)
        if svc.journal_retention_ms == 0:  # no journal retention: the result stays, the journal goes now
            step.txn.delete_journal(inv.id)
            inv.journal_length = 0
    step.save(inv)
    if _takes_lock(inv):
        release_lock(step, inv)
    for sink in inv.sinks:
        notify_anywhere(step, sink.invocation_id, Notification("call", sink.completion_id, 0, result), inv.id)
    step.emit(Completed(inv.id, result, inv.expires_at_ms))
    outcome = "ok" if result.failure is None else f"failed [{result.failure.code}] {result.failure.message}"
    step.emit(Log(inv.id, f"completed: {outcome}"))


def release_lock(step: Step, inv: Invocation) -> None:
    key = inv.target.key
    if key is None:
        violated(f"{inv.id}: releasing the lock of an invocation without a key")
    if step.txn.lock_holder(inv.target.service, key) != inv.id:
        return
    next_id = step.txn.inbox_pop(inv.target.service, key)
    step.txn.set_lock_holder(inv.target.service, key, next_id)
    if next_id is not None:
        nxt = step.load(next_id)
        if nxt is None or nxt.status is not Status.PENDING:
            violated(f"inbox held {next_id} in a bad state")
        start(step, nxt)


def add_sink(step: Step, inv: Invocation, sink: Sink) -> None:
    """Someone waits for ``inv``'s result: answer now if done, else remember them."""
    if inv.status is Status.COMPLETED:
        if inv.result is None:
            violated(f"{inv.id}: completed without a result")
        notification = Notification("call", sink.completion_id, 0, inv.result)
        notify_anywhere(step, sink.invocation_id, notification, inv.id)
        return
    inv.sinks = [*inv.sinks, sink]
    step.save(inv)


def note_awakeables(inv: Invocation, reported: int | None) -> None:
    """Keep the highest awakeable count an attempt reported (replays allocate the same indexes again, so
    the count only grows; an unknown one, -1, becomes known); a record that does not report it (a remote
    SDK) makes it unknown (-1: unchecked)."""
    if reported is None:
        inv.awakeables = -1
    elif reported > inv.awakeables:
        inv.awakeables = reported


def fenced(step: Step, invocation_id: str, attempt: int) -> Invocation | None:
    """The invocation if ``attempt`` is its current running attempt, else None (a zombie's record)."""
    inv = step.load(invocation_id)
    if inv is None or inv.status is not Status.RUNNING or inv.attempts != attempt:
        return None
    return inv


def on_suspended(step: Step, rec: r.AttemptSuspended) -> None:
    inv = fenced(step, rec.invocation_id, rec.attempt)
    if inv is None:
        return
    if not (rec.waiting_completions or rec.waiting_signals):
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, "a suspension must wait on at least one completion or signal"
        )
    note_awakeables(inv, rec.awakeables)
    inv.waiting_completions = list(rec.waiting_completions)
    inv.waiting_signals = list(rec.waiting_signals)
    for entry in step.txn.journal(inv.id):
        if isinstance(entry, Notification) and _wakes(inv, entry):
            start(step, inv)  # what it waits on arrived while it was suspending
            return
    inv.status = Status.SUSPENDED
    step.save(inv)
    step.emit(Log(inv.id, "suspended"))


def on_failed(step: Step, rec: r.AttemptFailed) -> None:
    inv = fenced(step, rec.invocation_id, rec.attempt)
    if inv is None:
        return
    svc = step.service(inv.target.service)
    inv.retry_count += 1
    inv.retries_since_progress += 1
    inv.last_failure = rec.message
    inv.last_failure_code = rec.code
    error = _first_line(rec.message)
    policy = svc.retry_policy_for(inv.target.handler) if svc is not None else None
    if rec.pause:
        _pause(step, inv, f"attempt {inv.attempts} failed and will not be retried, paused: {error}")
        return
    if policy is not None and inv.retries_since_progress >= policy.max_attempts:
        if policy.on_max_attempts is OnMaxAttempts.KILL:
            step.emit(
                Log(
                    inv.id,
                    f"attempt {inv.attempts} failed, killed after {inv.retry_count} attempts: {error}",
                    warning=True,
                )
            )
            complete(step, inv, Result(failure=Failure(rec.code or 500, rec.message)))
            return
        _pause(step, inv, f"attempt {inv.attempts} failed, paused after {inv.retry_count} attempts: {error}")
        return
    delay = rec.next_retry_delay_ms
    if delay is None:
        delay = policy.delay_ms(inv.retries_since_progress) if policy is not None else 1000
    if inv.retries_since_progress == 1 and has_signal(step, inv, CANCEL_SIGNAL):
        # The first failure since the cancel (cancel resets the count) or since progress: an attempt that
        # failed before it saw the cancel must not wait out a backoff. Later ones back off as usual.
        delay = 0
    inv.status = Status.BACKING_OFF
    inv.next_retry_at_ms = step.now_ms + delay
    step.save(inv)
    arm_timer(step, inv.next_retry_at_ms, TimerKind.RETRY, inv.id, 0)
    step.emit(
        Log(
            inv.id,
            f"attempt {inv.attempts} failed, retry {inv.retry_count} in {delay} ms: {error}",
            warning=True,
        )
    )


def _pause(step: Step, inv: Invocation, message: str) -> None:
    inv.status = Status.PAUSED
    step.save(inv)
    step.emit(Log(inv.id, f"{message}; resume it with `unbroken invocations resume {inv.id}`", warning=True))


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else text


def on_timer(step: Step, rec: r.TimerFired) -> None:
    timer = step.txn.get_timer(rec.timer_id)
    if timer is None:
        return
    step.txn.delete_timer(rec.timer_id)
    if timer.kind is TimerKind.SLEEP:
        notify(step, timer.invocation_id, Notification("sleep", timer.completion_id, 0, Result()))
        return
    inv = step.load(timer.invocation_id)
    if inv is None:
        return
    if timer.kind is TimerKind.INVOKE and inv.status is Status.SCHEDULED:
        inv.execute_at_ms = 0
        admit(step, inv)
    elif timer.kind is TimerKind.RETRY and inv.status is Status.BACKING_OFF:
        start(step, inv)


def on_recover(step: Step, rec: r.Recover) -> None:
    inv = step.load(rec.invocation_id)
    if inv is not None and inv.status is Status.RUNNING:
        start(step, inv)
