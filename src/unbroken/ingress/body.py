"""Request bodies: JSON validation with a nesting bound, and the global budget of bytes in flight.

Both exist because a body the ingress accepts is stored and handed to a handler: one the serializers
cannot handle (too deep) would fail the handler on every retry, and many large ones at once would take
the process's memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from unbroken.core import limits
from unbroken.ingress.http import HttpError

_OPEN = b"[{"
_CLOSE = b"]}"
# Everything but brackets and quotes is deleted before the depth is measured (strings are cut out first).
_KEEP = set(b'[]{}"')
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_PARENS = bytes.maketrans(b"[{]}", b"(())")


def check_json(body: bytes) -> None:
    """Raise ``HttpError(400)`` unless ``body`` is JSON nested at most ``limits.json_depth_max`` deep."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise HttpError(400, _too_deep()) from None
        raise HttpError(400, f"input validation error: the body is not valid JSON ({exc})") from None
    if json_depth_exceeds(body, limits.json_depth_max):
        raise HttpError(400, _too_deep())


def _too_deep() -> str:
    return (
        f"input validation error: the body is nested too deep: at most {limits.json_depth_max} levels "
        "of arrays and objects"
    )


def json_depth_exceeds(body: bytes, depth_max: int) -> bool:
    """True if valid JSON ``body`` nests arrays/objects more than ``depth_max`` deep.

    Runs in C-level byte operations (no Python loop per byte): most bodies have fewer brackets than the
    bound and are answered by two counts.
    """
    if body.count(_OPEN[:1]) + body.count(_OPEN[1:]) <= depth_max:
        return False
    text = body
    if b"\\" in text:  # drop escape pairs so that every remaining '"' delimits a string
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = text.translate(None, _DELETE)
    if b'"' in text:
        text = b"".join(text.split(b'"')[::2])  # outside strings: the even pieces
    parens = text.translate(_PARENS)
    # Each pass removes every innermost pair, so a body nested n deep is empty after exactly n passes.
    for _ in range(depth_max):
        if not parens:
            return False
        parens = parens.replace(b"()", b"")
    return bool(parens)


class BodyBudget:
    """Bytes of request bodies the ingress holds at once (being read, or waiting for their reply); a
    request that would pass ``limit`` is refused with 503 and ``Retry-After`` (see :class:`Overloaded`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @asynccontextmanager
    async def reserve(self) -> AsyncIterator[Reservation]:
        """A reservation that grows with the body (``charge``) and is given back when the block ends."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self.used -= reservation.size


class Reservation:
    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def charge(self, size: int) -> None:
        """Hold ``size`` bytes in all (no-op when already held); raise :class:`Overloaded` past the budget."""
        extra = size - self.size
        if extra <= 0:
            return
        budget = self.budget
        if budget.used + extra > budget.limit:
            raise Overloaded(
                f"the server is busy: request bodies in flight would pass {budget.limit} bytes "
                "(ingress_inflight_body_bytes_max); retry later"
            )
        budget.used += extra
        self.size = size


class Overloaded(HttpError):
    """503 with ``Retry-After``: a bound on work in flight was reached; the same request can succeed later."""

    retry_after_s = 1

    def __init__(self, message: str) -> None:
        super().__init__(503, message)
