"""The simulated application and its clients.

Services (real ``unbroken`` handlers, written as a user would, run by the real SDK):

* ``Counter`` (virtual object): ``add`` (exclusive; reads, maybe audits with ``ctx.run`` and naps, then
  writes ``count`` and appends ``[invocation id, n]`` to ``order``) and ``get`` (shared read);
* ``Order`` (workflow): ``run`` reserves (``ctx.run``), waits on the durable promise ``approval``, then
  charges or releases; ``approve`` (shared) resolves the promise;
* ``Trip`` (saga): books N steps with ``ctx.run``, the last one may fail terminally; on a terminal error
  (or a cancellation) undoes the booked steps in reverse order;
* ``Fanout``: calls N ``Worker.work`` and gathers them, and sends one-way (some delayed) ``Counter.add``;
* ``Sleeper``: sleeps; ``Waiter``: publishes an awakeable and waits for an outside client to resolve it.

Clients are simulated ingress callers: they build their records through the ingress core
(``ingress/requests.py``: routing, delays, idempotency keys, input checks, ids), exactly as the HTTP ingress
does, always with an idempotency key (or a workflow key), and after a crash they retry — as a real client whose
connection broke would. Each operation keeps what it was answered; :meth:`Op.check` compares it with the
model computed here, outside the engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.ids import idempotent_invocation_id, workflow_invocation_id
from unbroken.core.journal import Failure, SleepCommand
from unbroken.core.schema import Target
from unbroken.http.asgi import HttpError
from unbroken.ingress import requests as ingress
from unbroken.sdk.app import App
from unbroken.testing.sim.faults import stream
from unbroken.testing.sim.world import ConnectionLost, World

_WORLD: World | None = None


def current() -> World:
    assert _WORLD is not None, "no simulation is running"
    return _WORLD


def set_current(world: World | None) -> None:
    global _WORLD
    _WORLD = world


def _run(ctx: Any, name: str, terminal: str | None = None, sync: bool = False) -> Any:
    w = current()
    latency = 0.0 if sync else w.values.choice([0.0, 0.0, 0.001, 0.02, 0.3])
    return w.run_action(ctx.request().id, ctx.session.start.attempt, name, terminal, latency, sync)


# ------------------------------------------------------------------------------------------ services
counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
    w = current()
    w.body_fault("Counter.add before reading")
    count = await ctx.get("count") or 0
    if req.get("audit"):
        await ctx.run("audit", _run(ctx, "audit", sync=True))  # a plain def: the executor path
    if req.get("nap"):
        await ctx.sleep(timedelta(milliseconds=req["nap"]))
    w.body_fault("Counter.add before writing")
    ctx.set("count", count + req["n"])
    order = await ctx.get("order") or []
    ctx.set("order", [*order, [ctx.request().id, req["n"]]])
    return int(count + req["n"])


@counter.handler()
async def transfer(ctx: restate.ObjectContext, req: dict[str, Any]) -> int:
    """Move ``n`` to another key (keys only ever call later keys: no lock cycle, no deadlock)."""
    w = current()
    count = await ctx.get("count") or 0
    await ctx.object_call(add, key=req["to"], arg={"n": req["n"]})
    w.body_fault("Counter.transfer after the call")
    ctx.set("count", count - req["n"])
    order = await ctx.get("order") or []
    ctx.set("order", [*order, [ctx.request().id, -req["n"]]])
    return int(count - req["n"])


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    current().body_fault("Counter.get")
    return int(await ctx.get("count") or 0)


order_wf = restate.Workflow("Order")


@order_wf.main()
async def run(ctx: restate.WorkflowContext, req: dict[str, Any]) -> dict[str, Any]:
    w = current()
    reserved = await ctx.run("reserve", _run(ctx, "reserve"))
    ctx.set("status", "reserved")
    decision: dict[str, Any] = await ctx.promise("approval", type_hint=dict).value()
    w.body_fault("Order.run after approval")
    if decision["ok"]:
        charged = await ctx.run("charge", _run(ctx, "charge"))
        ctx.set("status", "charged")
        return {"ok": True, "reserved": reserved, "charged": charged}
    await ctx.run("release", _run(ctx, "release"))
    ctx.set("status", "released")
    return {"ok": False, "reserved": reserved}


@order_wf.handler()
async def approve(ctx: restate.WorkflowSharedContext, ok: bool) -> None:
    current().body_fault("Order.approve")
    await ctx.promise("approval", type_hint=dict).resolve({"ok": ok})


trip = restate.Service("Trip")


@trip.handler()
async def book(ctx: restate.Context, req: dict[str, Any]) -> dict[str, Any]:
    w = current()
    booked: list[int] = []
    try:
        for i in range(req["steps"]):
            fail = req["fail"] and i == req["steps"] - 1
            await ctx.run(f"book{i}", _run(ctx, f"book{i}", "no availability" if fail else None))
            booked.append(i)
            w.body_fault("Trip.book between steps")
            if req.get("nap"):
                await ctx.sleep(timedelta(milliseconds=req["nap"]))
        return {"ok": True, "booked": booked}
    except restate.TerminalError as exc:
        undone = []
        for i in reversed(booked):
            await ctx.run(f"undo{i}", _run(ctx, f"undo{i}"))
            undone.append(i)
        return {"ok": False, "code": exc.status_code, "booked": booked, "undone": undone}


worker = restate.Service("Worker")


@worker.handler()
async def work(ctx: restate.Context, i: int) -> int:
    await ctx.run("w", _run(ctx, "w"))
    if i % 3 == 1:
        await ctx.sleep(timedelta(milliseconds=40 * i))
    current().body_fault("Worker.work")
    return i * i


fanout = restate.Service("Fanout")


@fanout.handler()
async def fan(ctx: restate.Context, req: dict[str, Any]) -> int:
    futures = [ctx.service_call(work, arg=i) for i in range(req["n"])]
    for key, n, delay_ms in req["adds"]:
        delay = timedelta(milliseconds=delay_ms) if delay_ms else None
        ctx.object_send(add, key=key, arg={"n": n}, send_delay=delay)
    current().body_fault("Fanout.fan before gather")
    await restate.gather(*futures)
    return sum([await f for f in futures])


sleeper = restate.Service("Sleeper")


@sleeper.handler()
async def nap(ctx: restate.Context, ms: int) -> int:
    w = current()
    if not ctx.session.replaying:  # type: ignore[attr-defined]  # issued live: note when (outside)
        w.ledger.sleeps.setdefault(ctx.request().id, []).append(w.now_ms())
    await ctx.sleep(timedelta(milliseconds=ms))
    current().body_fault("Sleeper.nap after sleeping")
    return ms


waiter = restate.Service("Waiter")


@waiter.handler()
async def wait(ctx: restate.Context, tag: str) -> str:
    aid, fut = ctx.awakeable(type_hint=str)
    await ctx.run("publish", _publish(ctx, aid))
    return str(await fut)


@waiter.handler()
async def wake(ctx: restate.Context, req: dict[str, str]) -> None:
    """Resolve someone else's awakeable from a handler."""
    current().body_fault("Waiter.wake")
    ctx.resolve_awakeable(req["aid"], req["value"])


def _publish(ctx: Any, aid: str) -> Any:
    w = current()
    invocation_id = ctx.request().id

    async def publish() -> str:
        w.ledger.mailbox[invocation_id] = aid
        return aid

    return publish


APP: App = restate.app([counter, order_wf, trip, worker, fanout, sleeper, waiter])
KEYS = ("alpha", "beta", "gamma")


def awakeable_value(aid: str) -> str:
    return "resolved-" + hashlib.sha256(aid.encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------------- clients
def idempotent_id(target: Target, idem: str) -> str:
    return idempotent_invocation_id(target, idem)


class IngressRefused(AssertionError):
    """The ingress core refused a request the workload meant to be valid: a bug in one or the other."""


class Client:
    """An ingress caller that retries through crashes (same idempotency key, so no duplicate work)."""

    def __init__(self, world: World) -> None:
        self.w = world
        self._entropy = stream(world.seed, "ingress")  # the ingress's fresh bytes (new ids, seeds)

    async def _retry(self, make: Any) -> a.Outcome:
        w = self.w
        while True:
            try:
                reply = await w.request(make)
            except ConnectionLost:
                await asyncio.sleep(w.client_rng.uniform(0.05, 1.5))
                continue
            if isinstance(reply.outcome, a.StoreFailed | a.Unavailable):  # a 5xx: retry like a client would
                await asyncio.sleep(w.client_rng.uniform(0.05, 1.5))
                continue
            return reply.outcome

    async def invoke(
        self, target: Target, arg: Any, *, idem: str | None, reply: str, delay_ms: int = 0
    ) -> a.Outcome:
        """Call (``reply="result"``) or send (``"accepted"``) as an HTTP client would: the request goes
        through the ingress core, which routes and checks it and derives the invocation's id."""
        w = self.w
        headers = [(b"content-type", b"application/json")]
        if idem is not None:
            headers.append((b"idempotency-key", idem.encode()))
        query = f"delay={delay_ms}".encode() if delay_ms else b""
        request = ingress.Request("POST", ingress.path_of(target, send=reply == "accepted"), query, headers)
        body = json.dumps(arg).encode()
        try:
            route = ingress.route_request(request, w.schemas)
        except HttpError as exc:
            raise IngressRefused(f"{request.path}: {exc.status} {exc.message}") from None

        def make(rid: int) -> r.Record:  # a new HTTP request on every retry: its own time and fresh bytes
            try:
                sub = ingress.submission(
                    request, route, body, w.now_ms(), self._entropy.randbytes(ingress.FRESH_BYTES)
                )
            except HttpError as exc:
                raise IngressRefused(f"{request.path}: {exc.status} {exc.message}") from None
            return sub(rid)

        return await self._retry(make)

    async def attach(self, invocation_id: str) -> a.Outcome:
        return await self._retry(lambda rid: r.Attach(invocation_id, True, rid))

    async def resolve(self, aid: str, value: str) -> a.Outcome:
        request = ingress.Request(
            "POST", f"/restate/awakeables/{aid}/resolve", b"", [(b"content-type", b"application/json")]
        )
        route = ingress.route_request(request, self.w.schemas)
        return await self._retry(ingress.resolve_record(request, route, json.dumps(value).encode()))

    async def cancel(self, invocation_id: str) -> a.Outcome:
        return await self._retry(lambda rid: r.CancelInvocation(invocation_id, rid))

    async def kill(self, invocation_id: str) -> a.Outcome:
        return await self._retry(lambda rid: r.KillInvocation(invocation_id, rid))

    async def pause(self, invocation_id: str) -> a.Outcome:
        return await self._retry(lambda rid: r.PauseInvocation(invocation_id, rid))

    async def resume(self, invocation_id: str) -> a.Outcome:
        return await self._retry(lambda rid: r.ResumeInvocation(invocation_id, rid))


def value_of(reply: a.Outcome) -> Any:
    assert isinstance(reply, a.Output), f"expected a result, got {reply}"
    assert reply.result.failure is None, f"expected a value, got {reply.result.failure}"
    return None if reply.result.value is None else json.loads(reply.result.value)


def failure_of(reply: a.Outcome) -> Failure | None:
    return reply.result.failure if isinstance(reply, a.Output) else None


# ------------------------------------------------------------------------------------------- ops
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
    resolve_after_s: float = 0.0
    resolved_with: str = ""
    via_handler: bool = False

    async def run(self, w: World, c: Client) -> None:
        target = Target("Waiter", "wait")
        idem = f"wait-{self.idx}"
        self.invocation_id = idempotent_id(target, idem)
        call = asyncio.ensure_future(c.invoke(target, f"t{self.idx}", idem=idem, reply="result"))
        while self.invocation_id not in w.ledger.mailbox and not call.done():
            await asyncio.sleep(0.25)  # the outside system polls for work
        if self.invocation_id in w.ledger.mailbox:
            aid = w.ledger.mailbox[self.invocation_id]
            await asyncio.sleep(self.resolve_after_s)
            self.resolved_with = awakeable_value(aid)
            if self.via_handler:
                wake_target = Target("Waiter", "wake")
                arg = {"aid": aid, "value": self.resolved_with}
                self.answers.append(await c.invoke(wake_target, arg, idem=f"wake-{self.idx}", reply="result"))
            else:
                self.answers.append(await c.resolve(aid, self.resolved_with))
        self.answers.append(await call)

    def check(self, w: World, m: Model) -> list[str]:
        if not self.resolved_with:
            return [f"{self.name}: completed without ever publishing its awakeable: {self.answers}"]
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
def generate(w: World, rng: Any, count: int, horizon_s: float) -> list[Op]:
    """A random workload: ``count`` operations starting within ``horizon_s`` virtual seconds."""
    ops: list[Op] = []
    keys = KEYS[: rng.randint(1, len(KEYS))]
    wf_keys = 0
    for idx in range(count):
        start = rng.uniform(0, horizon_s)
        kind = rng.choices(
            ["add", "send", "transfer", "get", "fan", "order", "saga", "nap", "await", "pause", "observe"],
            [30, 10, 6, 8, 8, 6, 8, 6, 6, 6, 4],
        )[0]
        if kind == "transfer" and len(keys) < 2:
            kind = "add"
        pausable = [
            o for o in ops if isinstance(o, CounterAdd | Transfer | Fan | OrderFlow | Saga | Nap | Await)
        ]
        if kind == "pause" and not pausable:
            kind = "nap"
        observable = [
            o
            for o in ops
            if isinstance(o, Transfer | Fan | Saga | Nap | Await | CounterGet)
            or (isinstance(o, CounterAdd) and not o.send)
        ]
        if kind == "observe" and not observable:
            kind = "add"
        op: Op
        if kind in ("add", "send"):
            op = CounterAdd(
                idx,
                start,
                key=rng.choice(keys),
                n=rng.randint(1, 9),
                audit=rng.random() < 0.3,
                nap_ms=rng.choice([0, 0, 0, 10, 500]),
                send=kind == "send",
                delay_ms=rng.choice([0, 0, 300, 4000]) if kind == "send" else 0,
            )
        elif kind == "transfer":
            i = rng.randrange(len(keys) - 1)
            op = Transfer(idx, start, source=keys[i], to=rng.choice(keys[i + 1 :]), n=rng.randint(1, 5))
        elif kind == "get":
            op = CounterGet(idx, start, key=rng.choice(keys))
        elif kind == "fan":
            adds = [
                (rng.choice(keys), rng.randint(1, 9), rng.choice([0, 0, 200, 3000]))
                for _ in range(rng.randint(0, 3))
            ]
            op = Fan(
                idx,
                start,
                n=rng.randint(1, 5),
                adds=adds,
                cancel_after_s=rng.choice([None, None, None, None, 0.0, 0.01, 0.5]),
                kill=rng.random() < 0.3,
            )
        elif kind == "order":
            wf_keys += 1
            op = OrderFlow(
                idx,
                start,
                key=f"order-{wf_keys}",
                ok=rng.random() < 0.7,
                approve_after_s=rng.choice([0.0, 0.2, 2.0, 10.0]),
                resubmit=rng.random() < 0.3,
            )
        elif kind == "saga":
            op = Saga(
                idx,
                start,
                steps=rng.randint(1, 4),
                fail=rng.random() < 0.4,
                nap_ms=rng.choice([0, 0, 100, 2000]),
                cancel_after_s=rng.choice([None, None, None, 0.0, 0.05, 1.0, 3.0]),
            )
        elif kind == "nap":  # some naps end just when the attempt would suspend (a race worth having)
            near = w.inactivity_timeout_ms + rng.choice([-1, 0, 0, 1])
            odd = rng.choice([1001, 1003, 2002, 4004, 8001, 16_002])  # ms * 0.001 * 1000 < ms in floats
            op = Nap(
                idx,
                start,
                ms=rng.choice([1, 100, 1000, 15_000, near, near, odd, rng.randint(1, 20_000)]),
                cancel_after_s=rng.choice([None, None, None, 0.5, 5.0]),
                kill=rng.random() < 0.3,
            )
        elif kind == "observe":
            target = rng.choice(observable)
            op = Observe(idx, target.start_s, target=target, after_s=rng.choice([0.0, 0.5, 5.0, 30.0]))
        elif kind == "pause":
            target = rng.choice(pausable)
            op = PauseResume(
                idx,
                target.start_s,
                target=target,
                pause_after_s=rng.choice([0.0, 0.01, 0.1, 1.0]),
                resume_after_s=rng.choice([0.0, 0.05, 1.0, 10.0]),
                cycles=rng.choice([1, 1, 3, 10]),
            )
        else:
            op = Await(
                idx, start, resolve_after_s=rng.choice([0.0, 0.1, 2.0, 20.0]), via_handler=rng.random() < 0.4
            )
        ops.append(op)
    return ops


def model_of(ops: list[Op]) -> Model:
    m = Model()
    for op in ops:
        if isinstance(op, CounterAdd | Fan | Transfer):
            op.model(m)
    return m
