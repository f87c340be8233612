"""Journal commands written by a running attempt: one function per command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.actions import Log
from unbroken.core.errors import PROTOCOL_VIOLATION, ProtocolViolation, violated
from unbroken.core.ids import InvalidId, child_invocation_id, parse_awakeable_id
from unbroken.core.invocation import Invocation, Sink, Status
from unbroken.core.schema import HandlerKind, ServiceKind, Target
from unbroken.core.state_machine import control, invoke, lifecycle
from unbroken.core.state_machine.step import Step
from unbroken.core.storage import Promise, TimerKind

PROMISE_ALREADY_COMPLETED = j.Failure(409, "promise was already completed")


def on_command(step: Step, rec: r.JournalCommand) -> None:
    inv = lifecycle.fenced(step, rec.invocation_id, rec.attempt)
    if inv is None:
        return
    check = _PROTOCOL_CHECKS.get(type(rec.command))
    if check is not None:
        check(inv, rec.command)  # before anything is written: a violation fails the attempt cleanly
    lifecycle.note_awakeables(inv, rec.awakeables)
    lifecycle.append(step, inv, rec.command)
    inv.retries_since_progress = 0
    inv.last_progress_at_ms = step.now_ms
    handler = _HANDLERS.get(type(rec.command))
    if handler is None:
        signal = _SIGNALS.get(type(rec.command))
        if signal is not None:  # they need the target's live awakeable count, on the record
            signal(step, inv, rec.command, rec.target_live_awakeables)
            return
        step.save(inv)  # commands whose result is already inside them (state reads)
        return
    handler(step, inv, rec.command)


def on_run_completion(step: Step, rec: r.ProposeRunCompletion) -> None:
    inv = lifecycle.fenced(step, rec.invocation_id, rec.attempt)
    if inv is None:
        return
    lifecycle.note_awakeables(inv, rec.awakeables)
    inv.retries_since_progress = 0
    inv.last_progress_at_ms = step.now_ms
    step.save(inv)  # written once at the end of the apply, with what notify appends to this same object
    lifecycle.notify(step, inv.id, j.Notification("run", rec.completion_id, 0, rec.result))


def _answer(step: Step, inv: Invocation, kind: str, completion_id: int, result: j.Result) -> None:
    step.save(inv)  # notify loads the same object (the step's identity map) and appends to it
    lifecycle.notify(step, inv.id, j.Notification(kind, completion_id, 0, result))


def _output(step: Step, inv: Invocation, cmd: j.OutputCommand) -> None:
    lifecycle.complete(step, inv, cmd.result)


def _check_state_write(inv: Invocation, cmd: object) -> None:
    if inv.target.key is None or inv.handler_kind is HandlerKind.SHARED:
        kind = "shared" if inv.handler_kind is HandlerKind.SHARED else "service"
        raise ProtocolViolation(
            PROTOCOL_VIOLATION,
            f"{type(cmd).__name__} from the {kind} handler {inv.target}: only exclusive object handlers and "
            "workflow runs may write state",
        )


def _check_state_read(inv: Invocation, cmd: object) -> None:
    if inv.target.key is None:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, f"{type(cmd).__name__} from the service handler {inv.target}: it has no state"
        )


def _check_promise(inv: Invocation, cmd: object) -> None:
    if inv.service_kind is not ServiceKind.WORKFLOW:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION,
            f"{type(cmd).__name__} from {inv.target}: durable promises belong to workflows",
        )


def _check_awakeable_id(inv: Invocation, cmd: j.CompleteAwakeableCommand) -> None:
    try:
        parse_awakeable_id(cmd.awakeable_id)
    except InvalidId as exc:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, f"CompleteAwakeableCommand from {inv.target}: {exc}"
        ) from None


def _state_key(inv: Invocation) -> str:
    if inv.target.key is None:
        violated(f"{inv.id}: a state command passed the protocol check without a key")
    return inv.target.key


def _get_lazy_state(step: Step, inv: Invocation, cmd: j.GetLazyStateCommand) -> None:
    """The value now, in journal order: after this invocation's own writes, journaled (so a replay gets it)."""
    value = step.txn.state_get(inv.target.service, _state_key(inv), cmd.key)
    _answer(step, inv, "get_lazy_state", cmd.completion_id, j.Result(value=value))


def _get_lazy_state_keys(step: Step, inv: Invocation, cmd: j.GetLazyStateKeysCommand) -> None:
    keys = step.txn.state_keys(inv.target.service, _state_key(inv))
    _answer(step, inv, "get_lazy_state_keys", cmd.completion_id, j.Result(value=j.encode_state_keys(keys)))


def _set_state(step: Step, inv: Invocation, cmd: j.SetStateCommand) -> None:
    step.txn.state_set(inv.target.service, _state_key(inv), cmd.key, cmd.value)
    step.save(inv)


def _clear_state(step: Step, inv: Invocation, cmd: j.ClearStateCommand) -> None:
    step.txn.state_clear(inv.target.service, _state_key(inv), cmd.key)
    step.save(inv)


def _clear_all_state(step: Step, inv: Invocation, cmd: j.ClearAllStateCommand) -> None:
    step.txn.state_clear_all(inv.target.service, _state_key(inv))
    step.save(inv)


def _sleep(step: Step, inv: Invocation, cmd: j.SleepCommand) -> None:
    step.save(inv)
    lifecycle.arm_timer(step, cmd.wake_up_time_ms, TimerKind.SLEEP, inv.id, cmd.completion_id)


def _new_child(
    step: Step, inv: Invocation, cmd: j.CallCommand | j.OneWayCallCommand, sinks: list[Sink], at_ms: int
) -> tuple[str | None, j.Failure | None]:
    svc = step.service(cmd.service)
    if svc is None:
        return None, j.Failure(404, f"service '{cmd.service}' not found")
    handler = svc.handlers.get(cmd.handler)
    if handler is None:
        return None, j.Failure(404, f"handler '{cmd.service}/{cmd.handler}' not found")
    if svc.kind.keyed and not cmd.key:
        return None, j.Failure(400, f"'{cmd.service}' is keyed: a key is required")
    target = Target(cmd.service, cmd.handler, cmd.key if svc.kind.keyed else None)
    if handler.kind is HandlerKind.WORKFLOW and target.key is None:
        violated(f"workflow target {target} without a key")
    child_id = child_invocation_id(
        inv.id, target, handler.kind, cmd.idempotency_key, cmd.invocation_id_completion_id
    )
    key = step.elsewhere(child_id)
    if key is not None:  # another node leads the callee's partition: the call goes to its inbox
        callee = r.InvokeCallee(
            child_id,
            target,
            cmd.parameter,
            tuple(cmd.headers),
            cmd.idempotency_key,
            at_ms,
            inv.id,
            sinks[0] if sinks else None,
        )
        step.send(key, callee, inv.id)
        return child_id, None
    failure = invoke.callee(
        step,
        svc,
        child_id,
        target,
        cmd.parameter,
        cmd.headers,
        idempotency_key=cmd.idempotency_key,
        execute_at_ms=at_ms,
        caller_id=inv.id,
        sinks=sinks,
    )
    return child_id, failure


def _call(step: Step, inv: Invocation, cmd: j.CallCommand) -> None:
    step.save(inv)
    # An already completed child answers at once: notify appends to ``inv`` itself (the identity map).
    child_id, failure = _new_child(step, inv, cmd, [Sink(inv.id, cmd.completion_id)], 0)
    if child_id is not None and failure is None:
        inv.children = [*inv.children, child_id]
    id_result = j.Result(value=child_id.encode()) if child_id else j.Result(failure=failure)
    lifecycle.notify(
        step, inv.id, j.Notification("call_id", cmd.invocation_id_completion_id, 0, id_result, child_id)
    )
    if failure is not None:
        lifecycle.notify(
            step, inv.id, j.Notification("call", cmd.completion_id, 0, j.Result(failure=failure))
        )


def _one_way_call(step: Step, inv: Invocation, cmd: j.OneWayCallCommand) -> None:
    step.save(inv)
    child_id, failure = _new_child(step, inv, cmd, [], cmd.invoke_time_ms)
    id_result = j.Result(value=child_id.encode()) if child_id else j.Result(failure=failure)
    lifecycle.notify(
        step, inv.id, j.Notification("call_id", cmd.invocation_id_completion_id, 0, id_result, child_id)
    )


def _promise_key(inv: Invocation) -> tuple[str, str]:
    if inv.target.key is None:
        violated(f"{inv.id}: a promise command passed the protocol check without a key")
    return inv.target.service, inv.target.key


def _get_promise(step: Step, inv: Invocation, cmd: j.GetPromiseCommand) -> None:
    service, key = _promise_key(inv)
    promise = step.txn.get_promise(service, key, cmd.key)
    if promise is not None and promise.result is not None:
        _answer(step, inv, "promise", cmd.completion_id, promise.result)
        return
    waiters = (*(promise.waiters if promise else ()), Sink(inv.id, cmd.completion_id))
    step.txn.put_promise(service, key, cmd.key, Promise(None, waiters))
    step.save(inv)


def _peek_promise(step: Step, inv: Invocation, cmd: j.PeekPromiseCommand) -> None:
    service, key = _promise_key(inv)
    promise = step.txn.get_promise(service, key, cmd.key)
    result = promise.result if promise is not None and promise.result is not None else j.Result()
    _answer(step, inv, "promise", cmd.completion_id, result)


def _complete_promise(step: Step, inv: Invocation, cmd: j.CompletePromiseCommand) -> None:
    service, key = _promise_key(inv)
    promise = step.txn.get_promise(service, key, cmd.key)
    if promise is not None and promise.result is not None:
        _answer(step, inv, "promise", cmd.completion_id, j.Result(failure=PROMISE_ALREADY_COMPLETED))
        return
    step.txn.put_promise(service, key, cmd.key, Promise(cmd.completion))
    _answer(step, inv, "promise", cmd.completion_id, j.Result())
    for waiter in promise.waiters if promise else ():  # the workflow's own handlers: its partition
        notification = j.Notification("promise", waiter.completion_id, 0, cmd.completion)
        lifecycle.notify_anywhere(step, waiter.invocation_id, notification, inv.id)


def _send_signal(step: Step, inv: Invocation, cmd: j.SendSignalCommand, live: int) -> None:
    step.save(inv)
    if cmd.signal_name:
        signal = j.Notification("signal", 0, 0, cmd.result, None, cmd.signal_name)
        lifecycle.notify_anywhere(step, cmd.target_invocation_id, signal, inv.id)
    elif cmd.idx == j.CANCEL_SIGNAL:
        key = step.elsewhere(cmd.target_invocation_id)
        if key is None:
            control.cancel(step, cmd.target_invocation_id)
        else:
            step.send(key, r.CancelInvocation(cmd.target_invocation_id), inv.id)
    else:
        _signal(step, inv, cmd.target_invocation_id, cmd.idx, cmd.result, live)


def _complete_awakeable(step: Step, inv: Invocation, cmd: j.CompleteAwakeableCommand, live: int) -> None:
    step.save(inv)
    target, idx = parse_awakeable_id(cmd.awakeable_id)  # checked valid before it was journaled
    _signal(step, inv, str(target), idx, cmd.result, live)


def _signal(step: Step, inv: Invocation, target_id: str, idx: int, result: j.Result, live: int) -> None:
    """An awakeable completed by a handler: only one its invocation allocated (as from the ingress); the
    command is fire-and-forget, so a refused one is logged, not answered (by the target's partition, as
    from the ingress, when another node leads it: there a refused one is dropped)."""
    key = step.elsewhere(target_id)
    if key is not None:
        step.send(key, r.ResolveSignal(target_id, idx, result, live_awakeables=live), inv.id)
        return
    target = step.load(target_id)
    if target is not None and not control.may_resolve(step, target, idx, live):
        step.emit(
            Log(
                inv.id,
                f"signal {idx} of {target_id} ignored: that invocation did not allocate it",
                warning=True,
            )
        )
        return
    lifecycle.notify(step, target_id, j.Notification("signal", 0, idx, result))


def _attach(step: Step, inv: Invocation, cmd: j.AttachInvocationCommand) -> None:
    step.save(inv)
    sink = Sink(inv.id, cmd.completion_id)
    key = step.elsewhere(cmd.invocation_id)
    if key is None:
        attach(step, cmd.invocation_id, sink)
    else:
        step.send(key, r.AddSink(cmd.invocation_id, sink), inv.id)


def attach(step: Step, invocation_id: str, sink: Sink) -> None:
    """``sink`` waits for the result of ``invocation_id`` (of this partition)."""
    target = step.load(invocation_id)
    if target is None:
        not_found = j.Result(failure=j.Failure(404, f"invocation '{invocation_id}' not found"))
        notification = j.Notification("attach", sink.completion_id, 0, not_found)
        lifecycle.notify_anywhere(step, sink.invocation_id, notification, invocation_id)
        return
    lifecycle.add_sink(step, target, sink)


def _get_output(step: Step, inv: Invocation, cmd: j.GetInvocationOutputCommand) -> None:
    key = step.elsewhere(cmd.invocation_id)
    if key is not None:
        step.save(inv)
        step.send(key, r.SendOutput(cmd.invocation_id, Sink(inv.id, cmd.completion_id)), inv.id)
        return
    _answer(step, inv, "output", cmd.completion_id, output_now(step, cmd.invocation_id))


def output_now(step: Step, invocation_id: str) -> j.Result:
    """What ``GetInvocationOutput`` answers for ``invocation_id`` (of this partition) now."""
    target = step.load(invocation_id)
    if target is None:
        return j.Result(failure=j.Failure(404, f"invocation '{invocation_id}' not found"))
    if target.status is Status.COMPLETED and target.result is not None:
        return target.result
    return j.Result()


_HANDLERS: dict[type, Callable[[Step, Invocation, Any], None]] = {
    j.OutputCommand: _output,
    j.GetLazyStateCommand: _get_lazy_state,
    j.GetLazyStateKeysCommand: _get_lazy_state_keys,
    j.SetStateCommand: _set_state,
    j.ClearStateCommand: _clear_state,
    j.ClearAllStateCommand: _clear_all_state,
    j.SleepCommand: _sleep,
    j.CallCommand: _call,
    j.OneWayCallCommand: _one_way_call,
    j.GetPromiseCommand: _get_promise,
    j.PeekPromiseCommand: _peek_promise,
    j.CompletePromiseCommand: _complete_promise,
    j.AttachInvocationCommand: _attach,
    j.GetInvocationOutputCommand: _get_output,
}

# Commands that complete another invocation's awakeable or signal: they take the target's live awakeable
# count too, stamped on their record (``records.JournalCommand.target_live_awakeables``).
_SIGNALS: dict[type, Callable[[Step, Invocation, Any, int], None]] = {
    j.SendSignalCommand: _send_signal,
    j.CompleteAwakeableCommand: _complete_awakeable,
}

# Checked before a command is journaled: what the service protocol forbids this invocation to send.
_PROTOCOL_CHECKS: dict[type, Callable[[Invocation, Any], None]] = {
    j.GetLazyStateCommand: _check_state_read,
    j.GetLazyStateKeysCommand: _check_state_read,
    j.SetStateCommand: _check_state_write,
    j.ClearStateCommand: _check_state_write,
    j.ClearAllStateCommand: _check_state_write,
    j.GetPromiseCommand: _check_promise,
    j.PeekPromiseCommand: _check_promise,
    j.CompletePromiseCommand: _check_promise,
    j.CompleteAwakeableCommand: _check_awakeable_id,
}
