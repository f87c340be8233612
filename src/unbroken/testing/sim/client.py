"""Simulated ingress callers: they build their records through the ingress core (``ingress/requests.py``:
routing, delays, idempotency keys, input checks, ids), exactly as the HTTP ingress does, always with an
idempotency key (or a workflow key), and after a crash they retry, as a real client whose connection broke
would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.ids import idempotent_invocation_id
from unbroken.core.journal import Failure
from unbroken.core.schema import Target
from unbroken.http.asgi import HttpError
from unbroken.ingress import requests as ingress
from unbroken.testing.sim.faults import stream
from unbroken.testing.sim.world import ConnectionLost, World


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
