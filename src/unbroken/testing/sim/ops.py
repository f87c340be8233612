"""The operations a seed plays (one ``Op`` each: run it through a client, model it, check its answers) and
the model computed outside the engine that :meth:`Op.check` compares them with."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from unbroken.core import actions as a
from unbroken.core.ids import InvocationId, awakeable_id, workflow_invocation_id
from unbroken.core.journal import FIRST_AWAKEABLE_SIGNAL, SleepCommand
from unbroken.core.schema import Target
from unbroken.testing.sim.app import (
    awakeable_value,
)
from unbroken.testing.sim.client import Client, failure_of, idempotent_id, value_of
from unbroken.testing.sim.world import World


@dataclass
class Op:
    idx: int
    start_s: float
    answers: list[a.Outcome] = field(default_factory=list)
    done: bool = False
    invocation_id: str = ""

    @property
    def name(self) -> str:
        return f"op{self.idx}:{type(self).__name__}"

    async def run(self, w: World, c: Client) -> None:
        raise NotImplementedError

    def check(self, w: World, m: Model) -> list[str]:
        return []


@dataclass
class Model:
    """What the final state must be, computed from the operations alone."""

    adds_by_key: dict[str, list[int]] = field(default_factory=dict)  # every n added to each key, exactly once
    maybe_adds_by_key: dict[str, list[int]] = field(default_factory=dict)  # at most once (a killed sender)


@dataclass
class CounterAdd(Op):
    key: str = ""
    n: int = 1
    audit: bool = False
    nap_ms: int = 0
    send: bool = False
    delay_ms: int = 0

    async def run(self, w: World, c: Client) -> None:
        target = Target("Counter", "add", self.key)
        idem = f"add-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        arg = {"n": self.n, "audit": self.audit, "nap": self.nap_ms}
        kind = "accepted" if self.send else "result"
        self.answers.append(await c.invoke(target, arg, idem=idem, reply=kind, delay_ms=self.delay_ms))

    def model(self, m: Model) -> None:
        m.adds_by_key.setdefault(self.key, []).append(self.n)

    def check(self, w: World, m: Model) -> list[str]:
        reply = self.answers[-1]
        if self.send:
            return (
                []
                if isinstance(reply, a.Accepted | a.PreviouslyAccepted)
                else [f"{self.name}: send answered {reply}"]
            )
        order = _order(w, self.key)
        mine = [i for i, (inv, _) in enumerate(order) if inv == self.invocation_id]
        if len(mine) != 1:
            return [f"{self.name}: its add appears {len(mine)} times in the order of {self.key}"]
        expected = sum(n for _, n in order[: mine[0] + 1])
        got = value_of(reply)
        return (
            []
            if got == expected
            else [f"{self.name}: answered {got}, but its add left the count at {expected}"]
        )


@dataclass
class Transfer(Op):
    source: str = ""
    to: str = ""
    n: int = 1

    async def run(self, w: World, c: Client) -> None:
        target = Target("Counter", "transfer", self.source)
        idem = f"transfer-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        self.answers.append(await c.invoke(target, {"to": self.to, "n": self.n}, idem=idem, reply="result"))

    def model(self, m: Model) -> None:
        m.adds_by_key.setdefault(self.source, []).append(-self.n)
        m.adds_by_key.setdefault(self.to, []).append(self.n)

    def check(self, w: World, m: Model) -> list[str]:
        order = _order(w, self.source)
        mine = [i for i, (inv, _) in enumerate(order) if inv == self.invocation_id]
        if len(mine) != 1:
            return [f"{self.name}: its transfer appears {len(mine)} times in the order of {self.source}"]
        expected = sum(n for _, n in order[: mine[0] + 1])
        got = value_of(self.answers[-1])
        return (
            []
            if got == expected
            else [f"{self.name}: answered {got}, but it left {self.source} at {expected}"]
        )


@dataclass
class CounterGet(Op):
    key: str = ""

    async def run(self, w: World, c: Client) -> None:
        target = Target("Counter", "get", self.key)
        self.invocation_id = idempotent_id(target, f"get-{self.idx}")
        self.answers.append(await c.invoke(target, None, idem=f"get-{self.idx}", reply="result"))

    def check(self, w: World, m: Model) -> list[str]:
        got = value_of(self.answers[-1])
        sums, total = {0}, 0
        for _, n in _order(w, self.key):
            total += n
            sums.add(total)
        return (
            []
            if got in sums
            else [f"{self.name}: read {got}, not a count {self.key} ever had ({sorted(sums)})"]
        )


@dataclass
class Fan(Op):
    n: int = 2
    adds: list[tuple[str, int, int]] = field(default_factory=list)
    cancel_after_s: float | None = None
    kill: bool = False

    async def run(self, w: World, c: Client) -> None:
        target = Target("Fanout", "fan")
        idem = f"fan-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        call = asyncio.ensure_future(
            c.invoke(target, {"n": self.n, "adds": self.adds}, idem=idem, reply="result")
        )
        if self.cancel_after_s is not None:
            await asyncio.sleep(self.cancel_after_s)
            # both propagate: cancel to the calls in flight, kill to every call it made
            await (c.kill(self.invocation_id) if self.kill else c.cancel(self.invocation_id))
        self.answers.append(await call)

    def model(self, m: Model) -> None:
        # a kill may abort the fan before its sends were journaled: then they never happen
        adds = m.maybe_adds_by_key if self.kill and self.cancel_after_s is not None else m.adds_by_key
        for key, n, _ in self.adds:
            adds.setdefault(key, []).append(n)

    def check(self, w: World, m: Model) -> list[str]:
        failure = failure_of(self.answers[-1])
        if failure is not None:
            ok = self.cancel_after_s is not None and failure.code == 409
            return [] if ok else [f"{self.name}: failed with {failure}"]
        got, expected = value_of(self.answers[-1]), sum(i * i for i in range(self.n))
        return [] if got == expected else [f"{self.name}: gathered {got}, expected {expected}"]


@dataclass
class OrderFlow(Op):
    key: str = ""
    ok: bool = True
    approve_after_s: float = 0.0
    resubmit: bool = False

    async def run(self, w: World, c: Client) -> None:
        main = Target("Order", "run", self.key)
        self.invocation_id = workflow_invocation_id("Order", self.key)
        sent = await c.invoke(main, {"item": self.key}, idem=None, reply="accepted")
        self.answers.append(sent)
        if self.resubmit:  # a second run of the same workflow key is refused, never run twice
            again = await c.invoke(main, {"item": "again"}, idem=None, reply="result")
            if not isinstance(again, a.WorkflowAlreadyInvoked):
                w.violation(f"{self.name}: a second submission of workflow {self.key} was answered {again}")
        await asyncio.sleep(self.approve_after_s)
        approve_target = Target("Order", "approve", self.key)
        self.answers.append(
            await c.invoke(approve_target, self.ok, idem=f"approve-{self.idx}", reply="result")
        )
        self.answers.append(await c.attach(self.invocation_id))

    def check(self, w: World, m: Model) -> list[str]:
        sent, approved, attached = self.answers
        errors = []
        if not isinstance(sent, a.Accepted | a.PreviouslyAccepted):
            errors.append(f"{self.name}: submit answered {sent}")
        if failure_of(approved) is not None:
            errors.append(f"{self.name}: approve failed: {failure_of(approved)}")
        out = value_of(attached)
        if out["ok"] != self.ok:
            errors.append(f"{self.name}: approved={self.ok} but the workflow returned {out}")
        errors += _runs_match(
            w, self.name, self.invocation_id, {"reserve": out["reserved"], "charge": out.get("charged")}
        )
        return errors


@dataclass
class Saga(Op):
    steps: int = 2
    fail: bool = False
    nap_ms: int = 0
    cancel_after_s: float | None = None

    async def run(self, w: World, c: Client) -> None:
        target = Target("Trip", "book")
        idem = f"trip-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        call = asyncio.ensure_future(
            c.invoke(
                target,
                {"steps": self.steps, "fail": self.fail, "nap": self.nap_ms},
                idem=idem,
                reply="result",
            )
        )
        if self.cancel_after_s is not None:
            await asyncio.sleep(self.cancel_after_s)
            await c.cancel(self.invocation_id)
        self.answers.append(await call)

    def check(self, w: World, m: Model) -> list[str]:
        reply = self.answers[-1]
        failure = failure_of(reply)
        if failure is not None:  # cancelled before it started
            ok = self.cancel_after_s is not None and failure.code == 409
            return [] if ok else [f"{self.name}: failed with {failure}"]
        out = value_of(reply)
        cancelled = self.cancel_after_s is not None
        if out["ok"]:
            if self.fail:
                return [f"{self.name}: the last step fails, yet the trip succeeded: {out}"]
            if out["booked"] != list(range(self.steps)):
                return [f"{self.name}: succeeded with {out['booked']} of {self.steps} steps"]
            return []
        if out["undone"] != list(reversed(out["booked"])):
            return [f"{self.name}: compensated {out['undone']} for booked {out['booked']}"]
        if out["code"] == 409 and cancelled:
            return []
        if not self.fail or out["code"] != 500 or len(out["booked"]) != self.steps - 1:
            return [
                f"{self.name}: unexpected failure outcome {out} (fail={self.fail}, cancelled={cancelled})"
            ]
        return []


@dataclass
class Nap(Op):
    ms: int = 100
    cancel_after_s: float | None = None
    kill: bool = False

    async def run(self, w: World, c: Client) -> None:
        target = Target("Sleeper", "nap")
        idem = f"nap-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        sent_at = w.now_ms()
        call = asyncio.ensure_future(c.invoke(target, self.ms, idem=idem, reply="result"))
        if self.cancel_after_s is not None:
            await asyncio.sleep(self.cancel_after_s)
            await (c.kill(self.invocation_id) if self.kill else c.cancel(self.invocation_id))
        self.answers.append(await call)
        if failure_of(self.answers[-1]) is None and w.now_ms() < sent_at + self.ms:
            w.violation(f"{self.name}: a {self.ms} ms nap answered after {w.now_ms() - sent_at} ms")

    def check(self, w: World, m: Model) -> list[str]:
        reply = self.answers[-1]
        failure = failure_of(reply)
        if failure is not None:
            ok = self.cancel_after_s is not None and failure.code == 409
            return [] if ok else [f"{self.name}: failed with {failure}"]
        got = value_of(reply)
        if got != self.ms:
            return [f"{self.name}: answered {got}"]
        issued = w.ledger.sleeps.get(self.invocation_id, [])
        wakes = [
            e.wake_up_time_ms for e in w.store.journal_of(self.invocation_id) if isinstance(e, SleepCommand)
        ]
        if issued and wakes and wakes[0] < min(issued) + self.ms:
            return [
                f"{self.name}: a {self.ms} ms sleep issued at {min(issued)} was set to wake at {wakes[0]}"
            ]
        return []


@dataclass
class Await(Op):
    """An outside system resolves the awakeable a ``Waiter.wait`` (or ``wait_early``) publishes, each time
    it is published.

    The id is handed out by a ``ctx.run`` action: until the run's result is journaled, a crash or an abort
    can lose every record saying the awakeable was allocated, and a resolve in between is refused (404,
    or ignored when it comes from a handler). The next attempt runs the step again and publishes the same
    id again: the outside system acts on it again, as it would on any message it receives. A refusal that
    is never followed by a new publication would leave the invocation waiting for ever: a violation.
    Before resolving, it forges the next index (18: ``Waiter.wait`` never allocates it), which must be
    refused whatever the invocation is doing (the resolve path; a handler's refusal is only logged).
    """

    resolve_after_s: float = 0.0
    resolved_with: str = ""
    via_handler: bool = False
    refused_at: list[int] = field(default_factory=list)  # publications seen when a resolve was refused
    forged: list[a.Outcome] = field(default_factory=list)  # answers to the resolves of index 18

    async def run(self, w: World, c: Client) -> None:
        target = Target(
            "Waiter", "wait_early" if self.idx % 2 else "wait"
        )  # (no draw: seeds stay as they were)
        idem = f"wait-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        call = asyncio.ensure_future(c.invoke(target, f"t{self.idx}", idem=idem, reply="result"))
        seen = 0
        while not call.done():
            published = w.ledger.published.get(self.invocation_id, 0)
            if published == seen:
                await asyncio.sleep(0.25)  # the outside system polls for work
                continue
            seen = published
            aid = w.ledger.mailbox[self.invocation_id]
            await asyncio.sleep(self.resolve_after_s)
            self.resolved_with = awakeable_value(aid)
            if not self.via_handler:
                forged = awakeable_id(InvocationId.parse(self.invocation_id), FIRST_AWAKEABLE_SIGNAL + 1)
                self.forged.append(await c.resolve(forged, "forged"))
            answer = await self._resolve(c, aid, seen)
            self.answers.append(answer)
            if isinstance(answer, a.NotAllocated):
                self.refused_at.append(seen)
        self.answers.append(await call)

    async def _resolve(self, c: Client, aid: str, publication: int) -> a.Outcome:
        if not self.via_handler:
            return await c.resolve(aid, self.resolved_with)
        wake_target = Target("Waiter", "wake")
        arg = {"aid": aid, "value": self.resolved_with}
        idem = f"wake-{self.idx}" if publication == 1 else f"wake-{self.idx}-{publication}"
        return await c.invoke(wake_target, arg, idem=idem, reply="result")

    def check(self, w: World, m: Model) -> list[str]:
        if not self.resolved_with:
            return [f"{self.name}: completed without ever publishing its awakeable: {self.answers}"]
        if any(not isinstance(answer, a.NotAllocated) for answer in self.forged):
            return [f"{self.name}: a never allocated awakeable index was not refused: {self.forged}"]
        published = w.ledger.published.get(self.invocation_id, 0)
        never_again = [n for n in self.refused_at if published <= n]
        if never_again:
            return [
                f"{self.name}: its awakeable was refused (404) and never handed out again: {self.answers}"
            ]
        got = value_of(self.answers[-1])
        return (
            []
            if got == self.resolved_with
            else [f"{self.name}: got {got!r}, resolved with {self.resolved_with!r}"]
        )


@dataclass
class PauseResume(Op):
    """An operator pauses a running invocation (its attempt is aborted) and later resumes it."""

    target: Op | None = None
    pause_after_s: float = 0.0
    resume_after_s: float = 0.0
    cycles: int = 1

    async def run(self, w: World, c: Client) -> None:
        assert self.target is not None
        await asyncio.sleep(self.pause_after_s)
        while not self.target.invocation_id or self.target.invocation_id not in w.ledger.created:
            await asyncio.sleep(0.1)  # the operator acts on an invocation it can see (committed)
        self.invocation_id = self.target.invocation_id
        for cycle in range(self.cycles):
            if cycle:
                await asyncio.sleep(self.pause_after_s)
            self.answers.append(await c.pause(self.invocation_id))
            await asyncio.sleep(self.resume_after_s)
            self.answers.append(await c.resume(self.invocation_id))

    def check(self, w: World, m: Model) -> list[str]:
        bad = [x for x in self.answers if not isinstance(x, a.Done | a.AlreadyCompleted | a.NotStarted)]
        return [f"{self.name}: answered {bad}"] if bad else []


@dataclass
class Observe(Op):
    """Another client attaches to an invocation it did not start: it must get the very same answer."""

    target: Op | None = None
    after_s: float = 0.0

    async def run(self, w: World, c: Client) -> None:
        assert self.target is not None
        await asyncio.sleep(self.after_s)
        while not self.target.invocation_id or self.target.invocation_id not in w.ledger.created:
            await asyncio.sleep(0.1)
        self.invocation_id = self.target.invocation_id
        self.answers.append(await c.attach(self.invocation_id))

    def check(self, w: World, m: Model) -> list[str]:
        assert self.target is not None
        mine, theirs = self.answers[-1], self.target.answers[-1] if self.target.answers else None
        if not isinstance(mine, a.Output) or not isinstance(theirs, a.Output):
            return [f"{self.name}: attach answered {mine}, the caller got {theirs}"]
        if mine.result != theirs.result:
            return [f"{self.name}: attach got {mine.result}, the caller got {theirs.result}"]
        return []


def _order(w: World, key: str) -> list[tuple[str, int]]:
    raw = w.store.state.get(("Counter", key), {}).get("order")
    return [(inv, n) for inv, n in json.loads(raw)] if raw else []


def _runs_match(w: World, who: str, invocation_id: str, seen: dict[str, Any]) -> list[str]:
    """What the handler returned from each ``ctx.run`` is the journaled (durable) result."""
    from unbroken.core.journal import Notification, RunCommand

    journal = w.store.journal_of(invocation_id)
    names = {e.completion_id: e.name for e in journal if isinstance(e, RunCommand)}
    errors = []
    for e in journal:
        if isinstance(e, Notification) and e.kind == "run" and names.get(e.completion_id) in seen:
            name = names[e.completion_id]
            durable = None if e.result.value is None else json.loads(e.result.value)
            if durable != seen[name]:
                errors.append(f"{who}: the handler saw {name}={seen[name]!r}, the journal holds {durable!r}")
    return errors


# -------------------------------------------------------------------------------------- generation
