"""Scopes and limit keys (``ctx.scope(...)``, ``scope=``, ``limit_key=``): accepted, not yet built.

They belong to Restate's flow control (restate-server 1.7, experimental, off by default). With it off,
restate-server fails the attempt with a retryable error until the code or the server changes; Unbroken
does the same, with a message naming the call that used them, so ``unbroken explain`` and the log say
what to fix. The retry policy applies (by default the invocation is paused after its attempts run out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from unbroken.sdk import context as c
from unbroken.sdk.exceptions import AttemptEnded

if TYPE_CHECKING:
    from unbroken.sdk.attempt import Attempt

log = logging.getLogger("unbroken.handler")

UNSUPPORTED_STATUS = 501


def unsupported_message(what: str) -> str:
    return (
        f"{what}: scopes and limit keys (Restate's flow control) are not supported by Unbroken yet; "
        "remove scope=/limit_key=/ctx.scope(...) from this call. The attempt fails and is retried, as "
        "restate-server does with its flow control off."
    )


def fail_unsupported(session: Attempt, what: str) -> NoReturn:
    """End the attempt with a retryable error naming ``what``; the handler's coroutine stops here."""
    message = unsupported_message(what)
    if not session.ended:
        log.error("%s attempt %d: %s", session.start.invocation_id, session.start.attempt, message)
        session.fail(UNSUPPORTED_STATUS, message)
    raise AttemptEnded(message)


class UnsupportedScope(c.ScopedContext):
    """What ``ctx.scope(name)`` returns: each call or send made through it fails the attempt."""

    def __init__(self, session: Attempt, scope: str) -> None:
        self.session = session
        self.scope_name = scope

    def _fail(self, method: str, tpe: Callable[..., Any]) -> NoReturn:
        target = getattr(tpe, "__qualname__", repr(tpe))
        fail_unsupported(self.session, f"ctx.scope({self.scope_name!r}).{method}({target})")

    def service_call(
        self,
        tpe: Any,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self._fail("service_call", tpe)

    def service_send(
        self,
        tpe: Any,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self._fail("service_send", tpe)

    def object_call(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self._fail("object_call", tpe)

    def object_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self._fail("object_send", tpe)

    def workflow_call(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self._fail("workflow_call", tpe)

    def workflow_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        limit_key: str | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self._fail("workflow_send", tpe)
