"""``create_client(ingress)``: call handlers through an ingress from plain Python (``restate.client``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from unbroken.sdk.client_types import HttpError, RestateClient, RestateClientSendHandle, RestateScopedClient
from unbroken.sdk.scoped import UNSUPPORTED_STATUS, unsupported_message
from unbroken.sdk.serde import BytesSerde
from unbroken.sdk.service import handler_of

if TYPE_CHECKING:
    import httpx  # imported when a client is made: it costs ~0.1 s at start-up otherwise


def _unsupported(what: str) -> HttpError:
    # restate-server with its flow control off does not ingest scoped requests: the request fails
    return HttpError(UNSUPPORTED_STATUS, unsupported_message(what))


def _refuse_codec(journal_value_codec: Any) -> None:
    if journal_value_codec is not None:
        raise ValueError(
            "journal_value_codec is not supported by Unbroken yet: values would go out unencoded"
        )


class Client(RestateClient):
    """An ingress client over one ``httpx.AsyncClient``."""

    def __init__(
        self, client: httpx.AsyncClient, headers: dict[str, str] | None = None, journal_codec: Any = None
    ) -> None:
        _refuse_codec(journal_codec)
        self.client = client
        self.headers = dict(headers or {})

    def scope(self, scope: str) -> RestateScopedClient:
        return ScopedClient(self, scope)

    async def _post(
        self,
        service: str,
        handler: str,
        key: str | None,
        body: bytes,
        send: bool,
        send_delay: timedelta | None,
        idempotency_key: str | None,
        headers: dict[str, str] | None,
        content_type: str | None,
    ) -> bytes:
        path = "/" + quote(service, safe="") + ("/" + quote(key, safe="") if key is not None else "")
        path += "/" + quote(handler, safe="") + ("/send" if send else "")
        if send and send_delay is not None:
            path += f"?delay={-(-send_delay // timedelta(milliseconds=1))}ms"
        h = {**self.headers, **(headers or {})}
        if content_type is not None and body and not any(k.lower() == "content-type" for k in h):
            h["content-type"] = content_type
        if idempotency_key is not None:
            h["idempotency-key"] = idempotency_key
        res = await self.client.post(path, content=body, headers=h)
        if res.status_code >= 400:
            raise HttpError(res.status_code, res.reason_phrase, res.text)
        return res.content

    async def _typed(
        self,
        tpe: Any,
        key: str | None,
        arg: Any,
        send: bool,
        delay: timedelta | None,
        idem: str | None,
        headers: dict[str, str] | None,
    ) -> Any:
        h = handler_of(tpe)
        body = h.input_serde.serialize(arg) if h.takes_input else b""
        out = await self._post(h.service, h.name, key, body, send, delay, idem, headers, h.accept)
        if send:
            return _send_handle(out)
        return h.output_serde.deserialize(out)

    async def service_call(
        self, tpe: Any, arg: Any, idempotency_key: str | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        return await self._typed(tpe, None, arg, False, None, idempotency_key, headers)

    async def service_send(
        self,
        tpe: Any,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle:
        return await self._typed(tpe, None, arg, True, send_delay, idempotency_key, headers)  # type: ignore[no-any-return]

    async def object_call(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return await self._typed(tpe, key, arg, False, None, idempotency_key, headers)

    async def object_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle:
        return await self._typed(tpe, key, arg, True, send_delay, idempotency_key, headers)  # type: ignore[no-any-return]

    async def workflow_call(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return await self._typed(tpe, key, arg, False, None, idempotency_key, headers)

    async def workflow_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle:
        return await self._typed(tpe, key, arg, True, send_delay, idempotency_key, headers)  # type: ignore[no-any-return]

    async def generic_call(
        self,
        service: str,
        handler: str,
        arg: bytes,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        scope: str | None = None,
        limit_key: str | None = None,
    ) -> bytes:
        if scope is not None or limit_key is not None:
            raise _unsupported(f"generic_call({service}/{handler}, scope=, limit_key=)")
        body = BytesSerde().serialize(arg)
        return await self._post(
            service, handler, key, body, False, None, idempotency_key, headers, "application/json"
        )

    async def generic_send(
        self,
        service: str,
        handler: str,
        arg: bytes,
        key: str | None = None,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        scope: str | None = None,
        limit_key: str | None = None,
    ) -> RestateClientSendHandle:
        if scope is not None or limit_key is not None:
            raise _unsupported(f"generic_send({service}/{handler}, scope=, limit_key=)")
        out = await self._post(
            service, handler, key, arg, True, send_delay, idempotency_key, headers, "application/json"
        )
        return _send_handle(out)


def _send_handle(body: bytes) -> RestateClientSendHandle:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = {}
    return RestateClientSendHandle(
        str(payload.get("invocationId", "")) if isinstance(payload, dict) else "", 200
    )


class ScopedClient(RestateScopedClient):
    """``client.scope(name)``: each call fails with :class:`HttpError` (501) until scopes are built."""

    def __init__(self, client: Client, scope_key: str) -> None:
        self.client = client
        self.scope_key = scope_key

    def _fail(self, method: str) -> HttpError:
        return _unsupported(f"client.scope({self.scope_key!r}).{method}")

    async def service_call(
        self,
        tpe: Any,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        raise self._fail("service_call")

    async def service_send(
        self,
        tpe: Any,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle:
        raise self._fail("service_send")

    async def object_call(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        raise self._fail("object_call")

    async def object_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle:
        raise self._fail("object_send")

    async def workflow_call(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        raise self._fail("workflow_call")

    async def workflow_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle:
        raise self._fail("workflow_send")


@asynccontextmanager
async def create_client(
    ingress: str, headers: dict[str, str] | None = None, journal_value_codec: Any = None
) -> AsyncIterator[RestateClient]:
    """``async with create_client("http://localhost:8080") as client: await client.service_call(greet, "Ada")``."""
    _refuse_codec(journal_value_codec)
    import httpx

    async with httpx.AsyncClient(base_url=ingress.rstrip("/"), timeout=None) as http:
        yield Client(http, headers)


__all__ = ["Client", "ScopedClient", "create_client"]
