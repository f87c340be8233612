"""The test engine's client: calls, sends, attaches and awakeables, straight into the engine (no HTTP).

Every request is built by the ingress core (``ingress/requests.py``: routing, input checks, delays,
idempotency keys, the invocation's id), exactly as an HTTP request would be. A caller waiting when the
engine crashes is not lost: it knows its invocation's id, so it attaches again to the new engine (or
submits again if the crash came before the invocation was stored), as a client reconnecting would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.journal import Failure, Result
from unbroken.http.asgi import HttpError
from unbroken.ingress import requests as ingress
from unbroken.sdk.exceptions import TerminalError
from unbroken.sdk.serde import Serde
from unbroken.sdk.service import HandlerDef, handler_of

if TYPE_CHECKING:
    from unbroken.testing.engine import TestEngine

Target = Callable[..., Any] | str  # a decorated handler, or "Service/handler", "Object/key/handler"


class RequestRefused(Exception):
    """The ingress refused the request (unknown handler, bad input, ...): ``status`` as HTTP would say."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class TestClient:
    """Talks to a :class:`~unbroken.testing.TestEngine` (``engine.client``)."""

    __test__ = False

    def __init__(self, engine: TestEngine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------------------------ invocations
    async def call(
        self,
        target: Target,
        arg: Any = None,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call a handler and return its result (a failed invocation raises ``TerminalError``)."""
        path, hdef = self._path(target, key, send=False)
        sub = self._submission(path, b"", _body(hdef, arg), idempotency_key, headers)
        outcome = await self._through_crashes(sub, sub.invocation_id)
        return _value(outcome, hdef.output_serde if hdef is not None else None)

    async def send(
        self,
        target: Target,
        arg: Any = None,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        delay: timedelta | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Start an invocation without waiting for it (after ``delay``); returns its id."""
        path, hdef = self._path(target, key, send=True)
        query = f"delay={int(delay.total_seconds() * 1000)}ms".encode() if delay else b""
        sub = self._submission(path, query, _body(hdef, arg), idempotency_key, headers)
        crashes = self.engine.crashes
        outcome = await self._through_crashes(sub, None)
        match outcome:
            case a.Accepted(inv) | a.PreviouslyAccepted(inv):
                return inv
            case a.WorkflowAlreadyInvoked(inv) if self.engine.crashes != crashes:
                return inv  # sent again after a crash: the first one had been stored
            case a.WorkflowAlreadyInvoked(inv):
                raise RequestRefused(409, f"the workflow method was already invoked: {inv}")
        raise RequestRefused(500, f"unexpected answer {outcome}")

    async def workflow_submit(self, run: Target, key: str, arg: Any = None) -> str:
        """Start a workflow's ``run`` for ``key``; returns its invocation id."""
        return await self.send(run, arg, key=key)

    async def workflow_attach(self, workflow: str | Callable[..., Any], key: str) -> Any:
        """Wait for the result of the workflow run of ``key``."""
        name = workflow if isinstance(workflow, str) else handler_of(workflow).service
        path = f"/restate/workflow/{quote(name, safe='')}/{quote(key, safe='')}/attach"
        route = ingress.route_request(ingress.Request("GET", path), self._schemas())
        assert route.invocation_id is not None
        return _value(await self._attach(route.invocation_id, wait=True), None)

    async def attach(self, invocation_id: str, serde: Serde[Any] | None = None) -> Any:
        """Wait for an invocation's result."""
        return _value(await self._attach(invocation_id, wait=True), serde)

    async def output(self, invocation_id: str) -> tuple[bool, Any]:
        """``(True, result)`` if the invocation completed, ``(False, None)`` if it has not yet."""
        outcome = await self._attach(invocation_id, wait=False)
        if isinstance(outcome, a.NotReady):
            return False, None
        return True, _value(outcome, None)

    async def cancel(self, invocation_id: str) -> None:
        await self._control(lambda rid: r.CancelInvocation(invocation_id, rid))

    async def kill(self, invocation_id: str) -> None:
        await self._control(lambda rid: r.KillInvocation(invocation_id, rid))

    # ------------------------------------------------------------------------------------ awakeables
    async def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        await self._awakeable(awakeable_id, "resolve", json.dumps(value).encode())

    async def reject_awakeable(self, awakeable_id: str, reason: str) -> None:
        await self._awakeable(awakeable_id, "reject", reason.encode())

    async def _awakeable(self, awakeable_id: str, action: str, body: bytes) -> None:
        request = ingress.Request(
            "POST",
            f"/restate/awakeables/{quote(awakeable_id, safe='')}/{action}",
            b"",
            [(b"content-type", b"application/json")],
        )
        try:
            route = ingress.route_request(request, self._schemas())
            make = ingress.resolve_record(request, route, body)
        except HttpError as exc:
            raise RequestRefused(exc.status, exc.message) from None
        while True:
            reply = await self._ask(make)
            if _crashed(reply.outcome):
                continue  # resolving again is harmless: a second resolution of one awakeable is ignored
            try:
                ingress.awakeable_response(route, reply)
            except HttpError as exc:
                raise RequestRefused(exc.status, exc.message) from None
            return

    # ------------------------------------------------------------------------------------ plumbing
    async def _ask(self, make: Callable[[int], r.Record]) -> a.Reply:
        """The engine's reply, past the ingress's fault point ``ingress.before_reply`` (what the reply says
        is committed, the caller does not have it yet): a crash there is a reply lost on its way."""
        from unbroken.testing.engine import CRASHED, EngineCrashed

        reply = await self.engine.request(make)
        try:
            self.engine.faults.point("ingress.before_reply")
        except EngineCrashed:
            return a.Reply(reply.request_id, a.Unavailable(Failure(503, CRASHED)))
        return reply

    def _schemas(self) -> Any:
        node = self.engine.node
        if node is None:
            raise RuntimeError("the engine is not started")
        return node.schemas

    def _path(self, target: Target, key: str | None, send: bool) -> tuple[str, HandlerDef | None]:
        if isinstance(target, str):
            path = "/" + target.strip("/")
            if key is not None:
                service, _, handler = path[1:].partition("/")
                path = f"/{service}/{quote(key, safe='')}/{handler}"
            return path + ("/send" if send else ""), None
        hdef = handler_of(target)
        parts = [hdef.service] + ([key] if key is not None else []) + [hdef.name]
        path = "/" + "/".join(quote(p, safe="") for p in parts) + ("/send" if send else "")
        return path, hdef

    def _submission(
        self,
        path: str,
        query: bytes,
        body: bytes,
        idempotency_key: str | None,
        headers: dict[str, str] | None,
    ) -> ingress.Submission:
        pairs = [(b"content-type", b"application/json")]
        pairs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if idempotency_key is not None:
            pairs.append((b"idempotency-key", idempotency_key.encode()))
        request = ingress.Request("POST", path, query, pairs)
        node = self.engine.node
        assert node is not None, "the engine is not started"
        try:
            route = ingress.route_request(request, node.schemas)
            return ingress.submission(
                request, route, body, node.clock.now_ms(), node.entropy.take(ingress.FRESH_BYTES)
            )
        except HttpError as exc:
            raise RequestRefused(exc.status, exc.message) from None

    async def _through_crashes(self, sub: ingress.Submission, attach_to: str | None) -> a.Outcome:
        """Submit; if the engine crashes before answering, attach again (or submit again: same id)."""
        reply = await self._ask(sub)
        while _crashed(reply.outcome):
            if attach_to is not None:
                reply = await self._ask(lambda rid: r.Attach(attach_to, True, rid))
                if not isinstance(reply.outcome, a.NotFound):
                    continue
            reply = await self._ask(sub)  # it was never stored: the same request again
        return reply.outcome

    async def _attach(self, invocation_id: str, wait: bool) -> a.Outcome:
        while True:
            reply = await self._ask(lambda rid: r.Attach(invocation_id, wait, rid))
            if not _crashed(reply.outcome):
                return reply.outcome

    async def _control(self, make: Callable[[int], r.Record]) -> None:
        while True:
            reply = await self._ask(make)
            if not _crashed(reply.outcome):
                if isinstance(reply.outcome, a.NotFound):
                    raise RequestRefused(404, "no such invocation")
                return


def _body(hdef: HandlerDef | None, arg: Any) -> bytes:
    """The request body: the handler's input serde (a decorated handler), else JSON (nothing for None)."""
    if hdef is not None:
        return hdef.input_serde.serialize(arg) if hdef.takes_input else b""
    return b"" if arg is None else json.dumps(arg).encode()


def _crashed(outcome: a.Outcome) -> bool:
    from unbroken.testing.engine import CRASHED

    return isinstance(outcome, a.Unavailable) and outcome.failure.message == CRASHED


def _value(outcome: a.Outcome, serde: Serde[Any] | None) -> Any:
    match outcome:
        case a.Output(_, result, _):
            return _decode(result, serde)
        case a.NotFound():
            raise RequestRefused(404, "no such invocation")
        case a.NotReady():
            raise RequestRefused(470, "the invocation has not completed yet")
    raise RequestRefused(500, f"unexpected answer {outcome}")


def _decode(result: Result, serde: Serde[Any] | None) -> Any:
    if result.failure is not None:
        raise TerminalError(result.failure.message, result.failure.code)
    if serde is not None:
        return serde.deserialize(result.value or b"")
    return None if not result.value else json.loads(result.value)
