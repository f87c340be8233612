"""The invariants a run must hold. Some are checked as the run goes (in ``world.py``/``processor.py``:
a completion recorded twice, a timer firing early, a durable ``ctx.run`` executing again, the engine
logging an error); the rest here, once the liveness phase has let everything finish.

Safety
  * every accepted invocation completed exactly once (commit-time ledger, outside the engine);
  * object state equals the model computed from the operations (every add applied exactly once);
  * per key, exclusive handlers ran in acceptance order (FIFO among those not deduplicated);
  * every durable ``ctx.run`` result is a value one of its executions produced, and what the handler saw
    is that durable value;
  * every client answer agrees with the model (each operation's :meth:`~workload.Op.check`).
Liveness (faults off, virtual time runs on)
  * every operation got its answer; no invocation is left unfinished; no lock held, no inbox entry, no
    timer, no queued record.
"""

from __future__ import annotations

import json
from collections import Counter

from unbroken.core.invocation import Status
from unbroken.core.journal import Notification, RunCommand
from unbroken.testing.sim.ops import Model, Op, _order
from unbroken.testing.sim.world import World


def quiescent(w: World) -> bool:
    """Nothing left to do: every invocation completed, no timer, nothing queued."""
    engine = w.engine
    if engine is None or any(p.processor.pending() for p in engine.partitions):  # type: ignore[attr-defined]
        return False
    if w.store.timer_rows:
        return False
    return all(inv.status is Status.COMPLETED for inv in w.store.all_invocations())


def check_liveness(w: World, ops: list[Op]) -> list[str]:
    errors = [
        f"{op.name} never got its answer (invocation {op.invocation_id or '?'})" for op in ops if not op.done
    ]
    for inv in w.store.all_invocations():
        if inv.status is not Status.COMPLETED:
            errors.append(
                f"stuck: {inv.id} {inv.target} is {inv.status.value} (attempts={inv.attempts}, "
                f"waiting completions={inv.waiting_completions} signals={inv.waiting_signals}, "
                f"last failure={inv.last_failure!r})"
            )
    for (service, key), holder in w.store.locks.items():
        errors.append(f"lock of {service}/{key} still held by {holder}")
    for (service, key), queue in w.store.inboxes.items():
        if queue:
            errors.append(f"inbox of {service}/{key} still holds {queue}")
    for timer in w.store.timer_rows.values():
        errors.append(f"timer never fired: {timer}")
    return errors


def check_safety(w: World, ops: list[Op], model: Model) -> list[str]:
    errors: list[str] = []
    led = w.ledger
    # exactly once: every invocation the engine accepted completed once per acceptance
    for inv_id, created in led.creations.items():
        finished = len(led.finished.get(inv_id, []))
        if finished != created:
            errors.append(f"{inv_id} was accepted {created} time(s) and completed {finished} time(s)")
    for inv in w.store.all_invocations():
        if inv.status is Status.COMPLETED and led.finished.get(inv.id, [None])[-1] != inv.result:
            errors.append(
                f"{inv.id}: stored result {inv.result} differs from the one committed at completion"
            )

    # the counters: each add applied exactly once, in acceptance order, state = model
    counters = set(model.adds_by_key) | set(model.maybe_adds_by_key)
    for key in sorted(counters | {k for (svc, k) in w.store.state if svc == "Counter"}):
        order = _order(w, key)
        raw = w.store.state.get(("Counter", key), {}).get("count")
        count = json.loads(raw) if raw else 0
        expected = model.adds_by_key.get(key, [])
        maybe = model.maybe_adds_by_key.get(key, [])
        applied = Counter(n for _, n in order)
        if count != sum(n for _, n in order):
            errors.append(
                f"Counter/{key}: count is {count}, its applied adds sum to {sum(n for _, n in order)}"
            )
        if not Counter(expected) <= applied <= Counter(expected) + Counter(maybe):
            errors.append(
                f"Counter/{key}: applied adds {sorted(applied.elements())} != model {sorted(expected)}"
                + (f" (+ at most {sorted(maybe)})" if maybe else "")
            )
        ids = [inv for inv, _ in order]
        dupes = [inv for inv, k in Counter(ids).items() if k > 1]
        if dupes:
            errors.append(f"Counter/{key}: adds applied more than once: {dupes}")
        accepted = led.accepted.get(("Counter", key), [])
        ran = [inv for inv in ids if inv in set(accepted)]
        if ran != [inv for inv in accepted if inv in set(ids)]:
            errors.append(
                f"Counter/{key}: exclusive handlers ran out of acceptance order:\n"
                f"    accepted {accepted}\n    ran      {ran}"
            )

    # ctx.run: the durable result is one that an execution produced
    for (inv_id, cid), result in led.durable_runs.items():
        journal = w.store.journal_of(inv_id)
        names = [e.name for e in journal if isinstance(e, RunCommand) and e.completion_id == cid]
        if not names:
            continue  # journal purged
        execs = led.run_execs.get((inv_id, names[0]), [])
        if names[0] == "publish":
            continue  # the publish action is not instrumented
        if result.failure is None:
            produced = {json.dumps(x.value).encode() for x in execs if x.value is not None}
            if result.value not in produced:
                errors.append(
                    f"run {names[0]!r} of {inv_id}: durable {result.value!r} was never produced {execs}"
                )
        elif result.failure.code == 409 and "the invocation being cancelled" in result.failure.message:
            # a step that failed (transiently) after the cancel is journaled as failed, not retried: it ran
            if not any(x.value is None for x in execs):
                errors.append(
                    f"run {names[0]!r} of {inv_id}: cancelled failure {result.failure} without a failed execution"
                )
        elif not any(x.value is not None for x in execs) and result.failure.code != 500:
            errors.append(
                f"run {names[0]!r} of {inv_id}: durable failure {result.failure} without an execution"
            )
    for inv_id, cid in led.durable_runs:
        journal = w.store.journal_of(inv_id)
        count = sum(
            1 for e in journal if isinstance(e, Notification) and e.kind == "run" and e.completion_id == cid
        )
        if count > 1:
            errors.append(f"run c{cid} of {inv_id} has {count} results in the journal")

    for op in ops:
        if op.done:
            try:
                errors += op.check(w, model)
            except AssertionError as exc:
                errors.append(f"{op.name}: {exc}")
    return errors
