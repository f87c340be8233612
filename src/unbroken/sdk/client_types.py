"""The ingress client's types, with restate-sdk's names (``restate.client_types``)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

O = TypeVar("O")  # noqa: E741


class RestateClientSendHandle:
    """What a send returns: the new invocation's id."""

    def __init__(self, invocation_id: str, status_code: int) -> None:
        self.invocation_id = invocation_id
        self.status_code = status_code


class HttpError(Exception):
    """The ingress answered with an error status."""

    def __init__(self, status_code: int, message: str, body: str | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.body = body


class RestateScopedClient(abc.ABC):
    """Calls within a scope (Restate's flow control, not supported by Unbroken yet: every call fails)."""

    @abc.abstractmethod
    async def service_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> O: ...

    @abc.abstractmethod
    async def service_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle: ...

    @abc.abstractmethod
    async def object_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> O: ...

    @abc.abstractmethod
    async def object_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle: ...

    @abc.abstractmethod
    async def workflow_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> O: ...

    @abc.abstractmethod
    async def workflow_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle: ...


class RestateClient(abc.ABC):
    """Calls and sends to an ingress from outside a handler (``create_client``)."""

    @abc.abstractmethod
    def scope(self, scope: str) -> RestateScopedClient: ...

    @abc.abstractmethod
    async def service_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> O: ...

    @abc.abstractmethod
    async def service_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle: ...

    @abc.abstractmethod
    async def object_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> O: ...

    @abc.abstractmethod
    async def object_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle: ...

    @abc.abstractmethod
    async def workflow_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> O: ...

    @abc.abstractmethod
    async def workflow_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateClientSendHandle: ...

    @abc.abstractmethod
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
    ) -> bytes: ...

    @abc.abstractmethod
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
    ) -> RestateClientSendHandle: ...
