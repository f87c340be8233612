"""Records from other partitions' batches (``Transaction.send``, taken by ``take_inbox``): the effects of an
invocation on one whose partition another node leads, applied here by this partition's leader as the same
code applies them when one node leads both (docs/architecture.md, "Cross-partition work").

Cancel, kill and an awakeable resolved by a handler arrive as the ingress's own records
(``CancelInvocation``, ``KillInvocation``, ``ResolveSignal`` with nobody waiting for the reply).
"""

from __future__ import annotations

from unbroken.core import records as r
from unbroken.core.journal import Failure, Notification, Result
from unbroken.core.state_machine import commands, invoke, lifecycle
from unbroken.core.state_machine.step import Step


def on_invoke_callee(step: Step, rec: r.InvokeCallee) -> None:
    target = rec.target
    svc = step.service(target.service)
    sinks = [rec.sink] if rec.sink is not None else []
    if svc is None or target.handler not in svc.handlers:  # the caller's node knew it: a deployment changed
        failure: Failure | None = Failure(404, f"handler '{target.service}/{target.handler}' not found")
    else:
        failure = invoke.callee(
            step,
            svc,
            rec.invocation_id,
            target,
            rec.argument,
            rec.headers,
            idempotency_key=rec.idempotency_key,
            execute_at_ms=rec.execute_at_ms,
            caller_id=rec.invoked_by_id,
            sinks=sinks,
        )
    if failure is not None and rec.sink is not None:
        answer = Notification("call", rec.sink.completion_id, 0, Result(failure=failure))
        lifecycle.notify_anywhere(step, rec.sink.invocation_id, answer, rec.invocation_id)


def on_notify(step: Step, rec: r.Notify) -> None:
    lifecycle.notify(step, rec.invocation_id, rec.notification)


def on_add_sink(step: Step, rec: r.AddSink) -> None:
    commands.attach(step, rec.invocation_id, rec.sink)


def on_send_output(step: Step, rec: r.SendOutput) -> None:
    answer = Notification("output", rec.sink.completion_id, 0, commands.output_now(step, rec.invocation_id))
    lifecycle.notify_anywhere(step, rec.sink.invocation_id, answer, rec.invocation_id)
