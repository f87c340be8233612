"""The context types handlers receive, with restate-sdk's names and signatures.

Capabilities follow the handler kind: ``ObjectSharedContext`` can read state but not write it,
``ObjectContext`` adds ``set``/``clear``, workflow contexts add durable promises. The implementation
(``unbroken.sdk.invocation_context.InvocationContext``) subclasses all of them.
"""

from __future__ import annotations

import abc
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from random import Random
from typing import Any, Generic, TypeVar
from uuid import UUID

from unbroken.sdk.serde import DefaultSerde, Serde

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

RunAction = Callable[..., Awaitable[T]] | Callable[..., T]


class RestateDurableFuture(Generic[T], Awaitable[T], abc.ABC):
    """A result the engine records durably: awaiting it twice gives the same value."""

    @abc.abstractmethod
    def __await__(self) -> typing.Generator[Any, Any, T]: ...


class RestateDurableCallFuture(RestateDurableFuture[T]):
    @abc.abstractmethod
    async def invocation_id(self) -> str: ...

    @abc.abstractmethod
    async def cancel_invocation(self) -> None: ...


class RestateDurableSleepFuture(RestateDurableFuture[None]):
    pass


class SendHandle(abc.ABC):
    @abc.abstractmethod
    async def invocation_id(self) -> str: ...

    @abc.abstractmethod
    async def cancel_invocation(self) -> None: ...


class AttemptFinishedEvent(abc.ABC):
    """Set when the attempt ends (its result is stored, it failed, or it was suspended): resources held for
    one attempt, such as a ``ctx.run`` call to a third party still running, can be released then."""

    @abc.abstractmethod
    def is_set(self) -> bool: ...

    @abc.abstractmethod
    async def wait(self) -> None: ...


@dataclass
class Request:
    id: str
    headers: dict[str, str]
    attempt_headers: dict[str, str]
    body: bytes
    attempt_finished_event: AttemptFinishedEvent | None = None
    scope: str | None = None
    limit_key: str | None = None
    idempotency_key: str | None = None


@dataclass
class RunOptions(Generic[T]):
    """Retry settings of one ``ctx.run_typed`` (restate-sdk 1.2 names)."""

    serde: Serde[T] = field(default_factory=DefaultSerde)
    type_hint: type[T] | None = None
    max_attempts: int | None = None
    max_duration: timedelta | None = None
    initial_retry_interval: timedelta | None = None
    max_retry_interval: timedelta | None = None
    retry_interval_factor: float | None = None
    max_retry_duration: timedelta | None = None  # deprecated alias of max_duration


class KeyValueStore(abc.ABC):
    """``entry_name`` names the journal entry (shown by ``unbroken invocations describe``)."""

    @abc.abstractmethod
    def get(
        self,
        name: str,
        serde: Serde[T] = DefaultSerde(),
        type_hint: type[T] | None = None,
        entry_name: str | None = None,
    ) -> Awaitable[Any]: ...

    @abc.abstractmethod
    def state_keys(self, entry_name: str | None = None) -> Awaitable[list[str]]: ...

    @abc.abstractmethod
    def set(
        self, name: str, value: T, serde: Serde[T] = DefaultSerde(), entry_name: str | None = None
    ) -> None: ...

    @abc.abstractmethod
    def clear(self, name: str, entry_name: str | None = None) -> None: ...

    @abc.abstractmethod
    def clear_all(self, entry_name: str | None = None) -> None: ...


class ScopedContext(abc.ABC):
    """Calls and sends within a scope (``ctx.scope(name)``), each with an optional ``limit_key``.

    Unbroken has no flow control yet: like restate-server with its flow control off, every call or send
    made through a scope fails the attempt with a retryable error saying so (see the README)."""

    @abc.abstractmethod
    def service_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateDurableCallFuture[O]: ...

    @abc.abstractmethod
    def service_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendHandle: ...

    @abc.abstractmethod
    def object_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateDurableCallFuture[O]: ...

    @abc.abstractmethod
    def object_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendHandle: ...

    @abc.abstractmethod
    def workflow_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateDurableCallFuture[O]: ...

    @abc.abstractmethod
    def workflow_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendHandle: ...


class Context(abc.ABC):
    """What every handler can do."""

    @abc.abstractmethod
    def request(self) -> Request: ...

    @abc.abstractmethod
    def scope(self, scope: str) -> ScopedContext: ...

    @abc.abstractmethod
    def signal(
        self, name: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> RestateDurableFuture[T]: ...

    @abc.abstractmethod
    def resolve_signal(
        self, invocation_id: str, name: str, value: I, serde: Serde[I] = DefaultSerde()
    ) -> None: ...

    @abc.abstractmethod
    def reject_signal(
        self, invocation_id: str, name: str, failure_message: str, failure_code: int = 500
    ) -> None: ...

    @abc.abstractmethod
    def random(self) -> Random: ...

    @abc.abstractmethod
    def uuid(self) -> UUID: ...

    @abc.abstractmethod
    def time(self) -> RestateDurableFuture[float]: ...

    @abc.abstractmethod
    def run(
        self,
        name: str,
        action: RunAction[T],
        serde: Serde[T] = DefaultSerde(),
        max_attempts: int | None = None,
        max_retry_duration: timedelta | None = None,
        type_hint: type[T] | None = None,
        args: tuple[Any, ...] | None = None,
    ) -> RestateDurableFuture[T]: ...

    @abc.abstractmethod
    def run_typed(
        self,
        name: str,
        action: RunAction[T],
        options: RunOptions[T] = RunOptions(),
        /,
        *args: Any,
        **kwargs: Any,
    ) -> RestateDurableFuture[T]: ...

    @abc.abstractmethod
    def sleep(self, delta: timedelta, name: str | None = None) -> RestateDurableSleepFuture: ...

    @abc.abstractmethod
    def service_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateDurableCallFuture[O]: ...

    @abc.abstractmethod
    def service_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendHandle: ...

    @abc.abstractmethod
    def object_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateDurableCallFuture[O]: ...

    @abc.abstractmethod
    def object_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendHandle: ...

    @abc.abstractmethod
    def workflow_call(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> RestateDurableCallFuture[O]: ...

    @abc.abstractmethod
    def workflow_send(
        self,
        tpe: Callable[..., Awaitable[O]],
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendHandle: ...

    @abc.abstractmethod
    def generic_call(
        self,
        service: str,
        handler: str,
        arg: bytes,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        scope: str | None = None,
        limit_key: str | None = None,
    ) -> RestateDurableCallFuture[bytes]: ...

    @abc.abstractmethod
    def generic_send(
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
    ) -> SendHandle: ...

    @abc.abstractmethod
    def awakeable(
        self, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> tuple[str, RestateDurableFuture[T]]: ...

    @abc.abstractmethod
    def resolve_awakeable(self, name: str, value: I, serde: Serde[I] = DefaultSerde()) -> None: ...

    @abc.abstractmethod
    def reject_awakeable(self, name: str, failure_message: str, failure_code: int = 500) -> None: ...

    @abc.abstractmethod
    def cancel_invocation(self, invocation_id: str) -> None: ...

    @abc.abstractmethod
    def attach_invocation(
        self, invocation_id: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> RestateDurableFuture[T]: ...


class ObjectSharedContext(Context):
    """Shared handlers of a virtual object: read-only state, concurrent with everything."""

    @abc.abstractmethod
    def key(self) -> str: ...

    @abc.abstractmethod
    def get(
        self,
        name: str,
        serde: Serde[T] = DefaultSerde(),
        type_hint: type[T] | None = None,
        entry_name: str | None = None,
    ) -> Awaitable[Any]: ...

    @abc.abstractmethod
    def state_keys(self, entry_name: str | None = None) -> Awaitable[list[str]]: ...


class ObjectContext(Context, KeyValueStore):
    """Exclusive handlers of a virtual object: one at a time per key, read and write state."""

    @abc.abstractmethod
    def key(self) -> str: ...


class DurablePromise(Generic[T], abc.ABC):
    def __init__(self, name: str, serde: Serde[T] = DefaultSerde()) -> None:
        self.name = name
        self.serde = serde

    @abc.abstractmethod
    def resolve(self, value: T) -> Awaitable[None]: ...

    @abc.abstractmethod
    def reject(self, message: str, code: int = 500) -> Awaitable[None]: ...

    @abc.abstractmethod
    def peek(self) -> Awaitable[T | None]: ...

    @abc.abstractmethod
    def value(self) -> RestateDurableFuture[T]: ...

    def __await__(self) -> typing.Generator[Any, Any, T]:
        return self.value().__await__()


class WorkflowContext(ObjectContext):
    @abc.abstractmethod
    def promise(
        self, name: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> DurablePromise[T]: ...


class WorkflowSharedContext(ObjectSharedContext):
    @abc.abstractmethod
    def promise(
        self, name: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> DurablePromise[T]: ...
