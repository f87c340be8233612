"""Minimal ASGI plumbing shared by the ingress and the admin API (no framework on the hot path)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class ClientDisconnected(Exception):
    """The client went away before its request was complete: the request is dropped, never executed."""


class HttpError(Exception):
    """An error answered to the client (status, message); never a 5xx for bad input."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def authorized(scope: Scope, token: str | None) -> bool:
    """True when no token is configured or the request carries ``authorization: Bearer <token>``."""
    if token is None:
        return True
    given = header(scope, b"authorization") or ""
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("latin-1"), token.encode())


# Scope extension: ``scope["extensions"][ON_DISCONNECT](callback)`` calls ``callback`` once the connection
# is lost and returns the function that unregisters it (the ingress forgets callers that hung up).
ON_DISCONNECT = "unbroken.on_disconnect"
UNAUTHORIZED_HEADERS = [(b"www-authenticate", b'Bearer realm="unbroken"')]


async def read_body(
    scope: Scope, receive: Receive, limit: int, charge: Callable[[int], None] | None = None
) -> bytes:
    """The whole request body, or BodyTooLarge as soon as it passes ``limit`` bytes.

    Raises ClientDisconnected if the client hangs up before the body is complete: a truncated body may
    still be valid JSON (``12`` of ``12345``), and executing it would do what the client never asked.
    ``charge(n)`` is told the bytes the body will hold (the declared length first, then as they arrive)
    and may refuse by raising.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise BodyTooLarge()
        if charge is not None:
            charge(int(declared))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            if charge is not None:
                charge(size)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = headers or []
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = [(b"content-type", b"application/json"), *(headers or [])]
    await respond(send, status, orjson.dumps(payload), all_headers)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
