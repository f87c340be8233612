"""Durable futures: awaitables whose result is a journaled notification."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from unbroken.core import journal as j
from unbroken.sdk import context as c
from unbroken.sdk.attempt import Attempt, Key
from unbroken.sdk.exceptions import TerminalError

T = TypeVar("T")


def raise_failure(result: j.Result) -> None:
    """A journaled failure raised as the ``TerminalError`` it was; a value (or void) passes."""
    if result.failure is not None:
        raise TerminalError(result.failure.message, result.failure.code, result.failure.metadata)


async def cancel(session: Attempt, invocation_id: str) -> None:
    """``ctx.cancel_invocation(id)`` for a call or send: restate-sdk's shortcut on its future and handle."""
    session.command(j.SendSignalCommand(invocation_id, j.CANCEL_SIGNAL, j.Result()))


class DurableFuture(c.RestateDurableFuture[T]):
    """Resolves when the notification ``key`` is in the journal; the result is decoded once."""

    __slots__ = ("session", "key", "decode", "_done", "_value")

    def __init__(self, session: Attempt, key: Key, decode: Callable[[j.Result], T]) -> None:
        self.session = session
        self.key = key
        self.decode = decode
        self._done = False
        self._value: Any = None

    async def _get(self) -> T:
        if not self._done:
            result = await self.session.wait(self.key)
            self._value = self.decode(result)
            self._done = True
        return self._value  # type: ignore[no-any-return]

    def __await__(self) -> Generator[Any, Any, T]:
        return self._get().__await__()

    def completed_seq(self) -> int:
        got = self.session.results.get(self.key)
        return got[0] if got is not None else 1 << 62


class SleepFuture(DurableFuture[None], c.RestateDurableSleepFuture):
    pass


class _Invoked:
    """A call or a send: its invocation id arrives as a journaled notification (``id_key``), and restate-sdk
    offers cancelling it from the future or the handle."""

    __slots__ = ()
    session: Attempt
    id_key: Key

    async def invocation_id(self) -> str:
        result = await self.session.wait(self.id_key)
        raise_failure(result)
        assert result.value is not None
        return result.value.decode()

    async def cancel_invocation(self) -> None:
        await cancel(self.session, await self.invocation_id())


class CallFuture(_Invoked, DurableFuture[T], c.RestateDurableCallFuture[T]):
    __slots__ = ("id_key",)

    def __init__(self, session: Attempt, key: Key, id_key: Key, decode: Callable[[j.Result], T]) -> None:
        super().__init__(session, key, decode)
        self.id_key = id_key


class Handle(_Invoked, c.SendHandle):
    def __init__(self, session: Attempt, id_key: Key) -> None:
        self.session = session
        self.id_key = id_key


class Ready(c.RestateDurableFuture[T]):
    """An already-known result (state reads), awaitable like the others."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, T]:
        if False:  # pragma: no cover - makes this a generator
            yield
        return self.value
