"""Proxying a request to the node that leads its partition, and streaming the answer back.

The caller's connection stays on the node it called: the request (method, path, query, headers, the body
already read) goes to the leader's ingress (through the channel between the nodes, ``channel.py``) or admin
API (over HTTP, rare) with ``x-unbroken-forwarded: <this node>``, and the leader's answer (status, headers,
body) is written back as it arrives. The leader does all the work: it
routes, mints or derives the invocation id and answers, as if it had been called directly. A forwarded
request is never forwarded again: a node that does not lead its partition answers 503 with Retry-After.

There is no read timeout (a call waits for its result as long as it takes). Instead, while the leader has
not answered, the cluster view in memory is looked at twice per ``cluster_view_refresh_s``: once another
node leads the partition (a new epoch) or the leader's heartbeat is older than the lease TTL (paused, cut
off), the leader is given up. A request that cannot make a second invocation when sent again (the ingress
says which: an idempotency key, a workflow's run, an attach, an output, an awakeable's completion) goes to
the new leader; any other is answered 502, to be retried with an idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from unbroken.cluster.channel import START, Broken, ChannelClient, connect
from unbroken.cluster.directory import Directory
from unbroken.core import limits
from unbroken.core.errors import EngineUnavailable
from unbroken.core.storage import NodeInfo
from unbroken.http.asgi import Receive, Scope, Send

log = logging.getLogger("unbroken.cluster")

FORWARDED = b"x-unbroken-forwarded"
# Hop-by-hop headers (RFC 9110 7.6.1) and the framing the proxy sets itself.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"content-length",
        FORWARDED,
    }
)
_LOST = (
    "node {node}, which leads partition {part}, failed while answering ({why}): the request may have been "
    "accepted or not. Retry it with the same idempotency-key header to get its one result"
)


class ResponseBroken(Exception):
    """The leader failed after its answer had started: the caller's connection is closed mid-answer."""


class Deposed(Exception):
    """The leader asked was deposed (or its heartbeat went stale) before its answer started: given up."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Unreachable(EngineUnavailable):
    """The leader could not be asked (connection refused, timed out): it never got the request."""


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives ``body`` again (already read), then what the connection says next."""
    given = False

    async def again() -> MutableMapping[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class Forwarder:
    """The channels to the other nodes (ingress requests), the HTTP client (admin requests: one bounded
    pool) and the directory saying who leads what."""

    def __init__(self, directory: Directory, client: httpx.AsyncClient | None = None) -> None:
        self.directory = directory
        # ingress requests: one channel per node (``channel.py``), keyed by its ingress URL
        self._channels: dict[str, ChannelClient] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=limits.cluster_forward_connections_max,
                max_keepalive_connections=limits.cluster_forward_connections_max,
            ),
            # no read timeout: a call waits for its invocation's result as long as it takes, as it would
            # on the leader itself; the caller's disconnect cancels it
            timeout=httpx.Timeout(None, connect=limits.cluster_forward_connect_timeout_s),
        )

    @property
    def node(self) -> str:
        return self.directory.node

    def refuse_second_hop(self, scope: Scope, part: int | None) -> None:
        """A request another node forwarded here for a partition this node does not lead (it moved in
        between): 503, no second hop; the caller's retry finds the leader."""
        via = next((v for k, v in scope["headers"] if k == FORWARDED), None)
        if via is not None:
            what = f"partition {part}" if part is not None else "any partition"
            raise EngineUnavailable(
                f"node {self.node} does not lead {what} (the request was forwarded by "
                f"{via.decode('latin-1')}): its leadership is moving, retry",
                503,
                limits.retry_after_s,
            )

    async def forward(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        part: int | None,
        api: Literal["ingress", "admin"],
        resend_safe: bool = False,
    ) -> bool:
        """Proxy the request to the leader of ``part`` (None: any leader); False when this node leads it
        now. A leader that cannot be reached (it never got the request) is asked again, or its successor,
        until ``leader_wait_s`` has passed; then ``NoLeader``. A leader deposed while the request waits on
        it (a new epoch, or its heartbeat stale: paused, cut off) is given up: before its answer started, a
        request that ``resend_safe`` (resending it cannot make a second invocation) goes to the new leader,
        any other is answered 502 (retry with the idempotency key)."""
        directory = self.directory
        deadline = time.monotonic() + directory.leader_wait_s
        while True:
            leader = await directory.leader(part, deadline)
            if leader is None:
                return False
            try:
                await self.proxy(scope, body, send, leader, part, api)
                return True
            except Unreachable:
                directory.suspect(leader.name)
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(min(directory.refresh_s / 2, max(0.0, deadline - time.monotonic())))
            except Deposed as exc:
                # not suspected: the view already names the new leader, or no alive one (then it waits)
                if not resend_safe:
                    message = _LOST.format(node=leader.name, part=part, why=exc.why)
                    raise EngineUnavailable(message, 502, limits.retry_after_s) from None
                log.info("resending a request for partition %s to its new leader: %s", part, exc.why)
                deadline = time.monotonic() + directory.leader_wait_s  # a new wait for the new leader

    async def proxy(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        leader: NodeInfo,
        part: int | None,
        api: Literal["ingress", "admin"],
    ) -> None:
        """Send the request to ``leader``'s ``api`` and write its answer to ``send``. Raises
        ``EngineUnavailable`` when nothing could be asked (503) or the leader failed before answering
        (502), :class:`Deposed` when another node took over (or the leader's heartbeat went stale) before
        its answer started, :class:`ResponseBroken` when it failed in the middle of its answer.

        No read timeout (a call waits for its result as long as it takes): instead the cluster view, in
        memory, is looked at every ``refresh_s / 2`` while the exchange runs."""
        directory = self.directory
        epoch = directory.epoch_of(part, leader)
        started: list[bool] = []  # not empty once the answer's start was written to the caller
        exchange = asyncio.ensure_future(self._exchange(scope, body, send, leader, part, api, started))
        try:
            while True:
                done, _ = await asyncio.wait((exchange,), timeout=directory.refresh_s / 2)
                if done:
                    return exchange.result()
                why = directory.deposed(leader, part, epoch)
                if why is None:
                    continue
                exchange.cancel()
                await asyncio.wait((exchange,))
                if not exchange.cancelled():  # it ended in between: its outcome stands
                    return exchange.result()
                if started:
                    raise ResponseBroken(f"node {leader.name} stopped answering: {why}")
                raise Deposed(why)
        finally:
            if not exchange.done():
                exchange.cancel()  # this request itself is cancelled (the caller left): the exchange too

    async def _exchange(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        leader: NodeInfo,
        part: int | None,
        api: Literal["ingress", "admin"],
        started: list[bool],
    ) -> None:
        if api == "ingress":
            await self._over_channel(scope, body, send, leader, part, started)
            return
        base = leader.admin_url
        raw = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = base.rstrip("/") + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP]
        headers.append((FORWARDED, self.node.encode()))
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Unreachable(  # it never got the request: nothing was accepted
                f"node {leader.name}, which leads partition {part}, cannot be reached ({exc!r}): retry",
                503,
                limits.retry_after_s,
            ) from None
        except httpx.HTTPError as exc:
            message = _LOST.format(node=leader.name, part=part, why=repr(exc))
            raise EngineUnavailable(message, 502, limits.retry_after_s) from None
        try:
            await self._relay(response, send, started)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response, send: Send, started: list[bool]) -> None:
        out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
        length = response.headers.get("content-length")
        if length is not None:
            out.append((b"content-length", length.encode("latin-1")))
        started.append(True)
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            raise ResponseBroken(str(exc)) from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ------------------------------------------------------------------------------- the channel
    async def _over_channel(
        self, scope: Scope, body: bytes, send: Send, leader: NodeInfo, part: int | None, started: list[bool]
    ) -> None:
        """An ingress request through the channel to the leader (``channel.py``), its answer relayed."""
        client = await self._channel(leader, part)
        headers: list[Any] = [[k, v] for k, v in scope["headers"] if k not in _HOP]
        headers += [[b"content-length", b"%d" % len(body)], [FORWARDED, self.node.encode()]]
        raw = scope.get("raw_path") or scope["path"].encode()
        try:
            exchange = client.request(scope["method"], raw, scope.get("query_string", b""), headers, body)
        except Broken as exc:  # nothing was sent
            why = f"node {leader.name}, which leads partition {part}: {exc}"
            raise Unreachable(why, 503, limits.retry_after_s) from None
        answered = False
        try:
            frame = await exchange.next()
            if frame[0] != START:
                raise Broken(f"frame {frame[0]} before the answer's start", False)
            out = [
                (bytes(k), bytes(v))
                for k, v in frame[3]
                if k.lower() not in _HOP or k.lower() == b"content-length"
            ]
            started.append(True)
            await send({"type": "http.response.start", "status": int(frame[2]), "headers": out})
            while not answered:
                frame = await exchange.next()
                answered = not frame[3]
                await send({"type": "http.response.body", "body": bytes(frame[2]), "more_body": not answered})
        except Broken as exc:
            if exc.started:
                raise ResponseBroken(str(exc)) from None
            message = _LOST.format(node=leader.name, part=part, why=str(exc))
            raise EngineUnavailable(message, 502, limits.retry_after_s) from None
        finally:
            client.done(exchange, answered)  # not answered (the caller left, the leader was given up): cancel

    async def _channel(self, leader: NodeInfo, part: int | None) -> ChannelClient:
        """The open channel to ``leader``, opened if none is (one per node: it multiplexes)."""
        url = leader.ingress_url
        client = self._channels.get(url)
        if client is not None and client.usable():
            return client
        async with self._opening.setdefault(url, asyncio.Lock()):
            client = self._channels.get(url)
            if client is None or not client.usable():
                split = urlsplit(url)
                try:
                    client = await connect(split.hostname or "", split.port or 80)
                except (TimeoutError, OSError) as exc:
                    raise Unreachable(  # it never got the request: nothing was accepted
                        f"node {leader.name}, which leads partition {part}, cannot be reached ({exc!r}): retry",
                        503,
                        limits.retry_after_s,
                    ) from None
                self._channels[url] = client
        return client

    async def aclose(self) -> None:
        for client in self._channels.values():
            if client.transport is not None:
                client.transport.close()
        self._channels.clear()
        await self.client.aclose()


__all__ = ["FORWARDED", "Deposed", "Forwarder", "ResponseBroken", "Unreachable", "replay"]
