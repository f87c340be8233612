"""The Restate-compatible ingress: turns HTTP requests into records and waits for their replies.

It never touches storage: every request becomes a record for the processor, and answers come back as
``Reply`` actions after the records that produced them committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote, unquote

from unbroken.cluster.forward import FORWARDED, Forwarder, ResponseBroken, replay
from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.errors import EngineUnavailable
from unbroken.http.asgi import (
    ON_DISCONNECT,
    BodyTooLarge,
    ClientDisconnected,
    HttpError,
    Receive,
    Scope,
    Send,
    authorized,
    lifespan,
    read_body,
    respond,
    respond_json,
)
from unbroken.http.wire import check_head
from unbroken.ingress.body import BodyBudget, Overloaded
from unbroken.ingress.requests import (
    FRESH_BYTES,
    Request,
    Response,
    Submission,
    attach_record,
    awakeable_response,
    error_response,
    exception_response,
    partition_key_of,
    reply_response,
    resend_safe,
    resolve_record,
    route_request,
    submission,
)
from unbroken.ingress.routing import Route, RouteKind
from unbroken.runtime.node import Node

# Read through its class, an enum member costs ~170 ns on Python 3.11 (docs/architecture.md).
_INVOKE: Final = RouteKind.INVOKE

log = logging.getLogger("unbroken.ingress")

_SHUTTING_DOWN = "the server is shutting down: the invocation goes on, attach to it again later"


class IngressApp:
    def __init__(
        self,
        engine: Node,
        body_limit_bytes: int = limits.request_body_bytes_max,
        token: str | None = None,
        cluster: Forwarder | None = None,
    ) -> None:
        self.engine = engine
        # a store shared by several nodes: requests for partitions led elsewhere are proxied to their leader
        self.cluster = cluster
        self.body_limit = body_limit_bytes
        self._random = engine.entropy  # injected per node: the simulator seeds it
        self.token = (
            token  # when set, every request but /restate/health needs ``authorization: Bearer <token>``
        )
        # A single body of the configured limit always fits when nothing else is in flight.
        self.budget = BodyBudget(max(limits.ingress_inflight_body_bytes_max, body_limit_bytes))
        self.closing = False  # at shutdown, waiting requests answer 503 instead of being cancelled
        self._waiting: set[asyncio.Future[Reply]] = set()

    def close(self) -> None:
        self.closing = True
        for fut in list(self._waiting):
            fut.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except (HttpError, EngineUnavailable) as exc:
            await _write(send, exception_response(exc))
        except BodyTooLarge:
            await _error(send, 413, f"request body too large: the limit is {self.body_limit} bytes")
        except (ClientDisconnected, ResponseBroken):
            return  # nobody to answer, nothing done; or the leader failed mid-answer: the connection closes
        except Exception:
            log.exception("ingress request failed: %s %s", scope.get("method"), scope.get("path"))
            await _error(send, 500, "internal error")

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        check_head(scope)
        path = _raw_path(scope)
        if path.rstrip("/") == "/restate/health":  # open even when a token is configured
            await self._health(send)
            return
        if not authorized(scope, self.token):
            raise HttpError(
                401, "unauthorized: this ingress requires the header 'authorization: Bearer <token>'"
            )
        request = Request(scope["method"], path, scope.get("query_string", b""), scope["headers"])
        route = route_request(request, self.engine.schemas)
        if self.cluster is not None and route.kind is not RouteKind.HEALTH:
            here = await self._forward(self.cluster, scope, receive, send, request, route)
            if here is None:
                return  # the leader answered
            receive = here
        kind = route.kind
        if kind is _INVOKE:  # first: the call the hot path takes
            await self._invoke(scope, receive, send, request, route)
        elif kind is RouteKind.HEALTH:
            await self._health(send)
        elif kind is RouteKind.AWAKEABLE:
            await self._awakeable(scope, receive, send, request, route)
        else:  # attach or output
            pending = self._request(attach_record(route), receive)
            reply = await self._wait(scope, receive, pending)
            if self.cluster is not None and await self._moved(
                scope, receive, send, request, route, reply, b""
            ):
                return
            await self._answer(send, reply, dedup=True)

    async def _health(self, send: Send) -> None:
        trouble = self.engine.health()
        if trouble is not None:  # the store fails or the partition stopped: say so, not 200
            await _error(send, 503, trouble, extra=[(b"retry-after", str(limits.retry_after_s).encode())])
            return
        await respond_json(send, 200, {"services": sorted(self.engine.schemas.services)})

    # ------------------------------------------------------------------------------- invoke
    async def _invoke(
        self, scope: Scope, receive: Receive, send: Send, request: Request, route: Route
    ) -> None:
        with self.budget.reserve() as reservation:
            sub = await self._submit(scope, receive, request, route, reservation.charge)
            pending = self._request(sub, receive)
            reply = await self._wait(scope, receive, pending)
            if self.cluster is not None and await self._moved(
                scope, receive, send, request, route, reply, sub.body
            ):
                return
            await self._answer(send, reply, sub.dedup, sub.content_type)

    async def _submit(
        self, scope: Scope, receive: Receive, request: Request, route: Route, charge: Callable[[int], None]
    ) -> Submission:
        """Read and check the request; the body is referenced by the submission only from here on."""
        body = await read_body(scope, receive, self.body_limit, charge)
        fresh = self._random.take(FRESH_BYTES)
        if self.cluster is not None:  # a new unkeyed call: its id in a partition led here, no hop
            fresh = self.cluster.directory.mint_here(fresh)
        return submission(request, route, body, self.engine.clock.now_ms(), fresh)

    # ------------------------------------------------------------------------------- forwarding
    async def _forward(
        self, cluster: Forwarder, scope: Scope, receive: Receive, send: Send, request: Request, route: Route
    ) -> Receive | None:
        """Proxy the request to the node leading its partition if another one does: None when answered,
        else the ``receive`` to read the request from here (its body may have been read already)."""
        directory = cluster.directory
        key = partition_key_of(request, route)
        part: int | None = None
        if key is None:  # a new unkeyed call: minted here if this node leads any partition
            if directory.led():
                return receive
        else:
            part = directory.partition_of(key)
            if directory.leads(part):
                return receive
        cluster.refuse_second_hop(scope, part)
        with self.budget.reserve() as reservation:
            body = await read_body(scope, receive, self.body_limit, reservation.charge)
            if not await self._proxy(cluster, scope, receive, send, body, part, resend_safe(request, route)):
                return replay(body, receive)
        return None

    async def _proxy(
        self,
        cluster: Forwarder,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        part: int | None,
        safe: bool,
    ) -> bool:
        """``cluster.forward`` (it waits for a leader during a failover, bounded), cancelled when the caller
        hangs up; False: this node leads ``part`` now."""
        proxy = asyncio.ensure_future(cluster.forward(scope, body, send, part, "ingress", safe))
        unwatch = _watch_disconnect(scope, receive, lambda: None if proxy.cancel() else None)
        try:
            return await proxy
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ClientDisconnected() from None
        finally:
            unwatch()

    async def _moved(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        route: Route,
        reply: Reply,
        body: bytes,
    ) -> bool:
        """A wait answered 503 because its partition moved to another node (``Partition.let_go``): go on
        through the new leader, as the caller's retry would, when that cannot make a second invocation.
        Accepted (``goes_on``): attach to the invocation there; never applied: send the request there.
        True when answered so. A request another node forwarded here is answered 503 (no second hop)."""
        cluster, outcome = self.cluster, reply.outcome
        if cluster is None or not isinstance(outcome, a.Unavailable) or not resend_safe(request, route):
            return False
        key = partition_key_of(request, route)
        if key is None or any(k == FORWARDED for k, _ in scope["headers"]):
            return False
        part = cluster.directory.partition_of(key)
        if cluster.directory.leads(part):
            return False  # refused for another reason (the store fails, shutting down): answered as it is
        if outcome.goes_on is not None and route.kind is _INVOKE:
            scope, body = _attach_scope(scope, outcome.goes_on), b""
        log.info("partition %d moved while a caller waited: going on through its new leader", part)
        return await self._proxy(cluster, scope, receive, send, body, part, True)

    def _request(self, make: Callable[[int], r.Record], receive: Receive) -> _Pending:
        ids: list[int] = []

        def record(request_id: int) -> r.Record:
            ids.append(request_id)
            return make(request_id)

        # bounded: refused (503) while the store fails or a bound is reached; while the store fails the
        # engine also withdraws a queued record whose caller left (never acknowledged, never applied)
        fut = self.engine.request(record, _client_gone(receive), bounded=True)
        return _Pending(fut, ids[0])

    async def _wait(self, scope: Scope, receive: Receive, pending: _Pending) -> Reply:
        """The reply, unless the client hangs up first (its waiter is forgotten: the invocation goes on)
        or the server shuts down (503: the invocation is durable, the client attaches again later)."""
        fut = pending.future
        if fut.done():
            return fut.result()
        if self.closing:  # a request that came in during the shutdown: close() will not see it
            self.engine.forget(pending.request_id)
            raise Overloaded(_SHUTTING_DOWN)

        def stop_waiting() -> None:
            if not fut.done():
                fut.cancel()

        unwatch = _watch_disconnect(scope, receive, stop_waiting)
        self._waiting.add(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request itself is cancelled
            self.engine.forget(pending.request_id)
            if self.closing:
                raise Overloaded(_SHUTTING_DOWN) from None
            raise ClientDisconnected() from None
        finally:
            unwatch()
            self._waiting.discard(fut)

    async def _answer(
        self, send: Send, reply: Reply, dedup: bool, content_type: str = "application/json"
    ) -> None:
        """Turn a Reply into Restate's HTTP answer (ingress/requests.py says which)."""
        self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
        await _write(send, reply_response(reply, dedup, content_type))

    # ---------------------------------------------------------------------------- awakeables
    async def _awakeable(
        self, scope: Scope, receive: Receive, send: Send, request: Request, route: Route
    ) -> None:
        with self.budget.reserve() as reservation:
            body = await read_body(scope, receive, self.body_limit, reservation.charge)
            make = resolve_record(request, route, body)
            reply = await self._wait(scope, receive, self._request(make, receive))
            if self.cluster is not None and await self._moved(
                scope, receive, send, request, route, reply, body
            ):
                return
            del body
        self.engine.faults.point("ingress.before_reply")  # what the reply says is committed; not sent yet
        await _write(send, awakeable_response(route, reply))


def _client_gone(receive: Receive) -> Callable[[], Awaitable[object]]:
    """What completes when the caller hangs up (the body was read whole: only a disconnect comes now)."""

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return gone


def _attach_scope(scope: Scope, invocation_id: str) -> Scope:
    """``scope`` as ``GET /restate/invocation/{id}/attach`` (its headers, the token among them, kept)."""
    path = f"/restate/invocation/{quote(invocation_id, safe='')}/attach"
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"idempotency-key")]
    return {
        **scope,
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }


def _raw_path(scope: Scope) -> str:
    """The path as sent (still percent-encoded): routing splits it first, then decodes each segment, so
    an encoded '/' or '%' stays inside its key."""
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        return raw.decode("latin-1")
    return quote(scope["path"], safe="/")


class _Pending:
    __slots__ = ("future", "request_id")

    def __init__(self, future: asyncio.Future[Reply], request_id: int) -> None:
        self.future = future
        self.request_id = request_id


def _watch_disconnect(scope: Scope, receive: Receive, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when the client hangs up; returns the function that stops watching.

    Under ``unbroken serve`` the connection tells us (ingress/wire.py, a scope extension): a task reading
    ``receive`` for each waiting call would cost ~20 µs a call. Under another ASGI server, that task."""
    watch = scope.get("extensions", {}).get(ON_DISCONNECT)
    if watch is not None:
        return watch(callback)  # type: ignore[no-any-return]
    gone = asyncio.ensure_future(_disconnected(receive))
    gone.add_done_callback(lambda _: callback())

    def unwatch() -> None:
        gone.cancel()

    return unwatch


async def _disconnected(receive: Receive) -> None:
    """Returns when the client hangs up (once the body is read, ``receive`` only answers that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _error(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _write(send, error_response(status, message, extra=extra))


async def _write(send: Send, response: Response | None) -> None:
    if response is not None:  # None: the caller left before its record was applied; nobody to answer
        status, headers, body = response
        await respond(send, status, body, headers)


__all__ = ["IngressApp", "unquote"]
